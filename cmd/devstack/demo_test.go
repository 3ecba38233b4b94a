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

// TestInteractiveDemo runs `devstack demo -interactive`: two turns of the
// demo agent on one run, the second answering the follow-up, then the run
// ended by a PATCH.
func TestInteractiveDemo(t *testing.T) {
	dir := t.TempDir()
	out := captureStdout(t, func() error {
		return demo(context.Background(), []string{"-data-dir", dir, "-interactive"})
	})
	require.GreaterOrEqual(t, strings.Count(out, waitingNote), 2, "each turn ends waiting for a follow-up:\n%s", out)
	first, followUp, second := strings.Index(out, "Reading the task:"), strings.Index(out, "you   "+demoFollowUp),
		strings.Index(out, "Turn 2: reading the follow-up: "+demoFollowUp)
	require.True(t, first >= 0 && followUp > first && second > followUp,
		"the first turn, the user's message, then the second turn, in order:\n%s", out)
	require.Contains(t, out, "Run COMPLETED")

	bare := filepath.Join(dir, "git", "demo", "hello.git")
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"--git-dir", bare}, args...)...).CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	readme := git("show", "posthog/task-TSK-1:README.md")
	require.Contains(t, readme, "## Add a greeting section to the README", "turn 1's change")
	require.Contains(t, readme, demoFollowUp+" (turn 2 of the demo agent)", "turn 2's change")
	require.Equal(t, "2", git("rev-list", "--count", "main..posthog/task-TSK-1"), "a commit for each turn")
}
