package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/signals"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Signaller signals a run's workflow with positional arguments, as PostHog
// does; an error wrapping kickoff.ErrWorkflowEnded says the workflow is closed.
type Signaller interface {
	SignalRun(ctx context.Context, taskID, runID, name string, args ...any) error
}

// heartbeatEvery is how often append_log may signal a run's heartbeat, as PostHog's does.
const heartbeatEvery = time.Minute

// defaultCancelReason is complete_task's error_message for a cancel without a reason.
const defaultCancelReason = "Cancelled by user"

// heartbeats throttles append_log's heartbeat signals per run.
type heartbeats struct {
	mu   sync.Mutex
	sent map[string]time.Time
}

func (h *heartbeats) due(runID string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if last, ok := h.sent[runID]; ok && now.Sub(last) < heartbeatEvery {
		return false
	}
	if h.sent == nil {
		h.sent = map[string]time.Time{}
	}
	h.sent[runID] = now
	return true
}

// signal sends a signal when a Signaller is configured; a closed workflow is
// no error for the callers that only tell it what happened.
func (s *Server) signal(ctx context.Context, taskID, runID, name string, args ...any) {
	if s.cfg.Signaller == nil {
		return
	}
	err := s.cfg.Signaller.SignalRun(ctx, taskID, runID, name, args...)
	switch {
	case errors.Is(err, kickoff.ErrWorkflowEnded):
		s.cfg.Logger.Debug("signal to a closed workflow", zap.String("run_id", runID), zap.String("signal", name))
	case err != nil:
		s.cfg.Logger.Warn("signal not sent", zap.String("run_id", runID), zap.String("signal", name), zap.Error(err))
	}
}

// signalPatched tells the run's workflow what a PATCH changed: a terminal
// status becomes complete_task(status, error_message), the worker's own too.
func (s *Server) signalPatched(ctx context.Context, run tasksapi.TaskRun, p runPatch) {
	if p.Status == nil || !p.Status.Terminal() {
		return
	}
	var errMsg any
	if run.ErrorMessage != nil {
		errMsg = *run.ErrorMessage
	}
	s.signal(ctx, run.Task, run.ID, signals.CompleteTask, string(*p.Status), errMsg)
}

// heartbeat signals heartbeat(true) for a run's log append, at most once a
// minute per run.
func (s *Server) heartbeat(ctx context.Context, taskID, runID string) {
	if s.cfg.Signaller != nil && s.beats.due(runID, s.store.now()) {
		s.signal(ctx, taskID, runID, signals.Heartbeat, true)
	}
}

// cancelRun is POST …/runs/{id}/cancel/: the run becomes cancelled and its
// workflow gets complete_task("cancelled", reason), never a Temporal cancel.
// The body, optional, is {"reason": "..."}.
func (s *Server) cancelRun(r *http.Request) (int, any, error) {
	taskID, runID := r.PathValue("task"), r.PathValue("run")
	run, err := s.store.getRun(r.Context(), taskID, runID)
	if err != nil {
		return 0, nil, err
	}
	reason := defaultCancelReason
	if r.ContentLength != 0 {
		body, err := readObject(r)
		if err != nil {
			return 0, nil, err
		}
		if raw, ok := body["reason"]; ok && kind(raw) != "null" {
			if kind(raw) != "string" || json.Unmarshal(raw, &reason) != nil {
				return 0, nil, invalid("reason", "invalid", "Not a valid string.")
			}
		}
	}
	if run.Status.Terminal() {
		return 0, nil, &apiError{status: http.StatusConflict, code: "conflict", detail: "Task run has already ended."}
	}
	cancelled := tasksapi.StatusCancelled
	if run, err = s.store.patchRun(r.Context(), taskID, runID, runPatch{Status: &cancelled}); err != nil {
		return 0, nil, err
	}
	s.signal(r.Context(), taskID, runID, signals.CompleteTask, string(tasksapi.StatusCancelled), reason)
	return http.StatusOK, s.decorateRun(r, run), nil
}

// command is POST …/runs/{id}/command/, a JSON-RPC request: user_message
// {content, artifact_ids?, message_id?, message_context?} becomes
// send_followup_message(message, artifact_ids, message_id, actor_user_id,
// message_context).
func (s *Server) command(r *http.Request) (int, any, error) {
	taskID, runID, body, err := s.runObject(r)
	if err != nil {
		return 0, nil, err
	}
	var version, method string
	if json.Unmarshal(body["jsonrpc"], &version) != nil || version != "2.0" {
		return 0, nil, invalid("jsonrpc", "invalid", `jsonrpc must be "2.0".`)
	}
	if json.Unmarshal(body["method"], &method) != nil || method == "" {
		return 0, nil, invalid("method", "required", "This field is required.")
	}
	if method != "user_message" {
		return 0, nil, invalid("method", "invalid_choice", `"`+method+`" is not a valid choice.`)
	}
	var params struct {
		Content        *string         `json:"content"`
		ArtifactIDs    []string        `json:"artifact_ids"`
		MessageID      string          `json:"message_id"`
		MessageContext json.RawMessage `json:"message_context"`
	}
	if raw, ok := body["params"]; !ok || kind(raw) != "object" || json.Unmarshal(raw, &params) != nil {
		return 0, nil, invalid("params", "invalid", "params must be an object with the message's content.")
	}
	if params.Content == nil || *params.Content == "" {
		return 0, nil, invalid("params", "required", "params.content is required.")
	}
	if params.MessageID == "" {
		params.MessageID = uuid.NewString()
	}
	if params.ArtifactIDs == nil {
		params.ArtifactIDs = []string{}
	}
	var msgContext any
	if len(params.MessageContext) > 0 && kind(params.MessageContext) != "null" {
		msgContext = params.MessageContext
	}
	if s.cfg.Signaller == nil {
		return 0, nil, &apiError{status: http.StatusServiceUnavailable, code: "unavailable",
			detail: "This local Tasks API has no Temporal connection to deliver the command."}
	}
	// The local API has one user, its API key's: no user ID to name.
	err = s.cfg.Signaller.SignalRun(r.Context(), taskID, runID, signals.FollowUp,
		*params.Content, params.ArtifactIDs, params.MessageID, nil, msgContext)
	if errors.Is(err, kickoff.ErrWorkflowEnded) {
		return 0, nil, &apiError{status: http.StatusConflict, code: "conflict", detail: "Task run workflow has ended"}
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"jsonrpc": "2.0", "result": map[string]any{"queued": true}, "id": body["id"]}, nil
}
