// Package reaper ends the task runs Temporal will never finish: runs that are
// not terminal although their process-task workflow is closed (terminated,
// timed out) or gone, so nothing will ever send their terminal PATCH. It
// fails each with a message that says what happened.
//
// Any number of reapers may run at once (every worker runs one): a run whose
// workflow is still running, or that is already terminal, is never touched;
// two reapers ending the same run write the same log entry (one event_id) and
// the same PATCH.
package reaper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// API is the part of the Tasks API the reaper uses.
type API interface {
	GetRun(ctx context.Context, taskID, runID string) (tasksapi.TaskRun, error)
	UpdateRun(ctx context.Context, taskID, runID string, update tasksapi.RunUpdate) (tasksapi.TaskRun, error)
	AppendLog(ctx context.Context, taskID, runID string, entries []json.RawMessage) error
}

// Temporal is the part of the Temporal client the reaper uses.
type Temporal interface {
	ListWorkflow(ctx context.Context, request *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error)
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	GetWorkflowHistory(ctx context.Context, workflowID, runID string, isLongPoll bool, filterType enumspb.HistoryEventFilterType) client.HistoryEventIterator
}

// Defaults of Config.
const (
	DefaultInterval    = time.Minute
	DefaultMaxPerCycle = 100
	DefaultLookback    = 24 * time.Hour
	// overlap is how far each look back reaches into the last: a workflow
	// that closed just before a look may reach visibility just after it.
	overlap  = time.Minute
	pageSize = 100
	// maxReason bounds what a termination's reason adds to the message.
	maxReason = 500
)

// Config says what to watch and how hard.
type Config struct {
	// Namespace is the Temporal namespace of the process-task workflows.
	Namespace string
	// Interval is the time between two looks (TASKWORKER_REAP_INTERVAL).
	Interval time.Duration
	// MaxPerCycle bounds the workflows one look examines, and so its requests.
	MaxPerCycle int
	// Lookback is how far back the first look goes: what closed while no
	// reaper ran.
	Lookback time.Duration
	// By names who ends the runs, in their message ("reaper", "dispatcher").
	By string
}

// Reaper ends the runs of one Tasks API project whose workflow Temporal will
// never finish. Cycle and Run keep where the last look got to: one goroutine
// at a time; Check may be called from any.
type Reaper struct {
	API      API
	Temporal Temporal
	Config   Config
	Logger   *zap.Logger
	// Redactor masks secrets in the messages it writes; nil masks nothing.
	Redactor *redact.Redactor
	// Metrics may be nil.
	Metrics *metrics.Metrics

	// covered is the close time up to which every closed workflow was looked
	// at; scan is the look under way, when one cycle could not finish it.
	covered time.Time
	scan    *scan
}

// scan is a look at the workflows that closed in (from, to], page by page.
type scan struct {
	from, to time.Time
	token    []byte
	// retryFrom is the earliest close time of a workflow whose run could not
	// be checked: the next look starts there, so the run is checked again.
	retryFrom time.Time
}

func (s *scan) query() string {
	return fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus IN ('Terminated', 'TimedOut') AND CloseTime > '%s' AND CloseTime <= '%s'",
		kickoff.WorkflowType, s.from.UTC().Format(time.RFC3339Nano), s.to.UTC().Format(time.RFC3339Nano))
}

// Stats is what one cycle did.
type Stats struct {
	Examined int // closed workflows looked at
	Ended    int // runs this reaper failed
	// Left counts the runs left alone: already terminal, their workflow
	// running again, or gone.
	Left int
	// Failed counts the runs that couldn't be checked or ended; each is
	// logged and looked at again in a later cycle.
	Failed int
	// More is true when the cycle stopped at MaxPerCycle: the next goes on.
	More bool
}

func (r *Reaper) config() Config {
	c := r.Config
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.MaxPerCycle <= 0 {
		c.MaxPerCycle = DefaultMaxPerCycle
	}
	if c.Lookback <= 0 {
		c.Lookback = DefaultLookback
	}
	if c.By == "" {
		c.By = "reaper"
	}
	return c
}

// Run looks every Interval until ctx ends; a failed cycle is logged and the
// next one tries again. The next cycle is the one level of retries of the
// reaper's Tasks API calls (the worker's client sends each once): a run that
// could not be checked or ended is looked at again then, and its entry and
// PATCH are the same each time. Worst case: 3 requests per workflow a cycle
// examines (MaxPerCycle, 100 by default) every Interval (a minute by
// default), for as long as the failures last.
func (r *Reaper) Run(ctx context.Context) {
	t := time.NewTicker(r.config().Interval)
	defer t.Stop()
	for {
		stats, err := r.Cycle(ctx)
		fields := []zap.Field{zap.Int("examined", stats.Examined), zap.Int("ended", stats.Ended),
			zap.Int("left", stats.Left), zap.Int("failed", stats.Failed), zap.Bool("more", stats.More)}
		switch {
		case err != nil && ctx.Err() == nil:
			r.Logger.Warn("reaper cycle failed; the next one tries again", append(fields, zap.Error(err))...)
		case stats.Ended+stats.Failed > 0:
			r.Logger.Info("reaper cycle", fields...)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Cycle looks at up to MaxPerCycle process-task workflows that were
// terminated or timed out since the last look (Temporal's visibility, page
// by page) and ends the runs they left unfinished. A look that needs more
// goes on where it stopped in the next cycle. The error is a listing that
// failed; the look is tried again from where it was.
func (r *Reaper) Cycle(ctx context.Context) (Stats, error) {
	cfg := r.config()
	var stats Stats
	if r.scan == nil {
		now := time.Now()
		from := now.Add(-cfg.Lookback)
		if !r.covered.IsZero() {
			from = r.covered.Add(-overlap)
		}
		r.scan = &scan{from: from, to: now}
	}
	for budget := cfg.MaxPerCycle; budget > 0; {
		page, err := r.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: cfg.Namespace, PageSize: int32(min(pageSize, budget)), NextPageToken: r.scan.token, Query: r.scan.query(),
		})
		if err != nil {
			return stats, fmt.Errorf("list closed %s workflows in namespace %s: %w", kickoff.WorkflowType, cfg.Namespace, err)
		}
		for _, ex := range page.GetExecutions() {
			budget--
			stats.Examined++
			taskID, runID, ok := kickoff.RunOf(ex.GetExecution().GetWorkflowId())
			if !ok {
				stats.Left++ // not a run's workflow by PostHog's naming: nothing to end
				continue
			}
			res, err := r.Check(ctx, taskID, runID, false)
			switch {
			case err != nil && ctx.Err() != nil:
				return stats, ctx.Err()
			case err != nil:
				stats.Failed++
				if closed := ex.GetCloseTime().AsTime(); r.scan.retryFrom.IsZero() || closed.Before(r.scan.retryFrom) {
					r.scan.retryFrom = closed
				}
				r.Logger.Warn("run not checked; a later cycle tries again", zap.String("task_id", taskID), zap.String("run_id", runID),
					zap.String("workflow_id", ex.GetExecution().GetWorkflowId()), zap.Error(err))
			case res.Outcome == Ended:
				stats.Ended++
			default:
				stats.Left++
			}
		}
		r.scan.token = page.GetNextPageToken()
		if len(r.scan.token) == 0 {
			r.covered = r.scan.to
			if !r.scan.retryFrom.IsZero() {
				r.covered = r.scan.retryFrom
			}
			r.scan = nil
			return stats, nil
		}
	}
	stats.More = true
	return stats, nil
}

// Outcome is what Check did with a run.
type Outcome string

// Outcomes of Check.
const (
	// Ended: the run's workflow will never finish it; it was failed.
	Ended Outcome = "ended"
	// Terminal: the run had already ended; it was left alone.
	Terminal Outcome = "terminal"
	// Running: the run's workflow is running; it was left alone.
	Running Outcome = "running"
	// NoWorkflow: Temporal has no workflow for the run, and the caller
	// does not know that it ever had one here; it was left alone.
	NoWorkflow Outcome = "no_workflow"
	// Gone: the Tasks API has no such run any more.
	Gone Outcome = "gone"
)

// Result is what Check did and what it cost.
type Result struct {
	Outcome Outcome
	// Message is the run's error_message when it was ended.
	Message string
	// Requests is how many Tasks API requests it made.
	Requests int
}

// Check ends the run taskID/runID failed if its workflow will never finish
// it: the workflow is closed, or — when absentIsLost, because the caller
// knows the run's workflow was started on this Temporal — it does not exist.
// A run that is terminal or whose workflow is running is not touched.
func (r *Reaper) Check(ctx context.Context, taskID, runID string, absentIsLost bool) (Result, error) {
	cfg := r.config()
	var res Result
	id := kickoff.WorkflowID(taskID, runID)
	desc, err := r.Temporal.DescribeWorkflowExecution(ctx, id, "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound) && !absentIsLost:
		res.Outcome = NoWorkflow
		return res, nil
	case errors.As(err, &notFound):
		desc = nil
	case err != nil:
		return res, fmt.Errorf("describe workflow %s: %w", id, err)
	case desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		res.Outcome = Running
		return res, nil
	}

	run, err := r.API.GetRun(ctx, taskID, runID)
	res.Requests++
	switch {
	case tasksapi.IsNotFound(err):
		res.Outcome = Gone
		return res, nil
	case err != nil:
		return res, fmt.Errorf("read run %s of task %s: %w", runID, taskID, err)
	case run.Status.Terminal():
		res.Outcome = Terminal
		return res, nil
	}

	why, execution := r.absent(id), "absent"
	if desc != nil {
		why, execution = r.closed(ctx, id, desc), desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	}
	res.Message = r.redact(fmt.Sprintf("%s; ended by taskworker's %s. Start a new run of the task to try again.", why, cfg.By))
	log := r.Logger.With(zap.String("task_id", taskID), zap.String("run_id", runID), zap.String("workflow_id", id))

	// The same entry from every reaper that ends this run: one event_id.
	entry := acp.Error(res.Message, "workflow_closed")
	entry.EventID = acp.EventID(runID+"/"+execution+"/reaper", 0)
	entry.Stamp(time.Now())
	raw, _ := json.Marshal(entry)
	res.Requests++
	if err := r.API.AppendLog(ctx, taskID, runID, []json.RawMessage{raw}); err != nil {
		log.Warn("reaper's log entry not written; the run is failed all the same", zap.Error(err))
	}
	failed := tasksapi.StatusFailed
	res.Requests++
	if _, err := r.API.UpdateRun(ctx, taskID, runID, tasksapi.RunUpdate{Status: failed, ErrorMessage: &res.Message}); err != nil {
		return res, fmt.Errorf("fail run %s of task %s: %w", runID, taskID, err)
	}
	res.Outcome = Ended
	status := "absent"
	switch desc.GetWorkflowExecutionInfo().GetStatus() {
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		status = "terminated"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		status = "timed_out"
	case enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED:
	default:
		status = strings.ToLower(desc.GetWorkflowExecutionInfo().GetStatus().String())
	}
	r.Metrics.RunReaped(status)
	log.Info("run ended: its workflow will never finish it", zap.String("was", string(run.Status)), zap.String("workflow", status))
	return res, nil
}

// closed says how the run's workflow ended, with what Temporal recorded of it.
func (r *Reaper) closed(ctx context.Context, id string, desc *workflowservice.DescribeWorkflowExecutionResponse) string {
	info := desc.GetWorkflowExecutionInfo()
	var details []string
	switch info.GetStatus() {
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		if event := r.closeEvent(ctx, id, info.GetExecution().GetRunId()); event != nil {
			attrs := event.GetWorkflowExecutionTerminatedEventAttributes()
			if reason := strings.TrimSpace(attrs.GetReason()); reason != "" {
				if rs := []rune(reason); len(rs) > maxReason {
					reason = string(rs[:maxReason-1]) + "…"
				}
				details = append(details, fmt.Sprintf("reason %q", reason))
			}
			if who := attrs.GetIdentity(); who != "" {
				details = append(details, "by "+who)
			}
		}
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		limit := desc.GetExecutionConfig().GetWorkflowExecutionTimeout().AsDuration()
		if limit <= 0 {
			limit = desc.GetExecutionConfig().GetWorkflowRunTimeout().AsDuration()
		}
		if limit > 0 {
			details = append(details, fmt.Sprintf("its timeout of %s passed", limit))
		}
	default:
		details = append(details, info.GetStatus().String())
	}
	if t := info.GetCloseTime(); t != nil {
		details = append(details, "at "+t.AsTime().UTC().Format("2006-01-02 15:04:05 MST"))
	}
	what := map[enumspb.WorkflowExecutionStatus]string{
		enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED: "was terminated in Temporal",
		enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:  "timed out in Temporal",
	}[info.GetStatus()]
	if what == "" {
		what = "ended in Temporal without finishing the run"
	}
	if len(details) == 0 {
		return "the run's workflow " + what
	}
	return "the run's workflow " + what + " (" + strings.Join(details, ", ") + ")"
}

// closeEvent is the event that closed the workflow, nil when Temporal can't
// say: the message is then shorter, nothing else changes.
func (r *Reaper) closeEvent(ctx context.Context, id, runID string) *historypb.HistoryEvent {
	events := r.Temporal.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
	for events.HasNext() {
		event, err := events.Next()
		if err != nil {
			r.Logger.Debug("close event not read", zap.String("workflow_id", id), zap.Error(err))
			return nil
		}
		if event.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED {
			return event
		}
	}
	return nil
}

func (r *Reaper) absent(id string) string {
	return fmt.Sprintf("the run's workflow %s does not exist in Temporal (namespace %s): it was started there, and its history has been lost or deleted",
		id, r.config().Namespace)
}

func (r *Reaper) redact(s string) string {
	if r.Redactor == nil {
		return s
	}
	return r.Redactor.String(s)
}
