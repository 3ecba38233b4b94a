// Package workflows holds the process-task workflow: the deterministic
// orchestration of one task run, free of I/O.
package workflows

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// ProcessTaskName is the workflow type PostHog starts for a run.
const ProcessTaskName = "process-task"

// DefaultTaskQueue is PostHog's task queue for process-task.
const DefaultTaskQueue = "tasks-task-queue"

// Input is PostHog's workflow input: {"run_id": "...", "create_pr": true, ...}.
// Unknown keys are ignored, and no value of a wrong type can make decoding
// fail: a workflow that can't decode its input would retry its first task
// forever instead of failing the run.
type Input struct {
	RunID    string `json:"run_id"`
	TaskID   string `json:"task_id,omitempty"`
	CreatePR bool   `json:"create_pr"`
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
	*in = Input{RunID: stringField(raw["run_id"]), TaskID: stringField(raw["task_id"])}
	switch v := anyField(raw["create_pr"]).(type) {
	case bool:
		in.CreatePR = v
	case string:
		in.CreatePR = strings.EqualFold(v, "true")
	}
	return nil
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

const uuidPattern = `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`

var (
	uuidRe       = regexp.MustCompile(`^` + uuidPattern + `$`)
	workflowIDRe = regexp.MustCompile(`^task-processing-(` + uuidPattern + `)-`)
)

// WorkflowID is the ID PostHog gives a run's workflow.
func WorkflowID(taskID, runID string) string {
	return "task-processing-" + taskID + "-" + runID
}

var runWorkflowIDRe = regexp.MustCompile(`^task-processing-(` + uuidPattern + `)-(` + uuidPattern + `)$`)

// RunOf is the task and run a workflow ID names, when it is PostHog's
// task-processing-{task_id}-{run_id}.
func RunOf(workflowID string) (taskID, runID string, ok bool) {
	m := runWorkflowIDRe.FindStringSubmatch(workflowID)
	if m == nil {
		return "", "", false
	}
	return strings.ToLower(m[1]), strings.ToLower(m[2]), true
}

// resolveRun finds the task and run IDs: task_id from the input when present,
// else the first UUID of the workflow ID task-processing-{task_id}-{run_id}.
func resolveRun(in Input, workflowID string) (taskID, runID string, err error) {
	runID, taskID = in.RunID, in.TaskID
	if runID == "" {
		return "", "", fmt.Errorf("workflow input has no run_id: start %s with {\"run_id\": \"<run uuid>\"}", ProcessTaskName)
	}
	if !uuidRe.MatchString(runID) {
		return "", "", fmt.Errorf("run_id %q in the workflow input is not a UUID", runID)
	}
	if taskID == "" {
		if m := workflowIDRe.FindStringSubmatch(workflowID); m != nil {
			taskID = m[1]
		}
	}
	if taskID == "" {
		return "", "", fmt.Errorf("no task_id: the workflow input has none and workflow ID %q is not task-processing-{task_id}-{run_id}", workflowID)
	}
	if !uuidRe.MatchString(taskID) {
		return "", "", fmt.Errorf("task_id %q in the workflow input is not a UUID", taskID)
	}
	return strings.ToLower(taskID), strings.ToLower(runID), nil
}
