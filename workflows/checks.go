package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/checks"
)

// ErrChecksFailed is the error type of a run whose pull request's checks
// still fail once its rounds are spent.
const ErrChecksFailed = "ChecksFailed"

// checksAppear is how long after a push a commit with no check at all is
// still waited on: CI takes a moment to report that it started.
const checksAppear = 2 * time.Minute

// watchChecks is the CI loop of a background run that opened or updated a
// pull request: it waits for the checks of the commit it pushed, and while
// they fail starts a round that tells the agent which failed and how, on
// the same branch, up to the run's CIMaxRounds. The wait is a durable timer
// and a short step per poll: no slot or workspace is held, and the next
// round prepares its workspace from the mirror again.
func watchChecks(ctx, work workflow.Context, run activities.RunContext, conv *conversation, res Result) (Result, error) {
	if !run.WatchCI || !run.CreatePR || res.PullRequest == "" || res.CommitSHA == "" {
		return res, nil
	}
	for round := 1; ; round++ {
		res.CIRounds = round
		status, err := awaitChecks(work, run, res.CommitSHA, round)
		if err != nil {
			return res, err
		}
		if status.State != checks.Failure {
			return res, nil
		}
		if round >= run.CIMaxRounds {
			return res, temporal.NewNonRetryableApplicationError(checks.StillFailing(round, status.Failing), ErrChecksFailed, nil)
		}
		fix := run
		fix.CIRound = round + 1
		next, err := hostWork(ctx, work, fix, conv, checks.FollowUp(round, run.CIMaxRounds, status.Failing))
		res.LogDropped += next.LogDropped
		if next.CommitSHA != "" {
			res.Branch, res.CommitSHA, res.Artifacts = next.Branch, next.CommitSHA, next.Artifacts
		}
		if err != nil {
			return res, err
		}
	}
}

// awaitChecks polls the checks of sha until they are done: passed, failed,
// or none reported checksAppear after the first poll. GitHub's rate limit
// pushes the next poll back to its reset; CITimeout bounds the whole wait.
func awaitChecks(ctx workflow.Context, run activities.RunContext, sha string, round int) (activities.CIStatus, error) {
	opts := workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		// The one level of retries of a poll's calls but GitHub's client's:
		// 5 attempts, 2 s doubling to 30 s apart. A poll that still fails
		// fails the run: its checks can't be read.
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 2 * time.Second, BackoffCoefficient: 2,
			MaximumInterval: 30 * time.Second, MaximumAttempts: 5, NonRetryableErrorTypes: nonRetryable},
	}
	pollCtx := workflow.WithActivityOptions(ctx, opts)
	start := workflow.Now(ctx)
	wait := time.Duration(0)
	for poll := 1; ; poll++ {
		if wait > 0 {
			if err := workflow.Sleep(ctx, wait); err != nil {
				return activities.CIStatus{}, err
			}
		}
		var status activities.CIStatus
		in := activities.CIInput{Run: run, CommitSHA: sha, Round: round, Poll: poll,
			Waited: workflow.Now(ctx).Sub(start), GiveUpOnNone: workflow.Now(ctx).Sub(start) >= checksAppear}
		if err := workflow.ExecuteActivity(pollCtx, activities.CheckCIName, in).Get(ctx, &status); err != nil {
			return status, err
		}
		if status.Done {
			return status, nil
		}
		if workflow.Now(ctx).Sub(start) >= run.CITimeout {
			return status, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"the pull request's checks did not finish within %s (TASKWORKER_CI_TIMEOUT): %s still running", run.CITimeout, checks.Names(status.Pending)),
				ErrChecksFailed, nil)
		}
		wait = run.CIPollEvery
		if until := status.WaitUntil.Sub(workflow.Now(ctx)); until > wait {
			wait = until
		}
	}
}

// roundKey tells a CI round's notes from the first round's.
func roundKey(run activities.RunContext) string {
	if run.CIRound <= 1 {
		return ""
	}
	return fmt.Sprintf("ci%d-", run.CIRound)
}
