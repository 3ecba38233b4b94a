package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/stacktest"
)

// ownStack is a stack of a test's own (the shared one won't do: the test
// restarts it or changes how it kicks runs off), with the test agent and a
// seeded acme/app under Dir. Call start for each (re)start; the caller stops
// it.
type ownStack struct{ *stacktest.Setup }

func newOwnStack(t *testing.T, opts devstack.Options) *ownStack {
	dir := t.TempDir()
	agenttest.Reachable(t, dir)
	setup, err := stacktest.Prepare(context.Background(), dir, stacktest.Options{
		Files: map[string]string{"README.md": "# app\n"}, Agent: "testdata/agent.sh", Stack: opts,
	})
	require.NoError(t, err)
	return &ownStack{setup}
}

func (o *ownStack) start(t *testing.T) (*devstack.Stack, *tasksapi.Client) {
	stack, api, err := o.Start(context.Background())
	require.NoError(t, err)
	return stack, api
}

// runToEnd creates a task, runs it, and waits (up to within) for the run to
// end and its workflow to return.
func runToEnd(t *testing.T, stack *devstack.Stack, api *tasksapi.Client, title, description string, within time.Duration) (tasksapi.Task, tasksapi.TaskRun) {
	t.Helper()
	return runTaskToEnd(t, stack, api, tasksapi.CreateTaskRequest{Title: title, Description: description, Repository: repo}, within)
}

// runTaskToEnd is runToEnd for a task described in full.
func runTaskToEnd(t *testing.T, stack *devstack.Stack, api *tasksapi.Client, req tasksapi.CreateTaskRequest, within time.Duration) (tasksapi.Task, tasksapi.TaskRun) {
	t.Helper()
	ctx := context.Background()
	task, err := api.CreateTask(ctx, req)
	require.NoError(t, err)
	kicked, err := api.RunTask(ctx, task.ID)
	require.NoError(t, err)
	var run tasksapi.TaskRun
	require.Eventually(t, func() bool {
		run, err = api.GetRun(ctx, task.ID, kicked.LatestRun.ID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, within, 50*time.Millisecond, "run %s did not end", kicked.LatestRun.ID)
	// The workflow returns just after its terminal PATCH; a failed run's with its error.
	err = stack.Client.GetWorkflow(ctx, kickoff.WorkflowID(task.ID, run.ID), "").Get(ctx, nil)
	if run.Status == tasksapi.StatusCompleted {
		require.NoError(t, err)
	}
	return task, run
}
