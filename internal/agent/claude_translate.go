package agent

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/process"
)

// claudeStream translates Claude Code's stream-json events.
type claudeStream struct {
	sink Sink
	dir  string

	mu     sync.Mutex
	model  string
	result *claudeResult
	fatal  string
}

// line handles one stdout line and says what it means for the run.
func (s *claudeStream) line(line string) verdict {
	if !strings.HasPrefix(strings.TrimSpace(line), "{") {
		s.sink.Emit(acp.Console(acp.LevelInfo, line))
		return keepReading
	}
	var ev claudeEvent
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		if strings.Contains(line, process.LineCutMarker) {
			s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude: an event longer than the event limit (TASKWORKER_AGENT_MAX_EVENT_BYTES) was skipped: %s", clipText(line, 500))))
		} else {
			s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude: unreadable event (%v): %s", err, clipText(line, 2000))))
		}
		return keepReading
	}
	switch ev.Type {
	case "system":
		return s.system(ev, line)
	case "assistant":
		s.blocks(ev, true)
	case "user":
		s.blocks(ev, false)
	case "result":
		s.finish(ev)
		return finalResult
	default:
		s.sink.Emit(acp.Console(acp.LevelInfo, fmt.Sprintf("claude %s event: %s", ev.Type, clipText(line, 2000))))
	}
	return keepReading
}

func (s *claudeStream) system(ev claudeEvent, line string) verdict {
	switch ev.Subtype {
	case "init":
	case "api_retry":
		return s.apiRetry(line)
	case "permission_denied":
		var d struct {
			ToolName string `json:"tool_name"`
			Message  string `json:"message"`
		}
		_ = json.Unmarshal([]byte(line), &d)
		s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude was not allowed to use %s: %s", d.ToolName, d.Message)))
		return keepReading
	default:
		s.sink.Emit(acp.Console(acp.LevelDebug, fmt.Sprintf("claude system/%s: %s", ev.Subtype, clipText(line, 2000))))
		return keepReading
	}
	s.mu.Lock()
	s.model = ev.Model
	s.mu.Unlock()
	s.sink.Emit(acp.Console(acp.LevelInfo, fmt.Sprintf("Claude Code %s started: model %s, permission mode %s, session %s",
		ev.Version, ev.Model, ev.PermissionMode, ev.SessionID)))
	return keepReading
}

// apiRetry reports a failed API call Claude Code will retry. Rejected
// credentials are retried for minutes to no avail: the run fails at once.
func (s *claudeStream) apiRetry(line string) verdict {
	var r struct {
		Attempt    int    `json:"attempt"`
		MaxRetries int    `json:"max_retries"`
		DelayMS    int    `json:"retry_delay_ms"`
		Status     int    `json:"error_status"`
		Error      string `json:"error"`
	}
	_ = json.Unmarshal([]byte(line), &r)
	if r.Status == 401 || r.Status == 403 {
		s.mu.Lock()
		s.fatal = fmt.Sprintf("the Anthropic API refused Claude Code's credentials (HTTP %d, %s): check ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN (and ANTHROPIC_BASE_URL)", r.Status, r.Error)
		s.mu.Unlock()
		return fatal
	}
	s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude: API call failed (HTTP %d, %s); retry %d of %d in %d ms",
		r.Status, r.Error, r.Attempt, r.MaxRetries, r.DelayMS)))
	return keepReading
}

// blocks turns a message's content into entries: the assistant's text,
// thinking and tool calls, and the tool results that come back as user messages.
func (s *claudeStream) blocks(ev claudeEvent, assistant bool) {
	for _, b := range ev.Message.Content {
		switch b.Type {
		case "text":
			if assistant && strings.TrimSpace(b.Text) != "" {
				s.sink.Emit(acp.AgentMessage(b.Text))
			}
		case "thinking":
			if strings.TrimSpace(b.Thinking) != "" {
				s.sink.Emit(acp.AgentThought(b.Thinking))
			}
		case "tool_use":
			var input any
			if len(b.Input) > 0 {
				input = clipJSON(b.Input)
			}
			title, kind := claudeToolTitle(b.Name, input, s.dir)
			s.sink.Emit(acp.ToolCall(b.ID, title, kind, input))
		case "tool_result":
			s.sink.Emit(acp.ToolCallUpdate(b.ToolUseID, b.IsError, clipText(string(b.Content), maxToolOutputBytes)))
		}
	}
}

func (s *claudeStream) finish(ev claudeEvent) {
	r := ev.claudeResult
	r.subtype = ev.Subtype
	r.session = ev.SessionID
	var errs []string
	if json.Unmarshal(ev.Errors, &errs) == nil {
		r.errors = errs
	}
	if n := len(ev.PermissionDenials); n > 0 {
		s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude was refused %d tool calls (first: %s); allow tools with TASKWORKER_CLAUDE_ALLOWED_TOOLS or TASKWORKER_CLAUDE_PERMISSION_MODE",
			n, ev.PermissionDenials[0].ToolName)))
	}
	s.mu.Lock()
	s.result = &r
	s.mu.Unlock()
}

// claudeToolTitle is what the UI shows for a tool call, and its ACP kind.
func claudeToolTitle(name string, input any, dir string) (string, string) {
	in, _ := input.(map[string]any)
	str := func(k string) string { v, _ := in[k].(string); return v }
	rel := func(p string) string {
		if r, err := filepath.Rel(dir, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
		return p
	}
	switch name {
	case "Bash":
		return "`" + clipText(str("command"), 200) + "`", acp.KindExecute
	case "Read":
		return "Read " + rel(str("file_path")), acp.KindRead
	case "Write", "Edit", "MultiEdit":
		return name + " " + rel(str("file_path")), acp.KindEdit
	case "NotebookEdit":
		return "Edit " + rel(str("notebook_path")), acp.KindEdit
	case "Glob", "Grep":
		return name + " " + clipText(str("pattern"), 200), acp.KindSearch
	case "WebFetch":
		return "Fetch " + str("url"), acp.KindFetch
	case "WebSearch":
		return "Search the web: " + clipText(str("query"), 200), acp.KindFetch
	case "Task", "Agent":
		return "Agent: " + clipText(str("description"), 200), acp.KindThink
	case "TodoWrite":
		return "Update the plan", acp.KindThink
	}
	return name, acp.KindOther
}
