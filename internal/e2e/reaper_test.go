package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/dispatch"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
)

// A run whose workflow is terminated in Temporal, so that nothing will ever
// send its terminal PATCH, is ended failed by the worker's reaper within its
// interval, with a message that says what happened; its agent is stopped.
func TestATerminatedWorkflowsRunIsEndedFailedByTheWorkersReaper(t *testing.T) {
	ctx := context.Background()
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, run := startRun(t, "hang around", pidFile, repo)
	pids := waitForAgent(t, pidFile)
	require.NoError(t, h.Stack.Client.TerminateWorkflow(ctx, kickoff.WorkflowID(task.ID, run.ID), "", "stuck, replaced by hand"))

	require.Eventually(t, func() bool {
		var err error
		run, err = h.API.GetRun(ctx, task.ID, run.ID)
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
	require.Eventually(t, func() bool { return !proctest.Alive(pids[0]) && !proctest.Alive(pids[1]) }, 30*time.Second, 50*time.Millisecond,
		"the agent of a terminated workflow is stopped")
}

// The dispatcher ends the in-progress runs it dispatched that no workflow
// will finish: one whose workflow was terminated, and one whose workflow is
// gone from Temporal altogether. A local run it didn't dispatch (another
// client drives it), a cloud run and a run whose workflow runs are left alone.
func TestTheDispatcherEndsTheRunsItDispatchedThatNoWorkflowWillFinish(t *testing.T) {
	ctx := context.Background()
	stack, api := dispatchStack(t)
	d := dispatcher(stack, "pool", 100)
	d.Config.ReapInterval = 0
	inProgress := func(task tasksapi.Task, state map[string]any) {
		_, err := api.UpdateRun(ctx, task.ID, task.LatestRun.ID, tasksapi.RunUpdate{Status: tasksapi.StatusInProgress, State: state})
		require.NoError(t, err)
	}
	terminated, running := queueRun(t, api, "terminated"), queueRun(t, api, "running")
	first, err := d.Cycle(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, first.Started)
	inProgress(terminated, nil) // as the worker does
	inProgress(running, nil)
	require.NoError(t, stack.Client.TerminateWorkflow(ctx, kickoff.WorkflowID(terminated.ID, terminated.LatestRun.ID), "", "by hand"))

	// Dispatched once, by a dispatcher whose Temporal has since lost it.
	lost := newRun(t, api, "lost")
	inProgress(lost, map[string]any{dispatch.DispatchedKey: map[string]any{"pool": "pool"}})
	// Driven by a client of its own: no workflow here, ever.
	otherClient := newRun(t, api, "another client's")
	inProgress(otherClient, nil)
	cloudTask, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "PostHog's runner's", Repository: repo})
	require.NoError(t, err)
	cloud, err := api.RunTask(ctx, cloudTask.ID)
	require.NoError(t, err)
	inProgress(cloud, nil)

	second, err := d.Cycle(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, second.Reaped, "%+v", second)
	require.Zero(t, second.Failed)
	for _, c := range []struct {
		task tasksapi.Task
		says string
	}{
		{terminated, `the run's workflow was terminated in Temporal (reason "by hand"`},
		{lost, "the run's workflow " + kickoff.WorkflowID(lost.ID, lost.LatestRun.ID) + " does not exist in Temporal (namespace default)"},
	} {
		run, err := api.GetRun(ctx, c.task.ID, c.task.LatestRun.ID)
		require.NoError(t, err)
		require.Equal(t, tasksapi.StatusFailed, run.Status, c.task.Title)
		require.Contains(t, deref(run.ErrorMessage), c.says)
		require.Contains(t, deref(run.ErrorMessage), "ended by taskworker's dispatcher")
	}
	for _, task := range []tasksapi.Task{running, otherClient, cloud} {
		run, err := api.GetRun(ctx, task.ID, task.LatestRun.ID)
		require.NoError(t, err)
		require.Equal(t, tasksapi.StatusInProgress, run.Status, "%s is left alone", task.Title)
		require.Nil(t, run.ErrorMessage)
	}
	for _, task := range []tasksapi.Task{otherClient, cloud} {
		log, err := api.Logs(ctx, task.ID, task.LatestRun.ID)
		require.NoError(t, err)
		require.Empty(t, log, "nothing is written to %s", task.Title)
	}
}

// newRun makes a task with a local run that nobody queued.
func newRun(t *testing.T, api *tasksapi.Client, title string) tasksapi.Task {
	ctx := context.Background()
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Repository: repo})
	require.NoError(t, err)
	run, err := api.CreateRun(ctx, task.ID)
	require.NoError(t, err)
	task.LatestRun = &run
	return task
}
