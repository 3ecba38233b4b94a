package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/taskworker/taskworker/internal/acp"
)

// outcome decides how the run ended: only a successful result is success; an
// error result or a process that ended without one fails the run.
func (s *claudeStream) outcome(name string, end sessionEnd) (Result, error) {
	s.mu.Lock()
	r, model, fatal := s.result, s.model, s.fatal
	s.mu.Unlock()
	if fatal != "" {
		return Result{}, &ResultError{Agent: name, Message: fatal}
	}
	if r == nil {
		return Result{}, &ExitError{Agent: name, Result: end.process, Detail: "before reporting a result"}
	}
	res := Result{Summary: r.Result, Session: r.session, Structured: nonNull(r.StructuredOutput), Usage: map[string]any{
		"agent":           name,
		"num_turns":       r.NumTurns,
		"duration_ms":     int64(r.DurationMS),
		"duration_api_ms": int64(r.DurationAPIMS),
		"cost_usd":        r.TotalCostUSD,
	}}
	if model != "" {
		res.Usage["model"] = model
	}
	for _, k := range []string{"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"} {
		if v, ok := r.Usage[k]; ok {
			res.Usage[k] = v
		}
	}
	if r.IsError || r.subtype != "success" {
		kind := r.subtype
		if kind == "success" {
			kind = ""
		}
		return res, &ResultError{Agent: name, Kind: kind, Turns: r.NumTurns, Message: r.describe()}
	}
	if !end.process.Success() && !end.stoppedAfterResult {
		s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude reported success, then %s", end.process.Describe())))
	}
	return res, nil
}

func nonNull(raw json.RawMessage) json.RawMessage {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return nil
	}
	return raw
}

func (r *claudeResult) describe() string {
	var parts []string
	if strings.TrimSpace(r.Result) != "" {
		parts = append(parts, r.Result)
	}
	parts = append(parts, r.errors...)
	if r.APIErrorStatus != nil {
		parts = append(parts, fmt.Sprintf("API status %v", r.APIErrorStatus))
	}
	return clipText(strings.Join(parts, "; "), 1000)
}
