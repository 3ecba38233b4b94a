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
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
)

// TestAKilledWorkersRunFinishesOnAnother runs two taskworker daemons as
// processes, SIGKILLs the one whose agent is working, and expects the other
// to notice within the heartbeat timeout and finish the run.
func TestAKilledWorkersRunFinishesOnAnother(t *testing.T) {
	own := newOwnStack(t, devstack.Options{NoWorker: true})
	stack, api := own.start(t)
	defer stack.Stop()
	cfg := stack.WorkerConfig

	bin, err := devstack.BuildDaemon(t.TempDir())
	require.NoError(t, err)
	daemons := map[int]*exec.Cmd{}
	for _, id := range []string{"worker-a", "worker-b"} {
		cmd := exec.Command(bin)
		cmd.Env = stack.DaemonEnv("TASKWORKER_WORKER_ID="+id,
			"TASKWORKER_AGENT_COMMAND="+cfg.AgentCommand, "TASKWORKER_REPO_URL_TEMPLATE="+cfg.RepoURLTemplate,
			"TASKWORKER_WORKSPACE_DIR="+filepath.Join(own.dir, id, "ws"), "TASKWORKER_CACHE_DIR="+filepath.Join(own.dir, id, "cache"),
			"TASKWORKER_HEARTBEAT_TIMEOUT=3s", "TASKWORKER_HTTP_ADDR=", "TASKWORKER_LOG_LEVEL=error")
		require.NoError(t, cmd.Start())
		daemons[cmd.Process.Pid] = cmd
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}

	ctx := context.Background()
	marks := agenttest.SharedDir(t)
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
	// The agent runs under the shell that started it, under its sandbox's
	// init, under a daemon.
	holder := agentPID
	for range 4 {
		if _, ok := daemons[holder]; ok {
			break
		}
		holder, err = process.Parent(holder)
		require.NoError(t, err)
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
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
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
