package tasksapi

import (
	"context"
	"net/http"
)

// RunTaskRequest is the optional body of POST /tasks/{id}/run/ (PostHog's
// TaskRunCreateRequestSerializer); empty fields are not sent.
type RunTaskRequest struct {
	Mode                   string   `json:"mode,omitempty"`
	Branch                 string   `json:"branch,omitempty"`
	PendingUserMessage     string   `json:"pending_user_message,omitempty"`
	PendingUserArtifactIDs []string `json:"pending_user_artifact_ids,omitempty"`
	AutoPublish            *bool    `json:"auto_publish,omitempty"`
	RuntimeAdapter         string   `json:"runtime_adapter,omitempty"`
	Model                  string   `json:"model,omitempty"`
	ReasoningEffort        string   `json:"reasoning_effort,omitempty"`
	InitialPermissionMode  string   `json:"initial_permission_mode,omitempty"`
}

// RunTaskWith is RunTask with the run's options.
func (c *Client) RunTaskWith(ctx context.Context, taskID string, req RunTaskRequest) (Task, error) {
	var t Task
	return t, c.do(ctx, http.MethodPost, taskPath(taskID)+"run/", req, &t)
}

// SendUserMessage sends a running interactive run a follow-up message, the
// JSON-RPC user_message of POST …/runs/{id}/command/. messageID names the
// message so that a retried request is not a second message.
func (c *Client) SendUserMessage(ctx context.Context, taskID, runID, content, messageID string) error {
	body := map[string]any{
		"jsonrpc": "2.0", "method": "user_message", "id": messageID,
		"params": map[string]any{"content": content, "message_id": messageID},
	}
	return c.do(ctx, http.MethodPost, runPath(taskID, runID)+"command/", body, nil)
}
