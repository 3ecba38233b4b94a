// Package dispatch starts process-task for the local runs queued in a Tasks
// API whose own kick-off can't reach this Temporal cluster (PostHog Cloud):
// runs of environment local, which PostHog's cloud runner leaves alone.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/reaper"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// API is the part of the Tasks API the dispatcher uses.
type API interface {
	ListTasks(ctx context.Context, f tasksapi.TaskFilter, limit, offset int) (tasksapi.Page[tasksapi.Task], error)
	ListRuns(ctx context.Context, taskID string, limit, offset int) (tasksapi.Page[tasksapi.TaskRun], error)
	GetRun(ctx context.Context, taskID, runID string) (tasksapi.TaskRun, error)
	UpdateRun(ctx context.Context, taskID, runID string, update tasksapi.RunUpdate) (tasksapi.TaskRun, error)
	AppendLog(ctx context.Context, taskID, runID string, entries []json.RawMessage) error
}

// Config says what to watch and how hard.
type Config struct {
	Filter   tasksapi.TaskFilter
	PageSize int
	// MaxPages bounds the task pages, and so the API requests, of one cycle.
	MaxPages     int
	PollInterval time.Duration
	TaskQueue    string
	// Pool names the workers that take the runs, in the entry each run gets.
	Pool             string
	ExecutionTimeout time.Duration
	// ReapInterval is how often a cycle also looks at the in-progress local
	// runs it sees (see Dispatcher.Reaper); 0 is every cycle.
	ReapInterval time.Duration
}

// Stats is what one cycle did.
type Stats struct {
	Requests       int // Tasks API requests
	Queued         int // queued runs seen
	Started        int // workflows this dispatcher started
	AlreadyStarted int // runs whose workflow someone else had started
	Orphaned       int // queued runs whose workflow had already ended: failed, not started again
	// NotLocal counts the queued runs left alone because they are not
	// environment local: PostHog's cloud runner executes cloud runs.
	NotLocal int
	// Failed counts the tasks whose runs couldn't be listed and the runs that
	// couldn't be handled; each is logged, and the cycle goes on without it.
	Failed int
	// Reaped counts the in-progress runs ended failed because their workflow
	// will never finish them (terminated, timed out, or lost).
	Reaped int
}

// Temporal is the part of the Temporal client the dispatcher uses.
type Temporal interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
}

// Dispatcher watches one project's Tasks API.
type Dispatcher struct {
	API      API
	Temporal Temporal
	Config   Config
	Logger   *zap.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Reaper, when set, ends the in-progress local runs whose workflow will
	// never finish them: closed without finishing the run, or — for a run
	// this pool dispatched (its state says so) — gone from Temporal.
	Reaper *reaper.Reaper

	lastReap time.Time
}

// DispatchedKey is the key of a run's state that says a dispatcher started
// its workflow on this pool's Temporal: a run that has it and no workflow
// there lost its workflow, while a local run without it may be driven by
// another client entirely.
const DispatchedKey = "taskworker_dispatch"

// Run dispatches every PollInterval until ctx ends. The next cycle is the
// one level of retries of what a cycle could not do (the API client sends
// each call once, but those of afterStart): a failed cycle is logged, and
// the next one comes PollInterval after it began, or once the API's
// Retry-After has passed when it ended on one that asks for longer (a minute
// at most). Worst case: one cycle's requests (MaxPages pages, and the runs
// of what they list) per PollInterval, for as long as the failures last.
func (d *Dispatcher) Run(ctx context.Context) error {
	t := time.NewTimer(d.Config.PollInterval)
	defer t.Stop()
	for {
		began := time.Now()
		stats, err := d.Cycle(ctx)
		d.Metrics.DispatchCycle(stats.Requests, stats.Started, stats.AlreadyStarted, stats.Orphaned)
		fields := []zap.Field{zap.Int("api_requests", stats.Requests), zap.Int("queued", stats.Queued),
			zap.Int("started", stats.Started), zap.Int("already_started", stats.AlreadyStarted), zap.Int("orphaned", stats.Orphaned),
			zap.Int("not_local", stats.NotLocal), zap.Int("failed", stats.Failed), zap.Int("reaped", stats.Reaped)}
		if err != nil && ctx.Err() == nil {
			d.Logger.Warn("dispatch cycle failed", append(fields, zap.Error(err))...)
		} else if stats.Started+stats.Orphaned+stats.Failed+stats.Reaped > 0 {
			d.Logger.Info("dispatch cycle", fields...)
		}
		t.Reset(max(d.Config.PollInterval-time.Since(began), tasksapi.RetryAfter(err)))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// afterStart is how often the client sends the calls a cycle makes after it
// started a run's workflow again, as the next cycle, which finds the run
// taken, makes them no more: its mark (markDispatched) and its console
// entry (note). Worst case of each: 4 requests of up to 30 s, apart by the
// client's backoff (the worker's: 1 s doubling, jittered down to half) or by
// the API's Retry-After when longer (a minute at most): 3.5 to 7 s of the
// API down, 5 min at the very most.
const afterStart = 3

// Cycle looks at every task page once and starts the queued runs' workflows.
// Each task and each run is handled on its own: one whose runs can't be
// listed, or whose workflow can't be started or checked, is counted in
// Stats.Failed, logged and retried next cycle, and the others go on. The
// error is a task page that couldn't be read, which ends the cycle.
func (d *Dispatcher) Cycle(ctx context.Context) (Stats, error) {
	var stats Stats
	reap := d.reapDue()
	offset := 0
	for page := 0; page < d.Config.MaxPages; page++ {
		tasks, err := d.API.ListTasks(ctx, d.Config.Filter, d.Config.PageSize, offset)
		stats.Requests++
		if err != nil {
			d.Metrics.DispatchFailure("list_tasks")
			return stats, fmt.Errorf("list tasks: %w", err)
		}
		for _, task := range tasks.Results {
			if ctx.Err() != nil {
				return stats, ctx.Err()
			}
			if reap && task.LatestRun != nil && task.LatestRun.Status == tasksapi.StatusInProgress && ours(*task.LatestRun) {
				d.reap(ctx, task.ID, *task.LatestRun, &stats)
				continue
			}
			// A run is queued as the task's latest; only then are its
			// other runs worth a look.
			if task.LatestRun == nil || task.LatestRun.Status != tasksapi.StatusQueued {
				continue
			}
			if !ours(*task.LatestRun) {
				stats.NotLocal++
				continue
			}
			d.dispatchTask(ctx, task, &stats)
		}
		next, ok := tasksapi.NextOffset(tasks)
		if !ok {
			return stats, nil
		}
		offset = next
	}
	return stats, nil
}

// ours reports a queued run this pool may start: one whose environment is
// local, which PostHog's cloud runner never executes. A cloud run — what
// POST /tasks/{id}/run/ creates, and PostHog starts on its own Temporal — is
// its runner's, and so is a run of an environment the worker doesn't know:
// starting either would run it twice.
func ours(run tasksapi.TaskRun) bool {
	return run.Environment == tasksapi.EnvironmentLocal
}

// failed counts and logs what could not be done for a task or a run.
func (d *Dispatcher) failed(ctx context.Context, stats *Stats, step, taskID, runID string, err error) {
	if ctx.Err() != nil {
		return // stopping: not a failure of the run
	}
	stats.Failed++
	d.Metrics.DispatchFailure(step)
	fields := []zap.Field{zap.String("step", step), zap.String("task_id", taskID), zap.Error(err)}
	if runID != "" {
		fields = append(fields, zap.String("run_id", runID))
	}
	d.Logger.Warn("dispatch failed; the next cycle tries again", fields...)
}

func (d *Dispatcher) dispatchTask(ctx context.Context, task tasksapi.Task, stats *Stats) {
	runs, err := d.API.ListRuns(ctx, task.ID, d.Config.PageSize, 0)
	stats.Requests++
	if err != nil {
		d.failed(ctx, stats, "list_runs", task.ID, "", fmt.Errorf("list runs of task %s: %w", task.ID, err))
		return
	}
	for _, run := range runs.Results {
		if run.Status != tasksapi.StatusQueued {
			continue
		}
		if !ours(run) {
			stats.NotLocal++
			continue
		}
		stats.Queued++
		if step, err := d.dispatchRun(ctx, task.ID, run.ID, stats); err != nil {
			d.failed(ctx, stats, step, task.ID, run.ID, err)
		}
	}
}

// dispatchRun starts a run's workflow under PostHog's workflow ID. The ID is
// the lock: Temporal starts a workflow ID at most once (reuse policy "reject
// duplicate"), however many dispatchers try. A run still queued whose
// workflow already ended is not started again — it would repeat whatever the
// first attempt did — but failed with a message, so it is never stuck.
func (d *Dispatcher) dispatchRun(ctx context.Context, taskID, runID string, stats *Stats) (step string, err error) {
	id := kickoff.WorkflowID(taskID, runID)
	err = kickoff.Starter{Temporal: d.Temporal, TaskQueue: d.Config.TaskQueue, ExecutionTimeout: d.Config.ExecutionTimeout, Once: true}.
		StartRun(ctx, taskID, runID, kickoff.RunOptions{})
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	switch {
	case err == nil:
		stats.Started++
		d.markDispatched(ctx, taskID, runID, id, stats)
		d.note(ctx, taskID, runID, fmt.Sprintf("dispatched to worker pool %s (task queue %s)", d.Config.Pool, d.Config.TaskQueue), stats)
		return "", nil
	case errors.As(err, &already):
		return d.checkExisting(ctx, taskID, runID, id, stats)
	default:
		return "start", err
	}
}

func (d *Dispatcher) checkExisting(ctx context.Context, taskID, runID, id string, stats *Stats) (step string, err error) {
	desc, err := d.Temporal.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return "describe", fmt.Errorf("describe workflow %s: %w", id, err)
	}
	status := desc.GetWorkflowExecutionInfo().GetStatus()
	if status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		stats.AlreadyStarted++
		return "", nil
	}
	// The listing may be stale: the workflow may have ended the run since.
	run, err := d.API.GetRun(ctx, taskID, runID)
	stats.Requests++
	if err != nil {
		return "read_run", fmt.Errorf("read run %s: %w", runID, err)
	}
	if run.Status != tasksapi.StatusQueued {
		stats.AlreadyStarted++
		return "", nil
	}
	msg := fmt.Sprintf("this run's workflow %s already ended (%s) without finishing the run; it is not started twice: start a new run of the task",
		id, status.String())
	failed := tasksapi.StatusFailed
	_, err = d.API.UpdateRun(ctx, taskID, runID, tasksapi.RunUpdate{Status: failed, ErrorMessage: &msg})
	stats.Requests++
	if err != nil {
		return "fail_orphan", fmt.Errorf("fail orphaned run %s: %w", runID, err)
	}
	stats.Orphaned++
	return "", nil
}

// note writes a console entry on the run; a failure to write it never stops
// the dispatch.
func (d *Dispatcher) note(ctx context.Context, taskID, runID, message string, stats *Stats) {
	e := acp.Console(acp.LevelInfo, message)
	e.Stamp(time.Now())
	raw, _ := json.Marshal(e)
	stats.Requests++
	if err := d.API.AppendLog(tasksapi.WithRetries(ctx, afterStart), taskID, runID, []json.RawMessage{raw}); err != nil {
		d.Logger.Warn("dispatch note not written", zap.String("run_id", runID), zap.Error(err))
	}
}

// markDispatched records in the run's state that its workflow was started on
// this pool's Temporal (see DispatchedKey). Without it the run is still
// ended if its workflow closes unfinished, not if the workflow is lost.
func (d *Dispatcher) markDispatched(ctx context.Context, taskID, runID, workflowID string, stats *Stats) {
	stats.Requests++
	mark := map[string]any{DispatchedKey: map[string]any{"pool": d.Config.Pool, "task_queue": d.Config.TaskQueue, "workflow_id": workflowID}}
	if _, err := d.API.UpdateRun(tasksapi.WithRetries(ctx, afterStart), taskID, runID, tasksapi.RunUpdate{State: mark}); err != nil {
		d.Logger.Warn("dispatched run not marked; a loss of its workflow would go unnoticed", zap.String("run_id", runID), zap.Error(err))
	}
}

// dispatched reports a run whose state says a dispatcher started its workflow.
func dispatched(run tasksapi.TaskRun) bool {
	_, ok := run.State[DispatchedKey]
	return ok
}

// reapDue reports whether this cycle looks at the in-progress runs.
func (d *Dispatcher) reapDue() bool {
	if d.Reaper == nil {
		return false
	}
	now := time.Now()
	if d.Config.ReapInterval > 0 && now.Sub(d.lastReap) < d.Config.ReapInterval {
		return false
	}
	d.lastReap = now
	return true
}

// reap ends an in-progress local run whose workflow will never finish it:
// closed, or absent when this pool dispatched it.
func (d *Dispatcher) reap(ctx context.Context, taskID string, run tasksapi.TaskRun, stats *Stats) {
	res, err := d.Reaper.Check(ctx, taskID, run.ID, dispatched(run))
	stats.Requests += res.Requests
	if err != nil {
		d.failed(ctx, stats, "reap", taskID, run.ID, err)
		return
	}
	if res.Outcome == reaper.Ended {
		stats.Reaped++
	}
}
