package localapi

import (
	"context"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/taskworker/taskworker/workflows"
)

// TemporalStarter starts process-task the way PostHog does: workflow ID
// task-processing-{task_id}-{run_id}, reuse policy "allow duplicate failed
// only", input {"run_id", "create_pr"}.
type TemporalStarter struct {
	Client    client.Client
	TaskQueue string
	// ExecutionTimeout bounds the whole workflow; PostHog sets one too.
	ExecutionTimeout time.Duration
}

// StartRun implements Starter.
func (s *TemporalStarter) StartRun(ctx context.Context, taskID, runID string) error {
	_, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       workflows.WorkflowID(taskID, runID),
		TaskQueue:                s.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
		WorkflowExecutionTimeout: s.ExecutionTimeout,
	}, workflows.ProcessTaskName, map[string]any{"run_id": runID, "create_pr": true})
	if err != nil {
		return fmt.Errorf("start %s for run %s: %w", workflows.ProcessTaskName, runID, err)
	}
	return nil
}
