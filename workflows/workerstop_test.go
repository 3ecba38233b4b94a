package workflows

import (
	"context"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// workerStopped is RunAgent's failure when its worker stopped it on its way
// out (a drain that ran out of time).
func workerStopped() error {
	return temporal.NewNonRetryableApplicationError("worker q@a shut down before the agent finished", activities.ErrWorkerStopped, nil)
}

// A worker that stopped its agent on its way out is a lost host: the run
// starts over on another worker, with a note saying why, and no cleanup is
// sent to the worker that is gone (its step removed the workspace itself).
func (s *workflowSuite) TestARunItsWorkerStoppedGoesOnOnAnother() {
	rc := s.runContext()
	rc.HostAttempts = 3
	agentCalls, queues, notes := 0, []string{}, s.noteMessages()
	s.steps(map[string][]any{
		"StartRun": {rc, nil},
		"ClaimHost": {func(context.Context, activities.RunContext) (string, error) {
			queues = append(queues, "q@"+string(rune('a'+len(queues))))
			return queues[len(queues)-1], nil
		}},
		"RunAgent": {func(context.Context, activities.AgentInput) (activities.AgentOutput, error) {
			agentCalls++
			if agentCalls == 1 {
				return activities.AgentOutput{}, workerStopped()
			}
			return activities.AgentOutput{Summary: "done"}, nil
		}},
	})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(2, agentCalls)
	s.Equal([]string{"q@a", "q@b"}, queues)
	s.Require().Len(*notes, 1)
	s.Contains((*notes)[0], "worker q@a shut down before the agent finished")
	s.Contains((*notes)[0], "starting over on another worker, attempt 2 of 3")
	s.requireOneFinish(tasksapi.StatusCompleted)
}

// When every worker the run gets stops it, the run fails saying so.
func (s *workflowSuite) TestARunStoppedOnEveryAttemptFailsSayingWhy() {
	fin := s.failedOnEveryAttempt(workerStopped())
	s.Contains(fin.ErrorMessage, "shut down before the agent finished")
	// AssertNotCalled reports nothing when the activity was called (it asks
	// a throwaway testing.T first); AssertActivityNotCalled does.
	s.env.AssertActivityNotCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
}
