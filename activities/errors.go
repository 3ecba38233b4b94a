package activities

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/fence"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Error types the workflow sees in ApplicationError.Type().
const (
	// ErrInvalidInput is any failure no retry fixes (permanent): bad
	// input, a spent budget. The name stays, as recorded histories carry it.
	ErrInvalidInput     = "InvalidInput"
	ErrTasksAPI         = "TasksAPIError"
	ErrTasksAPIResponse = "TasksAPIInvalidResponse"
	ErrGit              = "GitError"
	ErrAgentNotStarted  = "AgentNotStarted"
	ErrAgentFailed      = "AgentFailed"
	ErrAgentTimeout     = "AgentTimeout"
	ErrRunAlreadyEnded  = "RunAlreadyEnded"
	ErrWorkerBusy       = "WorkerBusy"
	ErrPullRequest      = "PullRequestError"
	ErrAttemptFenced    = "AttemptFenced"
	// ErrHostLost ends an interactive run whose worker was lost after a
	// turn: its conversation was on that worker.
	ErrHostLost = "HostLost"
	// errTransient is every other failure: retried, as it may be passing.
	errTransient = "Error"
)

// permanentError is a failure no retry will fix: bad input, a spent
// budget, a result that breaks the task's schema.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func permanent(format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...)}
}

// pullRequestError is a pull request that couldn't be opened, with
// TASKWORKER_PR_STRICT: GitHub's answer kept, so that a refusal is final and
// an outage is retried.
type pullRequestError struct {
	err    error
	branch string
}

func (e *pullRequestError) Error() string {
	return fmt.Sprintf("%v (the branch %s is pushed)", e.err, e.branch)
}

func (e *pullRequestError) Unwrap() error { return e.err }

// agentTimeoutError is an agent stopped because it ran past its timeout.
type agentTimeoutError struct{ after string }

func (e *agentTimeoutError) Error() string {
	return "agent did not finish within " + e.after + " and was stopped; raise TASKWORKER_AGENT_TIMEOUT or narrow the task"
}

// EntriesLost is how many log entries the step that failed with err lost.
func EntriesLost(err error) int {
	var dropped int
	var appErr *temporal.ApplicationError
	var canceled *temporal.CanceledError
	switch {
	case errors.As(err, &appErr) && appErr.HasDetails():
		_ = appErr.Details(&dropped)
	case errors.As(err, &canceled) && canceled.HasDetails():
		_ = canceled.Details(&dropped)
	}
	return dropped
}

// temporalError turns an error of internal/ into the error Temporal sees:
// its message redacted, its type the kind of failure, and retryable only when
// a retry may succeed. The cause is not attached, so no unredacted text
// reaches the workflow history. lost, when given, is how many log entries the
// step lost, for the workflow to add up (EntriesLost).
//
// A call is retried at one level. A Tasks API call the client sent once is
// the step's policy's to retry, its next attempt no sooner than the API's
// Retry-After (RetryNoSoonerThanPolicy keeps it no sooner than the policy's
// own backoff either); one the client already retried (a host step's, whose
// step is not retried for it) is final, and so is a pull request GitHub's
// client gave up on.
func (a *Activities) temporalError(err error, lost ...int) error {
	if err == nil {
		return nil
	}
	var details []any
	for _, n := range lost {
		details = append(details, n)
	}
	if errors.Is(err, context.Canceled) {
		if len(details) == 0 {
			return err
		}
		return temporal.NewCanceledError(details...)
	}
	return a.kindOf(err, details)
}

func (a *Activities) kindOf(err error, details []any) error {
	var (
		apiErr     *tasksapi.APIError
		decodeErr  *tasksapi.DecodeError
		gitErr     *gitrepo.Error
		startErr   *process.StartError
		exitErr    *agent.ExitError
		resultErr  *agent.ResultError
		prErr      *pullRequestError
		inErr      *permanentError
		endedErr   *runEndedError
		timeoutErr *agentTimeoutError
		stoppedErr *workerStoppedError
		netErr     *tasksapi.NetworkError
		appErr     *temporal.ApplicationError
	)
	if errors.As(err, &appErr) {
		return err
	}
	errType, final, after := errTransient, false, time.Duration(0)
	switch {
	case errors.As(err, &endedErr):
		errType, final = ErrRunAlreadyEnded, true
	case fence.Fenced(err):
		errType, final = ErrAttemptFenced, true
	case errors.As(err, &inErr):
		errType, final = ErrInvalidInput, true
	case errors.As(err, &apiErr):
		errType, final, after = ErrTasksAPI, !apiErr.Retryable() || apiErr.Attempts > 1, apiErr.RetryAfter
	case errors.As(err, &netErr):
		final = netErr.Attempts > 1
	case errors.As(err, &decodeErr):
		errType, final = ErrTasksAPIResponse, true
	case errors.As(err, &startErr):
		errType, final = ErrAgentNotStarted, true
	case errors.As(err, &exitErr), errors.As(err, &resultErr):
		// The agent ran and failed (or reported it failed): running it again
		// would act on a half-changed tree and repeat what it did.
		errType, final = ErrAgentFailed, true
	case errors.As(err, &timeoutErr):
		errType, final = ErrAgentTimeout, true
	case errors.As(err, &stoppedErr):
		// Final here: the workflow starts the host phase over elsewhere.
		errType, final = ErrWorkerStopped, true
	case errors.As(err, &prErr):
		// GitHub's client retried what a retry may fix (see package github):
		// running Publish again would push and ask GitHub all over.
		errType, final = ErrPullRequest, true
	case errors.As(err, &gitErr):
		errType, final = ErrGit, gitErr.NotFound()
	}
	if final {
		after = 0
	}
	return temporal.NewApplicationErrorWithOptions(a.Redactor.String(err.Error()), errType,
		temporal.ApplicationErrorOptions{NonRetryable: final, Details: details, NextRetryDelay: after})
}

// RetryNoSoonerThanPolicy is a step's error with its next attempt no sooner
// than its retry policy's backoff. The SDK waits a NextRetryDelay instead of
// that backoff, also when it is shorter: a Tasks API that answers
// "Retry-After: 1" through an outage would spend the step's attempts in as
// many seconds. ctx is the step's; other errors are returned as they are.
func RetryNoSoonerThanPolicy(ctx context.Context, err error) error {
	appErr, ok := err.(*temporal.ApplicationError)
	if !ok || appErr.Type() != ErrTasksAPI || appErr.NextRetryDelay() == 0 || !activity.IsActivity(ctx) {
		return err
	}
	info := activity.GetInfo(ctx)
	if info.RetryPolicy == nil || appErr.NextRetryDelay() >= policyBackoff(info.RetryPolicy, info.Attempt) {
		return err
	}
	var details []any
	var lost int
	if appErr.HasDetails() && appErr.Details(&lost) == nil {
		details = []any{lost}
	}
	return temporal.NewApplicationErrorWithOptions(appErr.Message(), appErr.Type(),
		temporal.ApplicationErrorOptions{NonRetryable: appErr.NonRetryable(), Details: details})
}

// policyBackoff is the wait p sets after attempt, as the SDK and the server
// compute it.
func policyBackoff(p *temporal.RetryPolicy, attempt int32) time.Duration {
	d := time.Duration(float64(p.InitialInterval) * math.Pow(max(p.BackoffCoefficient, 1), float64(attempt-1)))
	if p.MaximumInterval > 0 && (d > p.MaximumInterval || d <= 0) {
		d = p.MaximumInterval
	}
	return d
}

// refusedForGood reports an answer of the Tasks API that no retry changes
// and that leaves the run out of reach: 401, 403, 404.
func refusedForGood(err error) bool {
	var apiErr *tasksapi.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return true
	}
	return false
}
