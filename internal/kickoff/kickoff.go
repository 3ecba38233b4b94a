// Package kickoff is how a run's process-task workflow is named and
// started, as PostHog does it: the one place that knows the workflow's type,
// its ID and its input.
package kickoff

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
)

// WorkflowType is the workflow type PostHog starts for a run.
const WorkflowType = "process-task"

// DefaultTaskQueue is PostHog's task queue for process-task.
const DefaultTaskQueue = "tasks-task-queue"

const idPrefix = "task-processing-"

// WorkflowID is the ID PostHog gives a run's workflow:
// task-processing-{task_id}-{run_id}.
func WorkflowID(taskID, runID string) string { return idPrefix + taskID + "-" + runID }

// UUIDPattern matches a UUID.
const UUIDPattern = `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`

var (
	workflowIDRe = regexp.MustCompile(`^` + idPrefix + `(` + UUIDPattern + `)-`)
	runIDRe      = regexp.MustCompile(`^` + idPrefix + `(` + UUIDPattern + `)-(` + UUIDPattern + `)$`)
)

// RunOf is the task and run a workflow ID names, lower case, when it is
// PostHog's task-processing-{task_id}-{run_id}.
func RunOf(workflowID string) (taskID, runID string, ok bool) {
	m := runIDRe.FindStringSubmatch(workflowID)
	if m == nil {
		return "", "", false
	}
	return strings.ToLower(m[1]), strings.ToLower(m[2]), true
}

// TaskOf is the task ID in a workflow ID, lower case; "" when the ID is not
// PostHog's.
func TaskOf(workflowID string) string {
	if m := workflowIDRe.FindStringSubmatch(workflowID); m != nil {
		return strings.ToLower(m[1])
	}
	return ""
}

// InitialMessage is a message the user sent with the run's start, for the
// agent's first turn: PostHog's PendingFollowup.
type InitialMessage struct {
	Message     string   `json:"message"`
	ArtifactIDs []string `json:"artifact_ids"`
	MessageID   string   `json:"message_id"`
	// ActorUserID is PostHog's user; nil when the sender knows no user ID.
	ActorUserID *int64 `json:"actor_user_id,omitempty"`
}

// RunOptions is what a start may add to a run's workflow input.
type RunOptions struct {
	// InitialMessage, when set, is the input's initial_message.
	InitialMessage *InitialMessage
}

// Input is the workflow input PostHog sends for a run.
func Input(runID string, opts RunOptions) map[string]any {
	in := map[string]any{"run_id": runID, "create_pr": true}
	if m := opts.InitialMessage; m != nil {
		msg := *m
		// PostHog's list is never null; a nil one would encode as null.
		if msg.ArtifactIDs == nil {
			msg.ArtifactIDs = []string{}
		}
		in["initial_message"] = msg
	}
	return in
}

// Executor is the part of the Temporal client a Starter uses.
type Executor interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
}

// Starter starts runs' workflows.
type Starter struct {
	Temporal  Executor
	TaskQueue string
	// ExecutionTimeout bounds the whole workflow; PostHog sets one too.
	ExecutionTimeout time.Duration
	// Once makes the workflow ID a lock: a run whose workflow was ever
	// started is never started again, and a start that finds it running
	// fails (serviceerror.WorkflowExecutionAlreadyStarted). Without it, as
	// PostHog does, a run whose workflow failed may be started again.
	Once bool
}

// StartRun starts the run's workflow.
func (s Starter) StartRun(ctx context.Context, taskID, runID string, run RunOptions) error {
	opts := client.StartWorkflowOptions{
		ID:                       WorkflowID(taskID, runID),
		TaskQueue:                s.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
		WorkflowExecutionTimeout: s.ExecutionTimeout,
	}
	if s.Once {
		opts.WorkflowIDReusePolicy = enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE
		// Without it the SDK hands back the running workflow as if it had
		// just started it, and every caller would count the run as its own.
		opts.WorkflowExecutionErrorWhenAlreadyStarted = true
	}
	if _, err := s.Temporal.ExecuteWorkflow(ctx, opts, WorkflowType, Input(runID, run)); err != nil {
		return fmt.Errorf("start %s %s: %w", WorkflowType, opts.ID, err)
	}
	return nil
}
