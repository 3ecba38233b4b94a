package activities

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"
)

// ClaimHost takes one of this worker's run slots and returns the worker's own
// queue, where the workflow schedules the steps that use the workspace. A
// worker at capacity declines, and the claim is retried (by any worker) soon.
func (a *Activities) ClaimHost(ctx context.Context, run RunContext) (string, error) {
	ttl := run.RunTimeout + claimMargin
	if !a.Slots.Acquire(run.RunID, ttl) {
		return "", temporal.NewApplicationErrorWithOptions(
			fmt.Sprintf("worker %s is running its maximum of runs", a.Config.HostQueue), ErrWorkerBusy,
			temporal.ApplicationErrorOptions{NextRetryDelay: busyRetryDelay})
	}
	// On disk too, so that this worker started again keeps the workspace
	// (see SweepWorkspaces); without it the run only loses that.
	if err := a.recordClaim(run, ttl); err != nil {
		a.logger(run.RunRef).Warn("claim not recorded on disk", zap.Error(err))
	}
	return a.Config.HostQueue, nil
}
