// Package agenttest finds the real agent CLIs for the tests that run them.
package agenttest

import (
	"os"
	"os/exec"
	"testing"
)

// RequireEnv, when set, turns a missing CLI into a failure instead of a
// skip; CI installs the CLIs and sets it.
const RequireEnv = "TASKWORKER_REQUIRE_AGENTS"

// Binary is the path of the agent CLI name: the variable's value, else name
// on PATH. Without it the test is skipped, or fails under RequireEnv.
func Binary(t testing.TB, name, variable string) string {
	t.Helper()
	path := os.Getenv(variable)
	if path == "" {
		path, _ = exec.LookPath(name)
	}
	if path == "" {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%s is not installed: set %s or put it on PATH (see .ci/run)", name, variable)
		}
		t.Skipf("%s is not installed; set %s to run this test", name, variable)
	}
	return path
}
