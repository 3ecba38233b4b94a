package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/process"
)

// Codex runs OpenAI's Codex CLI non-interactively (`codex exec --json`,
// prompt on stdin) and translates its JSONL events into ACP entries.
type Codex struct {
	// Path is the codex binary (default: codex on PATH).
	Path string
	// Model is passed as --model when set.
	Model string
	// Sandbox is passed as --sandbox (default workspace-write).
	Sandbox string
	// BaseURL is the Responses API the agent talks to (default OpenAI's).
	BaseURL string
	// ExtraArgs are added before the prompt (e.g. -c key=value).
	ExtraArgs []string
	// Env is the agent's own configuration: OPENAI_API_KEY=... .
	Env []string
	Options
}

// Codex defaults.
const (
	DefaultCodexSandbox = "workspace-write"
	DefaultCodexBaseURL = "https://api.openai.com/v1"
)

// Name implements Agent.
func (c *Codex) Name() string { return "codex" }

// Args is the command line after the binary. The model provider is spelled
// out so the key comes from OPENAI_API_KEY in the agent's environment (no
// `codex login` state) and the base URL can point anywhere.
func (c *Codex) Args() []string { return c.args(c.BaseURL, Request{}) }

// args is the command line of req's turn: a turn that keeps its
// conversation records it in CODEX_HOME (no --ephemeral), and a follow-up
// resumes the one the turn before recorded.
func (c *Codex) args(base string, req Request) []string {
	sandbox := c.Sandbox
	if sandbox == "" {
		sandbox = DefaultCodexSandbox
	}
	if base == "" {
		base = DefaultCodexBaseURL
	}
	args := []string{"exec", "--json", "--skip-git-repo-check"}
	if !req.Turn.Keep && req.Turn.Session == "" {
		args = append(args, "--ephemeral")
	}
	args = append(args, "--sandbox", sandbox,
		"-c", "model_providers.taskworker={name=\"taskworker\",base_url="+strconv.Quote(base)+",env_key=\"OPENAI_API_KEY\",wire_api=\"responses\"}",
		"-c", "model_provider=\"taskworker\"")
	if model := cmp.Or(req.ModelName, c.Model); model != "" {
		args = append(args, "--model", model)
	}
	if req.Effort != "" {
		args = append(args, "-c", "model_reasoning_effort="+strconv.Quote(req.Effort))
	}
	args = append(args, c.ExtraArgs...)
	if req.Turn.Session != "" {
		args = append(args, "resume", req.Turn.Session)
	}
	return append(args, "-")
}

// Run implements Agent.
func (c *Codex) Run(ctx context.Context, req Request, sink Sink) (Result, error) {
	path := c.Path
	if path == "" {
		path = "codex"
	}
	own := c.Env
	base := c.BaseURL
	if req.Model != nil {
		base = req.Model.BaseURL
		own = withModel(c.Env, req.Model, []string{"OPENAI_API_KEY"}, "OPENAI_API_KEY="+req.Model.Token)
	}
	if req.HomeDir != "" {
		// Codex refuses a CODEX_HOME that does not exist.
		codexHome := filepath.Join(req.HomeDir, ".codex")
		if err := os.MkdirAll(codexHome, 0o700); err != nil {
			return Result{}, fmt.Errorf("codex home: %w", err)
		}
		own = append(append([]string(nil), own...), "CODEX_HOME="+codexHome)
	}
	env, err := cliEnv(req, c.Options, own)
	if err != nil {
		return Result{}, err
	}
	spec := process.Spec{Path: path, Args: c.args(base, req), Env: env}
	if req.Task.HasSchema() && req.HomeDir != "" && strictSchema(req.Task.JSONSchema) && req.Turn.Session == "" {
		// The API then holds the final message to the schema. Codex asks
		// for OpenAI's strict mode, which refuses other schemas: those are
		// asked for in the prompt instead.
		// Where Codex, in its sandbox, can read it.
		file := filepath.Join(req.HomeDir, "output-schema.json")
		if err := os.WriteFile(file, req.Task.JSONSchema, 0o600); err != nil {
			return Result{}, fmt.Errorf("codex output schema: %w", err)
		}
		spec.Args = append(spec.Args[:len(spec.Args)-1], "--output-schema", file, "-")
		spec.Stdin = strings.NewReader(req.asked())
	}
	stream := &codexStream{sink: sink, started: map[string]bool{}}
	return runEventCLI(ctx, c.Name(), spec, req, c.Options, stream, sink)
}

// codexStream translates `codex exec --json` events.
type codexStream struct {
	sink Sink

	mu       sync.Mutex
	started  map[string]bool // items announced as tool calls
	thread   string
	summary  string
	usage    map[string]any
	finished bool
	failure  string
}

type codexEvent struct {
	Type     string          `json:"type"`
	ThreadID string          `json:"thread_id"`
	Message  string          `json:"message"`
	Item     *codexItem      `json:"item"`
	Usage    map[string]any  `json:"usage"`
	Error    *codexItemError `json:"error"`
}

type codexItemError struct {
	Message string `json:"message"`
}

type codexItem struct {
	ID               string          `json:"id"`
	Type             string          `json:"type"`
	Text             string          `json:"text"`
	Message          string          `json:"message"`
	Command          string          `json:"command"`
	AggregatedOutput string          `json:"aggregated_output"`
	ExitCode         *int            `json:"exit_code"`
	Status           string          `json:"status"`
	Changes          json.RawMessage `json:"changes"`
	Server           string          `json:"server"`
	Tool             string          `json:"tool"`
	Arguments        json.RawMessage `json:"arguments"`
	Result           json.RawMessage `json:"result"`
	Error            *codexItemError `json:"error"`
	Query            string          `json:"query"`
	Items            []struct {
		Text      string `json:"text"`
		Completed bool   `json:"completed"`
	} `json:"items"`
}

func (s *codexStream) line(line string) verdict {
	if !strings.HasPrefix(strings.TrimSpace(line), "{") {
		s.sink.Emit(acp.Console(acp.LevelInfo, line))
		return keepReading
	}
	var ev codexEvent
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("codex: unreadable event (%v): %s", err, clipText(line, 2000))))
		return keepReading
	}
	switch ev.Type {
	case "thread.started":
		s.mu.Lock()
		s.thread = ev.ThreadID
		s.mu.Unlock()
		s.sink.Emit(acp.Console(acp.LevelInfo, "Codex started: thread "+ev.ThreadID))
	case "turn.started":
	case "item.started", "item.updated", "item.completed":
		if ev.Item != nil {
			s.item(*ev.Item, ev.Type == "item.completed")
		}
	case "error":
		s.sink.Emit(acp.Console(acp.LevelWarn, "codex: "+ev.Message))
	case "turn.completed":
		s.mu.Lock()
		s.usage, s.finished = ev.Usage, true
		s.mu.Unlock()
		return finalResult
	case "turn.failed":
		msg := "the turn failed"
		if ev.Error != nil && ev.Error.Message != "" {
			msg = ev.Error.Message
		}
		s.mu.Lock()
		s.finished, s.failure = true, msg
		s.mu.Unlock()
		return finalResult
	default:
		s.sink.Emit(acp.Console(acp.LevelInfo, fmt.Sprintf("codex %s event: %s", ev.Type, clipText(line, 2000))))
	}
	return keepReading
}

func (s *codexStream) item(it codexItem, completed bool) {
	switch it.Type {
	case "agent_message":
		if completed && strings.TrimSpace(it.Text) != "" {
			s.mu.Lock()
			s.summary = it.Text
			s.mu.Unlock()
			s.sink.Emit(acp.AgentMessage(it.Text))
		}
	case "reasoning":
		if completed && strings.TrimSpace(it.Text) != "" {
			s.sink.Emit(acp.AgentThought(it.Text))
		}
	case "todo_list":
		plan := make([]acp.PlanEntry, 0, len(it.Items))
		for _, t := range it.Items {
			status := "pending"
			if t.Completed {
				status = "completed"
			}
			plan = append(plan, acp.PlanEntry{Content: t.Text, Priority: "medium", Status: status})
		}
		s.sink.Emit(acp.Plan(plan))
	case "error":
		s.sink.Emit(acp.Console(acp.LevelWarn, "codex: "+it.Message))
	case "command_execution":
		s.tool(it, completed, "`"+clipText(it.Command, 200)+"`", acp.KindExecute, map[string]any{"command": it.Command},
			it.AggregatedOutput, it.Status == "failed" || it.Status == "declined" || (it.ExitCode != nil && *it.ExitCode != 0))
	case "file_change":
		var changes []struct {
			Path string `json:"path"`
			Kind string `json:"kind"`
		}
		_ = json.Unmarshal(it.Changes, &changes)
		var paths []string
		for _, c := range changes {
			paths = append(paths, c.Kind+" "+c.Path)
		}
		s.tool(it, completed, "Edit "+clipText(strings.Join(paths, ", "), 300), acp.KindEdit, clipJSON(it.Changes),
			strings.Join(paths, "\n"), it.Status == "failed")
	case "mcp_tool_call":
		output := string(it.Result)
		if it.Error != nil {
			output = it.Error.Message
		}
		s.tool(it, completed, it.Server+"/"+it.Tool, acp.KindOther, clipJSON(it.Arguments), output, it.Status == "failed" || it.Error != nil)
	case "web_search":
		s.tool(it, completed, "Search the web: "+clipText(it.Query, 200), acp.KindFetch, map[string]any{"query": it.Query}, "", false)
	default:
		if completed {
			raw, _ := json.Marshal(it)
			s.sink.Emit(acp.Console(acp.LevelInfo, fmt.Sprintf("codex %s item: %s", it.Type, clipText(string(raw), 2000))))
		}
	}
}

// tool announces an item as a tool call once, and reports its end.
func (s *codexStream) tool(it codexItem, completed bool, title, kind string, input any, output string, failed bool) {
	s.mu.Lock()
	announced := s.started[it.ID]
	s.started[it.ID] = true
	s.mu.Unlock()
	if !announced {
		s.sink.Emit(acp.ToolCall(it.ID, title, kind, input))
	}
	if completed {
		s.sink.Emit(acp.ToolCallUpdate(it.ID, failed, clipText(output, maxToolOutputBytes)))
	}
}

func (s *codexStream) outcome(name string, end sessionEnd) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.finished {
		return Result{}, &ExitError{Agent: name, Result: end.process, Detail: "before finishing its turn"}
	}
	res := Result{Summary: s.summary, Session: s.thread, Usage: map[string]any{"agent": name}}
	for k, v := range s.usage {
		res.Usage[k] = v
	}
	if s.failure != "" {
		msg := clipText(s.failure, 1000)
		if strings.Contains(msg, "401 Unauthorized") || strings.Contains(msg, "403 Forbidden") {
			msg += "; check OPENAI_API_KEY (and OPENAI_BASE_URL)"
		}
		return res, &ResultError{Agent: name, Kind: "turn.failed", Message: msg}
	}
	if !end.process.Success() && !end.stoppedAfterResult {
		s.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("codex finished its turn, then %s", end.process.Describe())))
	}
	return res, nil
}
