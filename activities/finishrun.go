package activities

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// FinishInput is the terminal state of a run.
type FinishInput struct {
	RunRef
	Status       tasksapi.Status `json:"status"`
	ErrorMessage string          `json:"error_message,omitempty"`
	Output       map[string]any  `json:"output,omitempty"`
	// State is merged into the run's state with the terminal status.
	State map[string]any `json:"state,omitempty"`
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
	update := tasksapi.RunUpdate{Status: in.Status, Output: output, State: in.State}
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
