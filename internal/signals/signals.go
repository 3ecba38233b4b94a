// Package signals is the conversation PostHog holds with a run's workflow:
// the names and positional arguments of its signals and its query, what a
// workflow keeps of them, and the data converter that lets a workflow read
// every argument of one signal.
package signals

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

// The signals PostHog sends a run's workflow, and its query.
const (
	// CompleteTask is complete_task(status, error_message): the run was
	// ended from outside (a terminal PATCH, or POST …/cancel/).
	CompleteTask = "complete_task"
	// Heartbeat is heartbeat(agent_active), sent on append_log at most once
	// a minute per run.
	Heartbeat = "heartbeat"
	// FollowUp is send_followup_message(message, artifact_ids, message_id,
	// actor_user_id, message_context): a user's next message.
	FollowUp = "send_followup_message"
	// Steer is send_steer_message with FollowUp's arguments: guidance for the
	// turn in progress.
	Steer = "send_steer_message"
	// PermissionResponse is send_permission_response({request_id, option_id,
	// actor_user_id, …}).
	PermissionResponse = "send_permission_response"

	// SteeringProtocolVersionQuery answers SteeringProtocolVersion.
	SteeringProtocolVersionQuery = "steering_protocol_version"
	SteeringProtocolVersion      = 1

	// StateQuery answers the workflow's Conversation; not PostHog's.
	StateQuery = "taskworker_conversation"
)

// Names are every signal PostHog sends.
var Names = []string{CompleteTask, Heartbeat, FollowUp, Steer, PermissionResponse}

// Args is every positional argument of one signal, each as its JSON (nil for
// a null). A signal channel's Receive fills it whole only through the
// DataConverter of this package; any other converter hands it the first
// argument alone, and FirstOnly says so.
type Args struct {
	Values    []json.RawMessage
	FirstOnly bool
}

// UnmarshalJSON is reached only when a converter other than this package's
// decodes a signal into Args: it keeps the one argument it is given.
func (a *Args) UnmarshalJSON(data []byte) error {
	*a = Args{Values: []json.RawMessage{append(json.RawMessage(nil), data...)}, FirstOnly: true}
	return nil
}

// Decode decodes argument i into v; an argument absent or null leaves v as it is.
func (a Args) Decode(i int, v any) error {
	if i >= len(a.Values) || isNull(a.Values[i]) {
		return nil
	}
	if err := json.Unmarshal(a.Values[i], v); err != nil {
		return fmt.Errorf("argument %d: %w", i+1, err)
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// text is a JSON string or number as text: PostHog's user IDs are numbers,
// other callers send strings.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// Completion is complete_task's arguments.
type Completion struct {
	Status       tasksapi.Status `json:"status"`
	ErrorMessage string          `json:"error_message,omitempty"`
}

// DecodeCompletion reads complete_task(status, error_message).
func DecodeCompletion(a Args) (Completion, error) {
	var c Completion
	var status string
	if err := a.Decode(0, &status); err != nil {
		return c, fmt.Errorf("%s: %w", CompleteTask, err)
	}
	c.Status = tasksapi.Status(status)
	if !c.Status.Terminal() {
		return c, fmt.Errorf("%s: status %q is not terminal (completed, failed or cancelled)", CompleteTask, status)
	}
	if err := a.Decode(1, &c.ErrorMessage); err != nil {
		return c, fmt.Errorf("%s: %w", CompleteTask, err)
	}
	return c, nil
}

// DecodeHeartbeat reads heartbeat(agent_active); a heartbeat without its
// argument says the agent is active, as the API's own does.
func DecodeHeartbeat(a Args) (bool, error) {
	active := true
	if err := a.Decode(0, &active); err != nil {
		return false, fmt.Errorf("%s: %w", Heartbeat, err)
	}
	return active, nil
}

// Message is a user's message: a follow-up, or a steer of the turn in progress.
type Message struct {
	Message     string          `json:"message"`
	ArtifactIDs []string        `json:"artifact_ids,omitempty"`
	MessageID   string          `json:"message_id,omitempty"`
	ActorUserID string          `json:"actor_user_id,omitempty"`
	Context     json.RawMessage `json:"message_context,omitempty"`
	// Steer marks a send_steer_message.
	Steer bool `json:"steer,omitempty"`
}

// DecodeMessage reads (message, artifact_ids, message_id, actor_user_id,
// message_context), the arguments of send_followup_message and send_steer_message.
func DecodeMessage(name string, a Args) (Message, error) {
	m := Message{Steer: name == Steer}
	if err := a.Decode(0, &m.Message); err != nil {
		return m, fmt.Errorf("%s: message: %w", name, err)
	}
	if err := a.Decode(1, &m.ArtifactIDs); err != nil {
		return m, fmt.Errorf("%s: artifact_ids: %w", name, err)
	}
	if len(a.Values) > 2 {
		m.MessageID = text(a.Values[2])
	}
	if len(a.Values) > 3 {
		m.ActorUserID = text(a.Values[3])
	}
	if len(a.Values) > 4 && !isNull(a.Values[4]) {
		m.Context = append(json.RawMessage(nil), a.Values[4]...)
	}
	return m, nil
}

// Permission is send_permission_response's one argument.
type Permission struct {
	RequestID   string          `json:"request_id"`
	OptionID    string          `json:"option_id"`
	ActorUserID string          `json:"actor_user_id,omitempty"`
	Raw         json.RawMessage `json:"raw"`
}

// DecodePermission reads send_permission_response({request_id, option_id, actor_user_id, …}).
func DecodePermission(a Args) (Permission, error) {
	var fields map[string]json.RawMessage
	if err := a.Decode(0, &fields); err != nil {
		return Permission{}, fmt.Errorf("%s: %w", PermissionResponse, err)
	}
	if len(a.Values) == 0 {
		return Permission{}, fmt.Errorf("%s: no argument", PermissionResponse)
	}
	return Permission{
		RequestID: text(fields["request_id"]), OptionID: text(fields["option_id"]),
		ActorUserID: text(fields["actor_user_id"]), Raw: append(json.RawMessage(nil), a.Values[0]...),
	}, nil
}

// KeptMessageIDs is how many message_ids a run remembers to drop a message
// sent twice, as PostHog does.
const KeptMessageIDs = 500

// Conversation is what a workflow keeps of the signals it received, for the
// turns that answer them.
type Conversation struct {
	Heartbeats  int  `json:"heartbeats"`
	AgentActive bool `json:"agent_active"`
	// Pending are the messages received and not answered, oldest first.
	Pending     []Message    `json:"pending,omitempty"`
	Permissions []Permission `json:"permissions,omitempty"`
	// Duplicates is how many messages were dropped as sent before.
	Duplicates int `json:"duplicates"`
	// SeenIDs are the last KeptMessageIDs message_ids, oldest first.
	SeenIDs []string `json:"seen_message_ids,omitempty"`
	seen    map[string]bool
}

// Heartbeat records a heartbeat.
func (c *Conversation) Heartbeat(active bool) {
	c.Heartbeats++
	c.AgentActive = active
}

// Add keeps a message unless its message_id is among the last
// KeptMessageIDs; it reports whether it was kept. A message without an ID is
// always kept: there is nothing to know it by.
func (c *Conversation) Add(m Message) bool {
	if !c.Remember(m) {
		return false
	}
	c.Pending = append(c.Pending, m)
	return true
}

// Remember records m's message_id among the last KeptMessageIDs without
// keeping m for a turn (a message answered otherwise); it reports false,
// and counts a duplicate, for one sent before.
func (c *Conversation) Remember(m Message) bool {
	if m.MessageID == "" {
		return true
	}
	if c.seen == nil {
		c.seen = make(map[string]bool, len(c.SeenIDs))
		for _, id := range c.SeenIDs {
			c.seen[id] = true
		}
	}
	if c.seen[m.MessageID] {
		c.Duplicates++
		return false
	}
	c.seen[m.MessageID] = true
	c.SeenIDs = append(c.SeenIDs, m.MessageID)
	if len(c.SeenIDs) > KeptMessageIDs {
		delete(c.seen, c.SeenIDs[0])
		c.SeenIDs = append([]string(nil), c.SeenIDs[1:]...)
	}
	return true
}

// Permission records a permission response.
func (c *Conversation) Permission(p Permission) { c.Permissions = append(c.Permissions, p) }

// Describe is a message's identity for the run's log.
func (m Message) Describe() string {
	kind := "follow-up message"
	if m.Steer {
		kind = "steering message"
	}
	if m.MessageID != "" {
		kind += " " + strconv.Quote(m.MessageID)
	}
	return kind
}
