package reliability

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
)

// messages are the console lines of a run's log, in order, each once.
func messages(t *testing.T, raw []json.RawMessage) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range raw {
		var e struct {
			EventID      string `json:"event_id"`
			Notification struct {
				Params map[string]any `json:"params"`
			} `json:"notification"`
		}
		require.NoError(t, json.Unmarshal(r, &e))
		if msg, ok := e.Notification.Params["message"].(string); ok && !seen[e.EventID] {
			seen[e.EventID] = true
			out = append(out, msg)
		}
	}
	return out
}

// TestADrainThatRunsOutOfTimeStopsTheAgentWithGrace: the worker holding a
// run is told to stop, and its agent outlives the drain timeout. Before the
// drain runs out the agent gets SIGTERM and its grace, the lines it prints
// then reach the log, the daemon exits by its drain timeout, and the run goes
// on on another worker and completes there.
func TestADrainThatRunsOutOfTimeStopsTheAgentWithGrace(t *testing.T) {
	const (
		lines        = 5
		drainTimeout = 15 * time.Second
		// The stop window: 3 s of grace, 2 s of flush, 5 s to report; the
		// agent is stopped 5 s into the drain.
		stopAfter = 5 * time.Second
	)
	// A queue of the test's own, so the run is on the worker that drains.
	const queue = "drain-test-queue"
	drainEnv := []string{"TEMPORAL_TASK_QUEUE=" + queue, "TASKWORKER_DRAIN_TIMEOUT=" + drainTimeout.String(),
		"TASKWORKER_AGENT_STOP_GRACE=3s", "TASKWORKER_LOG_FLUSH_TIMEOUT=2s"}
	drainer, err := s.startDaemonWith("worker-drain", drainEnv...)
	require.NoError(t, err)
	defer s.forget(drainer)

	ctx := context.Background()
	task, marks := createTask(t, "stopped 5")
	run, err := s.control.CreateRun(ctx, task.ID)
	require.NoError(t, err)
	_, err = s.control.UpdateRun(ctx, task.ID, run.ID, tasksapi.RunUpdate{Status: tasksapi.StatusQueued})
	require.NoError(t, err)
	_, err = s.stack.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: kickoff.WorkflowID(task.ID, run.ID), TaskQueue: queue, WorkflowExecutionTimeout: 10 * time.Minute,
	}, kickoff.WorkflowType, map[string]any{"run_id": run.ID, "create_pr": true})
	require.NoError(t, err)
	first := agentPID(t, marks, run.ID)
	require.Equal(t, drainer, s.holder(t, first))
	// The worker the run goes on on, once the first is gone.
	successor, err := s.startDaemonWith("worker-drain-next", "TEMPORAL_TASK_QUEUE="+queue)
	require.NoError(t, err)
	defer func() { _ = successor.Process.Kill(); _ = successor.Wait(); s.forget(successor) }()

	require.NoError(t, drainer.Process.Signal(syscall.SIGTERM))
	signalled := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- drainer.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(drainTimeout + time.Minute):
		t.Fatalf("the drained worker had not exited %s after SIGTERM (drain timeout %s)", time.Since(signalled), drainTimeout)
	}
	took := time.Since(signalled)
	require.NoError(t, err, "the drained worker exits cleanly")
	require.False(t, proctest.Alive(first), "the drained worker's agent is gone")

	ended := waitEnd(t, task.ID, run.ID, 3*time.Minute)
	o := check(t, task.ID, ended, marks, lines)
	raw, err := s.control.Logs(ctx, task.ID, run.ID)
	require.NoError(t, err)
	// In this order (the agent's stderr, the shell's "Terminated", may come
	// in between).
	said := messages(t, raw)
	last := -1
	for _, want := range []string{
		"working until stopped",       // the first attempt
		"got SIGTERM: saving my work", // its last lines, after SIGTERM
		"saved, exiting",
		"agent stopped: this worker is shutting down and its drain timeout ran out",
		"the worker running this run stopped answering (worker " + queue + "@worker-drain shut down before the agent finished",
		"line 1", // the next attempt, on the other worker
	} {
		at := slices.IndexFunc(said, func(m string) bool { return strings.HasPrefix(m, want) })
		require.Greater(t, at, last, "%q comes next in the log: %q", want, said)
		last = at
	}
	require.GreaterOrEqual(t, took, stopAfter, "the run had the drain's time to finish")
	require.LessOrEqual(t, took, drainTimeout+3*time.Second, "the worker exits by its drain timeout")
	s.record(row{scenario: "4b. SIGTERM of the worker running the agent, which outlives the drain timeout", runs: 1, terminal: 1,
		correct: o.correct, lost: o.lost, duplicates: o.duplicates, agentsAlive: o.agentsAlive, leaks: o.leaks})
}

// createTask creates a task whose agent does what title says; marks is
// where the agent leaves its PID.
func createTask(t *testing.T, title string) (tasksapi.Task, string) {
	marks := agenttest.SharedDir(t)
	task, err := s.control.CreateTask(context.Background(), tasksapi.CreateTaskRequest{Title: title, Description: marks, Repository: repo})
	require.NoError(t, err)
	return task, marks
}

// forget stops counting d among the suite's daemons.
func (s *suite) forget(d *exec.Cmd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.daemons, d.Process.Pid)
}
