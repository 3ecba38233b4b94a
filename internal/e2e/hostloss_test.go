package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// TestAKilledWorkersRunFinishesOnAnother runs two taskworker daemons as
// processes, SIGKILLs the one whose agent is working, and expects the other
// to notice within the heartbeat timeout and finish the run.
func TestAKilledWorkersRunFinishesOnAnother(t *testing.T) {
	own := newOwnStack(t, devstack.Options{NoWorker: true})
	stack, api := own.start(t)
	defer stack.Stop()
	cfg := stack.WorkerConfig

	bin := filepath.Join(t.TempDir(), "taskworker")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/taskworker").CombinedOutput()
	require.NoError(t, err, string(out))
	daemons := map[int]*exec.Cmd{}
	for _, id := range []string{"worker-a", "worker-b"} {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			"POSTHOG_API_URL="+stack.APIURL, "POSTHOG_PERSONAL_API_KEY="+cfg.APIKey, "POSTHOG_PROJECT_ID="+cfg.ProjectID,
			"TEMPORAL_ADDRESS="+stack.Temporal.HostPort(), "TASKWORKER_WORKER_ID="+id,
			"TASKWORKER_AGENT_COMMAND="+cfg.AgentCommand, "TASKWORKER_REPO_URL_TEMPLATE="+cfg.RepoURLTemplate,
			"TASKWORKER_WORKSPACE_DIR="+filepath.Join(own.dir, id, "ws"), "TASKWORKER_CACHE_DIR="+filepath.Join(own.dir, id, "cache"),
			"TASKWORKER_HEARTBEAT_TIMEOUT=3s", "TASKWORKER_HTTP_ADDR=", "TASKWORKER_LOG_LEVEL=error")
		require.NoError(t, cmd.Start())
		daemons[cmd.Process.Pid] = cmd
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}

	ctx := context.Background()
	marks := t.TempDir()
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "once, then done", Description: marks, Repository: repo})
	require.NoError(t, err)
	kicked, err := api.RunTask(ctx, task.ID)
	require.NoError(t, err)

	var agentPID int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(filepath.Join(marks, "pid"))
		if err != nil {
			return false
		}
		agentPID, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	}, time.Minute, 20*time.Millisecond, "the agent never started")
	// The agent runs under the shell that started it, under a daemon.
	holder := agentPID
	for range 4 {
		if _, ok := daemons[holder]; ok {
			break
		}
		holder = parentOf(t, holder)
	}
	victim, ok := daemons[holder]
	require.True(t, ok, "one of the daemons started the agent")
	require.NoError(t, victim.Process.Signal(syscall.SIGKILL))

	var run tasksapi.TaskRun
	require.Eventually(t, func() bool {
		run, err = api.GetRun(ctx, task.ID, kicked.LatestRun.ID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, 2*time.Minute, 100*time.Millisecond)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", run.ErrorMessage)
	require.Eventually(t, func() bool { return !process.Alive(agentPID) }, 10*time.Second, 20*time.Millisecond,
		"the killed worker's agent died with it")

	raw, err := api.Logs(ctx, task.ID, run.ID)
	require.NoError(t, err)
	var log strings.Builder
	for _, r := range raw {
		log.Write(r)
	}
	require.Contains(t, log.String(), "starting over on another worker, attempt 2 of 3")
	require.Contains(t, log.String(), "second attempt: finishing")
}

func parentOf(t *testing.T, pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	ppid, err := strconv.Atoi(fields[1])
	require.NoError(t, err)
	return ppid
}
