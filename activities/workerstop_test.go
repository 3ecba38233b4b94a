package activities

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/drain"
	"github.com/taskworker/taskworker/internal/slots"
)

// consoleLines are the console entries among entries, as "level: message".
func consoleLines(entries []acp.Entry) []string {
	var lines []string
	for _, e := range entries {
		if e.Notification.Method == acp.MethodConsole {
			lines = append(lines, e.Notification.Params["level"].(string)+": "+e.Notification.Params["message"].(string))
		}
	}
	return lines
}

// A worker that begins to stop (its drain ran out) stops its agent at once —
// SIGTERM, then its grace — sends what the agent printed meanwhile, removes
// the workspace and frees the slot (nobody else will), and fails the step as
// WorkerStopped, all within its stop window.
func TestAStoppingWorkerStopsItsAgentAndKeepsItsLastLines(t *testing.T) {
	api := &logAPI{}
	h := newGitHost(t)
	h.push(t, h.origin(t, "acme/app"), "", "main", "a.txt")
	h.a.API = api.serve(t)
	h.a.Slots = slots.New(1)
	h.a.Config.HostQueue = "tasks@worker-1"
	budget := drain.Budget{AgentGrace: 5 * time.Second, FlushTimeout: 5 * time.Second}
	h.a.Config.StopWindow = budget.StopWindow()
	h.a.Agent = &agent.Command{
		Command: `trap 'echo "got SIGTERM, saving"; echo "saved"; exit 0' TERM; echo working; while :; do sleep 0.05; done`,
		Options: agent.Options{StopGrace: budget.AgentGrace},
	}
	run := RunContext{RunRef: RunRef{TaskID: "t", RunID: "r"}, Repository: "acme/app", Branch: "b", AgentTimeout: time.Hour}
	require.True(t, h.a.Slots.Acquire(run.RunID, time.Hour))

	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	workerStopping := make(chan struct{})
	env.SetWorkerStopChannel(workerStopping)
	env.RegisterActivity(h.a.RunAgent)
	result := make(chan error, 1)
	go func() {
		_, err := env.ExecuteActivity(h.a.RunAgent, AgentInput{Run: run})
		result <- err
	}()
	require.Eventually(t, func() bool { return slices.Contains(consoleLines(api.entries()), "info: working") },
		30*time.Second, 10*time.Millisecond, "the agent never started")

	close(workerStopping)
	var err error
	select {
	case err = <-result:
	case <-time.After(budget.StopWindow()):
		t.Fatalf("the step was still running %s after its worker began to stop", budget.StopWindow())
	}
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	require.Equal(t, ErrWorkerStopped, appErr.Type())
	require.Contains(t, appErr.Message(), "worker tasks@worker-1 shut down before the agent finished")

	// In this order; the shell may say "Terminated" on stderr in between.
	lines := consoleLines(api.entries())
	last := slices.Index(lines, "info: working")
	for _, want := range []string{"info: got SIGTERM, saving", "info: saved",
		"warn: agent stopped: this worker is shutting down and its drain timeout ran out"} {
		at := slices.Index(lines, want)
		require.Greater(t, at, last, "%q comes next in the log: %q", want, lines)
		last = at
	}
	_, statErr := os.Stat(filepath.Join(h.a.Config.WorkspaceDir, run.RunID))
	require.ErrorIs(t, statErr, os.ErrNotExist, "the workspace is removed")
	require.False(t, h.a.Slots.Held(run.RunID), "the slot is free")
}
