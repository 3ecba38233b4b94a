package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/dispatch"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/worker"
)

// A local run queued in a Tasks API whose kick-off can't reach our Temporal
// is started by the dispatcher; a cloud run, PostHog's runner's, is not.
func TestDispatcherCompletesRunsTheAPIOnlyQueued(t *testing.T) {
	ctx := context.Background()
	stack, api := newOwnStack(t, devstack.Options{NoKickoff: true, Worker: worker.Config{
		Dispatch: true, DispatchInterval: 100 * time.Millisecond, DispatchPool: "e2e-pool",
	}}).start(t)
	defer stack.Stop()

	cloudTask, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "for PostHog's runner", Repository: repo})
	require.NoError(t, err)
	cloud, err := api.RunTask(ctx, cloudTask.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.EnvironmentCloud, cloud.LatestRun.Environment)

	task := queueRun(t, api, "nothing via the dispatcher")
	var run tasksapi.TaskRun
	require.Eventually(t, func() bool {
		run, err = api.GetRun(ctx, task.ID, task.LatestRun.ID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, time.Minute, 50*time.Millisecond, "the local run did not end")
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %s", deref(run.ErrorMessage))
	raw, err := api.Logs(ctx, task.ID, run.ID)
	require.NoError(t, err)
	require.Contains(t, string(raw[0]), "dispatched to worker pool e2e-pool (task queue tasks-task-queue)")

	// Many dispatch cycles later, the cloud run is still PostHog's to start.
	cloudRun, err := api.GetRun(ctx, cloudTask.ID, cloud.LatestRun.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.StatusQueued, cloudRun.Status)
	_, err = stack.Client.DescribeWorkflowExecution(ctx, kickoff.WorkflowID(cloudTask.ID, cloudRun.ID), "")
	require.Error(t, err, "no workflow was started for the cloud run")
}

// dispatchStack is a stack whose API only queues runs and whose Temporal has
// no worker: dispatched workflows wait, which is all these tests look at.
func dispatchStack(t *testing.T) (*devstack.Stack, *tasksapi.Client) {
	stack, api := newOwnStack(t, devstack.Options{NoKickoff: true, NoWorker: true}).start(t)
	t.Cleanup(func() { stack.Stop() })
	return stack, api
}

// queueRuns makes n tasks, each with a local run queued for this pool.
func queueRuns(t *testing.T, api *tasksapi.Client, n int) []tasksapi.Task {
	var tasks []tasksapi.Task
	for i := range n {
		tasks = append(tasks, queueRun(t, api, fmt.Sprintf("task %d", i)))
	}
	return tasks
}

// queueRun makes a task with a local run queued for this pool: created
// without being started, then queued, as a client outside PostHog's cloud
// does. The task's LatestRun is that run.
func queueRun(t *testing.T, api *tasksapi.Client, title string) tasksapi.Task {
	ctx := context.Background()
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Repository: repo})
	require.NoError(t, err)
	run, err := api.CreateRun(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.EnvironmentLocal, run.Environment)
	run, err = api.UpdateRun(ctx, task.ID, run.ID, tasksapi.RunUpdate{Status: tasksapi.StatusQueued})
	require.NoError(t, err)
	task.LatestRun = &run
	return task
}

func dispatcher(stack *devstack.Stack, pool string, pageSize int) *dispatch.Dispatcher {
	cfg := stack.WorkerConfig
	cfg.DispatchPool, cfg.DispatchPageSize, cfg.DispatchMaxPages = pool, pageSize, 20
	return worker.NewDispatcher(stack.Client, cfg, zap.NewNop(), nil)
}

func TestTwoDispatchersStartEachRunOnce(t *testing.T) {
	stack, api := dispatchStack(t)
	tasks := queueRuns(t, api, 20)

	var wg sync.WaitGroup
	results := make([]dispatch.Stats, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			results[i], err = dispatcher(stack, fmt.Sprintf("pool-%d", i), 100).Cycle(context.Background())
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Equal(t, 20, results[0].Started+results[1].Started, "each run started exactly once: %+v", results)
	for _, task := range tasks {
		desc, err := stack.Client.DescribeWorkflowExecution(context.Background(), kickoff.WorkflowID(task.ID, task.LatestRun.ID), "")
		require.NoError(t, err)
		require.Equal(t, "Running", desc.WorkflowExecutionInfo.Status.String())
	}
}

func TestFiveHundredQueuedRunsAcrossSixPagesAreDispatchedOnce(t *testing.T) {
	stack, api := dispatchStack(t)
	queueRuns(t, api, 500)
	d := dispatcher(stack, "pool", 90) // 500 tasks: 6 pages

	first, err := d.Cycle(context.Background())
	require.NoError(t, err)
	require.Equal(t, 500, first.Queued)
	require.Equal(t, 500, first.Started)
	// 6 task pages, one run listing per queued task, one mark and one log entry per start.
	require.Equal(t, 6+500+500+500, first.Requests)

	second, err := d.Cycle(context.Background())
	require.NoError(t, err)
	require.Zero(t, second.Started, "nothing is started twice")
	require.Equal(t, 500, second.AlreadyStarted)
}

func TestAQueuedRunWhoseWorkflowEndedIsFailedNotRestarted(t *testing.T) {
	stack, api := dispatchStack(t)
	task := queueRuns(t, api, 1)[0]
	d := dispatcher(stack, "pool", 100)
	_, err := d.Cycle(context.Background())
	require.NoError(t, err)
	id := kickoff.WorkflowID(task.ID, task.LatestRun.ID)
	// The workflow ends without touching the run (terminated by hand, say).
	require.NoError(t, stack.Client.TerminateWorkflow(context.Background(), id, "", "by hand"))

	stats, err := d.Cycle(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, stats.Orphaned)
	require.Zero(t, stats.Started)
	run, err := api.GetRun(context.Background(), task.ID, task.LatestRun.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Contains(t, *run.ErrorMessage, "already ended (Terminated)")
	require.Contains(t, *run.ErrorMessage, "start a new run")
}
