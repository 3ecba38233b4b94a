package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"strconv"
	"strings"

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

// Args is the command line after the binary, for a background run's one turn.
func (c *Claude) Args() []string { return c.args(Request{}) }

// args is the command line of req's turn: a turn that keeps its
// conversation saves it in the agent's HOME, and a follow-up resumes the
// one saved by the turn before.
func (c *Claude) args(req Request) []string {
	mode := c.PermissionMode
	if mode == "" {
		mode = DefaultClaudePermissionMode
	}
	args := []string{"-p", "--output-format", "stream-json", "--verbose", "--permission-mode", mode}
	switch {
	case req.Turn.Session != "":
		args = append(args, "--resume", req.Turn.Session)
	case !req.Turn.Keep:
		args = append(args, "--no-session-persistence")
	}
	if len(c.AllowedTools) > 0 {
		args = append(args, "--allowedTools", strings.Join(c.AllowedTools, ","))
	}
	if model := cmp.Or(req.ModelName, c.Model); model != "" {
		args = append(args, "--model", model)
	}
	if req.Effort != "" {
		args = append(args, "--effort", req.Effort)
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
	spec := process.Spec{Path: path, Args: c.args(req), Env: env}
	if schema, ok := nativeSchema(req.Task); ok {
		// Claude Code gives the model a StructuredOutput tool checked
		// against the schema, and insists until it is called.
		spec.Args = append(spec.Args, "--json-schema", schema)
		spec.Stdin = strings.NewReader(req.asked())
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
