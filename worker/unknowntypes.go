package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	tworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/metrics"
)

// unknownTypeRemedy is what the log line about a foreign type tells the
// operator to do.
const unknownTypeRemedy = "another worker polls this task queue with types this worker does not serve " +
	"(a self-hosted PostHog's tasks worker registers about nine on tasks-task-queue), and Temporal hands " +
	"each task to any poller: give taskworker a queue of its own, see the README's section " +
	"\"Beside a self-hosted PostHog\""

// unknownTypeLogEvery is how often one foreign type is logged: a task of it
// comes back on every retry, and once is enough to be seen.
const unknownTypeLogEvery = 5 * time.Minute

// unknownTypes notices the workflow and activity tasks of types this worker
// does not serve, which reach it when another worker shares its queue.
//
// It hooks in as the SDK's dynamic workflow and dynamic activity: the SDK's
// registry falls back to them exactly when, and only when, a task's type is
// not registered, and hands them the type through the public API. The other
// hooks are worse: interceptors are reached only after the type was found;
// the SDK's log of an unknown workflow type is its generic "Workflow panic"
// line, one a real panic also writes, and an unknown activity is not logged
// at all; the metric it counts for an unknown activity, and the failure
// reason of a workflow task, are internal names, and neither says which
// queue's worker it was.
//
// The task still fails as it would without the hook, so that Temporal
// retries it and another poller of the queue may take it: the workflow
// panics (the worker's panic policy is BlockWorkflow, so that fails the
// workflow task, never the workflow), and the activity fails retryably with
// the type name the SDK gives an unregistered activity's failure.
type unknownTypes struct {
	logger  *zap.Logger
	metrics *metrics.Metrics
	every   time.Duration

	mu     sync.Mutex
	logged map[string]time.Time
}

func newUnknownTypes(logger *zap.Logger, m *metrics.Metrics) *unknownTypes {
	return &unknownTypes{logger: logger, metrics: m, every: unknownTypeLogEvery, logged: map[string]time.Time{}}
}

// register installs the hooks on a worker of queue.
func (u *unknownTypes) register(w tworker.Registry, workflows bool) {
	if workflows {
		w.RegisterDynamicWorkflow(u.workflow, workflow.DynamicRegisterOptions{
			// A foreign workflow must never be pinned to this build.
			LoadDynamicRuntimeOptions: func(workflow.LoadDynamicRuntimeOptionsDetails) (workflow.DynamicRuntimeOptions, error) {
				return workflow.DynamicRuntimeOptions{VersioningBehavior: workflow.VersioningBehaviorAutoUpgrade}, nil
			},
		})
	}
	w.RegisterDynamicActivity(u.activity, activity.DynamicRegisterOptions{})
}

func (u *unknownTypes) workflow(ctx workflow.Context, _ converter.EncodedValues) (any, error) {
	info := workflow.GetInfo(ctx)
	msg := u.seen("workflow", info.WorkflowType.Name, info.TaskQueueName)
	panic(msg)
}

func (u *unknownTypes) activity(ctx context.Context, _ converter.EncodedValues) (any, error) {
	info := activity.GetInfo(ctx)
	msg := u.seen("activity", info.ActivityType.Name, info.TaskQueue)
	return nil, temporal.NewApplicationError(msg, "ActivityNotRegisteredError")
}

// seen counts a task of a type this worker does not serve, logs it unless
// the type was logged within u.every, and returns the failure's message.
func (u *unknownTypes) seen(kind, typ, queue string) string {
	u.metrics.UnknownTaskType(kind, typ)
	msg := fmt.Sprintf("taskworker does not serve %s type %q on task queue %q", kind, typ, queue)
	key := kind + "\x00" + typ + "\x00" + queue
	now := time.Now()
	u.mu.Lock()
	last, ok := u.logged[key]
	log := !ok || now.Sub(last) >= u.every
	if log {
		u.logged[key] = now
	}
	u.mu.Unlock()
	if log {
		u.logger.Error(msg+"; its task fails here and Temporal retries it, perhaps on this worker again",
			zap.String("kind", kind), zap.String("type", typ), zap.String("task_queue", queue),
			zap.String("remedy", unknownTypeRemedy))
	}
	return msg + ": " + unknownTypeRemedy
}
