package workflows

import (
	"context"
	"strings"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/runstate"
	"github.com/taskworker/taskworker/internal/signals"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// interactive is the run context of an interactive run waiting wait after a turn.
func (s *workflowSuite) interactive(wait time.Duration) activities.RunContext {
	rc := s.runContext()
	rc.Settings = runstate.Settings{Mode: runstate.Interactive, Inactivity: wait}
	rc.RunTimeout = 12 * time.Hour
	return rc
}

// turns records the follow-up turns and the publishes of a run.
type turns struct {
	runs      []activities.TurnInput
	publishes []activities.PublishInput
}

func (t *turns) turn(_ context.Context, in activities.TurnInput) (activities.AgentOutput, error) {
	t.runs = append(t.runs, in)
	return activities.AgentOutput{Workspace: in.Workspace, Summary: "turn " + in.Turn.Message, Session: "sess-2"}, nil
}

func (t *turns) publish(_ context.Context, in activities.PublishInput) (activities.PublishOutput, error) {
	t.publishes = append(t.publishes, in)
	sha := "abc"
	if len(t.publishes) > 1 {
		sha = "def"
	}
	return activities.PublishOutput{Changed: true, Branch: "posthog/task-TSK-1", CommitSHA: sha, BaseSHA: "base"}, nil
}

// interactiveSteps mocks the steps of an interactive run, those in override as given.
func (s *workflowSuite) interactiveSteps(rc activities.RunContext, t *turns, override map[string][]any) {
	steps := map[string][]any{
		"StartRun": {rc, nil},
		"RunAgent": {activities.AgentOutput{Workspace: activities.Workspace{Root: "/w", RepoDir: "/w/repo", BaseSHA: "base"},
			Summary: "done", Session: "sess-1"}, nil},
		"RunTurn": {t.turn},
		"Publish": {t.publish},
	}
	for name, ret := range override {
		steps[name] = ret
	}
	s.steps(steps)
}

// endsAt records when the run's workspace is removed, its last step.
func (s *workflowSuite) endsAt(at *time.Time) []any {
	return []any{func(context.Context, activities.RunRef) error {
		*at = s.env.Now()
		return nil
	}}
}

// signalDuring sends name with args as soon as the workflow runs, and
// closes the channel it returns once it has: a step that waits on it is
// running when the signal comes.
func (s *workflowSuite) signalDuring(name string, args ...any) <-chan struct{} {
	sent := make(chan struct{})
	s.env.RegisterDelayedCallback(func() {
		s.env.SignalWorkflow(name, signals.Positional(args))
		close(sent)
	}, time.Millisecond)
	return sent
}

// waitFor waits for ch to close, for a minute at most: a test whose signal
// never came fails on what it asserts instead of hanging.
func waitFor(ch <-chan struct{}) {
	select {
	case <-ch:
	case <-time.After(time.Minute):
	}
}

func notesWith(notes []activities.NoteInput, part string) []string {
	var found []string
	for _, n := range notes {
		if strings.Contains(n.Message, part) {
			found = append(found, n.Message)
		}
	}
	return found
}

func (s *workflowSuite) TestInteractiveRunAnswersAFollowUpInTheSameWorkspaceAndEndsOnCompleteTask() {
	notes := s.signalling()
	t := &turns{}
	s.interactiveSteps(s.interactive(30*time.Minute), t, nil)
	s.signal(time.Minute, signals.FollowUp, "now add a test", nil, "m-1", 42, nil)
	s.signal(5*time.Minute, signals.CompleteTask, "completed", nil)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	var res Result
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(tasksapi.StatusCompleted, res.Status)
	s.Equal(2, res.Turns)
	s.Empty(s.finished, "complete_task's status stands: no terminal PATCH of the workflow's")

	s.Require().Len(t.runs, 1)
	turn := t.runs[0]
	s.Equal(2, turn.Turn.Number)
	s.Equal("now add a test", turn.Turn.Message)
	s.Equal("sess-1", turn.Turn.Session, "the follow-up resumes the first turn's conversation")
	s.True(turn.Turn.Keep)
	s.Equal("/w/repo", turn.Workspace.RepoDir, "in the workspace the first turn made")
	s.Equal("abc", turn.Workspace.PublishedSHA, "on top of what the first turn pushed")
	s.Require().Len(t.publishes, 2, "each turn publishes")
	s.Equal(2, t.publishes[1].Turn)
	s.Equal("abc", t.publishes[1].Workspace.PublishedSHA)
	s.env.AssertNumberOfCalls(s.T(), "CleanupWorkspace", 1)
	s.Len(notesWith(*notes, "turn 1 done; waiting for a follow-up message"), 1)
	s.Len(notesWith(*notes, "turn 2 done; waiting for a follow-up message"), 1)
	s.Equal([]string{"run ended from outside (completed)"}, notesWith(*notes, "ended from outside"))
}

func (s *workflowSuite) TestInteractiveRunEndsCompletedAfterItsInactivityTimeout() {
	notes := s.signalling()
	t := &turns{}
	var endedAt time.Time
	s.interactiveSteps(s.interactive(30*time.Minute), t, map[string][]any{"CleanupWorkspace": s.endsAt(&endedAt)})
	start := s.env.Now()
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	fin := s.requireOneFinish(tasksapi.StatusCompleted)
	s.Equal(map[string]any{runstate.KeyTimedOutInactivity: true}, fin.State, "recorded in state, as PostHog does")
	s.Empty(t.runs)
	waited := endedAt.Sub(start)
	s.GreaterOrEqual(waited, 30*time.Minute)
	s.Less(waited, 31*time.Minute)
	s.Len(notesWith(*notes, "no follow-up message or heartbeat for 30m0s: the run ends"), 1)
}

func (s *workflowSuite) TestHeartbeatsKeepAnInteractiveRunWaiting() {
	s.signalling()
	t := &turns{}
	var endedAt time.Time
	s.interactiveSteps(s.interactive(30*time.Minute), t, map[string][]any{"CleanupWorkspace": s.endsAt(&endedAt)})
	for _, at := range []time.Duration{20 * time.Minute, 40 * time.Minute, 60 * time.Minute} {
		s.signal(at, signals.Heartbeat, true)
	}
	start := s.env.Now()
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.requireOneFinish(tasksapi.StatusCompleted)
	waited := endedAt.Sub(start)
	s.GreaterOrEqual(waited, 90*time.Minute, "30 minutes after the last heartbeat, not after the turn")
	s.Less(waited, 91*time.Minute)
}

func (s *workflowSuite) TestAMessageDuringATurnIsAnsweredByTheNextTurn() {
	notes := s.signalling()
	t := &turns{}
	sent := s.signalDuring(signals.Steer, "use tabs", nil, "m-1", nil, nil)
	s.interactiveSteps(s.interactive(10*time.Minute), t, map[string][]any{"RunAgent": {func(context.Context, activities.AgentInput) (activities.AgentOutput, error) {
		waitFor(sent) // the agent's turn lasts until the steer came
		return activities.AgentOutput{Workspace: activities.Workspace{RepoDir: "/w/repo"}, Session: "sess-1"}, nil
	}}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Require().Len(t.runs, 1, "the steer became the next turn")
	s.Equal("use tabs", t.runs[0].Turn.Message)
	s.Len(notesWith(*notes, `steering message "m-1" received; the agent is in turn 1 and takes no message in the middle of a turn`), 1)
	s.Empty(notesWith(*notes, "turn 1 done; waiting"), "a message was waiting: no wait to announce")
	s.requireOneFinish(tasksapi.StatusCompleted)
}

func (s *workflowSuite) TestTheInitialMessageIsToldWithTheTaskAndNotAnsweredTwice() {
	s.signalling()
	t := &turns{}
	var told activities.AgentInput
	s.interactiveSteps(s.interactive(10*time.Minute), t, map[string][]any{"RunAgent": {func(_ context.Context, in activities.AgentInput) (activities.AgentOutput, error) {
		told = in
		return activities.AgentOutput{Session: "sess-1"}, nil
	}}})
	s.signal(time.Minute, signals.FollowUp, "keep it short", nil, "m-0", nil, nil)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID,
		InitialMessage: &signals.Message{Message: "keep it short", MessageID: "m-0"}})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal("keep it short", told.Message)
	s.Empty(t.runs, "the signal that brought it again was dropped")
	s.Equal(1, s.conversation().Duplicates)
}

func (s *workflowSuite) TestABackgroundRunNotesAMessageThatCameBeforeItKnewItsMode() {
	notes := s.signalling()
	sent := s.signalDuring(signals.FollowUp, "hello?", nil, "m-1", nil, nil)
	s.steps(map[string][]any{"StartRun": {func(context.Context, activities.RunRef) (activities.RunContext, error) {
		waitFor(sent) // the run starts once the message came
		return s.runContext(), nil
	}}})
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Len(notesWith(*notes, `follow-up message "m-1" received; not answered: this run is in background mode`), 1)
	s.requireOneFinish(tasksapi.StatusCompleted)
}

func (s *workflowSuite) TestALostWorkerAfterATurnEndsTheInteractiveRunSayingWhy() {
	s.signalling()
	t := &turns{}
	rc := s.interactive(30 * time.Minute)
	rc.HostAttempts = 3
	s.interactiveSteps(rc, t, map[string][]any{"RunTurn": {activities.AgentOutput{},
		temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)}})
	s.signal(time.Minute, signals.FollowUp, "and the docs", nil, "m-1", nil, nil)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID})
	s.Require().Error(s.env.GetWorkflowError())
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.Contains(fin.ErrorMessage, "the worker holding this interactive run (its workspace and the agent's conversation) stopped answering after turn 1")
	s.Contains(fin.ErrorMessage, "start a new run to continue from branch")
	s.env.AssertNumberOfCalls(s.T(), "RunAgent", 1) // the first turn is not done again elsewhere
	s.env.AssertNotCalled(s.T(), "CleanupWorkspace", mock.Anything, mock.Anything)
}
