package workflows

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/signals"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// agentUntilStopped is an agent that works until its step is cancelled, and
// reports whether it was; one never stopped finishes after a while, so that
// a run that ignored the stop completes rather than hangs.
type agentUntilStopped struct{ stopped atomic.Bool }

func (a *agentUntilStopped) run(ctx context.Context, _ activities.AgentInput) (activities.AgentOutput, error) {
	select {
	case <-ctx.Done():
		a.stopped.Store(true)
		return activities.AgentOutput{}, ctx.Err()
	case <-time.After(3 * time.Second):
		return activities.AgentOutput{Summary: "done"}, nil
	}
}

// signalling sets the environment up as the worker's client is: with the
// converter that reads every argument of a signal.
func (s *workflowSuite) signalling() *[]activities.NoteInput {
	s.env.SetDataConverter(signals.DataConverter(nil))
	var notes []activities.NoteInput
	s.env.OnActivity("Note", mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.NoteInput) error {
		notes = append(notes, in)
		return nil
	}).Maybe()
	return &notes
}

// signal sends name with args as separate positional arguments, after delay.
func (s *workflowSuite) signal(delay time.Duration, name string, args ...any) {
	s.env.RegisterDelayedCallback(func() { s.env.SignalWorkflow(name, signals.Positional(args)) }, delay)
}

func (s *workflowSuite) conversation() signals.Conversation {
	v, err := s.env.QueryWorkflow(signals.StateQuery)
	s.Require().NoError(err)
	var c signals.Conversation
	s.Require().NoError(v.Get(&c))
	return c
}

func (s *workflowSuite) TestCompleteTaskCancelledStopsTheAgentAndWritesNoStatus() {
	notes := s.signalling()
	agent := &agentUntilStopped{}
	s.steps(map[string][]any{"RunAgent": {agent.run}})
	s.signal(time.Second, signals.CompleteTask, "cancelled", "stopped from the UI")
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	var res Result
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(tasksapi.StatusCancelled, res.Status)
	s.Equal("stopped from the UI", res.ErrorMessage, "the second argument was read")
	s.Empty(s.finished, "the API's status stands: no terminal PATCH of the workflow's")
	s.env.AssertNotCalled(s.T(), "Publish", mock.Anything, mock.Anything)
	s.env.AssertCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
	s.Require().NotEmpty(*notes)
	s.Equal("run ended from outside (cancelled): stopped from the UI; its steps were stopped", (*notes)[len(*notes)-1].Message)
}

func (s *workflowSuite) TestCompleteTaskFailedFromOutsideEndsTheRunWithoutASecondPatch() {
	s.signalling()
	agent := &agentUntilStopped{}
	s.steps(map[string][]any{"RunAgent": {agent.run}})
	s.signal(time.Second, signals.CompleteTask, "failed", nil)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	var res Result
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(tasksapi.StatusFailed, res.Status)
	s.Empty(res.ErrorMessage, "a null error_message")
	s.Empty(s.finished)
}

// The worker's own terminal PATCH comes back as complete_task: the run keeps
// its one PATCH and the workflow completes.
func (s *workflowSuite) TestTheEchoOfTheRunsOwnCompletionIsTolerated() {
	s.signalling()
	s.steps(map[string][]any{"FinishRun": {func(ctx context.Context, in activities.FinishInput) error {
		s.finished = append(s.finished, in)
		s.env.SignalWorkflow(signals.CompleteTask, signals.Positional{string(in.Status), nil})
		return nil
	}}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.requireOneFinish(tasksapi.StatusCompleted)
}

func (s *workflowSuite) TestMessagesAreKeptDeduplicatedAndNotedInTheLog() {
	notes := s.signalling()
	agent := &agentUntilStopped{}
	s.steps(map[string][]any{"RunAgent": {agent.run}})
	s.signal(100*time.Millisecond, signals.FollowUp, "also fix the docs", []string{"a1"}, "m-1", 42, map[string]any{"source": "slack"})
	s.signal(200*time.Millisecond, signals.FollowUp, "also fix the docs", []string{"a1"}, "m-1", 42, nil)
	s.signal(300*time.Millisecond, signals.Steer, "use tabs", nil, "m-2", "u-7", nil)
	s.signal(400*time.Millisecond, signals.Heartbeat, false)
	s.signal(500*time.Millisecond, signals.Heartbeat, true)
	s.signal(600*time.Millisecond, signals.PermissionResponse, map[string]any{"request_id": "r1", "option_id": "allow", "actor_user_id": 42, "extra": 1})
	var conv signals.Conversation
	s.env.RegisterDelayedCallback(func() { conv = s.conversation() }, 2*time.Second)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())

	s.Require().Len(conv.Pending, 2, "the second m-1 was dropped")
	s.Equal(signals.Message{Message: "also fix the docs", ArtifactIDs: []string{"a1"}, MessageID: "m-1", ActorUserID: "42",
		Context: []byte(`{"source":"slack"}`)}, conv.Pending[0])
	s.Equal(signals.Message{Message: "use tabs", MessageID: "m-2", ActorUserID: "u-7", Steer: true}, conv.Pending[1])
	s.Equal(1, conv.Duplicates)
	s.Equal(2, conv.Heartbeats)
	s.True(conv.AgentActive)
	s.Require().Len(conv.Permissions, 1)
	s.Equal("r1", conv.Permissions[0].RequestID)
	s.Equal("allow", conv.Permissions[0].OptionID)
	s.Equal("42", conv.Permissions[0].ActorUserID)

	var messages []string
	for _, n := range *notes {
		if strings.Contains(n.Message, "not answered") {
			messages = append(messages, n.Key+": "+n.Message)
		}
	}
	s.Equal([]string{
		`message-m-1: follow-up message "m-1" received; not answered: this run is in background mode, which ends with the agent's one turn (follow-ups are answered by interactive runs)`,
		`message-m-2: steering message "m-2" received; not answered: this run is in background mode, which ends with the agent's one turn (follow-ups are answered by interactive runs)`,
	}, messages)
	s.requireOneFinish(tasksapi.StatusCompleted)
}

func (s *workflowSuite) TestSteeringProtocolVersionIsOne() {
	s.signalling()
	s.happyPath()
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	v, err := s.env.QueryWorkflow(signals.SteeringProtocolVersionQuery)
	s.Require().NoError(err)
	var version int
	s.Require().NoError(v.Get(&version))
	s.Equal(1, version)
}

// Without the package's converter only the first argument is read: the
// reason is lost, which is why every client of the worker uses it.
func (s *workflowSuite) TestWithoutTheConverterOnlyTheFirstArgumentIsRead() {
	s.env.SetDataConverter(converter.GetDefaultDataConverter())
	s.env.OnActivity("Note", mock.Anything, mock.Anything).Return(nil).Maybe()
	agent := &agentUntilStopped{}
	s.steps(map[string][]any{"RunAgent": {agent.run}})
	s.env.RegisterDelayedCallback(func() {
		// What a multi-argument signal's payloads decode to under the default converter.
		s.env.SignalWorkflow(signals.CompleteTask, "cancelled")
	}, time.Second)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	var res Result
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(tasksapi.StatusCancelled, res.Status)
	s.Empty(res.ErrorMessage)
}
