package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/testtool"
)

// TestUpServesTheRepositoryItsInstructionsName runs `devstack up` as a
// newcomer would, and the two curl commands it prints, verbatim.
func TestUpServesTheRepositoryItsInstructionsName(t *testing.T) {
	testtool.Curl.Path(t)
	dir := t.TempDir()
	banner := serveUp(t, "-data-dir", dir)

	create, run := printedCommands(t, banner)
	var task tasksapi.Task
	require.NoError(t, json.Unmarshal(shell(t, create), &task), "the create command answers a task")
	require.NotEmpty(t, task.ID)
	var kicked tasksapi.Task
	require.NoError(t, json.Unmarshal(shell(t, strings.ReplaceAll(run, "<task id>", task.ID)), &kicked))
	require.NotNil(t, kicked.LatestRun)

	api := tasksapi.New(tasksapi.Config{BaseURL: field(t, banner, "Dashboard"), APIKey: field(t, banner, "API key"), ProjectID: devstack.DefaultProjectID})
	var ended tasksapi.TaskRun
	require.Eventually(t, func() bool {
		r, err := api.GetRun(context.Background(), task.ID, kicked.LatestRun.ID)
		ended = r
		return err == nil && r.Status.Terminal()
	}, 2*time.Minute, 100*time.Millisecond, "the run did not end")
	var why string
	if ended.ErrorMessage != nil {
		why = *ended.ErrorMessage
	}
	require.Equal(t, tasksapi.StatusCompleted, ended.Status, "error: %s", why)
	require.NotNil(t, ended.Branch)
}

func TestUpWithNoSeedMakesNoRepository(t *testing.T) {
	dir := t.TempDir()
	banner := serveUp(t, "-data-dir", dir, "-no-seed")
	require.NoDirExists(t, filepath.Join(dir, "git", demoRepo+".git"))
	require.Contains(t, banner, "Repositories live in "+filepath.Join(dir, "git")+": demo/hello is made there unless -no-seed")
}

// serveUp runs `devstack up` on ephemeral ports until the test ends and
// returns what it printed once the stack was up.
func serveUp(t *testing.T, args ...string) string {
	t.Helper()
	isolateEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	r, w, err := os.Pipe()
	require.NoError(t, err)
	orig := os.Stdout
	os.Stdout = w
	var mu sync.Mutex
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				close(copied)
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- up(ctx, append(args, "-temporal", "127.0.0.1:0", "-api", "127.0.0.1:0")) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		os.Stdout = orig
		w.Close()
		<-copied
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		printed := out.String()
		mu.Unlock()
		if strings.Contains(printed, "Ctrl-C stops the stack.") {
			return printed
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("devstack up returned early: %v\n%s", err, printed)
		case <-time.After(50 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "devstack up did not come up within 2 minutes:\n%s", printed)
	}
}

// isolateEnv unsets, for the test, the variables an earlier stack of this
// process set (workerConfig writes its defaults into the environment).
func isolateEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "TASKWORKER_") || strings.HasPrefix(name, "POSTHOG_") {
			t.Setenv(name, "")
			require.NoError(t, os.Unsetenv(name))
		}
	}
}

// printedCommands are the create and run commands of the banner, each as
// one shell command line.
func printedCommands(t *testing.T, banner string) (create, run string) {
	_, rest, ok := strings.Cut(banner, "Create and run a task:\n")
	require.True(t, ok, banner)
	var commands []string
	var cur strings.Builder
	for _, line := range strings.Split(rest, "\n") {
		line = strings.TrimSpace(line)
		if cur.Len() == 0 && !strings.HasPrefix(line, "curl ") {
			break
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont)
			continue
		}
		cur.WriteString(line)
		commands = append(commands, cur.String())
		cur.Reset()
	}
	require.Len(t, commands, 2, banner)
	return commands[0], commands[1]
}

func shell(t *testing.T, command string) []byte {
	t.Helper()
	cmd := exec.Command("sh", "-c", command)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s\n%s%s", command, out, stderr.String())
	return out
}

// field is the value of a "  Name   value" line of the banner.
func field(t *testing.T, banner, name string) string {
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + `\s+(\S+)`).FindStringSubmatch(banner)
	require.NotNil(t, m, "no %q in:\n%s", name, banner)
	return strings.TrimSuffix(m[1], "/")
}
