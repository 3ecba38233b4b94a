// Package acp builds the log entries PostHog's Tasks UI renders: Agent Client
// Protocol notifications in the envelope the Tasks API stores.
package acp

import (
	"time"

	"github.com/google/uuid"
)

// Methods of the notifications the worker writes.
const (
	MethodConsole       = "_posthog/console"
	MethodProgress      = "_posthog/progress"
	MethodRunStarted    = "_posthog/run_started"
	MethodBranchCreated = "_posthog/branch_created"
	MethodTaskComplete  = "_posthog/task_complete"
	MethodError         = "_posthog/error"
	MethodSessionUpdate = "session/update"
)

// Console levels.
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Progress statuses.
const (
	StepStarted   = "started"
	StepCompleted = "completed"
	StepFailed    = "failed"
)

// Entry is one log entry: {"type":"notification","timestamp",...,"notification":{...}}.
type Entry struct {
	Type         string       `json:"type"`
	Timestamp    string       `json:"timestamp"`
	EventID      string       `json:"event_id"`
	Notification Notification `json:"notification"`
}

// Notification is the JSON-RPC 2.0 notification inside an entry.
type Notification struct {
	JSONRPC string         `json:"jsonrpc"`
	Method  string         `json:"method"`
	Params  map[string]any `json:"params"`
}

// New returns an entry for method with params. Its event_id and timestamp are
// assigned by Stamp when the entry is queued, so they follow production order.
func New(method string, params map[string]any) Entry {
	if params == nil {
		params = map[string]any{}
	}
	return Entry{
		Type:         "notification",
		Notification: Notification{JSONRPC: "2.0", Method: method, Params: params},
	}
}

// Stamp gives the entry an event_id and a timestamp unless it already has them.
// Event IDs are UUIDv7, so they sort by creation time.
func (e *Entry) Stamp(now time.Time) {
	if e.EventID == "" {
		e.EventID = uuid.Must(uuid.NewV7()).String()
	}
	if e.Timestamp == "" {
		e.Timestamp = now.UTC().Format(time.RFC3339Nano)
	}
}

// Console is a line of console output.
func Console(level, message string) Entry {
	return New(MethodConsole, map[string]any{"level": level, "message": message})
}

// Progress reports a setup step; detail is omitted when empty.
func Progress(step, status, label, detail string) Entry {
	params := map[string]any{"group": "run", "step": step, "status": status, "label": label}
	if detail != "" {
		params["detail"] = detail
	}
	return New(MethodProgress, params)
}

// RunStarted opens a run's log.
func RunStarted(runID, taskID, agentVersion string) Entry {
	return New(MethodRunStarted, map[string]any{"runId": runID, "taskId": taskID, "agentVersion": agentVersion})
}

// BranchCreated announces the branch the run pushed.
func BranchCreated(branch string) Entry {
	return New(MethodBranchCreated, map[string]any{"branch": branch})
}

// TaskComplete closes a successful run's log.
func TaskComplete(stopReason string) Entry {
	return New(MethodTaskComplete, map[string]any{"stopReason": stopReason})
}

// Error closes a failed run's log.
func Error(message, category string) Entry {
	params := map[string]any{"message": message}
	if category != "" {
		params["errorCategory"] = category
	}
	return New(MethodError, params)
}

// AgentMessage is text the agent said, as a session/update.
func AgentMessage(text string) Entry {
	return New(MethodSessionUpdate, map[string]any{"update": map[string]any{
		"sessionUpdate": "agent_message",
		"content":       map[string]any{"type": "text", "text": text},
	}})
}
