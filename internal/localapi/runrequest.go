package localapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/runstate"
)

// runRequest is a validated body of POST /tasks/{id}/run/, PostHog's
// TaskRunCreateRequestSerializer.
type runRequest struct {
	// state is the new run's state: mode always, the other keys only when given.
	state map[string]any
	// initial is the pending user message, nil when there is none.
	initial *kickoff.InitialMessage
}

var modes = []string{runstate.Background, runstate.Interactive}

const (
	maxBranchLen     = 255
	maxArtifactIDLen = 128
)

// readRunRequest reads the optional body of POST /tasks/{id}/run/: none at
// all, as PostHog's own clients send, is a background run.
func readRunRequest(r *http.Request) (runRequest, error) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return runRequest{}, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", detail: "Request body too large."}
		}
		return runRequest{}, fmt.Errorf("read the run request: %w", err)
	}
	body := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(data)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(data))
		if body, err = readObject(r); err != nil {
			return runRequest{}, err
		}
	}
	return parseRunRequest(body)
}

func choiceField(body map[string]json.RawMessage, name string, choices []string) (*string, error) {
	v, has, err := stringField(body, name, false)
	if err != nil || !has {
		return nil, err
	}
	if !slices.Contains(choices, *v) {
		return nil, invalid(name, "invalid_choice", fmt.Sprintf("%q is not a valid choice.", *v))
	}
	return v, nil
}

func parseRunRequest(body map[string]json.RawMessage) (runRequest, error) {
	req := runRequest{state: map[string]any{"mode": runstate.Background}}
	mode, err := choiceField(body, "mode", modes)
	if err != nil {
		return req, err
	}
	if mode != nil {
		req.state["mode"] = *mode
	}

	branch, _, err := stringField(body, "branch", true)
	if err != nil {
		return req, err
	}
	if branch != nil {
		switch {
		case strings.TrimSpace(*branch) == "":
			return req, invalid("branch", "blank", "This field may not be blank.")
		case utf8.RuneCountInString(*branch) > maxBranchLen:
			return req, invalid("branch", "max_length", fmt.Sprintf("Ensure this field has no more than %d characters.", maxBranchLen))
		}
		req.state["pr_base_branch"] = strings.TrimSpace(*branch)
	}

	if raw, ok := body["auto_publish"]; ok {
		switch kind(raw) {
		case "null":
		case "bool":
			var b bool
			_ = json.Unmarshal(raw, &b)
			req.state["auto_publish"] = b
		default:
			return req, invalid("auto_publish", "invalid", "Must be a valid boolean.")
		}
	}

	adapter, err := choiceField(body, "runtime_adapter", runstate.RuntimeAdapters)
	if err != nil {
		return req, err
	}
	model, hasModel, err := stringField(body, "model", false)
	if err != nil {
		return req, err
	}
	if hasModel && strings.TrimSpace(*model) == "" {
		return req, invalid("model", "blank", "This field may not be blank.")
	}
	effort, err := choiceField(body, "reasoning_effort", runstate.ReasoningEfforts)
	if err != nil {
		return req, err
	}
	permission, hasPermission, err := stringField(body, "initial_permission_mode", false)
	if err != nil {
		return req, err
	}
	// PostHog's rule: a cloud runtime is chosen whole, adapter and model.
	if adapter != nil || hasModel || effort != nil {
		const detail = "This field is required when selecting a cloud runtime."
		if adapter == nil {
			return req, invalid("runtime_adapter", "required", detail)
		}
		if !hasModel {
			return req, invalid("model", "required", detail)
		}
		req.state["runtime_adapter"] = *adapter
		req.state["model"] = strings.TrimSpace(*model)
		if effort != nil {
			req.state["reasoning_effort"] = *effort
		}
	}
	if hasPermission {
		if adapter == nil {
			return req, invalid("initial_permission_mode", "required", "This field requires runtime_adapter to be set.")
		}
		req.state["initial_permission_mode"] = *permission
	}

	message, _, err := stringField(body, "pending_user_message", true)
	if err != nil {
		return req, err
	}
	ids, err := artifactIDs(body)
	if err != nil {
		return req, err
	}
	if message != nil && strings.TrimSpace(*message) != "" {
		req.initial = &kickoff.InitialMessage{Message: strings.TrimSpace(*message), ArtifactIDs: ids, MessageID: uuid.NewString()}
	}
	return req, nil
}

// artifactIDs reads pending_user_artifact_ids, a list of strings.
func artifactIDs(body map[string]json.RawMessage) ([]string, error) {
	const name = "pending_user_artifact_ids"
	raw, ok := body[name]
	if !ok || kind(raw) == "null" {
		return []string{}, nil
	}
	var items []json.RawMessage
	if kind(raw) != "list" || json.Unmarshal(raw, &items) != nil {
		return nil, invalid(name, "not_a_list", "Expected a list of items.")
	}
	ids := make([]string, 0, len(items))
	for i, item := range items {
		attr := fmt.Sprintf("%s__%d", name, i)
		var id string
		if kind(item) != "string" || json.Unmarshal(item, &id) != nil {
			return nil, invalid(attr, "invalid", "Not a valid string.")
		}
		if id == "" {
			return nil, invalid(attr, "blank", "This field may not be blank.")
		}
		if utf8.RuneCountInString(id) > maxArtifactIDLen {
			return nil, invalid(attr, "max_length", fmt.Sprintf("Ensure this field has no more than %d characters.", maxArtifactIDLen))
		}
		ids = append(ids, id)
	}
	return ids, nil
}
