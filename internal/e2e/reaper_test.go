package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/agenttest"
	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/workflows"
)

// A run whose workflow is terminated in Temporal, so that nothing will ever
// send its terminal PATCH, is ended failed by the worker's reaper within its
// interval, with a message that says what happened; its agent is stopped.
func TestATerminatedWorkflowsRunIsEndedFailedByTheWorkersReaper(t *testing.T) {
	ctx := context.Background()
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, run := startRun(t, "hang around", pidFile, repo)
	pids := waitForAgent(t, pidFile)
	require.NoError(t, h.stack.Client.TerminateWorkflow(ctx, workflows.WorkflowID(task.ID, run.ID), "", "stuck, replaced by hand"))

	require.Eventually(t, func() bool {
		var err error
		run, err = h.api.GetRun(ctx, task.ID, run.ID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, 30*time.Second, 100*time.Millisecond, "the run was never ended")
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.NotNil(t, run.ErrorMessage)
	require.Contains(t, *run.ErrorMessage, `the run's workflow was terminated in Temporal (reason "stuck, replaced by hand", by `)
	require.Contains(t, *run.ErrorMessage, "; ended by taskworker's reaper. Start a new run of the task to try again.")
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusFailed}, statusHistory(t, run.ID))
	var said []string
	for _, e := range logOf(t, task.ID, run.ID) {
		if e.Notification.Method == "_posthog/error" {
			said = append(said, e.Notification.Params["message"].(string))
		}
	}
	require.Equal(t, []string{*run.ErrorMessage}, said, "the log says it too")
	require.Eventually(t, func() bool { return !process.Alive(pids[0]) && !process.Alive(pids[1]) }, 30*time.Second, 50*time.Millisecond,
		"the agent of a terminated workflow is stopped")
}
