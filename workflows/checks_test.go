package workflows

import (
	"context"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/checks"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// ciRun is a background run that watches its pull request's checks.
func (s *workflowSuite) ciRun() activities.RunContext {
	rc := s.runContext()
	rc.CreatePR = true
	rc.WatchCI, rc.CIMaxRounds, rc.CIPollEvery, rc.CITimeout = true, 3, 30*time.Second, time.Hour
	rc.RunTimeout = 12 * time.Hour
	return rc
}

// ciScript plays a pull request whose checks answer polls by the commit polled.
type ciScript struct {
	s       *workflowSuite
	pushes  []string // the commits Publish pushes, in order
	agents  []activities.AgentInput
	polls   []activities.CIInput
	polled  []time.Time
	answers func(in activities.CIInput) activities.CIStatus
	// lost, when set, is the error of the agent steps of the fix rounds.
	lost error
}

func (c *ciScript) agent(_ context.Context, in activities.AgentInput) (activities.AgentOutput, error) {
	c.agents = append(c.agents, in)
	if c.lost != nil && in.Run.CIRound > 1 {
		return activities.AgentOutput{}, c.lost
	}
	return activities.AgentOutput{Workspace: activities.Workspace{RepoDir: "/w/repo", BaseSHA: "base"}, Summary: "done"}, nil
}

func (c *ciScript) publish(_ context.Context, in activities.PublishInput) (activities.PublishOutput, error) {
	sha := c.pushes[min(len(c.agents), len(c.pushes))-1]
	return activities.PublishOutput{Changed: true, Branch: "posthog/task-TSK-1", CommitSHA: sha, BaseSHA: "base",
		PullRequest: "https://github.example/acme/app/pull/1"}, nil
}

func (c *ciScript) poll(_ context.Context, in activities.CIInput) (activities.CIStatus, error) {
	c.polls = append(c.polls, in)
	c.polled = append(c.polled, c.s.env.Now())
	return c.answers(in), nil
}

func (s *workflowSuite) ciSteps(rc activities.RunContext, c *ciScript) {
	c.s = s
	s.steps(map[string][]any{"StartRun": {rc, nil}, "RunAgent": {c.agent}, "Publish": {c.publish}, "CheckCI": {c.poll}})
}

var failingTest = []checks.Check{{Name: "test", Conclusion: "failure", Log: "--- FAIL: TestGreeting: want hello"}}

func (s *workflowSuite) TestFailingChecksGetARoundThatFixesThemAndTheRunCompletesWhenTheyPass() {
	c := &ciScript{pushes: []string{"abc", "def"}, answers: func(in activities.CIInput) activities.CIStatus {
		switch {
		case in.CommitSHA == "abc" && in.Poll == 1:
			return activities.CIStatus{State: checks.Pending}
		case in.CommitSHA == "abc":
			return activities.CIStatus{State: checks.Failure, Done: true, Failing: failingTest}
		}
		return activities.CIStatus{State: checks.Success, Done: true}
	}}
	s.ciSteps(s.ciRun(), c)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: true})
	s.Require().NoError(s.env.GetWorkflowError())
	var res Result
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(2, res.CIRounds)
	s.Equal("def", res.CommitSHA)
	s.requireOneFinish(tasksapi.StatusCompleted)

	s.Require().Len(c.agents, 2, "one round fixed the checks")
	s.Empty(c.agents[0].Message)
	s.Equal(2, c.agents[1].Run.CIRound, "the fix is its own round in the log")
	s.Contains(c.agents[1].Message, "round 1 of 3). Failing checks: test.")
	s.Contains(c.agents[1].Message, "--- FAIL: TestGreeting: want hello", "with the end of the failing check's log")
	s.Require().Len(c.polls, 3)
	s.Equal(30*time.Second, c.polled[1].Sub(c.polled[0]), "polls are a durable timer apart")
	s.Equal(2, c.polls[2].Round)
	s.env.AssertNumberOfCalls(s.T(), "ClaimHost", 2)
	s.env.AssertNumberOfCalls(s.T(), "CleanupWorkspace", 2)
}

func (s *workflowSuite) TestChecksThatNeverPassFailTheRunNamingThemAfterTheLastRound() {
	c := &ciScript{pushes: []string{"a1", "a2", "a3"}, answers: func(activities.CIInput) activities.CIStatus {
		return activities.CIStatus{State: checks.Failure, Done: true, Failing: append(failingTest, checks.Check{Name: "lint", Conclusion: "failure"})}
	}}
	s.ciSteps(s.ciRun(), c)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: true})
	s.Require().Error(s.env.GetWorkflowError())
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.Equal("the pull request's checks still fail after 3 rounds of fixes (TASKWORKER_CI_MAX_ROUNDS): test, lint", fin.ErrorMessage)
	s.Len(c.agents, 3)
	s.Len(c.polls, 3)
}

func (s *workflowSuite) TestACommitNoCheckReportsOnCompletesAfterTheGrace() {
	c := &ciScript{pushes: []string{"abc"}, answers: func(in activities.CIInput) activities.CIStatus {
		return activities.CIStatus{State: checks.None, Done: in.GiveUpOnNone}
	}}
	s.ciSteps(s.ciRun(), c)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: true})
	s.Require().NoError(s.env.GetWorkflowError())
	s.requireOneFinish(tasksapi.StatusCompleted)
	last := c.polled[len(c.polled)-1]
	s.GreaterOrEqual(last.Sub(c.polled[0]), checksAppear)
	s.Len(c.agents, 1)
}

func (s *workflowSuite) TestGitHubsRateLimitPushesTheNextPollToItsReset() {
	var reset time.Time
	c := &ciScript{pushes: []string{"abc"}}
	c.answers = func(in activities.CIInput) activities.CIStatus {
		if in.Poll == 1 {
			reset = c.s.env.Now().Add(10 * time.Minute)
			return activities.CIStatus{State: checks.Pending, WaitUntil: reset}
		}
		return activities.CIStatus{State: checks.Success, Done: true}
	}
	s.ciSteps(s.ciRun(), c)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: true})
	s.Require().NoError(s.env.GetWorkflowError())
	s.Require().Len(c.polled, 2)
	s.False(c.polled[1].Before(reset), "no poll before the reset")
}

func (s *workflowSuite) TestChecksThatKeepRunningFailTheRunAtTheCITimeout() {
	c := &ciScript{pushes: []string{"abc"}, answers: func(activities.CIInput) activities.CIStatus {
		return activities.CIStatus{State: checks.Pending, Pending: []checks.Check{{Name: "e2e", Status: "in_progress"}}}
	}}
	s.ciSteps(s.ciRun(), c)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: true})
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.Equal("the pull request's checks did not finish within 1h0m0s (TASKWORKER_CI_TIMEOUT): e2e still running", fin.ErrorMessage)
}

func (s *workflowSuite) TestARunWithoutAPullRequestOrWatchingDoesNotPoll() {
	for _, rc := range []activities.RunContext{s.runContext(), s.ciRun()} {
		s.SetupTest()
		c := &ciScript{pushes: []string{"abc"}, answers: func(activities.CIInput) activities.CIStatus { return activities.CIStatus{} }}
		s.ciSteps(rc, c)
		s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: false})
		s.Require().NoError(s.env.GetWorkflowError())
		s.Empty(c.polls)
	}
	s.env.AssertNotCalled(s.T(), "CheckCI", mock.Anything, mock.Anything)
}

func (s *workflowSuite) TestAFixRoundWhoseWorkersAreLostFailsAsALostWorkerNotAnInteractiveRun() {
	notes := s.signalling()
	c := &ciScript{pushes: []string{"abc"}, lost: temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil),
		answers: func(activities.CIInput) activities.CIStatus {
			return activities.CIStatus{State: checks.Failure, Done: true, Failing: failingTest}
		}}
	rc := s.ciRun()
	rc.HostAttempts = 2
	s.ciSteps(rc, c)
	s.env.ExecuteWorkflow(ProcessTask, Input{RunID: runID, CreatePR: true})
	fin := s.requireOneFinish(tasksapi.StatusFailed)
	s.NotContains(fin.ErrorMessage, "interactive run")
	s.Contains(fin.ErrorMessage, "step RunAgent timed out (Heartbeat)")
	s.Len(c.agents, 3, "the round was tried on a second worker")
	s.Len(notesWith(*notes, "starting over on another worker, attempt 2 of 2"), 1)
}
