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
		update, _ := p["update"].(map[string]any)
		content, _ := update["content"].(map[string]any)
		text, _ := content["text"].(string)
		line = fmt.Sprintf("agent %v %s", update["sessionUpdate"], text)
	default:
		line = e.Notification.Method
	}
	return clock + "  " + strings.TrimRight(line, "\n")
}
