package agent

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/acp"
)

type sink struct {
	mu      sync.Mutex
	entries []acp.Entry
}

func (s *sink) Emit(e acp.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, e)
}

func (s *sink) lines() []string {
	var out []string
	for _, e := range s.entries {
		out = append(out, e.Notification.Params["level"].(string)+": "+e.Notification.Params["message"].(string))
	}
	return out
}

func request(t *testing.T) Request {
	return Request{
		Task: Task{ID: "task-1", RunID: "run-1", Title: "Fix the bug", Description: "It crashes.", Repository: "acme/app"},
		Dir:  t.TempDir(), ArtifactsDir: t.TempDir(),
	}
}

func TestCommandGetsThePromptAndTaskButNoWorkerSecrets(t *testing.T) {
	t.Setenv("POSTHOG_PERSONAL_API_KEY", "phx_must_not_leak_123")
	t.Setenv("TASKWORKER_GITHUB_TOKEN", "ghs_must_not_leak_456")
	t.Setenv("ALLOWED_SETTING", "visible")
	var s sink
	cmd := &Command{Command: `cat; echo; env | sort`, Options: Options{Passthrough: []string{"ALLOWED_SETTING"}, ExtraEnv: []string{"GIT_CONFIG_COUNT=1"}}}
	_, err := cmd.Run(context.Background(), request(t), &s)
	require.NoError(t, err)
	out := strings.Join(s.lines(), "\n")
	require.Contains(t, out, "info: Fix the bug\ninfo: \ninfo: It crashes.", "the prompt arrives on stdin")
	for _, want := range []string{"TASK_ID=task-1", "RUN_ID=run-1", "TASK_TITLE=Fix the bug", "TASK_DESCRIPTION=It crashes.",
		"TASK_REPOSITORY=acme/app", "TASK_ARTIFACTS_DIR=", "ALLOWED_SETTING=visible", "GIT_CONFIG_COUNT=1"} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "phx_must_not_leak_123")
	require.NotContains(t, out, "ghs_must_not_leak_456")
	require.NotContains(t, out, "POSTHOG_PERSONAL_API_KEY")
}

func TestCommandFailureCarriesExitCodeAndStderrTail(t *testing.T) {
	var s sink
	cmd := &Command{Command: `echo working; echo "first problem" >&2; echo "second problem" >&2; exit 3`}
	_, err := cmd.Run(context.Background(), request(t), &s)
	var exitErr *ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, "agent command exited with code 3; last stderr lines: first problem | second problem", err.Error())
	// stdout and stderr are two pipes: order holds within each, not across them.
	require.ElementsMatch(t, []string{"info: working", "warn: first problem", "warn: second problem"}, s.lines())
	var warnings []string
	for _, l := range s.lines() {
		if strings.HasPrefix(l, "warn: ") {
			warnings = append(warnings, l)
		}
	}
	require.Equal(t, []string{"warn: first problem", "warn: second problem"}, warnings)
}

func TestCommandNotFoundIsReported(t *testing.T) {
	var s sink
	_, err := (&Command{Command: "/nonexistent/agent --go"}).Run(context.Background(), request(t), &s)
	require.ErrorContains(t, err, "start /nonexistent/agent: executable not found")
	_, err = (&Command{Command: "/nonexistent/agent --go && true"}).Run(context.Background(), request(t), &s)
	require.ErrorContains(t, err, "exited with code 127", "through a shell, a missing program is the shell's 127")
	_, err = (&Command{}).Run(context.Background(), request(t), &s)
	require.ErrorContains(t, err, "TASKWORKER_AGENT_COMMAND")
}

func TestPlainCommandLinesRunWithoutAShell(t *testing.T) {
	path, args := commandLine("  claude -p --output-format=stream-json ")
	require.Equal(t, "claude", path)
	require.Equal(t, []string{"-p", "--output-format=stream-json"}, args)
	for _, shell := range []string{"cd src && make", "echo $HOME", `run "a b"`, "a | b", "x > y"} {
		path, args := commandLine(shell)
		require.Equal(t, "/bin/sh", path, shell)
		require.Equal(t, []string{"-c", shell}, args)
	}
}
