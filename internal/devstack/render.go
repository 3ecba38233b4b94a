package devstack

import (
	"encoding/json"
	"fmt"
	"strings"
)

// RenderEntry turns a log entry into one line for a terminal.
func RenderEntry(raw json.RawMessage) string {
	var e struct {
		Timestamp    string `json:"timestamp"`
		Notification struct {
			Method string         `json:"method"`
			Params map[string]any `json:"params"`
		} `json:"notification"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return string(raw)
	}
	p := e.Notification.Params
	str := func(k string) string { s, _ := p[k].(string); return s }
	clock := e.Timestamp
	if len(clock) >= 19 {
		clock = clock[11:19]
	}
	var line string
	switch e.Notification.Method {
	case "_posthog/console":
		line = fmt.Sprintf("%-5s %s", str("level"), str("message"))
	case "_posthog/progress":
		line = fmt.Sprintf("step  %s %s", str("step"), str("status"))
		if d := str("detail"); d != "" {
			line += ": " + d
		}
	case "_posthog/run_started":
		line = fmt.Sprintf("run   started (%s)", str("agentVersion"))
	case "_posthog/branch_created":
		line = "git   pushed branch " + str("branch")
	case "_posthog/task_complete":
		line = "done  " + str("stopReason")
	case "_posthog/error":
		line = "error " + str("message")
	case "session/update":
		line = renderUpdate(p)
	default:
		line = e.Notification.Method
	}
	return clock + "  " + strings.TrimRight(line, "\n")
}

// renderUpdate shows an agent's session/update: what it said, thought, did.
func renderUpdate(p map[string]any) string {
	update, _ := p["update"].(map[string]any)
	str := func(k string) string { s, _ := update[k].(string); return s }
	switch str("sessionUpdate") {
	case "agent_message":
		return "agent " + contentText(update)
	case "user_message_chunk":
		return "you   " + contentText(update)
	case "agent_thought_chunk":
		return "think " + contentText(update)
	case "tool_call":
		return fmt.Sprintf("tool  %s [%s]", str("title"), str("kind"))
	case "tool_call_update":
		out := strings.TrimSpace(str("rawOutput"))
		if i := strings.IndexByte(out, '\n'); i >= 0 {
			out = out[:i] + " …"
		}
		if len(out) > 100 {
			out = out[:100] + "…"
		}
		line := "tool  ↳ " + str("status")
		if out != "" {
			line += ": " + out
		}
		return line
	case "plan":
		entries, _ := update["entries"].([]any)
		return fmt.Sprintf("plan  %d steps", len(entries))
	}
	return "agent " + str("sessionUpdate")
}

func contentText(update map[string]any) string {
	content, _ := update["content"].(map[string]any)
	text, _ := content["text"].(string)
	return text
}
