// Package agent runs a coding agent on a clone and turns what it says into
// log entries. Adapters: command (any program; Claude Code and Codex follow).
package agent

import (
	"context"
	"fmt"
	"os"
	"strings"

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
}

// Prompt is the text an agent receives: the title, then the description.
func (t Task) Prompt() string {
	if strings.TrimSpace(t.Description) == "" {
		return t.Title
	}
	return t.Title + "\n\n" + t.Description
}

// Request is one agent run.
type Request struct {
	Task Task
	// Dir is the clone the agent works in.
	Dir string
	// ArtifactsDir is where the agent leaves files to upload; outside the clone.
	ArtifactsDir string
	// ScratchDir is the run's folder for the worker's own files (output
	// buffers); outside the clone. Empty means the system's temp dir.
	ScratchDir string
}

// Result is what a successful agent run produced.
type Result struct {
	Summary string
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

// ExitError is an agent process that did not succeed.
type ExitError struct {
	Agent  string
	Result process.Result
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("agent %s %s", e.Agent, e.Result.Describe())
	if len(e.Result.StderrTail) > 0 {
		tail := e.Result.StderrTail
		if len(tail) > 5 {
			tail = tail[len(tail)-5:]
		}
		msg += "; last stderr lines: " + strings.Join(tail, " | ")
	}
	return msg
}

// baseEnv names the variables of the worker's environment an agent inherits.
// Everything else — above all the worker's own credentials — stays out.
var baseEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"}

// Environment builds an agent's environment: the base variables and the named
// passthrough ones from the worker's environment, then the task's.
func Environment(req Request, passthrough []string) []string {
	var env []string
	for _, name := range append(append([]string(nil), baseEnv...), passthrough...) {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return append(env,
		"TASK_ID="+req.Task.ID,
		"RUN_ID="+req.Task.RunID,
		"TASK_TITLE="+req.Task.Title,
		"TASK_DESCRIPTION="+req.Task.Description,
		"TASK_REPOSITORY="+req.Task.Repository,
		"TASK_PROMPT="+req.Task.Prompt(),
		"TASK_ARTIFACTS_DIR="+req.ArtifactsDir,
	)
}
