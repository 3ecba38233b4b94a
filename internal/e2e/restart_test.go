package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/worker"
)

// The local stack keeps its state in its data dir: tasks, runs and Temporal's
// workflow histories survive a restart, and the restarted stack serves at once.
func TestLocalStackStateSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	own := newOwnStack(t, devstack.Options{DataDir: filepath.Join(t.TempDir(), "state")})
	// A restarted server that can't route (stale membership) stalls for a
	// minute; a deadline well under that catches it.
	const within = 20 * time.Second
	stack, api := own.start(t)
	first, firstRun := runToEnd(t, stack, api, "nothing before the restart", "", within)
	require.Equal(t, tasksapi.StatusCompleted, firstRun.Status, "error: %v", firstRun.ErrorMessage)
	require.NoError(t, stack.Stop())

	stack, api = own.start(t)
	defer stack.Stop()
	task, err := api.GetTask(ctx, first.ID)
	require.NoError(t, err)
	require.Equal(t, firstRun.ID, task.LatestRun.ID)
	require.Equal(t, tasksapi.StatusCompleted, task.LatestRun.Status)
	desc, err := stack.Client.DescribeWorkflowExecution(ctx, kickoff.WorkflowID(first.ID, firstRun.ID), "")
	require.NoError(t, err, "the workflow history survived the restart")
	require.Equal(t, "Completed", desc.WorkflowExecutionInfo.Status.String())

	_, again := runToEnd(t, stack, api, "nothing after the restart", "", within)
	require.Equal(t, tasksapi.StatusCompleted, again.Status, "error: %v", again.ErrorMessage)
}

// A draining worker takes no new runs but lets the ones it holds finish on
// its own queue, then stops.
func TestADrainingWorkerFinishesItsRuns(t *testing.T) {
	ctx := context.Background()
	stack, api := newOwnStack(t, devstack.Options{}).start(t)
	defer stack.Stop()
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "slow work", Repository: repo})
	require.NoError(t, err)
	kicked, err := api.RunTask(ctx, task.ID)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		run, err := api.GetRun(ctx, task.ID, kicked.LatestRun.ID)
		require.NoError(t, err)
		return run.Stage != nil && *run.Stage == "agent"
	}, time.Minute, 20*time.Millisecond)

	stack.Worker.Drain(time.Minute)
	run, err := api.GetRun(ctx, task.ID, kicked.LatestRun.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "the run the worker held finished before it stopped: %v", run.ErrorMessage)
}

// With a worker deployment configured, runs are pinned to the build that
// started them; the worker serves once its version is made current.
func TestAVersionedWorkerServesItsCurrentVersion(t *testing.T) {
	ctx := context.Background()
	stack, api := newOwnStack(t, devstack.Options{Worker: worker.Config{DeploymentName: "taskworker", BuildID: "build-1"}}).start(t)
	defer stack.Stop()
	deployment := stack.Client.WorkerDeploymentClient().GetHandle("taskworker")
	require.Eventually(t, func() bool {
		_, err := deployment.SetCurrentVersion(ctx, client.WorkerDeploymentSetCurrentVersionOptions{BuildID: "build-1"})
		return err == nil
	}, time.Minute, 100*time.Millisecond, "the worker's version registers when it polls")

	task, run := runToEnd(t, stack, api, "nothing on a versioned worker", "", time.Minute)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	desc, err := stack.Client.DescribeWorkflowExecution(ctx, kickoff.WorkflowID(task.ID, run.ID), "")
	require.NoError(t, err)
	info := desc.GetWorkflowExecutionInfo().GetVersioningInfo()
	require.Equal(t, "build-1", info.GetDeploymentVersion().GetBuildId())
	require.Equal(t, enumspb.VERSIONING_BEHAVIOR_PINNED, info.GetBehavior())
}
