package sandbox_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/sandbox"
)

// runIn runs a shell script as a run of sb, in a fresh workspace, and returns
// its output lines and result.
func runIn(t *testing.T, sb *sandbox.Sandbox, script string, env ...string) (string, process.Result, string) {
	t.Helper()
	ws := workspace(t)
	run, err := sb.Start(sandbox.Dirs{Writable: []string{ws}})
	require.NoError(t, err)
	defer run.Close()
	out, res := runScript(t, run, ws, script, env...)
	return out, res, ws
}

func runScript(t *testing.T, run *sandbox.Run, dir, script string, env ...string) (string, process.Result) {
	t.Helper()
	var mu sync.Mutex
	var lines []string
	res, err := process.Run(context.Background(), process.Spec{
		Path: "/bin/sh", Args: []string{"-c", script}, Dir: dir,
		Env:       append([]string{"PATH=/usr/bin:/bin", "HOME=" + dir}, env...),
		Isolation: run.Isolation(),
	}, func(_ process.Stream, line string) {
		mu.Lock()
		lines = append(lines, line)
		mu.Unlock()
	})
	require.NoError(t, err)
	return strings.Join(lines, "\n"), res
}

// workspace is a run's folder under folders any uid may pass, as a
// worker's workspace dir is.
func workspace(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.Chmod(root, 0o711))
	require.NoError(t, os.Chmod(filepath.Dir(root), 0o711))
	ws := filepath.Join(root, "repo")
	require.NoError(t, os.Mkdir(ws, 0o755))
	return ws
}

func newSandbox(t *testing.T, mode sandbox.Mode, network sandbox.Network) *sandbox.Sandbox {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{Mode: mode, Network: network, StateDir: t.TempDir(),
		Limits: sandbox.Limits{Processes: 256, FileBytes: 64 << 20}})
	if err != nil {
		if os.Getenv("TASKWORKER_REQUIRE_SANDBOX") != "" {
			t.Fatalf("sandbox %s: %v", mode, err)
		}
		t.Skipf("this host can't give the %s sandbox (%v); .ci/run runs as root, where it can", mode, err)
	}
	return sb
}

func TestNamespacesRunAsAUidOfTheirOwnInARootOfTheirOwn(t *testing.T) {
	sb := newSandbox(t, sandbox.Namespaces, sandbox.NetworkNone)
	out, res, ws := runIn(t, sb, `id -u; hostname; echo pid=$$; ls /; echo hi > file; cat /proc/1/status | grep ^Uid; ls /tmp | wc -l`)
	require.True(t, res.Success(), "%s: %v", out, res)
	lines := strings.Split(out, "\n")
	require.Equal(t, "1000", lines[0])
	require.Equal(t, "sandbox", lines[1])
	require.NotContains(t, out, "root\n")
	data, err := os.ReadFile(filepath.Join(ws, "file"))
	require.NoError(t, err)
	require.Equal(t, "hi\n", string(data))
	var st = statUID(t, filepath.Join(ws, "file"))
	require.GreaterOrEqual(t, st, sandbox.DefaultFirstUID, "the file was written as the run's own uid")
}

func statUID(t *testing.T, path string) int {
	t.Helper()
	info, err := os.Lstat(path)
	require.NoError(t, err)
	return int(sysUID(info))
}
