package activities

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/structured"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// StartRun loads the task and the run, checks they can be worked on, and
// marks the run in_progress.
func (a *Activities) StartRun(ctx context.Context, ref RunRef) (RunContext, error) {
	run, err := a.startRun(ctx, ref)
	return run, a.temporalError(err)
}

func (a *Activities) startRun(ctx context.Context, ref RunRef) (RunContext, error) {
	task, err := a.API.GetTask(ctx, ref.TaskID)
	if err != nil {
		if tasksapi.IsNotFound(err) {
			return RunContext{}, permanent("task %s not found in this project (was it deleted?): %v", ref.TaskID, err)
		}
		return RunContext{}, fmt.Errorf("load task %s: %w", ref.TaskID, err)
	}
	run, err := a.API.GetRun(ctx, ref.TaskID, ref.RunID)
	if err != nil {
		if tasksapi.IsNotFound(err) {
			return RunContext{}, permanent("run %s of task %s not found: %v", ref.RunID, ref.TaskID, err)
		}
		return RunContext{}, fmt.Errorf("load run %s: %w", ref.RunID, err)
	}
	if run.Status.Terminal() {
		return RunContext{}, alreadyEnded(run.Status)
	}
	repo := task.RepositoryName()
	if repo == "" {
		return RunContext{}, permanent("task %s has no repository: set its repository to \"org/repo\" and run it again", ref.TaskID)
	}
	if err := gitrepo.ValidateRepository(repo); err != nil {
		return RunContext{}, permanent("task %s: %v", ref.TaskID, err)
	}
	rc := RunContext{
		RunRef: ref, Title: task.Title, Description: task.Description, Repository: repo,
		Slug: task.Slug, AgentTimeout: a.Config.AgentTimeout, RunTimeout: a.Config.RunTimeout,
		HeartbeatTimeout: a.Config.HeartbeatTimeout, HostAttempts: a.Config.HostAttempts,
	}
	if base, ok := run.State["pr_base_branch"].(string); ok {
		rc.BaseBranch = strings.TrimSpace(base)
	}
	if cost, ok := run.State["max_cost_usd"].(float64); ok && cost > 0 {
		rc.MaxCostUSD = cost
	}
	if tokens, ok := run.State["max_tokens"].(float64); ok && tokens > 0 {
		rc.MaxTokens = int64(tokens)
	}
	if rc.Slug == "" && task.TaskNumber != nil {
		rc.Slug = fmt.Sprint(*task.TaskNumber)
	}
	if schema := bytes.TrimSpace(task.JSONSchema); len(schema) > 0 && string(schema) != "null" {
		if _, err := structured.Compile(schema); err != nil {
			return RunContext{}, permanent("task %s: %v; fix the task's json_schema and run it again", ref.TaskID, err)
		}
		rc.JSONSchema = schema
	}
	rc.Branch = BranchName(a.Config.BranchTemplate, rc)
	if !a.Git.ValidBranchName(ctx, rc.Branch) {
		return RunContext{}, permanent("branch name %q (from TASKWORKER_BRANCH_TEMPLATE %q) is not a valid git branch name", rc.Branch, a.Config.BranchTemplate)
	}
	if legacy := legacyBranchName(a.Config.BranchTemplate, rc); legacy != rc.Branch {
		rc.LegacyBranch = legacy
	}

	stage := StepClone
	if _, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Status: tasksapi.StatusInProgress, Stage: &stage}); err != nil {
		return RunContext{}, fmt.Errorf("mark run in_progress: %w", err)
	}
	a.Metrics.RunStarted()
	log := a.stream(ctx, ref, StartRunName, true)
	log.Emit(acp.RunStarted(ref.RunID, ref.TaskID, a.Config.Version+" "+a.Agent.Name()))
	rc.LogDropped, err = a.closeStream(ctx, ref, log, 0)
	return rc, err
}

func alreadyEnded(status tasksapi.Status) error {
	return &runEndedError{status: status}
}

type runEndedError struct{ status tasksapi.Status }

func (e *runEndedError) Error() string {
	return fmt.Sprintf("run is already %s; not starting it again", e.status)
}

// FinishInput is the terminal state of a run.
type FinishInput struct {
	RunRef
	Status       tasksapi.Status `json:"status"`
	ErrorMessage string          `json:"error_message,omitempty"`
	Output       map[string]any  `json:"output,omitempty"`
	// LogDropped is how many log entries the run's earlier steps lost.
	LogDropped int `json:"log_dropped"`
}

// maxErrorMessage bounds error_message; long enough for an exit code and the
// last lines of stderr.
const maxErrorMessage = 2000

// finishReserve is the part of FinishRun's deadline kept for the terminal
// PATCH (and the read before it) after its last entry's flush.
const finishReserve = 15 * time.Second

// FinishRun writes the run's last log entry and then its terminal status.
func (a *Activities) FinishRun(ctx context.Context, in FinishInput) error {
	log := a.stream(ctx, in.RunRef, FinishRunName, true)
	switch in.Status {
	case tasksapi.StatusCompleted:
		log.Emit(acp.TaskComplete("end_turn"))
	case tasksapi.StatusCancelled:
		log.Console(acp.LevelWarn, "run cancelled")
	default:
		log.Emit(acp.Error(in.ErrorMessage, "run_failed"))
	}
	// The terminal PATCH matters more than the entry before it: the flush
	// leaves it time within the step's deadline.
	dropped, _ := a.closeStream(ctx, in.RunRef, log, finishReserve)

	// A run someone else ended (cancelled from the UI) keeps their status.
	if current, err := a.API.GetRun(ctx, in.TaskID, in.RunID); err == nil && current.Status.Terminal() {
		a.logger(in.RunRef).Info("run already ended elsewhere; its status stays", zap.String("status", string(current.Status)))
		return nil
	}
	output := map[string]any{"log_entries_dropped": in.LogDropped + dropped}
	for k, v := range in.Output {
		output[k] = v
	}
	update := tasksapi.RunUpdate{Status: in.Status, Output: output}
	if in.Status == tasksapi.StatusFailed {
		msg := a.Redactor.String(in.ErrorMessage)
		if r := []rune(msg); len(r) > maxErrorMessage {
			msg = string(r[:maxErrorMessage-1]) + "…"
		}
		update.ErrorMessage = &msg
	}
	run, err := a.API.UpdateRun(ctx, in.TaskID, in.RunID, update)
	if err != nil {
		return a.temporalError(fmt.Errorf("set run %s: %w", in.Status, err))
	}
	var took time.Duration
	if run.CompletedAt != nil {
		took = run.CompletedAt.Sub(run.CreatedAt)
	}
	a.Metrics.RunFinished(string(in.Status), took)
	return nil
}
