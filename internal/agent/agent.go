// Package agent runs a coding agent on a clone and turns what it says into
// log entries. Adapters: Claude Code, Codex and command (any program, with an
// optional JSON-lines protocol for rich logs).
package agent

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/process"
)

// Task is what the agent is asked to do.
type Task struct {
	ID          string
	RunID       string
	Title       string
	Description string
	Repository  string
	// JSONSchema, when set, is the schema the agent's result must match.
	JSONSchema json.RawMessage
}

// Prompt is the text an agent receives: the title, then the description,
// then, for a task with a JSON schema, how to hand over the result.
func (t Task) Prompt() string {
	prompt := t.Request()
	if t.HasSchema() {
		prompt += "\n\n" + structuredOutputInstructions + string(t.JSONSchema)
	}
	return prompt
}

// Request is what the task asks: the title, then the description.
func (t Task) Request() string {
	if strings.TrimSpace(t.Description) == "" {
		return t.Title
	}
	return t.Title + "\n\n" + t.Description
}

// HasSchema reports a task whose result must be JSON matching its schema.
func (t Task) HasSchema() bool {
	s := strings.TrimSpace(string(t.JSONSchema))
	return s != "" && s != "null"
}

// structuredOutputInstructions end the prompt of a task with a JSON schema.
const structuredOutputInstructions = "When you are done, give your result as one JSON value matching the JSON Schema below: " +
	"either write it to the file named by the TASK_OUTPUT_FILE environment variable, or make your final message " +
	"that JSON and nothing else (no prose, no code fence).\n\nJSON Schema:\n"

// Request is one agent run.
type Request struct {
	Task Task
	// Dir is the clone the agent works in.
	Dir string
	// ArtifactsDir is where the agent leaves files to upload; outside the clone.
	ArtifactsDir string
	// HomeDir is the agent's HOME, its own for the run (its configuration,
	// sessions and caches); outside the clone. Empty keeps the worker's.
	HomeDir string
	// WorkerDir holds the worker's own files of the run (output buffers),
	// out of the agent's reach. Empty means the system's temp dir.
	WorkerDir string
	// OutputFile is where the agent may write its JSON result (TASK_OUTPUT_FILE).
	OutputFile string
	// Isolation runs the agent's processes in the run's sandbox; nil runs
	// them as the worker's children.
	Isolation process.Isolation
	// Model, when set, is how the agent reaches its model API for this run
	// (the worker's broker and the run's token), in place of the provider
	// and key the adapter is configured with.
	Model *ModelAccess
	// Proxy, when set, is the only way out of the agent's network: its
	// environment names it as the HTTP(S) proxy in place of the worker's.
	Proxy string
	// Turn is the turn of the run's conversation this agent run answers;
	// the zero Turn is a background run's one turn.
	Turn Turn
	// ModelName and Effort, when set, are the run's own choice of model and
	// reasoning effort (its state's model and reasoning_effort), over the
	// adapter's configured ones.
	ModelName string
	Effort    string
}

// Turn is one turn of a run's conversation with its agent.
type Turn struct {
	// Number is 1 for the task's own turn, 2 for the first follow-up, ...
	Number int `json:"number"`
	// Message is the user's: a follow-up's text, the prompt of the turns
	// after the first; on the first, a message that came with the run, told
	// after the task.
	Message string `json:"message,omitempty"`
	// Session is the conversation a follow-up continues: the Result.Session
	// of the turn before, resumed by the agent from its HOME.
	Session string `json:"session,omitempty"`
	// Keep keeps the agent's conversation for a next turn (an interactive
	// run); a background run's agent keeps nothing.
	Keep bool `json:"keep,omitempty"`
}

// sessionID is what a conversation's ID may look like (Claude Code's and
// Codex's are UUIDs): it reaches the next turn's command line, and what the
// agent reports is not trusted to be an ID and not an option.
var sessionID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// ValidSession reports a session a follow-up may resume.
func ValidSession(s string) bool { return sessionID.MatchString(s) }

// FollowUp reports a turn that answers a user's follow-up message.
func (t Turn) FollowUp() bool { return t.Number > 1 }

// Prompt is what the agent is told this turn: the task's prompt (and the
// message that came with the run), or the follow-up's message.
func (r Request) Prompt() string { return r.turnPrompt(r.Task.Prompt()) }

// asked is Prompt for an agent that enforces the task's schema itself: the
// task's request without the instructions on how to hand over the result.
func (r Request) asked() string { return r.turnPrompt(r.Task.Request()) }

func (r Request) turnPrompt(task string) string {
	switch {
	case r.Turn.FollowUp():
		return r.Turn.Message
	case r.Turn.Message != "":
		return task + "\n\n" + r.Turn.Message
	}
	return task
}

// ModelAccess is an agent's model API for one run.
type ModelAccess struct {
	BaseURL string
	Token   string
}

// withModel replaces the named credential and endpoint variables of env by
// the run's access.
func withModel(env []string, access *ModelAccess, drop []string, set ...string) []string {
	if access == nil {
		return env
	}
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, name) {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// ReadOnlyPaths is implemented by agents that need host files besides their
// binary and PATH (the command agent's scripts) visible in the sandbox.
type ReadOnlyPaths interface {
	ReadOnlyPaths() []string
}

// Result is what an agent run produced.
type Result struct {
	// Summary is the agent's final message.
	Summary string
	// Usage is what the run cost: tokens, turns, duration, money, as the agent reported it.
	Usage map[string]any
	// Session identifies the agent's conversation (Claude Code's session_id, Codex's thread_id).
	Session string
	// Structured is a JSON result the agent handed over on its own channel
	// (Claude Code's StructuredOutput tool, the command protocol's output
	// line); without it OutputFile, then the final message, are read.
	Structured json.RawMessage
}

// Sink receives the agent's log entries.
type Sink interface {
	Emit(acp.Entry)
}

// Agent runs a coding agent to completion or until ctx ends, when its
// processes are stopped before Run returns.
type Agent interface {
	Name() string
	Run(ctx context.Context, req Request, sink Sink) (Result, error)
}

// baseEnv names the variables of the worker's environment an agent inherits.
// Everything else — above all the worker's own credentials — stays out.
var baseEnv = append([]string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM",
	"SSL_CERT_FILE", "SSL_CERT_DIR"}, proxyEnv...)

var proxyEnv = []string{"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"}

// Environment builds an agent's environment: the base variables and the named
// passthrough ones from the worker's environment, then the task's.
func Environment(req Request, passthrough []string) []string {
	var env []string
	for _, name := range append(append([]string(nil), baseEnv...), passthrough...) {
		if req.Proxy != "" && slices.Contains(proxyEnv, name) {
			continue
		}
		if name == "HOME" && req.HomeDir != "" {
			// The run's own, once: of two HOMEs some programs read the
			// first, and the worker's is read-only in the sandbox.
			env = append(env, "HOME="+req.HomeDir)
			continue
		}
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	if req.Proxy != "" {
		// Upper and lower case: each tool reads one or the other. The
		// gateway's own address (the model API) is reached directly.
		for _, name := range []string{"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"} {
			env = append(env, name+"="+req.Proxy)
		}
		env = append(env, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	}
	return append(env,
		"TASK_ID="+req.Task.ID,
		"RUN_ID="+req.Task.RunID,
		"TASK_TITLE="+req.Task.Title,
		"TASK_DESCRIPTION="+req.Task.Description,
		"TASK_REPOSITORY="+req.Task.Repository,
		"TASK_PROMPT="+req.Prompt(),
		"TASK_ARTIFACTS_DIR="+req.ArtifactsDir,
		"TASK_OUTPUT_FILE="+req.OutputFile,
		"TASK_TURN="+strconv.Itoa(max(req.Turn.Number, 1)),
		"TASK_SESSION="+req.Turn.Session,
	)
}

// Options are the limits and environment every adapter applies.
type Options struct {
	// Passthrough names worker environment variables the agent may see.
	Passthrough []string
	// ExtraEnv is added to the agent's environment as it is.
	ExtraEnv []string
	// StopGrace is the time between SIGTERM and SIGKILL when the run is stopped.
	StopGrace time.Duration
	// ExitGrace is how long an agent that reported its result may take to
	// exit before its process group is stopped (leftover MCP servers and
	// background shells must not keep the run alive).
	ExitGrace time.Duration
	// MaxLineBytes cuts longer plain output lines, with a marker.
	MaxLineBytes int
	// MaxEventBytes is the longest JSON event line read whole; a longer one
	// is reported and skipped.
	MaxEventBytes int
}

// Defaults of Options.
const (
	DefaultExitGrace     = 5 * time.Second
	DefaultMaxEventBytes = 64 << 20
)

func (o Options) exitGrace() time.Duration {
	if o.ExitGrace <= 0 {
		return DefaultExitGrace
	}
	return o.ExitGrace
}

func (o Options) maxEventBytes() int {
	if o.MaxEventBytes <= 0 {
		return DefaultMaxEventBytes
	}
	return o.MaxEventBytes
}
