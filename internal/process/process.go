// Package process runs a child in its own process group, turns its output into
// lines as fast as it writes them, and stops the whole group with a grace period.
package process

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Stream names an output stream of the child.
type Stream string

// The two output streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Defaults of Spec's limits.
const (
	// DefaultMaxLineBytes bounds the memory one line can take; the rest of a
	// longer line is counted and dropped.
	DefaultMaxLineBytes = 1 << 20
	// DefaultStopGrace is how long the group has between SIGTERM and SIGKILL.
	DefaultStopGrace = 10 * time.Second
	// stderrTailLines is how much stderr a failure report quotes.
	stderrTailLines = 20
	// tailLineBytes bounds each quoted stderr line.
	tailLineBytes = 400
	// drainTimeout bounds the wait for the pipes to close once the group is dead
	// (a descendant that left the group could keep them open forever).
	drainTimeout = 2 * time.Second
)

// Spec describes a child process.
type Spec struct {
	Path         string
	Args         []string
	Dir          string
	Env          []string
	Stdin        io.Reader
	MaxLineBytes int
	StopGrace    time.Duration
	// BufferDir holds the files that take the child's output while its lines
	// wait to be handled (default: the system's temp dir).
	BufferDir string
	// Isolation, when set, runs the child where it can't reach the worker
	// (see package sandbox); nil runs it as the worker's plain child.
	Isolation Isolation
}

// Isolation runs children isolated from the worker.
type Isolation interface {
	// Isolate returns the command that runs path isolated.
	Isolate(path string, args []string, dir string, env []string) (Isolated, error)
}

// Isolated is one child run isolated.
type Isolated interface {
	// Cmd is the command to start; Run sets its standard streams.
	Cmd() *exec.Cmd
	// Started is called once the command has started.
	Started() error
	// Abort releases what Isolate prepared for a command that did not start.
	Abort()
	// Ended is called once the command is gone: it ends what the child
	// left, and corrects res where the command's own status isn't the child's.
	Ended(res *Result) error
}

// LineFunc receives each output line without its newline. It is called from
// one goroutine per stream, so calls for stdout and stderr may interleave.
type LineFunc func(stream Stream, line string)

// Result is how the child ended.
type Result struct {
	ExitCode   int    // -1 when killed by a signal
	Signal     string // the signal that killed it, if any
	StderrTail []string
	// Stopped is true when the context ended and the group was stopped.
	Stopped bool
}

// Success reports a zero exit.
func (r Result) Success() bool { return r.ExitCode == 0 && r.Signal == "" }

// Describe says how the process ended, e.g. "exited with code 3" or "was killed by signal killed".
func (r Result) Describe() string {
	if r.Signal != "" {
		return "was killed by signal " + r.Signal
	}
	return fmt.Sprintf("exited with code %d", r.ExitCode)
}

// StartError means the process could not be started at all.
type StartError struct {
	Path string
	Err  error
}

func (e *StartError) Error() string {
	if errors.Is(e.Err, exec.ErrNotFound) || errors.Is(e.Err, os.ErrNotExist) {
		return fmt.Sprintf("start %s: executable not found; install it or fix the configured path", e.Path)
	}
	return fmt.Sprintf("start %s: %v", e.Path, e.Err)
}

func (e *StartError) Unwrap() error { return e.Err }

// Run starts the child and waits for it. When ctx ends, the group gets SIGTERM,
// then SIGKILL after the grace period; Run returns once the child is gone, and
// any of its descendants left in the group are killed too.
func Run(ctx context.Context, spec Spec, onLine LineFunc) (Result, error) {
	if spec.MaxLineBytes <= 0 {
		spec.MaxLineBytes = DefaultMaxLineBytes
	}
	if spec.StopGrace <= 0 {
		spec.StopGrace = DefaultStopGrace
	}
	path, err := exec.LookPath(spec.Path)
	if err != nil {
		return Result{}, &StartError{Path: spec.Path, Err: err}
	}
	env := spec.Env
	if env == nil {
		env = os.Environ()
	}
	// Every process the child starts inherits the marker, also those that
	// leave its group (agents run tools in sessions of their own), so the
	// sweep can find them.
	marker := treeMarker()
	env = append(append([]string(nil), env...), marker)
	var cmd *exec.Cmd
	var isolated Isolated
	if spec.Isolation != nil {
		if isolated, err = spec.Isolation.Isolate(path, spec.Args, spec.Dir, env); err != nil {
			return Result{}, &StartError{Path: spec.Path, Err: err}
		}
		cmd = isolated.Cmd()
	} else {
		cmd = exec.Command(path, spec.Args...)
		cmd.Dir = spec.Dir
		cmd.Env = env
	}
	cmd.Stdin = spec.Stdin
	// Its own group, so the whole of it can be stopped; and killed with the
	// worker, so a worker that dies (SIGKILL, OOM) leaves no agent behind.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pdeathsig = true, syscall.SIGKILL
	// Stdin copying must not outlive the child.
	cmd.WaitDelay = time.Second

	abort := func() {
		if isolated != nil {
			isolated.Abort()
		}
	}
	outR, outW, err := pipe()
	if err != nil {
		abort()
		return Result{}, &StartError{Path: spec.Path, Err: err}
	}
	errR, errW, err := pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		abort()
		return Result{}, &StartError{Path: spec.Path, Err: err}
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	startErr := cmd.Start()
	outW.Close()
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		abort()
		return Result{}, &StartError{Path: spec.Path, Err: startErr}
	}
	pgid := cmd.Process.Pid
	if isolated != nil {
		if err := isolated.Started(); err != nil {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}

	tail := &lineTail{max: stderrTailLines}
	outputs := []struct {
		pipe   *os.File
		stream Stream
	}{{outR, Stdout}, {errR, Stderr}}
	// Each stream is copied into a file-backed buffer as fast as the child
	// writes it, so handling lines never slows the child down; its lines are
	// read from the buffer at their own pace.
	var copiers, readers sync.WaitGroup
	var buffers []*fifo
	for _, o := range outputs {
		buf, err := newFIFO(spec.BufferDir)
		if err != nil {
			// No buffer: read the pipe directly, at the child's expense.
			buf = nil
		}
		buffers = append(buffers, buf)
		var src io.Reader = o.pipe
		if buf != nil {
			copiers.Add(1)
			go func(pipe *os.File) {
				defer copiers.Done()
				_, _ = io.CopyBuffer(buf, pipe, make([]byte, 256<<10))
				buf.CloseWrite()
			}(o.pipe)
			src = buf
		}
		readers.Add(1)
		direct := buf == nil
		if direct {
			copiers.Add(1) // reading the pipe is its copying too
		}
		go func(src io.Reader, stream Stream) {
			defer readers.Done()
			if direct {
				defer copiers.Done()
			}
			readLines(src, spec.MaxLineBytes, func(l string) {
				if stream == Stderr {
					tail.add(l)
				}
				onLine(stream, l)
			})
		}(src, o.stream)
	}
	defer func() {
		for _, b := range buffers {
			if b != nil {
				b.Remove()
			}
		}
	}()

	exited := make(chan struct{})
	var stopped bool
	var stopMu sync.Mutex
	go func() {
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
		stopMu.Lock()
		stopped = true
		stopMu.Unlock()
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(spec.StopGrace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}()

	waitErr := cmd.Wait()
	close(exited)
	// The leader is gone; nothing else it started may outlive the run.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	sweep(marker)
	var exit Result
	if state := cmd.ProcessState; state != nil {
		exit.ExitCode = state.ExitCode()
		if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			exit.Signal, exit.ExitCode = ws.Signal().String(), -1
		}
	}
	var isolationErr error
	if isolated != nil {
		// Before the drain: what the child left may hold its pipes.
		isolationErr = isolated.Ended(&exit)
	}

	// The pipes close once every holder is gone; a descendant that left the
	// group could hold them forever, so their copying gets a deadline. The
	// lines already buffered are all handled.
	copied := make(chan struct{})
	go func() { copiers.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(drainTimeout):
		outR.Close()
		errR.Close()
		<-copied
	}
	readers.Wait()
	outR.Close()
	errR.Close()

	res := Result{StderrTail: tail.lines(), ExitCode: exit.ExitCode, Signal: exit.Signal}
	stopMu.Lock()
	res.Stopped = stopped
	stopMu.Unlock()
	if isolationErr != nil {
		return res, &StartError{Path: spec.Path, Err: isolationErr}
	}
	if cmd.ProcessState == nil {
		return res, fmt.Errorf("wait %s: %w", spec.Path, waitErr)
	}
	return res, nil
}

// LineCutMarker ends a line that was longer than Spec.MaxLineBytes.
const LineCutMarker = "line cut:"

// readLines calls emit for each line of r; a line longer than maxBytes is cut
// there and the size of the rest is noted at its end.
func readLines(r io.Reader, maxBytes int, emit func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	dropped := 0
	flush := func() {
		text := strings.TrimSuffix(string(line), "\r")
		if dropped > 0 {
			text += fmt.Sprintf(" … [%s %d more bytes]", LineCutMarker, dropped)
		}
		emit(text)
		line, dropped = line[:0], 0
	}
	for {
		chunk, err := br.ReadSlice('\n')
		complete := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		if room := maxBytes - len(line); room > 0 {
			take := min(room, len(chunk))
			line = append(line, chunk[:take]...)
			dropped += len(chunk) - take
		} else {
			dropped += len(chunk)
		}
		if complete {
			flush()
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > 0 || dropped > 0 {
				flush()
			}
			return
		}
	}
}

type lineTail struct {
	mu   sync.Mutex
	max  int
	buf  []string
	next int
	full bool
}

func (t *lineTail) add(line string) {
	if strings.TrimSpace(line) == "" {
		return
	}
	if len(line) > tailLineBytes {
		line = line[:tailLineBytes] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) < t.max {
		t.buf = append(t.buf, line)
		return
	}
	t.buf[t.next] = line
	t.next = (t.next + 1) % t.max
	t.full = true
}

func (t *lineTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return append([]string(nil), t.buf...)
	}
	return append(append([]string(nil), t.buf[t.next:]...), t.buf[:t.next]...)
}

// treeMarkerVar names the environment variable that marks a child's processes.
const treeMarkerVar = "TASKWORKER_PROCESS_TREE"

func treeMarker() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return treeMarkerVar + "=" + hex.EncodeToString(b[:])
}

// sweep kills every process whose environment holds marker: what a child
// started in another group or session, still running after the child is
// gone. A few passes catch what forked while the last one looked.
func sweep(marker string) {
	want := []byte(marker)
	KillWhere("environ", 3, func(environ []byte) bool {
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if bytes.Equal(kv, want) {
				return true
			}
		}
		return false
	})
}

// KillWhere kills every other process whose /proc/PID/<file> matches, in
// passes while a pass kills something (at most passes): what forked while
// one pass looked is caught by the next.
func KillWhere(file string, passes int, match func(content []byte) bool) {
	self := os.Getpid()
	for pass := 0; pass < passes; pass++ {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return
		}
		killed := 0
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			content, err := os.ReadFile("/proc/" + e.Name() + "/" + file)
			if err != nil || !match(content) {
				continue // gone, another user's, or not wanted
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
		if killed == 0 {
			return
		}
	}
}

// pipeBytes is the kernel buffer of the child's output pipes: room for a
// burst while the copier is not scheduled (Linux defaults to 64 KiB).
const pipeBytes = 1 << 20

func pipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err == nil {
		// F_SETPIPE_SZ; where it fails the default size is fine.
		_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), 1031, pipeBytes)
	}
	return r, w, err
}
