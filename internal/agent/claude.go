package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/process"
)

// Claude runs Claude Code non-interactively (`claude -p`, prompt on stdin)
// and translates its stream-json output into ACP entries.
//
// Claude Code refuses --dangerously-skip-permissions (bypassPermissions) as
// root, which is how many containers run; acceptEdits with an allow-list of
// tools edits files and runs commands unattended as any user.
type Claude struct {
	// Path is the claude binary (default: claude on PATH).
	Path string
	// Model is passed as --model when set.
	Model string
	// MaxTurns is passed as --max-turns when positive.
	MaxTurns int
	// PermissionMode is passed as --permission-mode (default acceptEdits).
	PermissionMode string
	// AllowedTools is passed as --allowedTools when set.
	AllowedTools []string
	// ExtraArgs are appended to the command line (e.g. --mcp-config FILE).
	ExtraArgs []string
	// Env is the agent's own configuration: ANTHROPIC_API_KEY,
	// ANTHROPIC_AUTH_TOKEN, ANTHROPIC_BASE_URL as NAME=value.
	Env []string
	Options
}

// DefaultClaudePermissionMode works as root and as any other user.
const DefaultClaudePermissionMode = "acceptEdits"

// DefaultClaudeAllowedTools lets Claude Code edit, search and run commands
// in the clone without asking.
var DefaultClaudeAllowedTools = []string{"Bash", "Edit", "MultiEdit", "Write", "NotebookEdit", "Read", "Glob", "Grep", "TodoWrite", "Task"}

// Name implements Agent.
func (c *Claude) Name() string { return "claude" }

// Args is the command line after the binary.
func (c *Claude) Args() []string {
	mode := c.PermissionMode
	if mode == "" {
		mode = DefaultClaudePermissionMode
	}
	args := []string{"-p", "--output-format", "stream-json", "--verbose", "--permission-mode", mode, "--no-session-persistence"}
	if len(c.AllowedTools) > 0 {
		args = append(args, "--allowedTools", strings.Join(c.AllowedTools, ","))
	}
	if c.Model != "" {
		args = append(args, "--model", c.Model)
	}
	if c.MaxTurns > 0 {
		args = append(args, "--max-turns", strconv.Itoa(c.MaxTurns))
	}
	return append(args, c.ExtraArgs...)
}

// Run implements Agent.
func (c *Claude) Run(ctx context.Context, req Request, sink Sink) (Result, error) {
	path := c.Path
	if path == "" {
		path = "claude"
	}
	own := c.Env
	if req.Model != nil {
		own = withModel(c.Env, req.Model, []string{"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"},
			"ANTHROPIC_BASE_URL="+req.Model.BaseURL, "ANTHROPIC_API_KEY="+req.Model.Token)
	}
	env, err := cliEnv(req, c.Options, append(append([]string(nil), own...),
		// A worker's agent is not a person's terminal: no updates, no telemetry.
		"DISABLE_AUTOUPDATER=1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
	))
	if err != nil {
		return Result{}, err
	}
	spec := process.Spec{Path: path, Args: c.Args(), Env: env}
	if schema, ok := nativeSchema(req.Task); ok {
		// Claude Code gives the model a StructuredOutput tool checked
		// against the schema, and insists until it is called.
		spec.Args = append(spec.Args, "--json-schema", schema)
		spec.Stdin = strings.NewReader(req.Task.Request())
	}
	stream := &claudeStream{sink: sink, dir: req.Dir}
	return runEventCLI(ctx, c.Name(), spec, req, c.Options, stream, sink)
}

// maxArgSchemaBytes keeps a schema passed on the command line well under
// the kernel's limit for one argument (128 KiB); a larger one goes in the prompt.
const maxArgSchemaBytes = 64 << 10

// nativeSchema is the task's schema, compacted, when Claude Code can enforce it itself.
func nativeSchema(t Task) (string, bool) {
	if !t.HasSchema() {
		return "", false
	}
	var b bytes.Buffer
	if err := json.Compact(&b, t.JSONSchema); err != nil || b.Len() > maxArgSchemaBytes {
		return "", false
	}
	return b.String(), true
}

// claudeStream translates Claude Code's stream-json events.
type claudeStream struct {
	sink Sink
	dir  string

	mu     sync.Mutex
	model  string
	result *claudeResult
	fatal  string
}

type claudeEvent struct {
	Type              string          `json:"type"`
	Subtype           string          `json:"subtype"`
	SessionID         string          `json:"session_id"`
	Model             string          `json:"model"`
	Version           string          `json:"claude_code_version"`
	PermissionMode    string          `json:"permissionMode"`
	Message           claudeMessage   `json:"message"`
	PermissionDenials []claudeDenial  `json:"permission_denials"`
	Errors            json.RawMessage `json:"errors"`
	claudeResult
}

type claudeResult struct {
	IsError          bool            `json:"is_error"`
	StructuredOutput json.RawMessage `json:"structured_output"`
	Result           string          `json:"result"`
	NumTurns         int             `json:"num_turns"`
	DurationMS       float64         `json:"duration_ms"`
	DurationAPIMS    float64         `json:"duration_api_ms"`
	TotalCostUSD     float64         `json:"total_cost_usd"`
	Usage            map[string]any  `json:"usage"`
	APIErrorStatus   any             `json:"api_error_status"`
	subtype          string
	session          string
	errors           []string
}

// claudeMessage is an event's message: an object with content, or a bare
// string. Events are decoded in one pass, so a tool result of tens of MB is
// copied once, as the text it is, not once per level of nesting.
type claudeMessage struct {
	Content claudeContent
}

func (m *claudeMessage) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		return m.Content.UnmarshalJSON(data)
	}
	var obj struct {
		Content claudeContent `json:"content"`
	}
	if err := json.Unmarshal(data, &obj); err != nil {
		return err
	}
	m.Content = obj.Content
	return nil
}

// claudeContent is a message's content: blocks, or a bare string, which is
// one text block.
type claudeContent []claudeBlock

func (c *claudeContent) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var text string
		if err := json.Unmarshal(data, &text); err != nil {
			return err
		}
		*c = claudeContent{{Type: "text", Text: text}}
		return nil
	}
	var blocks []claudeBlock
	if err := json.Unmarshal(data, &blocks); err != nil {
		return err
	}
	*c = blocks
	return nil
}

type claudeBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Thinking  string          `json:"thinking"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   toolOutput      `json:"content"`
	IsError   bool            `json:"is_error"`
}

// toolOutput is a tool_result's content as text: a string, or the text of
// its blocks (other blocks, such as images, by their type).
type toolOutput string

func (t *toolOutput) UnmarshalJSON(data []byte) error {
	switch {
	case len(data) > 0 && data[0] == '"':
		var text string
		err := json.Unmarshal(data, &text)
		*t = toolOutput(text)
		return err
	case len(data) > 0 && data[0] == '[':
		var blocks []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(data, &blocks); err != nil {
			return err
		}
		parts := make([]string, 0, len(blocks))
		for _, b := range blocks {
			if b.Type == "text" {
				parts = append(parts, b.Text)
			} else {
				parts = append(parts, "["+b.Type+"]")
			}
		}
		*t = toolOutput(strings.Join(parts, "\n"))
	case string(data) != "null":
		*t = toolOutput(data)
	}
	return nil
}

type claudeDenial struct {
	ToolName string `json:"tool_name"`
}

// line handles one stdout line and says what it means for the run.
func (s *claudeStream) line(line string) verdict {
	if !strings.HasPrefix(strings.TrimSpace(line), "{") {
		s.sink.Emit(acp.Console(acp.LevelInfo, line))
		return goOn
	}
	var ev claudeEvent
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		if strings.Contains(line, process.LineCutMarker) {
			s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude: an event longer than the event limit (TASKWORKER_AGENT_MAX_EVENT_BYTES) was skipped: %s", clipText(line, 500))))
		} else {
			s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude: unreadable event (%v): %s", err, clipText(line, 2000))))
		}
		return goOn
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
	return goOn
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
		return goOn
	default:
		s.sink.Emit(acp.Console(acp.LevelDebug, fmt.Sprintf("claude system/%s: %s", ev.Subtype, clipText(line, 2000))))
		return goOn
	}
	s.mu.Lock()
	s.model = ev.Model
	s.mu.Unlock()
	s.sink.Emit(acp.Console(acp.LevelInfo, fmt.Sprintf("Claude Code %s started: model %s, permission mode %s, session %s",
		ev.Version, ev.Model, ev.PermissionMode, ev.SessionID)))
	return goOn
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
	return goOn
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

// outcome decides how the run ended: only a successful result is success; an
// error result or a process that ended without one fails the run.
func (s *claudeStream) outcome(name string, end sessionEnd) (Result, error) {
	s.mu.Lock()
	r, model, fatal := s.result, s.model, s.fatal
	s.mu.Unlock()
	if fatal != "" {
		return Result{}, &ResultError{Agent: name, Message: fatal}
	}
	if r == nil {
		return Result{}, &ExitError{Agent: name, Result: end.process, Detail: "before reporting a result"}
	}
	res := Result{Summary: r.Result, Session: r.session, Structured: nonNull(r.StructuredOutput), Usage: map[string]any{
		"agent":           name,
		"num_turns":       r.NumTurns,
		"duration_ms":     int64(r.DurationMS),
		"duration_api_ms": int64(r.DurationAPIMS),
		"cost_usd":        r.TotalCostUSD,
	}}
	if model != "" {
		res.Usage["model"] = model
	}
	for _, k := range []string{"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"} {
		if v, ok := r.Usage[k]; ok {
			res.Usage[k] = v
		}
	}
	if r.IsError || r.subtype != "success" {
		kind := r.subtype
		if kind == "success" {
			kind = ""
		}
		return res, &ResultError{Agent: name, Kind: kind, Turns: r.NumTurns, Message: r.describe()}
	}
	if !end.process.Success() && !end.stoppedAfterResult {
		s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("claude reported success, then %s", end.process.Describe())))
	}
	return res, nil
}

func nonNull(raw json.RawMessage) json.RawMessage {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return nil
	}
	return raw
}

func (r *claudeResult) describe() string {
	var parts []string
	if strings.TrimSpace(r.Result) != "" {
		parts = append(parts, r.Result)
	}
	parts = append(parts, r.errors...)
	if r.APIErrorStatus != nil {
		parts = append(parts, fmt.Sprintf("API status %v", r.APIErrorStatus))
	}
	return clipText(strings.Join(parts, "; "), 1000)
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

// ResultError is an agent that reported it failed.
type ResultError struct {
	Agent   string
	Kind    string
	Turns   int
	Message string
}

func (e *ResultError) Error() string {
	msg := fmt.Sprintf("agent %s reported an error", e.Agent)
	if e.Kind != "" {
		msg += " (" + e.Kind + ")"
	}
	switch {
	case e.Turns == 1:
		msg += " after 1 turn"
	case e.Turns > 1:
		msg += fmt.Sprintf(" after %d turns", e.Turns)
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}
