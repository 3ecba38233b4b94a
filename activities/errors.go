package activities

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"go.temporal.io/sdk/temporal"

	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/fence"
	"github.com/taskworker/taskworker/internal/github"
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
		ghErr      *github.Error
		inErr      *permanentError
		endedErr   *runEndedError
		timeoutErr *agentTimeoutError
		stoppedErr *workerStoppedError
		appErr     *temporal.ApplicationError
	)
	if errors.As(err, &appErr) {
		return err
	}
	errType, final := errTransient, false
	switch {
	case errors.As(err, &endedErr):
		errType, final = ErrRunAlreadyEnded, true
	case fence.Fenced(err):
		errType, final = ErrAttemptFenced, true
	case errors.As(err, &inErr):
		errType, final = ErrInvalidInput, true
	case errors.As(err, &apiErr):
		errType, final = ErrTasksAPI, !apiErr.Retryable()
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
		errType, final = ErrPullRequest, errors.As(err, &ghErr) && ghErr.Permanent()
	case errors.As(err, &gitErr):
		errType, final = ErrGit, gitErr.NotFound()
	}
	return temporal.NewApplicationErrorWithOptions(a.Redactor.String(err.Error()), errType,
		temporal.ApplicationErrorOptions{NonRetryable: final, Details: details})
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
