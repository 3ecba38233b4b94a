// Package agenttest finds the real agent CLIs for the tests that run them,
// and sets up what the suites need to watch a sandboxed agent.
package agenttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/taskworker/taskworker/internal/sandbox"
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

// SuiteSandbox is the sandbox of the suites that watch an agent from outside
// (its pid, the files it leaves in a folder of the test's): uid, where the
// host offers it, runs the agent as a uid of its own on the host's
// filesystem and PID namespace; else none. The namespaced modes are
// tested by internal/sandbox and by the agent CLIs' end-to-end tests.
func SuiteSandbox() string {
	if sandbox.HostOffers(sandbox.UID) == nil {
		return string(sandbox.UID)
	}
	return string(sandbox.Off)
}

// SharedDir is a folder of the test's that the agent, running as a uid of
// its own, may write and the worker's uid may reach.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	Reachable(t, dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Reachable lets other uids pass through dir and its parent (a test's temp
// dir is 0700), so a run in the uid sandbox reaches what is inside.
func Reachable(t testing.TB, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}
