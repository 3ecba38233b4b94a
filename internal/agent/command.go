package agent

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/process"
)

// Command runs any program — directly when its command line is plain words,
// else through /bin/sh -c — with the prompt on stdin and in TASK_PROMPT. Each
// stdout line is an info console entry, each stderr line a warn one.
type Command struct {
	// Command is a shell command line, e.g. "python3 /opt/agent.py --fast".
	Command string
	// Passthrough names worker environment variables the agent may see.
	Passthrough []string
	// ExtraEnv is added to the agent's environment as it is.
	ExtraEnv []string
	// StopGrace is the time between SIGTERM and SIGKILL when the run is stopped.
	StopGrace time.Duration
	// MaxLineBytes cuts longer output lines, with a marker.
	MaxLineBytes int
}

// Name implements Agent.
func (c *Command) Name() string { return "command" }

// Run implements Agent.
func (c *Command) Run(ctx context.Context, req Request, sink Sink) (Result, error) {
	if strings.TrimSpace(c.Command) == "" {
		return Result{}, errors.New("no agent command configured: set TASKWORKER_AGENT_COMMAND")
	}
	path, args := commandLine(c.Command)
	spec := process.Spec{
		Path:         path,
		Args:         args,
		Dir:          req.Dir,
		Env:          append(Environment(req, c.Passthrough), c.ExtraEnv...),
		Stdin:        strings.NewReader(req.Task.Prompt()),
		StopGrace:    c.StopGrace,
		MaxLineBytes: c.MaxLineBytes,
		BufferDir:    req.ScratchDir,
	}
	res, err := process.Run(ctx, spec, func(stream process.Stream, line string) {
		level := acp.LevelInfo
		if stream == process.Stderr {
			level = acp.LevelWarn
		}
		sink.Emit(acp.Console(level, line))
	})
	if err != nil {
		return Result{}, err
	}
	if res.Stopped && ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if !res.Success() {
		// A shell reports a command it could not find as 127.
		return Result{}, &ExitError{Agent: c.Name(), Result: res}
	}
	return Result{}, nil
}

var plainWords = regexp.MustCompile(`^[A-Za-z0-9_./:@+,=-]+( +[A-Za-z0-9_./:@+,=-]+)*$`)

// commandLine runs a plain "program arg..." line directly, so the agent is
// the worker's own child and dies with it (see process.Spec); anything that
// needs a shell (quotes, pipes, &&, variables) goes through /bin/sh -c.
func commandLine(command string) (string, []string) {
	command = strings.TrimSpace(command)
	if plainWords.MatchString(command) {
		words := strings.Fields(command)
		return words[0], words[1:]
	}
	return "/bin/sh", []string{"-c", command}
}
