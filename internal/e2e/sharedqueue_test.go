package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	tworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/worker"
)

// unknownTypeCount is taskworker_unknown_task_types_total{kind,type}.
func unknownTypeCount(t *testing.T, m *metrics.Metrics, kind, typ string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != "taskworker_unknown_task_types_total" {
			continue
		}
		for _, metric := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["type"] == typ {
				return metric.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// unknownTypeLines are the worker's log lines about a type it does not serve.
func unknownTypeLines(logs *observer.ObservedLogs, kind, typ string) []observer.LoggedEntry {
	return logs.Filter(func(e observer.LoggedEntry) bool {
		fields := e.ContextMap()
		return e.Level == zapcore.ErrorLevel && fields["kind"] == kind && fields["type"] == typ
	}).All()
}

// A queue shared with another worker (a self-hosted PostHog's tasks worker)
// hands taskworker workflow and activity tasks of types it doesn't serve. It
// says so, once per type, naming the type, the queue and the remedy, and
// counts each; their tasks fail the way the SDK fails an unregistered type,
// so the workflows stay open and finish once the other worker takes them;
// and process-task runs go on beside them.
func TestAWorkerSharingItsQueueSaysWhichTypesItDoesNotServe(t *testing.T) {
	own := newOwnStack(t, devstack.Options{NoWorker: true})
	stack, api := own.start(t)
	defer stack.Stop()
	core, logs := observer.New(zapcore.InfoLevel)
	m := metrics.New("test")
	w, err := worker.New(stack.Client, stack.WorkerConfig, zap.New(core), m)
	require.NoError(t, err)
	require.NoError(t, w.Start())
	defer w.Stop()
	queue := stack.WorkerConfig.TaskQueue

	const foreignWorkflow, foreignActivity = "posthog-other-workflow", "posthog_other_activity"
	ctx := context.Background()
	// PostHog's activities are scheduled on the shared queue by its own
	// workflows; this one runs on a queue of its own so that only
	// taskworker polls the activity at first.
	const scheduler = "schedules-posthog-other-activity"
	helper := tworker.New(stack.Client, "helper-queue", tworker.Options{})
	helper.RegisterWorkflowWithOptions(func(ctx workflow.Context) (string, error) {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue: queue, StartToCloseTimeout: 30 * time.Second,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, BackoffCoefficient: 1},
		})
		var out string
		err := workflow.ExecuteActivity(ctx, foreignActivity).Get(ctx, &out)
		return out, err
	}, workflow.RegisterOptions{Name: scheduler})
	require.NoError(t, helper.Start())
	defer helper.Stop()

	foreign, err := stack.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: "posthog-other", TaskQueue: queue, WorkflowTaskTimeout: 2 * time.Second,
	}, foreignWorkflow)
	require.NoError(t, err)
	scheduled, err := stack.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "schedules-other", TaskQueue: "helper-queue"}, scheduler)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		return unknownTypeCount(t, m, "workflow", foreignWorkflow) >= 1 && unknownTypeCount(t, m, "activity", foreignActivity) >= 2
	}, time.Minute, 50*time.Millisecond, "the tasks of types taskworker does not serve are counted")
	for kind, typ := range map[string]string{"workflow": foreignWorkflow, "activity": foreignActivity} {
		lines := unknownTypeLines(logs, kind, typ)
		require.Len(t, lines, 1, "one line for the %s type %s, however often its task comes back", kind, typ)
		line := lines[0]
		require.Contains(t, line.Message, typ)
		require.Contains(t, line.Message, queue)
		require.Equal(t, queue, line.ContextMap()["task_queue"])
		require.Contains(t, line.ContextMap()["remedy"], "Beside a self-hosted PostHog")
	}

	// Beside them, process-task runs as ever.
	_, run := runToEnd(t, stack, api, "change the README", "beside another worker's types", 2*time.Minute)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, deref(run.ErrorMessage))

	// Their tasks failed, not their workflows.
	desc, err := stack.Client.DescribeWorkflowExecution(ctx, foreign.GetID(), "")
	require.NoError(t, err)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, desc.GetWorkflowExecutionInfo().GetStatus())
	require.Len(t, unknownTypeLines(logs, "activity", foreignActivity), 1, "still one line for the activity type")

	// The worker those types belong to takes them when it polls the queue.
	posthog := tworker.New(stack.Client, queue, tworker.Options{})
	posthog.RegisterWorkflowWithOptions(func(workflow.Context) (string, error) { return "ran on PostHog's worker", nil },
		workflow.RegisterOptions{Name: foreignWorkflow})
	posthog.RegisterActivityWithOptions(func(context.Context) (string, error) { return "ran on PostHog's worker", nil },
		activity.RegisterOptions{Name: foreignActivity})
	require.NoError(t, posthog.Start())
	defer posthog.Stop()
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, wf := range []client.WorkflowRun{foreign, scheduled} {
		var out string
		require.NoError(t, wf.Get(wait, &out), "workflow %s", wf.GetID())
		require.True(t, strings.HasPrefix(out, "ran on PostHog's worker"), out)
	}
}
