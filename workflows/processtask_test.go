package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"github.com/stretchr/testify/suite"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

const (
	taskID = "0b6f3c1e-8a3f-4a51-9d7e-2f4b1c9a7e10"
	runID  = "5d2e9f80-1c4b-4e7a-a3b2-6c8d9e0f1a2b"
)

type workflowSuite struct {
	suite.Suite
	testsuite.WorkflowTestSuite
	env      *testsuite.TestWorkflowEnvironment
	finished []activities.FinishInput
}

func TestProcessTask(t *testing.T) { suite.Run(t, new(workflowSuite)) }

func (s *workflowSuite) SetupTest() {
	s.env = s.NewTestWorkflowEnvironment()
	acts := &activities.Activities{}
	for _, steps := range []map[string]any{activities.SharedActivities(acts), activities.HostActivities(acts)} {
		for name, fn := range steps {
			s.env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
		}
	}
	s.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: kickoff.WorkflowID(taskID, runID)})
	s.finished = nil
}

func (s *workflowSuite) recordFinish(_ context.Context, in activities.FinishInput) error {
	s.finished = append(s.finished, in)
	return nil
}

func (s *workflowSuite) runContext() activities.RunContext {
	return activities.RunContext{
		RunRef: activities.RunRef{TaskID: taskID, RunID: runID}, Title: "Fix it", Repository: "acme/app",
		Slug: "TSK-1", AgentTimeout: time.Minute, RunTimeout: time.Hour,
	}
}

// steps mocks every step as succeeding, except those given in override
// (activity name → what it returns: a function or the return values).
func (s *workflowSuite) steps(override map[string][]any) {
	defaults := map[string][]any{
		"StartRun":  {s.runContext(), nil},
		"ClaimHost": {"host-queue", nil},
		"RunAgent":  {activities.AgentOutput{Workspace: activities.Workspace{Root: "/w", RepoDir: "/w/repo", BaseSHA: "base"}, Summary: "done"}, nil},
		"Publish": {activities.PublishOutput{Changed: true, Branch: "posthog/task-TSK-1", CommitSHA: "abc", BaseSHA: "base",
			Artifacts: []string{"plan.md"}}, nil},
		"RunTurn":          {activities.AgentOutput{}, nil},
		"CheckCI":          {activities.CIStatus{State: "success", Done: true}, nil},
		"CleanupWorkspace": {nil},
		"FinishRun":        {s.recordFinish},
	}
	for name, ret := range defaults {
		if o, ok := override[name]; ok {
			ret = o
		}
		s.env.OnActivity(name, mock.Anything, mock.Anything).Return(ret...).Maybe()
	}
}

func (s *workflowSuite) happyPath() { s.steps(nil) }

func (s *workflowSuite) requireOneFinish(status tasksapi.Status) activities.FinishInput {
	s.Require().Len(s.finished, 1, "exactly one terminal PATCH")
	s.Require().Equal(status, s.finished[0].Status)
	return s.finished[0]
}

func (s *workflowSuite) TestSuccess() {
	s.happyPath()
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: true})
	s.Require().True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	var res Result
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(tasksapi.StatusCompleted, res.Status)
	s.Equal("posthog/task-TSK-1", res.Branch)
	s.Equal([]string{"plan.md"}, res.Artifacts)
	fin := s.requireOneFinish(tasksapi.StatusCompleted)
	s.Equal(taskID, fin.TaskID, "task_id comes from the workflow ID when the input has none")
	for _, step := range []string{"StartRun", "ClaimHost", "RunAgent", "Publish", "CleanupWorkspace"} {
		s.env.AssertCalled(s.T(), step, mock.Anything, mock.Anything)
	}
}

func (s *workflowSuite) TestAgentFailureFailsTheRunWithItsMessage() {
	s.steps(map[string][]any{"RunAgent": {activities.AgentOutput{},
		temporal.NewNonRetryableApplicationError("agent command exited with code 3; last stderr lines: boom", activities.ErrAgentFailed, nil)}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().Error(s.env.GetWorkflowError())
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.Equal("agent command exited with code 3; last stderr lines: boom", fin.ErrorMessage)
	s.env.AssertNotCalled(s.T(), "Publish", mock.Anything, mock.Anything)
	s.env.AssertCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestAFullWorkerPassesTheRunToAnother() {
	claims := 0
	s.steps(map[string][]any{"ClaimHost": {func(context.Context, activities.RunContext) (string, error) {
		claims++
		if claims == 1 {
			return "", temporal.NewApplicationError("worker full", activities.ErrWorkerBusy)
		}
		return "other-host", nil
	}}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(2, claims, "the local claim declined, the claim any worker can take succeeded")
	s.requireOneFinish(tasksapi.StatusCompleted)
}

// noteMessages is where the messages of the notes the workflow writes go.
func (s *workflowSuite) noteMessages() *[]string {
	var notes []string
	s.env.OnActivity("Note", mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.NoteInput) error {
		notes = append(notes, in.Message)
		return nil
	})
	return &notes
}

// failedOnEveryAttempt runs a run of two host attempts whose agent fails
// with err on each, and requires the run failed: its one finish.
func (s *workflowSuite) failedOnEveryAttempt(err error) activities.FinishInput {
	rc := s.runContext()
	rc.HostAttempts = 2
	s.steps(map[string][]any{
		"StartRun": {rc, nil},
		"RunAgent": {activities.AgentOutput{}, err},
	})
	s.env.OnActivity("Note", mock.Anything, mock.Anything).Return(nil)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().Error(s.env.GetWorkflowError())
	return s.requireOneFinish(tasksapi.StatusFailed)
}

func (s *workflowSuite) TestALostHostIsReplacedAndTheRunCompletes() {
	rc := s.runContext()
	rc.HostAttempts = 3
	agentCalls, notes := 0, s.noteMessages()
	var agentAttempts, publishAttempts []int
	s.steps(map[string][]any{
		"StartRun": {rc, nil},
		"RunAgent": {func(_ context.Context, in activities.AgentInput) (activities.AgentOutput, error) {
			agentCalls++
			agentAttempts = append(agentAttempts, in.Run.HostAttempt)
			if agentCalls == 1 {
				return activities.AgentOutput{}, temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil)
			}
			return activities.AgentOutput{Summary: "done"}, nil
		}},
		"Publish": {func(_ context.Context, in activities.PublishInput) (activities.PublishOutput, error) {
			publishAttempts = append(publishAttempts, in.Run.HostAttempt)
			return activities.PublishOutput{}, nil
		}},
	})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(2, agentCalls)
	s.Equal([]int{1, 2}, agentAttempts, "each host attempt's steps carry its number")
	s.Equal([]int{2}, publishAttempts)
	s.Require().Len(*notes, 1)
	s.Contains((*notes)[0], "starting over on another worker, attempt 2 of 3")
	s.requireOneFinish(tasksapi.StatusCompleted)
}

func (s *workflowSuite) TestHostLossOnEveryAttemptFailsTheRun() {
	fin := s.failedOnEveryAttempt(temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START, nil))
	s.Contains(fin.ErrorMessage, "timed out")
	s.env.AssertNotCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestARunEndedElsewhereKeepsItsStatus() {
	s.steps(map[string][]any{"RunAgent": {activities.AgentOutput{},
		temporal.NewNonRetryableApplicationError("run is already cancelled", activities.ErrRunAlreadyEnded, nil)}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Empty(s.finished, "no terminal PATCH over the status the UI set")
	s.env.AssertCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestTheLastHostStepCleansUpAfterItself() {
	s.steps(map[string][]any{"Publish": {activities.PublishOutput{Cleaned: true}, nil}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.env.AssertNotCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestLostLogEntriesAreAddedUpAcrossSteps() {
	rc := s.runContext()
	rc.LogDropped = 1
	s.steps(map[string][]any{
		"StartRun": {rc, nil},
		"RunAgent": {activities.AgentOutput{}, temporal.NewApplicationErrorWithOptions("agent exited with code 1",
			activities.ErrAgentFailed, temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{4}})},
	})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.Equal(5, fin.LogDropped, "StartRun 1 + the failed agent step 4")
}

func (s *workflowSuite) TestCancelStopsTheAgentAndRecordsCancelled() {
	s.steps(map[string][]any{"RunAgent": {blockUntilCancelled}})
	s.env.RegisterDelayedCallback(s.env.CancelWorkflow, time.Second)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	var canceled *temporal.CanceledError
	s.Require().True(errors.As(err, &canceled), "workflow ends cancelled, got %v", err)
	s.env.AssertNotCalled(s.T(), "Publish", mock.Anything, mock.Anything)
	s.requireOneFinish(tasksapi.StatusCancelled)
	s.env.AssertCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
}

// Every step the workspace's cleanup and the terminal PATCH follow waits for
// its cancellation: the agent is stopped, and a push, a pull request or an
// upload is over, before the workspace is removed and the run is marked
// cancelled. (The SDK's test environment reports a cancelled activity as
// cancelled at once, whatever the option says, so the option itself is what
// can be checked here; internal/e2e checks what a real server does with it.)
func (s *workflowSuite) TestEveryStepTheCleanupFollowsWaitsForItsCancellation() {
	scheduled := &scheduledOptions{}
	s.env.SetWorkerOptions(worker.Options{Interceptors: []interceptor.WorkerInterceptor{scheduled}})
	s.happyPath()
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	for _, step := range []string{activities.RunAgentName, activities.PublishName} {
		opts, ok := scheduled.of(step)
		s.Require().True(ok, "%s was scheduled", step)
		s.True(opts.WaitForCancellation, "%s waits for its cancellation", step)
	}
}

// scheduledOptions records the options each activity is scheduled with.
type scheduledOptions struct {
	interceptor.WorkerInterceptorBase
	mu   sync.Mutex
	opts map[string]workflow.ActivityOptions
}

func (r *scheduledOptions) InterceptWorkflow(ctx workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	return &scheduledInbound{WorkflowInboundInterceptorBase: interceptor.WorkflowInboundInterceptorBase{Next: next}, record: r}
}

func (r *scheduledOptions) of(activity string) (workflow.ActivityOptions, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	opts, ok := r.opts[activity]
	return opts, ok
}

type scheduledInbound struct {
	interceptor.WorkflowInboundInterceptorBase
	record *scheduledOptions
}

func (i *scheduledInbound) Init(outbound interceptor.WorkflowOutboundInterceptor) error {
	return i.Next.Init(&scheduledOutbound{WorkflowOutboundInterceptorBase: interceptor.WorkflowOutboundInterceptorBase{Next: outbound}, record: i.record})
}

type scheduledOutbound struct {
	interceptor.WorkflowOutboundInterceptorBase
	record *scheduledOptions
}

func (o *scheduledOutbound) ExecuteActivity(ctx workflow.Context, activityType string, args ...any) workflow.Future {
	o.record.mu.Lock()
	if o.record.opts == nil {
		o.record.opts = map[string]workflow.ActivityOptions{}
	}
	o.record.opts[activityType] = workflow.GetActivityOptions(ctx)
	o.record.mu.Unlock()
	return o.Next.ExecuteActivity(ctx, activityType, args...)
}

func (s *workflowSuite) TestMissingTaskIDFailsWithoutCallingTheAPI() {
	s.happyPath()
	s.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: "some-other-id"})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Contains(err.Error(), "no task_id")
	s.Empty(s.finished)
	s.env.AssertNotCalled(s.T(), "StartRun", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestTaskIDFromInputWins() {
	other := "11111111-2222-3333-4444-555555555555"
	var got activities.RunRef
	s.steps(map[string][]any{"StartRun": {func(_ context.Context, ref activities.RunRef) (activities.RunContext, error) {
		got = ref
		return s.runContext(), nil
	}}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, TaskID: other})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(activities.RunRef{TaskID: other, RunID: runID}, got)
}

func (s *workflowSuite) TestTaskNotFoundFailsTheRun() {
	s.steps(map[string][]any{"StartRun": {activities.RunContext{},
		temporal.NewNonRetryableApplicationError("task "+taskID+" not found in this project", activities.ErrInvalidInput, nil)}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().Error(s.env.GetWorkflowError())
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.Contains(fin.ErrorMessage, "not found")
}

func (s *workflowSuite) TestUnauthorizedAPIIsNotRetriedAndEndsTheWorkflow() {
	calls := 0
	s.steps(map[string][]any{
		"StartRun": {func(context.Context, activities.RunRef) (activities.RunContext, error) {
			calls++
			return activities.RunContext{}, temporal.NewNonRetryableApplicationError(
				"GET /tasks/x/: HTTP 401: Invalid personal API key.; check POSTHOG_PERSONAL_API_KEY", activities.ErrTasksAPI, nil)
		}},
		"FinishRun": {func(_ context.Context, in activities.FinishInput) error {
			s.finished = append(s.finished, in)
			return temporal.NewNonRetryableApplicationError("HTTP 401", activities.ErrTasksAPI, nil)
		}},
	})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Equal(1, calls, "a 401 is not retried")
	s.Contains(err.Error(), "its status could not be recorded")
	s.Len(s.finished, 1, "the terminal PATCH is tried, and not retried on 401")
}

// The terminal PATCH is retried for as long as the API is down, not for
// the minute a local activity's retries last unless told otherwise.
func (s *workflowSuite) TestTheTerminalPATCHIsRetriedPastAMinute() {
	calls := 0
	s.steps(map[string][]any{"FinishRun": {func(ctx context.Context, in activities.FinishInput) error {
		if calls++; calls < 10 { // 1+2+4+8+16+32+60+60+60 s of backoff
			return temporal.NewApplicationError("PATCH: HTTP 503", activities.ErrTasksAPI)
		}
		return s.recordFinish(ctx, in)
	}}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(10, calls)
	s.requireOneFinish(tasksapi.StatusCompleted)
}

func (s *workflowSuite) TestRunAlreadyEndedIsLeftAlone() {
	s.steps(map[string][]any{"StartRun": {activities.RunContext{},
		temporal.NewNonRetryableApplicationError("run is already cancelled", activities.ErrRunAlreadyEnded, nil)}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Empty(s.finished, "no terminal PATCH over a status someone else set")
}

func (s *workflowSuite) TestRunTimeoutFailsTheRunWithATimeoutMessage() {
	rc := s.runContext()
	rc.RunTimeout = time.Second
	s.steps(map[string][]any{"StartRun": {rc, nil}, "RunAgent": {blockUntilCancelled}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().Error(s.env.GetWorkflowError())
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.Contains(fin.ErrorMessage, "did not finish within 1s")
}

// blockUntilCancelled stands for an agent that runs until it is stopped. The
// test environment runs mocked activities in real time, so it also gives up
// after a while rather than hang the test.
func blockUntilCancelled(ctx context.Context, _ activities.AgentInput) (activities.AgentOutput, error) {
	select {
	case <-ctx.Done():
		return activities.AgentOutput{}, ctx.Err()
	case <-time.After(2 * time.Second):
		return activities.AgentOutput{}, temporal.NewCanceledError()
	}
}

func TestResolveRun(t *testing.T) {
	wfID := kickoff.WorkflowID(taskID, runID)
	cases := []struct {
		name, workflowID, wantTask, wantErr string
		in                                  Input
	}{
		{name: "from workflow ID", in: Input{RunID: runID}, workflowID: wfID, wantTask: taskID},
		{name: "from input", in: Input{RunID: runID, TaskID: taskID}, workflowID: "x", wantTask: taskID},
		{name: "no run_id", in: Input{}, workflowID: wfID, wantErr: "no run_id"},
		{name: "run_id not a uuid", in: Input{RunID: "../etc"}, workflowID: wfID, wantErr: "not a UUID"},
		{name: "no task anywhere", in: Input{RunID: runID}, workflowID: "task-processing-nope", wantErr: "no task_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			task, run, err := resolveRun(c.in, c.workflowID)
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.wantTask, task)
			require.Equal(t, runID, run)
		})
	}
}

func TestInputToleratesPostHogsShapes(t *testing.T) {
	cases := map[string]Input{
		`{"run_id":"` + runID + `","create_pr":true,"slack_thread_context":{"x":1}}`: {RunID: runID, CreatePR: true},
		`{"run_id":"` + runID + `","create_pr":"true","task_id":"` + taskID + `"}`:   {RunID: runID, CreatePR: true, TaskID: taskID},
		`{"run_id":42,"create_pr":null}`:                                             {},
		`null`:                                                                       {},
		`[1,2]`:                                                                      {},
	}
	for raw, want := range cases {
		var in Input
		require.NoError(t, in.UnmarshalJSON([]byte(raw)), raw)
		require.Equal(t, want, in, raw)
	}
}
