package workflows

import (
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/runstate"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Result is what a run ended with.
type Result struct {
	Status       tasksapi.Status `json:"status"`
	Branch       string          `json:"branch,omitempty"`
	CommitSHA    string          `json:"commit_sha,omitempty"`
	Artifacts    []string        `json:"artifacts,omitempty"`
	ErrorMessage string          `json:"error_message,omitempty"`
	// LogDropped is how many log entries the run lost (0 in every normal case).
	LogDropped int `json:"log_dropped"`
	// Turns is how many turns of the agent's the run published: 1 for a
	// background run, one more for each follow-up an interactive run answered.
	Turns int `json:"turns,omitempty"`
	// Inactive is true when an interactive run ended after its inactivity
	// timeout without a message.
	Inactive bool `json:"inactive,omitempty"`
	// PullRequest is the URL of the run's pull request, when it has one.
	PullRequest string `json:"pull_request,omitempty"`
	// CIRounds is how many times the run waited for its pull request's checks.
	CIRounds int `json:"ci_rounds,omitempty"`
}

// ErrRunFailed is the workflow error type of a run that ended failed.
const ErrRunFailed = "RunFailed"

// Timeouts and retries of the steps. The agent is never retried: a second
// attempt would act on a half-changed tree and repeat its side effects.
const (
	apiStepTimeout = time.Minute
	// apiRetryWindow bounds an API step's attempts together. A local
	// activity's is its StartToCloseTimeout unless set: one minute of
	// retries in all, whatever its policy says.
	apiRetryWindow = 5 * time.Minute
	// finishRetryWindow is FinishRun's: a Tasks API down for a day still
	// gets the run's terminal PATCH once it is back.
	finishRetryWindow   = 24 * time.Hour
	hostStepTimeout     = 15 * time.Minute
	heartbeatTimeout    = 60 * time.Second
	hostScheduleToStart = 2 * time.Minute
	agentGrace          = 10 * time.Minute // the step outlives its agent by its final log flush
)

// Changes of the workflow's shape, for workflow.GetVersion: a run started by
// an older build replays the shape it was recorded with. Every change of the
// commands the workflow issues, or of their order, gets one from now on.
const (
	// Publish waits for its cancellation before the workspace is removed.
	publishWaitsForCancellation = "publish-waits-for-cancellation"
	// PostHog's signals are acted on: complete_task stops the run, a
	// message is noted in the run's log.
	handlesSignals = "handles-signals"
	// Interactive runs answer follow-ups; a background run notes the
	// messages it got once it knows its mode.
	interactiveRuns = "interactive-runs"
)

var nonRetryable = []string{
	activities.ErrInvalidInput, activities.ErrAgentNotStarted, activities.ErrAgentFailed,
	activities.ErrAgentTimeout, activities.ErrRunAlreadyEnded, activities.ErrTasksAPIResponse,
	activities.ErrAttemptFenced,
}

// apiOptions are StartRun's (and the base of the claim's, Note's and
// FinishRun's). The policy is the one level of retries of the step's Tasks
// API calls: the client sends each once, and a retry of the step sends its
// three idempotent calls again (its entry under the same event_id). The
// next attempt waits the policy's backoff, or the API's Retry-After when
// longer. Worst case: 20 attempts of up to a minute, 1 s doubling to 10 s
// apart (a Retry-After up to a minute), all within apiRetryWindow: about 3
// minutes of an API that is down and says nothing; 20 requests in such an
// outage, else 3 an attempt and the appends of its entry. Enough
// attempts that three calls that each fail one time in four (the
// reliability suite's faults) get through: 1 in 80,000 runs fails.
func apiOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: apiStepTimeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second,
			MaximumAttempts: 20, NonRetryableErrorTypes: nonRetryable,
		},
	}
}

// localOptions are for the API steps that run in the workflow's own worker
// as local activities: no trip through the server's task queues, which on
// the critical path from kick-off to agent cost more than the calls.
func localOptions() workflow.LocalActivityOptions {
	api := apiOptions()
	return workflow.LocalActivityOptions{StartToCloseTimeout: api.StartToCloseTimeout,
		ScheduleToCloseTimeout: apiRetryWindow, RetryPolicy: api.RetryPolicy}
}

func hostOptions(queue string, run activities.RunContext) workflow.ActivityOptions {
	beat, start := heartbeatTimeout, hostScheduleToStart
	if run.HeartbeatTimeout > 0 {
		// A lost host is noticed within this much: no heartbeat from a step
		// it runs, or no poll for a step waiting on its queue.
		beat, start = run.HeartbeatTimeout, run.HeartbeatTimeout
	}
	return workflow.ActivityOptions{
		TaskQueue:              queue,
		ScheduleToStartTimeout: start,
		StartToCloseTimeout:    hostStepTimeout,
		HeartbeatTimeout:       beat,
		// The one level of retries of what fails a host step but its Tasks
		// API calls (the client retries those, see the worker) and its pull
		// request (GitHub's client): git's network (the push), a transient
		// error of the worker's, a step that timed out. Publish's attempt does
		// all its work again, its push counted as done when already on the
		// remote. Worst case: 6 attempts of up to hostStepTimeout, 1 s
		// doubling to 16 s apart (31 s of waits in all).
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute,
			MaximumAttempts: 6, NonRetryableErrorTypes: nonRetryable,
		},
	}
}

// ProcessTask runs one task run: start it, clone, run the agent, publish,
// upload artifacts, and end with exactly one terminal PATCH on every path.
func ProcessTask(ctx workflow.Context, in Input) (Result, error) {
	logger := workflow.GetLogger(ctx)
	taskID, runID, err := resolveRun(in, workflow.GetInfo(ctx).WorkflowExecution.ID)
	if err != nil {
		logger.Error("cannot identify the run", "error", err)
		return Result{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrInvalidInput, nil)
	}
	ref := activities.RunRef{TaskID: taskID, RunID: runID}
	conv, err := listen(ctx, ref)
	if err != nil {
		return Result{}, err
	}
	conv.keepInitial(in)
	defer conv.settle(ctx)

	var run activities.RunContext
	err = workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, localOptions()), activities.StartRunName, ref).Get(ctx, &run)
	if err != nil {
		if errorType(err) == activities.ErrRunAlreadyEnded {
			// Someone else ended it (cancelled from the UI, say): leave its status alone.
			logger.Info("run already ended", "reason", errorMessage(err))
			return Result{ErrorMessage: errorMessage(err)}, nil
		}
		conv.finishing = true
		return finish(ctx, ref, Result{LogDropped: activities.EntriesLost(err)}, err)
	}
	run.CreatePR = in.CreatePR
	conv.started(ctx, run.Interactive())

	// The run's own deadline, inside the workflow, so that a run that takes
	// too long still gets its terminal PATCH.
	workCtx, cancelWork := workflow.WithCancel(ctx)
	conv.stopWork = cancelWork
	if conv.ended != nil {
		// Ended from outside while it was being started.
		cancelWork()
	}
	timerCtx, cancelTimer := workflow.WithCancel(ctx)
	timedOut := false
	workflow.Go(timerCtx, func(c workflow.Context) {
		if workflow.NewTimer(c, run.RunTimeout).Get(c, nil) == nil {
			timedOut = true
			cancelWork()
		}
	})
	res, err := hostWork(ctx, workCtx, run, conv, conv.initialMessage())
	if err == nil {
		res, err = watchChecks(ctx, workCtx, run, conv, res)
	}
	res.LogDropped += run.LogDropped
	cancelTimer()
	if conv.ended != nil {
		// The API holds the status it was ended with: the workflow writes none over it.
		return conv.endedOutside(ctx, res)
	}
	if err != nil && timedOut && ctx.Err() == nil {
		err = temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("run did not finish within %s and was stopped; raise TASKWORKER_RUN_TIMEOUT or narrow the task", run.RunTimeout),
			"RunTimeout", nil)
	}
	if hostLost(err) && run.Interactive() && res.Turns > 0 {
		err = temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"the worker holding this interactive run (its workspace and the agent's conversation) stopped answering after turn %d (%s); the conversation can't go on elsewhere: start a new run to continue from branch %s",
			res.Turns, errorMessage(err), run.Branch), activities.ErrHostLost, nil)
	}
	if errorType(err) == activities.ErrRunAlreadyEnded {
		// Ended elsewhere (cancelled from the UI): the agent was stopped,
		// and the status someone else set stays.
		workflow.GetLogger(ctx).Info("run ended elsewhere", "reason", errorMessage(err))
		return res, nil
	}
	conv.finishing = true
	return finish(ctx, ref, res, err)
}

// hostWork runs the host phase, and again on another worker when the one
// running it is lost, as often as the run's HostAttempts allow; message is
// the user's (or the checks') told the agent after the task. Notes go
// through ctx, the steps through work.
func hostWork(ctx, work workflow.Context, run activities.RunContext, conv *conversation, message string) (Result, error) {
	var res Result
	var err error
	dropped := 0
	attempts := max(run.HostAttempts, 1)
	for attempt := 1; ; attempt++ {
		// Each attempt's steps carry its number and record it on the run, so
		// that the steps of an attempt given up for lost, on a worker that
		// is only cut off from Temporal, learn they were superseded.
		run.HostAttempt = attempt
		res, err = hostPhase(work, run, conv, message)
		dropped += res.LogDropped
		// An interactive run's conversation stays with the worker that had
		// it: once a turn is published, the run is not started over.
		if err == nil || !hostLost(err) || work.Err() != nil || attempt >= attempts || (run.Interactive() && res.Turns > 0) {
			break
		}
		// The worker holding the workspace is gone: start the host phase
		// over on another one, and say so in the run's log.
		note(ctx, run.RunRef, fmt.Sprintf("host-lost-%s%d", roundKey(run), attempt), acp.LevelWarn, fmt.Sprintf("the worker running this run stopped answering (%s); starting over on another worker, attempt %d of %d",
			errorMessage(err), attempt+1, attempts))
	}
	res.LogDropped = dropped
	return res, err
}

// hostLost reports a host step that timed out waiting for its worker: no
// heartbeat, or no worker polling its queue. The host is gone. So is one that
// stopped the step itself on its way out (a drain that ran out of time).
func hostLost(err error) bool {
	if errorType(err) == activities.ErrWorkerStopped {
		return true
	}
	var timeoutErr *temporal.TimeoutError
	if !errors.As(err, &timeoutErr) {
		return false
	}
	switch timeoutErr.TimeoutType() {
	case enumspb.TIMEOUT_TYPE_HEARTBEAT, enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START:
		return true
	}
	return false
}

// note writes a console entry in the run's log; a failure to write it is
// logged, never fatal. key tells it from the run's other notes.
func note(ctx workflow.Context, ref activities.RunRef, key, level, message string) {
	opts := localOptions()
	// Its append is retried by its log stream, until 2 s before its
	// deadline; the policy retries the rest (a lost worker, say): 3
	// attempts of up to a minute, 1 s and 2 s apart.
	opts.RetryPolicy.MaximumAttempts = 3
	if err := workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, opts), activities.NoteName,
		activities.NoteInput{RunRef: ref, Level: level, Message: message, Key: key}).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("run log note not written", "error", err)
	}
}

// hostPhase runs the steps that use the workspace, all on the queue of the
// worker that claimed the run, and always removes the workspace afterwards.
// An interactive run holds the workspace, and its slot, between turns.
func hostPhase(ctx workflow.Context, run activities.RunContext, conv *conversation, message string) (res Result, err error) {
	queue, err := claimHost(ctx, run)
	if err != nil {
		return res, err
	}
	cleaned := false
	defer func() {
		// A lost host has no one to clean up after it on its queue.
		if !cleaned && !hostLost(err) {
			cleanup(ctx, queue, run.RunRef)
		}
	}()

	// Every step reports the log entries it lost, also when it fails.
	step := func(ctx workflow.Context, activity, in any, out interface{ Lost() int }) error {
		err := workflow.ExecuteActivity(ctx, activity, in).Get(ctx, out)
		if err != nil {
			res.LogDropped += activities.EntriesLost(err)
			return err
		}
		res.LogDropped += out.Lost()
		return nil
	}

	agentOpts := hostOptions(queue, run)
	agentOpts.StartToCloseTimeout = run.AgentTimeout + agentGrace
	// The agent is stopped before its workspace is removed and the run is
	// marked cancelled: every step cleanup follows waits for its cancellation.
	agentOpts.WaitForCancellation = true
	agentOpts.RetryPolicy.MaximumAttempts = 1
	agentCtx := workflow.WithActivityOptions(ctx, agentOpts)

	var pubCtx workflow.Context
	publish := func(ws activities.Workspace, agentOut activities.AgentOutput, turn int) (activities.PublishOutput, error) {
		var pub activities.PublishOutput
		if err := step(pubCtx, activities.PublishName, activities.PublishInput{Run: run, Workspace: ws, Agent: agentOut, Turn: turn}, &pub); err != nil {
			return pub, err
		}
		res.Branch, res.CommitSHA, res.Artifacts = pub.Branch, pub.CommitSHA, pub.Artifacts
		if pub.PullRequest != "" {
			res.PullRequest = pub.PullRequest
		}
		res.Turns = turn
		return pub, nil
	}

	conv.turnBegins(1)
	var agentOut activities.AgentOutput
	if err = step(agentCtx, activities.RunAgentName, activities.AgentInput{Run: run, Message: message}, &agentOut); err != nil {
		return res, err
	}
	// Its version is read where it always was, after the agent: recorded
	// histories have its marker there.
	pubOpts := hostOptions(queue, run)
	if workflow.GetVersion(ctx, publishWaitsForCancellation, workflow.DefaultVersion, 1) >= 1 {
		// The workspace is removed and the run finished only once Publish
		// has stopped pushing, opening the pull request and uploading.
		pubOpts.WaitForCancellation = true
	}
	pubCtx = workflow.WithActivityOptions(ctx, pubOpts)
	pub, err := publish(agentOut.Workspace, agentOut, 1)
	if err != nil {
		return res, err
	}
	if !run.Interactive() {
		// The last step removed the workspace itself, saving a step.
		cleaned = pub.Cleaned
		return res, nil
	}

	ws, session := agentOut.Workspace, agentOut.Session
	for turn := 2; ; turn++ {
		if pub.Changed {
			ws.PublishedSHA = pub.CommitSHA
		}
		msg, end := conv.await(ctx, run, turn-1)
		switch end {
		case waitInactive:
			res.Inactive = true
			return res, nil
		case waitEnded:
			return res, nil
		case waitStopped:
			return res, ctx.Err()
		}
		conv.turnBegins(turn)
		var turnOut activities.AgentOutput
		if err = step(agentCtx, activities.RunTurnName, activities.TurnInput{Run: run, Workspace: ws,
			Turn: agent.Turn{Number: turn, Message: msg.Message, Session: session, Keep: true}}, &turnOut); err != nil {
			return res, err
		}
		if turnOut.Session != "" {
			session = turnOut.Session
		}
		if pub, err = publish(ws, turnOut, turn); err != nil {
			return res, err
		}
	}
}

// claimHost finds the worker that will hold the run's workspace: first the
// one running this workflow task, in place; if it is full, any worker with a
// free slot, waiting for one for as long as the run may live.
func claimHost(ctx workflow.Context, run activities.RunContext) (string, error) {
	var queue string
	here := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	err := workflow.ExecuteLocalActivity(here, activities.ClaimHostName, run).Get(ctx, &queue)
	if err == nil || errorType(err) != activities.ErrWorkerBusy {
		return queue, err
	}
	claim := apiOptions()
	claim.ScheduleToCloseTimeout = run.RunTimeout
	claim.RetryPolicy.MaximumAttempts = 0
	claim.RetryPolicy.MaximumInterval = 5 * time.Second
	err = workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, claim), activities.ClaimHostName, run).Get(ctx, &queue)
	return queue, err
}

func cleanup(ctx workflow.Context, queue string, ref activities.RunRef) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	opts := hostOptions(queue, activities.RunContext{})
	opts.ScheduleToStartTimeout = time.Minute
	opts.StartToCloseTimeout = time.Minute
	if err := workflow.ExecuteActivity(workflow.WithActivityOptions(dctx, opts), activities.CleanupWorkspaceName, ref).Get(dctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("workspace not removed", "error", err)
	}
}

// finish writes the terminal status. It runs on a disconnected context so a
// cancelled run is still recorded, and retries until the API answers.
func finish(ctx workflow.Context, ref activities.RunRef, res Result, cause error) (Result, error) {
	in := activities.FinishInput{RunRef: ref, LogDropped: res.LogDropped}
	if res.Turns > 1 {
		in.Output = map[string]any{"turns": res.Turns}
	}
	if res.Inactive {
		in.State = map[string]any{runstate.KeyTimedOutInactivity: true}
	}
	switch {
	case cause == nil:
		in.Status = tasksapi.StatusCompleted
	case ctx.Err() != nil:
		in.Status = tasksapi.StatusCancelled
	default:
		in.Status = tasksapi.StatusFailed
		in.ErrorMessage = errorMessage(cause)
	}
	res.Status, res.ErrorMessage = in.Status, in.ErrorMessage

	dctx, _ := workflow.NewDisconnectedContext(ctx)
	opts := localOptions()
	// The one level of retries of FinishRun's calls, as StartRun's, but for
	// as long as finishRetryWindow: attempts of up to a minute (its entry's
	// flush then its terminal PATCH), 1 s doubling to a minute apart (a
	// Retry-After up to a minute); through a day of outage, an attempt
	// about every minute and a half, each 2 requests and its entry's
	// appends. Only the API's refusal (401/403/404) ends them sooner.
	opts.ScheduleToCloseTimeout = finishRetryWindow
	opts.RetryPolicy.MaximumAttempts = 0
	opts.RetryPolicy.MaximumInterval = time.Minute
	opts.RetryPolicy.NonRetryableErrorTypes = nil
	if err := workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(dctx, opts), activities.FinishRunName, in).Get(dctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("terminal status not recorded", "status", in.Status, "error", err)
		reason := string(in.Status)
		if in.ErrorMessage != "" {
			reason += ": " + in.ErrorMessage
		}
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("run ended %s; its status could not be recorded: %s", reason, errorMessage(err)), ErrRunFailed, nil)
	}
	switch in.Status {
	case tasksapi.StatusCancelled:
		return res, temporal.NewCanceledError()
	case tasksapi.StatusFailed:
		return res, temporal.NewNonRetryableApplicationError(in.ErrorMessage, ErrRunFailed, nil)
	}
	return res, nil
}

// errorMessage turns a step's error into the run's error_message: the message of
// the step's own error, or which step timed out.
func errorMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	var timeoutErr *temporal.TimeoutError
	if errors.As(err, &timeoutErr) {
		step := "a step"
		var actErr *temporal.ActivityError
		if errors.As(err, &actErr) {
			step = "step " + actErr.ActivityType().GetName()
		}
		return fmt.Sprintf("%s timed out (%s): the worker running it stopped responding or it ran too long", step, timeoutErr.TimeoutType())
	}
	return err.Error()
}

func errorType(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Type()
	}
	return ""
}
