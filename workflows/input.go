// Package workflows holds the process-task workflow: the deterministic
// orchestration of one task run, free of I/O.
package workflows

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/signals"
)

// Input is PostHog's workflow input: {"run_id": "...", "create_pr": true, ...}.
// Unknown keys are ignored, and no value of a wrong type can make decoding
// fail: a workflow that can't decode its input would retry its first task
// forever instead of failing the run.
type Input struct {
	RunID    string `json:"run_id"`
	TaskID   string `json:"task_id,omitempty"`
	CreatePR bool   `json:"create_pr"`
	// InitialMessage is PostHog's pending follow-up that came with the run
	// ({message, artifact_ids, message_id, actor_user_id, context}): the
	// agent is told it with the task.
	InitialMessage *signals.Message `json:"initial_message,omitempty"`
}

// UnmarshalJSON decodes leniently: fields of the wrong type are left empty.
func (in *Input) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		// Not an object (null, a list, ...): every field stays empty and the
		// workflow fails the run with a message that says what is missing.
		*in = Input{}
		return nil
	}
	*in = Input{RunID: stringField(raw["run_id"]), TaskID: stringField(raw["task_id"]), InitialMessage: pendingMessage(raw["initial_message"])}
	switch v := anyField(raw["create_pr"]).(type) {
	case bool:
		in.CreatePR = v
	case string:
		in.CreatePR = strings.EqualFold(v, "true")
	}
	return nil
}

// pendingMessage reads PostHog's PendingFollowup; one without text is none.
func pendingMessage(raw json.RawMessage) *signals.Message {
	var fields map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &fields) != nil {
		return nil
	}
	m := signals.Message{Message: strings.TrimSpace(stringField(fields["message"])), MessageID: stringField(fields["message_id"])}
	if m.Message == "" {
		return nil
	}
	_ = json.Unmarshal(fields["artifact_ids"], &m.ArtifactIDs)
	if ctx := fields["context"]; len(ctx) > 0 && string(ctx) != "null" {
		m.Context = ctx
	}
	return &m
}

func stringField(raw json.RawMessage) string {
	s, _ := anyField(raw).(string)
	return strings.TrimSpace(s)
}

func anyField(raw json.RawMessage) any {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return nil
	}
	return v
}

var uuidRe = regexp.MustCompile(`^` + kickoff.UUIDPattern + `$`)

// resolveRun finds the task and run IDs: task_id from the input when present,
// else the first UUID of the workflow ID task-processing-{task_id}-{run_id}.
func resolveRun(in Input, workflowID string) (taskID, runID string, err error) {
	runID, taskID = in.RunID, in.TaskID
	if runID == "" {
		return "", "", fmt.Errorf("workflow input has no run_id: start %s with {\"run_id\": \"<run uuid>\"}", kickoff.WorkflowType)
	}
	if !uuidRe.MatchString(runID) {
		return "", "", fmt.Errorf("run_id %q in the workflow input is not a UUID", runID)
	}
	if taskID == "" {
		taskID = kickoff.TaskOf(workflowID)
	}
	if taskID == "" {
		return "", "", fmt.Errorf("no task_id: the workflow input has none and workflow ID %q is not task-processing-{task_id}-{run_id}", workflowID)
	}
	if !uuidRe.MatchString(taskID) {
		return "", "", fmt.Errorf("task_id %q in the workflow input is not a UUID", taskID)
	}
	return strings.ToLower(taskID), strings.ToLower(runID), nil
}
