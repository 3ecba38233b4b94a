package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/testkit/proctest"
)

type collector struct {
	mu    sync.Mutex
	lines map[Stream][]string
}

func (c *collector) add(s Stream, l string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lines == nil {
		c.lines = map[Stream][]string{}
	}
	c.lines[s] = append(c.lines[s], l)
}

func sh(script string) Spec { return Spec{Path: "/bin/sh", Args: []string{"-c", script}} }

func TestLinesInOrderPerStreamAndExitCode(t *testing.T) {
	var c collector
	res, err := Run(context.Background(), sh(`for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'no newline'; exit 3`), c.add)
	require.NoError(t, err)
	require.Equal(t, 3, res.ExitCode)
	require.False(t, res.Success())
	require.Equal(t, "exited with code 3", res.Describe())
	require.Equal(t, []string{"out1", "out2", "out3", "no newline"}, c.lines[Stdout])
	require.Equal(t, []string{"err1", "err2", "err3"}, c.lines[Stderr])
	require.Equal(t, []string{"err1", "err2", "err3"}, res.StderrTail)
}

func TestStdinAndEnvironmentReachTheChild(t *testing.T) {
	var c collector
	spec := sh(`read line; echo "$line/$GREETING"`)
	spec.Stdin = strings.NewReader("hello\n")
	spec.Env = []string{"GREETING=world"}
	_, err := Run(context.Background(), spec, c.add)
	require.NoError(t, err)
	require.Equal(t, []string{"hello/world"}, c.lines[Stdout])
}

func TestLongLineIsCutAndCounted(t *testing.T) {
	var c collector
	spec := sh(`head -c 5000 /dev/zero | tr '\0' x; echo; echo next`)
	spec.MaxLineBytes = 1000
	_, err := Run(context.Background(), spec, c.add)
	require.NoError(t, err)
	require.Len(t, c.lines[Stdout], 2)
	require.Equal(t, strings.Repeat("x", 1000)+" … [line cut: 4000 more bytes]", c.lines[Stdout][0])
	require.Equal(t, "next", c.lines[Stdout][1])
}

func TestStderrTailKeepsTheLastLines(t *testing.T) {
	res, err := Run(context.Background(), sh(`for i in $(seq 1 50); do echo e$i >&2; done; exit 1`), func(Stream, string) {})
	require.NoError(t, err)
	require.Len(t, res.StderrTail, stderrTailLines)
	require.Equal(t, "e31", res.StderrTail[0])
	require.Equal(t, "e50", res.StderrTail[stderrTailLines-1])
}

func TestCancelStopsTheWholeGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	spec := sh(`sleep 300 & echo "$$ $!" > ` + pidFile + `; wait`)
	spec.StopGrace = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result)
	go func() {
		res, err := Run(ctx, spec, func(Stream, string) {})
		require.NoError(t, err)
		done <- res
	}()
	var pids []int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(pidFile)
		if err != nil || !strings.HasSuffix(string(data), "\n") {
			return false
		}
		for _, f := range strings.Fields(string(data)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case res := <-done:
		require.True(t, res.Stopped)
		require.False(t, res.Success())
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for _, pid := range pids {
		require.Eventually(t, func() bool { return !proctest.Alive(pid) }, 5*time.Second, 10*time.Millisecond, "pid %d survived", pid)
	}
}

func TestSIGTERMIgnoredThenKilledAfterGrace(t *testing.T) {
	spec := sh(`trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	spec.StopGrace = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{}, 1)
	go func() {
		<-ready
		cancel()
	}()
	res, err := Run(ctx, spec, func(s Stream, l string) {
		if l == "ready" {
			ready <- struct{}{}
		}
	})
	require.NoError(t, err)
	require.Equal(t, "killed", res.Signal)
	require.Equal(t, "was killed by signal killed", res.Describe())
}

func TestMissingExecutableIsAStartError(t *testing.T) {
	_, err := Run(context.Background(), Spec{Path: "/nonexistent/agent"}, func(Stream, string) {})
	var startErr *StartError
	require.ErrorAs(t, err, &startErr)
	require.ErrorContains(t, err, "executable not found")
}

// A child is never held up by slow handling of its lines: its output waits
// in a buffer file, so it can finish while the first line is still in hand.
func TestSlowLineHandlingDoesNotBlockTheChild(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "finished")
	spec := sh(`awk 'BEGIN { for (i = 0; i < 200000; i++) print "line " i }'; touch ` + marker)
	spec.BufferDir = dir
	var count int
	res, err := Run(context.Background(), spec, func(_ Stream, line string) {
		if count == 0 {
			// Hold the first line until the child has written everything.
			require.Eventually(t, func() bool {
				_, err := os.Stat(marker)
				return err == nil
			}, time.Minute, 5*time.Millisecond, "the child was blocked by its reader")
		}
		count++
	})
	require.NoError(t, err)
	require.True(t, res.Success())
	require.Equal(t, 200000, count)
	left, _ := filepath.Glob(filepath.Join(dir, "output-*.buf"))
	require.Empty(t, left, "buffer files are removed")
}

func TestATenMegabyteLineIsCutAtTheDefaultCap(t *testing.T) {
	var c collector
	_, err := Run(context.Background(), sh(`head -c 10000000 /dev/zero | tr '\0' '{'; echo; echo after`), c.add)
	require.NoError(t, err)
	require.Len(t, c.lines[Stdout], 2)
	line := c.lines[Stdout][0]
	require.Equal(t, strings.Repeat("{", DefaultMaxLineBytes), line[:DefaultMaxLineBytes])
	require.Equal(t, fmt.Sprintf(" … [line cut: %d more bytes]", 10_000_000-DefaultMaxLineBytes), line[DefaultMaxLineBytes:])
	require.Equal(t, "after", c.lines[Stdout][1])
}

// A descendant that left the group for a session of its own is found and
// killed once the child is gone, as agents start their tools that way.
func TestADescendantInAnotherSessionDiesWithTheChild(t *testing.T) {
	pid := escapedDescendant(t, "setsid sh -c")
	require.Eventually(t, func() bool { return !proctest.Alive(pid) }, 10*time.Second, 10*time.Millisecond,
		"the descendant in its own session outlived the child")
}

// One that also dropped its environment can't be found; holding the output
// pipe, it must still not keep Run waiting once the child is gone.
func TestADescendantHoldingThePipeDoesNotHangRun(t *testing.T) {
	pid := escapedDescendant(t, "setsid env -i sh -c")
	require.True(t, proctest.Alive(pid), "the escaped descendant still holds the pipe, and Run returned anyway")
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
}

// escapedDescendant runs a child that starts, through launcher, a sleeper
// that keeps stdout open, and returns the sleeper's pid once Run returned.
func escapedDescendant(t *testing.T, launcher string) int {
	pidFile := filepath.Join(t.TempDir(), "pid")
	var c collector
	res, err := Run(context.Background(), sh(launcher+` 'echo $$ > `+pidFile+`; exec sleep 60' & echo started; while [ ! -s `+pidFile+` ]; do :; done`), c.add)
	require.NoError(t, err)
	require.True(t, res.Success())
	require.Equal(t, []string{"started"}, c.lines[Stdout])
	data, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	return pid
}
