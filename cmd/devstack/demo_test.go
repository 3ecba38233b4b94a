package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDemo runs the README's first command as a newcomer would and checks
// what it prints and leaves behind.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	out := captureStdout(t, func() error {
		return demo(context.Background(), []string{"-data-dir", dir})
	})
	for _, want := range []string{
		"run   started",
		"info  Reading the task: Add a greeting section to the README",
		"warn  This demo agent does not run tests",
		"agent I will plan the change, edit README.md and record it in CHANGES.md.",
		"tool  Edit README.md [edit]",
		"tool  ↳ completed: added a section",
		"git   pushed branch posthog/task-TSK-1",
		"done  end_turn",
		"Run COMPLETED",
		"branch     posthog/task-TSK-1",
		"changes    2 files, +5 -0",
		"plan.md",
		"changes.patch",
	} {
		require.Contains(t, out, want)
	}
	bare := filepath.Join(dir, "git", "demo", "hello.git")
	show, err := exec.Command("git", "--git-dir", bare, "show", "posthog/task-TSK-1:README.md").CombinedOutput()
	require.NoError(t, err, string(show))
	require.Contains(t, string(show), "## Add a greeting section to the README")
	matches, err := filepath.Glob(filepath.Join(dir, "tasks", "artifacts", "*", "plan.md"))
	require.NoError(t, err)
	require.Len(t, matches, 1)
}

func captureStdout(t *testing.T, fn func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	orig := os.Stdout
	os.Stdout = w
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&buf, r); close(done) }()
	runErr := fn()
	os.Stdout = orig
	w.Close()
	<-done
	require.NoError(t, runErr, buf.String())
	return strings.TrimSpace(buf.String())
}
