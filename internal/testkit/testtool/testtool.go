// Package testtool finds the programs beyond Go and git that some tests
// drive: a headless Chromium, curl. On a machine without one, such a test
// is skipped with a message saying how to install it, so the README's test
// command passes on a machine with only Go and git; CI installs them and
// sets each program's variable, which turns a missing one into a failure.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
)

// Tool is a program some tests need.
type Tool struct {
	// Names are looked up on PATH, in order.
	Names []string
	// Require names the variable that makes a missing tool a failure.
	Require string
	// Install says how to install it.
	Install string
}

var (
	// Chromium is the browser the dashboard test drives (Debian's package).
	Chromium = Tool{Names: []string{"chromium", "chromium-browser"}, Require: "TASKWORKER_REQUIRE_CHROMIUM", Install: "apt-get install chromium"}
	// Curl runs the commands `devstack up` prints, as a newcomer would.
	Curl = Tool{Names: []string{"curl"}, Require: "TASKWORKER_REQUIRE_CURL", Install: "apt-get install curl"}
)

// TB is the part of testing.TB that Path uses.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Path is where the tool is. Without it the test is skipped, saying how to
// install it, or fails when the tool's Require variable is set.
func (tool Tool) Path(t TB) string {
	t.Helper()
	for _, name := range tool.Names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("this test needs %s, which is not on PATH: install it (%s; .ci/run does)", tool.Names[0], tool.Install)
	if os.Getenv(tool.Require) != "" {
		t.Fatalf("%s; %s is set, so it is required", msg, tool.Require)
		return ""
	}
	t.Skipf("%s; %s=1 makes its absence a failure", msg, tool.Require)
	return ""
}
