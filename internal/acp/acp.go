// Package acp builds the log entries PostHog's Tasks UI renders: Agent Client
// Protocol notifications in the envelope the Tasks API stores.
package acp

import (
	"strconv"
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
// An ID Stamp makes is a random UUIDv7; a stream whose entries must keep their
// IDs when they are written again sets them first (see EventID).
func (e *Entry) Stamp(now time.Time) {
	if e.EventID == "" {
		e.EventID = uuid.Must(uuid.NewV7()).String()
	}
	if e.Timestamp == "" {
		e.Timestamp = now.UTC().Format(time.RFC3339Nano)
	}
}

// eventIDSpace is the UUIDv5 namespace of derived event IDs.
var eventIDSpace = uuid.MustParse("40b8d9fa-39ed-4f5d-837e-912969f7ab20")

// EventID is the event_id of the seq-th entry written under scope: a UUIDv5,
// the same wherever and however often it is computed, so an entry a retried
// step writes again carries the ID of its first copy and a reader keeps one.
func EventID(scope string, seq int) string {
	return uuid.NewSHA1(eventIDSpace, []byte(scope+"#"+strconv.Itoa(seq))).String()
}

// Console is a line of console output.
func Console(level, message string) Entry {
	return New(MethodConsole, map[string]any{"level": level, "message": message})
}

// Progress reports a step of group ("run", a CI round's, the agent's own);
// detail is omitted when empty.
func Progress(group, step, status, label, detail string) Entry {
	params := map[string]any{"group": group, "step": step, "status": status, "label": label}
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

// UserMessage is the user's message of a follow-up turn, as a session/update.
func UserMessage(text string) Entry {
	return New(MethodSessionUpdate, map[string]any{"update": map[string]any{
		"sessionUpdate": "user_message_chunk",
		"content":       map[string]any{"type": "text", "text": text},
	}})
}

// AgentThought is the agent's reasoning, as a session/update.
func AgentThought(text string) Entry {
	return New(MethodSessionUpdate, map[string]any{"update": map[string]any{
		"sessionUpdate": "agent_thought_chunk",
		"content":       map[string]any{"type": "text", "text": text},
	}})
}

// Tool call statuses.
const (
	ToolPending    = "pending"
	ToolInProgress = "in_progress"
	ToolCompleted  = "completed"
	ToolFailed     = "failed"
)

// Tool kinds the UI knows; anything else is other.
const (
	KindRead    = "read"
	KindEdit    = "edit"
	KindDelete  = "delete"
	KindMove    = "move"
	KindSearch  = "search"
	KindExecute = "execute"
	KindThink   = "think"
	KindFetch   = "fetch"
	KindOther   = "other"
)

// ToolKind returns kind when the UI knows it, else other.
func ToolKind(kind string) string {
	switch kind {
	case KindRead, KindEdit, KindDelete, KindMove, KindSearch, KindExecute, KindThink, KindFetch:
		return kind
	}
	return KindOther
}

// ToolCall announces a tool the agent calls, with its input as the agent gave it.
func ToolCall(id, title, kind string, rawInput any) Entry {
	update := map[string]any{
		"sessionUpdate": "tool_call",
		"toolCallId":    id,
		"title":         title,
		"kind":          ToolKind(kind),
		"status":        ToolInProgress,
	}
	if rawInput != nil {
		update["rawInput"] = rawInput
	}
	return New(MethodSessionUpdate, map[string]any{"update": update})
}

// ToolCallUpdate reports how a tool call ended and what it returned.
func ToolCallUpdate(id string, failed bool, output string) Entry {
	status := ToolCompleted
	if failed {
		status = ToolFailed
	}
	update := map[string]any{
		"sessionUpdate": "tool_call_update",
		"toolCallId":    id,
		"status":        status,
		"rawOutput":     output,
	}
	if output != "" {
		update["content"] = []any{map[string]any{"type": "content", "content": map[string]any{"type": "text", "text": output}}}
	}
	return New(MethodSessionUpdate, map[string]any{"update": update})
}

// PlanEntry is one step of the agent's plan.
type PlanEntry struct {
	Content  string `json:"content"`
	Priority string `json:"priority"`
	Status   string `json:"status"`
}

// Plan is the agent's current plan, as a session/update.
func Plan(entries []PlanEntry) Entry {
	list := make([]any, 0, len(entries))
	for _, e := range entries {
		list = append(list, map[string]any{"content": e.Content, "priority": e.Priority, "status": e.Status})
	}
	return New(MethodSessionUpdate, map[string]any{"update": map[string]any{"sessionUpdate": "plan", "entries": list}})
}
