package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/taskworker/taskworker/internal/process"
)

// Command runs any program — directly when its command line is plain words,
// else through /bin/sh -c — with the prompt on stdin and in TASK_PROMPT. Each
// stdout line is an info console entry, or, when it is a JSON object in the
// protocol's vocabulary (see protocol.go), the matching rich entry; each
// stderr line is a warn console entry.
type Command struct {
	// Command is a shell command line, e.g. "python3 /opt/agent.py --fast".
	Command string
	Options
}

// Name implements Agent.
func (c *Command) Name() string { return "command" }

// Run implements Agent.
func (c *Command) Run(ctx context.Context, req Request, sink Sink) (Result, error) {
	if strings.TrimSpace(c.Command) == "" {
		return Result{}, errors.New("no agent command configured: set TASKWORKER_AGENT_COMMAND")
	}
	path, args := commandLine(c.Command)
	proto := &protocol{sink: sink, artifactsDir: req.ArtifactsDir, workDir: req.Dir}
	end, err := session{
		name: c.Name(),
		spec: process.Spec{
			Path:         path,
			Args:         args,
			Dir:          req.Dir,
			Env:          append(Environment(req, c.Passthrough), c.ExtraEnv...),
			Stdin:        strings.NewReader(req.Prompt()),
			MaxLineBytes: c.MaxLineBytes,
			BufferDir:    req.WorkerDir,
			Isolation:    req.Isolation,
		},
		opts:     c.Options,
		onStdout: func(line string) verdict { proto.line(line); return keepReading },
	}.run(ctx, sink)
	if err != nil {
		return Result{}, err
	}
	if err := end.interrupted(ctx); err != nil {
		return Result{}, err
	}
	if !end.process.Success() {
		// A shell reports a command it could not find as 127.
		return Result{}, &ExitError{Agent: c.Name(), Result: end.process}
	}
	return proto.result(), nil
}

// ReadOnlyPaths implements ReadOnlyPaths: the files the command line names
// (its script, say) are what the sandbox must show it — those files alone,
// not the folders they are in.
func (c *Command) ReadOnlyPaths() []string {
	var paths []string
	for _, word := range strings.FieldsFunc(c.Command, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '"' || r == '\'' || r == ';' || r == '&' || r == '|' || r == '='
	}) {
		if filepath.IsAbs(word) {
			if _, err := os.Stat(word); err == nil {
				paths = append(paths, word)
			}
		}
	}
	return paths
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
