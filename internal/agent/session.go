package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/process"
)

// session runs an agent process whose stdout is handled line by line by
// onStdout; stderr lines become warn console entries. Once a line reports the
// agent's final result, the process gets opts.ExitGrace to exit on its own
// before its group is stopped; a line that shows the run can't succeed
// (rejected credentials the agent would retry for minutes) stops it at once.
type session struct {
	name     string
	spec     process.Spec
	opts     Options
	onStdout func(line string) verdict
}

// verdict is what a line of the agent's output means for the run.
type verdict int

const (
	keepReading verdict = iota
	finalResult
	fatal
)

// sessionEnd is how a session ended.
type sessionEnd struct {
	process process.Result
	// stoppedAfterResult is true when the worker stopped a process that
	// lingered after its result.
	stoppedAfterResult bool
}

func (s session) run(ctx context.Context, sink Sink) (sessionEnd, error) {
	procCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu          sync.Mutex
		final       bool
		lingerTimer *time.Timer
		lingered    bool
	)
	defer func() {
		mu.Lock()
		if lingerTimer != nil {
			lingerTimer.Stop()
		}
		mu.Unlock()
	}()
	s.spec.StopGrace = s.opts.StopGrace
	res, err := process.Run(procCtx, s.spec, func(stream process.Stream, line string) {
		if stream == process.Stderr {
			sink.Emit(acp.Console(acp.LevelWarn, line))
			return
		}
		switch s.onStdout(line) {
		case keepReading:
			return
		case fatal:
			stop()
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if final {
			return
		}
		final = true
		lingerTimer = time.AfterFunc(s.opts.exitGrace(), func() {
			mu.Lock()
			lingered = true
			mu.Unlock()
			sink.Emit(acp.Console(acp.LevelInfo, fmt.Sprintf("%s reported its result but was still running %s later; stopping it", s.name, s.opts.exitGrace())))
			stop()
		})
	})
	if err != nil {
		return sessionEnd{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	return sessionEnd{process: res, stoppedAfterResult: lingered && ctx.Err() == nil}, nil
}

// interrupted returns the context's error when the run was stopped from
// outside (cancel, timeout) rather than ending on its own.
func (e sessionEnd) interrupted(ctx context.Context) error {
	if e.process.Stopped && !e.stoppedAfterResult && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// eventStream translates an agent CLI's JSON events and, once the process
// is gone, says how the run ended.
type eventStream interface {
	line(string) verdict
	outcome(name string, end sessionEnd) (Result, error)
}

// runEventCLI runs an agent CLI that prints one JSON event per line, in the
// clone with the prompt on stdin (unless spec has its own); spec gives its
// path, arguments and environment.
func runEventCLI(ctx context.Context, name string, spec process.Spec, req Request, opts Options, stream eventStream, sink Sink) (Result, error) {
	spec.Dir = req.Dir
	if spec.Stdin == nil {
		spec.Stdin = strings.NewReader(req.Prompt())
	}
	spec.MaxLineBytes = opts.maxEventBytes()
	spec.BufferDir = req.WorkerDir
	spec.Isolation = req.Isolation
	end, err := session{name: name, spec: spec, opts: opts, onStdout: stream.line}.run(ctx, sink)
	if err != nil {
		return Result{}, err
	}
	if err := end.interrupted(ctx); err != nil {
		return Result{}, err
	}
	return stream.outcome(name, end)
}

// cliEnv is an agent CLI's environment: the base and passthrough variables
// (HOME the run's own), the task's, and the adapter's own (its keys).
func cliEnv(req Request, opts Options, own []string) ([]string, error) {
	if req.HomeDir != "" {
		// The agent's HOME, its own for the run, so runs don't share (or
		// leave behind) its configuration, sessions and caches.
		if err := os.MkdirAll(req.HomeDir, 0o700); err != nil {
			return nil, fmt.Errorf("agent home: %w", err)
		}
	}
	env := append(Environment(req, opts.Passthrough), opts.ExtraEnv...)
	return append(env, own...), nil
}
