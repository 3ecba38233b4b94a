package activities

import (
	"context"
	"fmt"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/fence"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// recordAttempt writes the run's host attempt into its state, before the
// attempt does anything else, so that an older attempt still working on a
// worker cut off from Temporal learns from the run that it was superseded.
// The stage goes back to clone with it: a later attempt starts over. An API
// that is down only costs the record (the older attempt's lease still
// fences it); one that refuses the run for good fails the step.
func (a *Activities) recordAttempt(ctx context.Context, run RunContext, log *logstream.Stream) error {
	if run.HostAttempt == 0 {
		return nil
	}
	stage := StepClone
	_, err := a.API.UpdateRun(ctx, run.TaskID, run.RunID, tasksapi.RunUpdate{Stage: &stage, State: fence.State(run.HostAttempt)})
	switch {
	case err == nil:
		return nil
	case tasksapi.IsRetryable(err):
		log.Console(acp.LevelWarn, fmt.Sprintf("host attempt %d could not be recorded on the run: %s", run.HostAttempt, a.redactError(err)))
		return nil
	}
	return fmt.Errorf("record host attempt %d on the run: %w", run.HostAttempt, err)
}

// holdsRun returns nil while the step's attempt may act on the run, its
// branch or its artifacts: its lease holds (holdAttempt) and the run records
// no later attempt. A step asks before each push, PATCH and upload.
func (a *Activities) holdsRun(ctx context.Context, run RunContext) error {
	if err := fence.Cause(ctx); err != nil {
		return err
	}
	if run.HostAttempt == 0 {
		return nil
	}
	current, err := a.API.GetRun(ctx, run.TaskID, run.RunID)
	if err != nil {
		return fmt.Errorf("read the run before acting on it: %w", err)
	}
	return fence.Check(current.State, run.HostAttempt)
}
