package activities

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/activity"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/fence"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// runStep frames a workspace step: it records the run's stage (StartRun has
// already set the first one) and wraps fn, which returns the detail of its
// completion, in progress entries on the step's own log stream. The activity
// around it heartbeats (holdAttempt), through the final flush too: a flush
// that waits out an API outage must not look like a lost worker.
// It returns how many of the step's log entries were lost; a log the API
// refused for good fails the step.
// prior is what the activity's earlier steps lost: a failure reports the sum.
func (a *Activities) runStep(ctx context.Context, ref RunRef, step, startDetail string, prior int, fn func(log *logstream.Stream) (string, error)) (int, error) {
	if step != StepClone {
		// The stage only informs; a Tasks API that is down for a while must
		// not cost the run a step (the agent above all, which never retries).
		// One that refuses the run for good still ends it.
		if err := a.setStage(ctx, ref, step); err != nil {
			if !tasksapi.IsRetryable(err) {
				return prior, a.temporalError(err, prior)
			}
			a.logger(ref).Warn("stage not recorded", zap.String("stage", step), zap.String("error", a.redactError(err)))
		}
	}
	log := a.stream(ctx, ref, step, false)
	group := stepGroup(ctx)
	progress(log, group, step, acp.StepStarted, startDetail)
	began := time.Now()
	detail, err := fn(log)
	if cause := fence.Cause(ctx); err != nil && cause != nil {
		// Stopped because its attempt was fenced, whatever stopping broke.
		err = cause
	}
	a.Metrics.Step(step, time.Since(began), err)
	if err != nil {
		progress(log, group, step, acp.StepFailed, a.redactError(err))
	} else {
		progress(log, group, step, acp.StepCompleted, detail)
	}
	dropped, logErr := a.closeStream(ctx, ref, log, 0)
	if err == nil && logErr != nil {
		err = logErr
	}
	return prior + dropped, a.temporalError(err, prior+dropped)
}

// stream opens the log of one step of a run. Its entries' event_ids are
// derived from the run, the workflow execution, the step and their place in
// the step's stream, so that an entry written again is known as the same
// entry. A step whose entries are a function of its input (StartRun, Note,
// FinishRun: sameOnRetry) writes the same entries again when it is retried,
// so its step names the call alone (the SDK may give a retried local activity
// a new activity ID); a step that does its work again (the host steps) writes
// new entries on each attempt, so its activity and attempt are in their IDs.
func (a *Activities) stream(ctx context.Context, ref RunRef, step string, sameOnRetry bool) *logstream.Stream {
	cfg := a.Config.Log
	cfg.SpillDir = a.spillDir(ref)
	cfg.EventIDScope = eventIDScope(ctx, ref, step, sameOnRetry)
	return logstream.New(a.API, ref.TaskID, ref.RunID, a.Redactor, cfg)
}

// eventIDScope names a step's stream for its event IDs; outside an activity
// (a test calling a step directly) there is none, and IDs are random.
func eventIDScope(ctx context.Context, ref RunRef, step string, sameOnRetry bool) string {
	if !activity.IsActivity(ctx) {
		return ""
	}
	info := activity.GetInfo(ctx)
	if sameOnRetry {
		return fmt.Sprintf("%s/%s/%s", ref.RunID, info.WorkflowExecution.RunID, step)
	}
	return fmt.Sprintf("%s/%s/%s/%s/%d", ref.RunID, info.WorkflowExecution.RunID, step, info.ActivityID, info.Attempt)
}

// spillDir holds a run's log entries that wait for the API on disk. It is
// beside the workspace, not in it, so a retried clone can't remove it.
func (a *Activities) spillDir(ref RunRef) string {
	return filepath.Join(a.Config.WorkspaceDir, ".logspill", ref.RunID)
}

// flushMargin is how long before its step's deadline a flush gives up, so
// the step still returns in time for its result to count.
const flushMargin = 2 * time.Second

// closeStream flushes a step's log on a context of its own, so a cancelled or
// failed step still delivers what it wrote. The flush ends by the step's own
// deadline (less flushMargin, and reserve for what the step does after it):
// a step that outlived it would be retried while it still wrote; and, once
// the worker is stopping, in time for the step to report. It returns
// how many entries were lost, and the API's answer if it refused the log for
// good (401/403/404).
func (a *Activities) closeStream(ctx context.Context, ref RunRef, s *logstream.Stream, reserve time.Duration) (int, error) {
	timeout := a.Config.FlushTimeout
	if timeout <= 0 {
		timeout = defaultFlushTimeout
	}
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline)-flushMargin-reserve)
	}
	if deadline, ok := flushDeadlineOf(ctx); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	fctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stats, err := s.Close(fctx)
	a.Metrics.Log(stats.Sent, stats.Rejected, stats.Dropped, stats.CutEntries, stats.Redacted, stats.SpilledBytes)
	if err != nil || stats.Dropped > 0 {
		a.logger(ref).Warn("log entries not delivered", zap.Int("dropped", stats.Dropped), zap.String("error", a.redactError(err)))
	}
	if stats.SpilledBytes > 0 {
		a.logger(ref).Info("log entries waited on disk", zap.Int64("spilled_bytes", stats.SpilledBytes))
	}
	return stats.Dropped, err
}

// progress emits a step's progress entry.
func progress(s *logstream.Stream, group, step, status, detail string) {
	labels := map[string]string{
		StepClone: "Cloning repository", StepAgent: "Running agent",
		StepPublish: "Publishing changes", StepArtifacts: "Uploading artifacts", StepChecks: "Pull request checks",
	}
	s.Emit(acp.Progress(group, step, status, labels[step], detail))
}

type roundKey struct{}

// inRound marks ctx as a step of the run's CI round (0 and 1: the first).
func inRound(ctx context.Context, round int) context.Context {
	return context.WithValue(ctx, roundKey{}, round)
}

// stepGroup is the group of a step's progress entries: "run", or the CI
// round it fixes, so that each round is its own group of steps in the log.
func stepGroup(ctx context.Context) string {
	if round, _ := ctx.Value(roundKey{}).(int); round > 1 {
		return roundGroup(round)
	}
	return "run"
}

// LogLoss is how many log entries a step lost (0 in every normal case). The
// outputs of the steps embed it; the workflow adds it up, with EntriesLost
// for a step that failed, and FinishRun records the sum.
type LogLoss struct {
	LogDropped int `json:"log_dropped,omitempty"`
}

// Lost is the count, for the workflow.
func (l LogLoss) Lost() int { return l.LogDropped }

// roundGroup is the progress group of a CI round's steps.
func roundGroup(round int) string { return fmt.Sprintf("ci_round_%d", round) }
