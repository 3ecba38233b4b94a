package sandbox_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/sandbox"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
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
	sb, err := sandbox.New(sandbox.Config{Mode: mode, Network: network,
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
	sb := newSandbox(t, sandbox.Namespaces, sandbox.NetworkIsolated)
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

// modes are the sandboxes every attack is tried against. TASKWORKER_TEST_SANDBOX
// replaces them (=off shows each attack succeeding without a sandbox).
func modes(t *testing.T) map[string]*sandbox.Sandbox {
	t.Helper()
	if m := os.Getenv("TASKWORKER_TEST_SANDBOX"); m != "" {
		return map[string]*sandbox.Sandbox{m: newSandbox(t, sandbox.Mode(m), sandbox.NetworkHost)}
	}
	return map[string]*sandbox.Sandbox{
		"namespaces": newSandbox(t, sandbox.Namespaces, sandbox.NetworkIsolated),
		"uid":        newSandbox(t, sandbox.UID, sandbox.NetworkHost),
	}
}

func TestARunCantReadTheWorkersSecretsOrOtherRuns(t *testing.T) {
	// New each time, so no file on the host holds it but the test's own.
	canary := fmt.Sprintf("phx_worker_secret_%d_%d", os.Getpid(), time.Now().UnixNano())
	head, tail := canary[:10], canary[10:]
	t.Setenv("POSTHOG_PERSONAL_API_KEY", canary)
	require.NoError(t, sandbox.ProtectWorker())
	other := workspace(t)
	require.NoError(t, os.WriteFile(filepath.Join(other, "secret.txt"), []byte(canary), 0o600))
	mirror := filepath.Join(t.TempDir(), "org", "repo.git")
	require.NoError(t, os.MkdirAll(mirror, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(mirror, "config"), []byte(canary), 0o600))
	script := `
		for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/$WORKER/environ /proc/$WORKER/mem; do cat "$f" 2>/dev/null; done
		for d in /proc/$WORKER/fd/*; do timeout 1 cat "$d" 2>/dev/null; done
		cat "$OTHER/secret.txt" "$MIRROR/config" 2>/dev/null
		timeout 10 grep -rs "$HEAD$TAIL" /tmp /var /run /root /home "$HOME/.." 2>/dev/null | head -3
		true`
	for name, sb := range modes(t) {
		t.Run(name, func(t *testing.T) {
			out, res, _ := runIn(t, sb, script, "WORKER="+strconv.Itoa(os.Getpid()), "OTHER="+other, "MIRROR="+mirror,
				"HEAD="+head, "TAIL="+tail)
			require.True(t, res.Success(), "%s", out)
			require.NotContains(t, out, canary)
		})
	}
}

func TestNothingARunStartsOutlivesIt(t *testing.T) {
	for name, sb := range modes(t) {
		t.Run(name, func(t *testing.T) {
			marker := strconv.Itoa(7000 + os.Getpid()%1000)
			// The attacker waits until both have left its environment behind.
			out, res, _ := runIn(t, sb, `setsid env -i /bin/sh -c 'exec sleep `+marker+`' </dev/null >/dev/null 2>&1 &
				(trap '' TERM HUP; exec sleep `+marker+`) </dev/null >/dev/null 2>&1 &
				until [ "$(pgrep -c -x -f 'sleep `+marker+`')" = 2 ]; do :; done
				echo started`)
			require.True(t, res.Success(), "%s", out)
			require.Empty(t, processesRunning("sleep\x00"+marker), "a process the run started is still running")
		})
	}
}

func TestARunCantKillTheWorker(t *testing.T) {
	for name, sb := range modes(t) {
		t.Run(name, func(t *testing.T) {
			out, _, _ := runIn(t, sb, `kill -9 $WORKER; echo survived`, "WORKER="+strconv.Itoa(os.Getpid()))
			require.True(t, proctest.Alive(os.Getpid()), out)
		})
	}
}

func TestARunsProcessesAreLimited(t *testing.T) {
	for name, sb := range modes(t) {
		t.Run(name, func(t *testing.T) {
			// The shell gives up at the first fork the limit refuses; the
			// count it reached is in the file.
			out, _, ws := runIn(t, sb, `(i=0; while [ $i -lt 400 ]; do sleep 60 & i=$((i+1)); echo $i > forks; done) 2>/dev/null; true`)
			data, err := os.ReadFile(filepath.Join(ws, "forks"))
			require.NoError(t, err, out)
			forks, err := strconv.Atoi(strings.TrimSpace(string(data)))
			require.NoError(t, err)
			require.Less(t, forks, 256, "the process limit held")
		})
	}
}

func TestARunsFilesAreLimited(t *testing.T) {
	for name, sb := range modes(t) {
		t.Run(name, func(t *testing.T) {
			out, _, ws := runIn(t, sb, `head -c 100000000 /dev/zero > big 2>/dev/null; grep NoNewPrivs /proc/self/status`)
			info, err := os.Stat(filepath.Join(ws, "big"))
			require.NoError(t, err)
			require.LessOrEqual(t, info.Size(), int64(64<<20), "the file size limit held")
			require.Contains(t, out, "NoNewPrivs:\t1", "nothing the run executes gains privileges")
		})
	}
}

func TestASystemFolderIsReadOnly(t *testing.T) {
	t.Cleanup(func() { os.Remove("/usr/planted"); os.Remove("/etc/planted") })
	for name, sb := range modes(t) {
		t.Run(name, func(t *testing.T) {
			out, _, _ := runIn(t, sb, `echo x > /usr/planted 2>/dev/null; echo x > /etc/planted 2>/dev/null; ls /usr/planted /etc/planted 2>&1; true`)
			require.NoFileExists(t, "/usr/planted", out)
			require.NoFileExists(t, "/etc/planted", out)
		})
	}
}

// processesRunning lists the pids whose command line contains needle.
func processesRunning(needle string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !proctest.Alive(pid) {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmdline), needle) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestARunWithoutANetworkReachesNothingOfTheWorkers(t *testing.T) {
	// A port of the worker's: Temporal's, its HTTP port, the Tasks API.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan struct{}, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	connect := `if timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/` + port + `' 2>/dev/null; then echo reached-worker; fi
		if timeout 5 bash -c 'exec 3<>/dev/tcp/169.254.169.254/80' 2>/dev/null; then echo reached-metadata; fi; true`

	isolated := newSandbox(t, sandbox.Namespaces, sandbox.NetworkIsolated)
	out, res, _ := runIn(t, isolated, connect)
	require.True(t, res.Success(), out)
	require.NotContains(t, out, "reached")
	require.Empty(t, accepted)

	// The same run on the host's network does reach it: the test can fail.
	shared := newSandbox(t, sandbox.Namespaces, sandbox.NetworkHost)
	out, _, _ = runIn(t, shared, `if timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/`+port+`'; then echo reached-worker; fi`)
	require.Contains(t, out, "reached-worker")
}

func TestBadConfigurationSaysWhatToChange(t *testing.T) {
	me := os.Getuid()
	_, err := sandbox.New(sandbox.Config{Mode: sandbox.Namespaces, FirstUID: max(me-5, 0), UIDCount: 10})
	if sandbox.HostOffers(sandbox.Namespaces) == nil || sandbox.HostOffers(sandbox.UID) == nil {
		require.ErrorContains(t, err, "includes the worker's own uid "+strconv.Itoa(me))
	}
	_, err = sandbox.New(sandbox.Config{Mode: "chroot"})
	require.EqualError(t, err, `TASKWORKER_SANDBOX "chroot" is not one of namespaces, userns, uid, off`)
	_, err = sandbox.New(sandbox.Config{Mode: sandbox.Off, Network: sandbox.NetworkIsolated})
	require.ErrorContains(t, err, "TASKWORKER_SANDBOX_NETWORK=isolated needs a namespaced sandbox")
	_, _, err = sandbox.ParseUIDRange("200000")
	require.ErrorContains(t, err, "is not FIRST-LAST")
}

func TestASharedFolderIsWritableByEveryRunAndNothingBesides(t *testing.T) {
	shared := t.TempDir()
	require.NoError(t, os.Chmod(shared, 0o777))
	newSandbox(t, sandbox.Namespaces, sandbox.NetworkHost) // skips, or fails under TASKWORKER_REQUIRE_SANDBOX, where there are none
	sb, err := sandbox.New(sandbox.Config{Mode: sandbox.Namespaces, Shared: []string{shared}})
	require.NoError(t, err)
	sibling := filepath.Join(filepath.Dir(shared), "not-shared")
	require.NoError(t, os.Mkdir(sibling, 0o777))
	out, res, _ := runIn(t, sb, `echo cached > "$SHARED/pkg"; ls "$(dirname "$SHARED")"`, "SHARED="+shared)
	require.True(t, res.Success(), out)
	data, err := os.ReadFile(filepath.Join(shared, "pkg"))
	require.NoError(t, err)
	require.Equal(t, "cached\n", string(data))
	require.Contains(t, out, filepath.Base(shared))
	require.NotContains(t, out, "not-shared", "the shared folder's siblings stay out of sight")
}

func TestARunThatKillsItsInitLeavesNothingRunning(t *testing.T) {
	for name, sb := range modes(t) {
		t.Run(name, func(t *testing.T) {
			marker := strconv.Itoa(8000 + os.Getpid()%1000)
			// Its init gone, nothing of the init's own cleanup runs: the
			// worker's must still end the escapee.
			_, _, _ = runIn(t, sb, `setsid sh -c 'exec sleep `+marker+`' </dev/null >/dev/null 2>&1 &
				until [ "$(pgrep -c -x -f 'sleep `+marker+`')" = 1 ]; do :; done
				kill -9 $PPID; sleep 1`)
			require.Empty(t, processesRunning("sleep\x00"+marker), "a process of the run outlived it")
		})
	}
}

func TestAnIsolatedRunReachesTheWorkerOnlyThroughItsGateway(t *testing.T) {
	sb := newSandbox(t, sandbox.Namespaces, sandbox.NetworkIsolated)
	request := `exec 3<>/dev/tcp/127.0.0.1/3128 || exit 7
		printf 'GET /hello HTTP/1.0\r\nHost: x\r\n\r\n' >&3
		cat <&3`
	var seen []string
	var mu sync.Mutex
	serve := func(run *sandbox.Run, reply string) {
		run.ServeGateway(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen = append(seen, r.URL.Path)
			mu.Unlock()
			fmt.Fprint(w, reply)
		}))
	}

	ws := workspace(t)
	run, err := sb.Start(sandbox.Dirs{Writable: []string{ws}})
	require.NoError(t, err)
	defer run.Close()
	require.True(t, run.IsolatedNetwork())
	serve(run, "answered-by-the-worker")
	out, res := runScript(t, run, ws, "bash -c "+shellQuote(request))
	require.True(t, res.Success(), out)
	require.Contains(t, out, "answered-by-the-worker")
	require.Equal(t, []string{"/hello"}, seen)

	// Each command of a run gets a gateway of its own; another run's
	// gateway is not reachable from this one.
	other, err := sb.Start(sandbox.Dirs{Writable: []string{workspace(t)}})
	require.NoError(t, err)
	defer other.Close()
	serve(other, "answered-for-the-other-run")
	out, _ = runScript(t, run, ws, "bash -c "+shellQuote(request))
	require.Contains(t, out, "answered-by-the-worker")
	require.NotContains(t, out, "other")

	// Without a gateway, the run's network has nothing at that address.
	bareWS := workspace(t)
	bare, err := sb.Start(sandbox.Dirs{Writable: []string{bareWS}})
	require.NoError(t, err)
	defer bare.Close()
	out, res = runScript(t, bare, bareWS, "bash -c "+shellQuote(request)+" 2>/dev/null")
	require.Equal(t, 7, res.ExitCode, out)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
