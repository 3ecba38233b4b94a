package kickoff

import (
	"context"
	"errors"
	"fmt"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
)

// ErrWorkflowEnded is the error of a signal to a run whose workflow is
// closed, or was never started.
var ErrWorkflowEnded = errors.New("task run workflow has ended")

// Signaller signals runs' workflows as PostHog does: one signal carries
// several positional arguments, which the Go client's SignalWorkflow (one
// argument) cannot send.
type Signaller struct {
	Temporal client.Client
	// Namespace is the client's namespace; empty is "default".
	Namespace string
	// Identity names the sender in the workflow's history.
	Identity string
}

// SignalRun sends the run's workflow the signal name with args as its
// positional arguments, each a payload of the SDK's default converter (JSON,
// or binary/null for nil), as PostHog's Python client encodes them.
func (s Signaller) SignalRun(ctx context.Context, taskID, runID, name string, args ...any) error {
	id := WorkflowID(taskID, runID)
	input, err := converter.GetDefaultDataConverter().ToPayloads(args...)
	if err != nil {
		return fmt.Errorf("encode the arguments of %s for %s: %w", name, id, err)
	}
	ns := s.Namespace
	if ns == "" {
		ns = client.DefaultNamespace
	}
	_, err = s.Temporal.WorkflowService().SignalWorkflowExecution(ctx, &workflowservice.SignalWorkflowExecutionRequest{
		Namespace:         ns,
		WorkflowExecution: &commonpb.WorkflowExecution{WorkflowId: id},
		SignalName:        name,
		Input:             input,
		Identity:          s.Identity,
	})
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return fmt.Errorf("signal %s to %s: %w (%v)", name, id, ErrWorkflowEnded, err)
	}
	if err != nil {
		return fmt.Errorf("signal %s to %s: %w", name, id, err)
	}
	return nil
}
