package e2e

import (
	"context"
	"encoding/json"
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
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
)

// TestAKilledWorkersRunFinishesOnAnother runs two taskworker daemons as
// processes, SIGKILLs the one whose agent is working, and expects the other
// to notice within the heartbeat timeout and finish the run.
func TestAKilledWorkersRunFinishesOnAnother(t *testing.T) {
	own := newOwnStack(t, devstack.Options{NoWorker: true})
	stack, api := own.start(t)
	defer stack.Stop()
	daemons := startDaemons(t, own, stack, "3s", false)

	marks := agenttest.SharedDir(t)
	task, runID := startMarkedRun(t, api, "once, then done", marks)
	victim, agentPID := holderOf(t, daemons, filepath.Join(marks, "pid"))
	require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))

	run := waitCompleted(t, api, task.ID, runID)
	require.Eventually(t, func() bool { return !proctest.Alive(agentPID) }, 10*time.Second, 20*time.Millisecond,
		"the killed worker's agent died with it")

	log := logText(t, api, task.ID, run.ID)
	require.Contains(t, log, "starting over on another worker, attempt 2 of 3")
	require.Contains(t, log, "second attempt: finishing")
}

// daemon is a taskworker process; link, where the test made one, is its way
// to Temporal, which the test can cut.
type daemon struct {
	cmd  *exec.Cmd
	link *partition
}

// startDaemons starts two daemons serving stack with the heartbeat timeout
// given, each reaching Temporal through a partition of its own if
// partitioned, and is them by PID.
func startDaemons(t *testing.T, own *ownStack, stack *devstack.Stack, heartbeatTimeout string, partitioned bool) map[int]daemon {
	cfg := stack.WorkerConfig
	bin, err := devstack.BuildDaemon(t.TempDir())
	require.NoError(t, err)
	daemons := map[int]daemon{}
	for _, id := range []string{"worker-a", "worker-b"} {
		var link *partition
		var env []string
		if partitioned {
			link = newPartition(t, stack.Temporal.HostPort())
			env = append(env, "TEMPORAL_ADDRESS="+link.Addr())
		}
		cmd := exec.Command(bin)
		cmd.Env = stack.DaemonEnv(append(env, "TASKWORKER_WORKER_ID="+id,
			"TASKWORKER_AGENT_COMMAND="+cfg.AgentCommand, "TASKWORKER_REPO_URL_TEMPLATE="+cfg.RepoURLTemplate,
			"TASKWORKER_WORKSPACE_DIR="+filepath.Join(own.Dir, id, "ws"), "TASKWORKER_CACHE_DIR="+filepath.Join(own.Dir, id, "cache"),
			"TASKWORKER_HEARTBEAT_TIMEOUT="+heartbeatTimeout, "TASKWORKER_HTTP_ADDR=", "TASKWORKER_LOG_LEVEL=error")...)
		require.NoError(t, cmd.Start())
		daemons[cmd.Process.Pid] = daemon{cmd: cmd, link: link}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	return daemons
}

// startMarkedRun creates a task for the test agent, whose marks folder is
// its description, and runs it: the task and its run's ID.
func startMarkedRun(t *testing.T, api *tasksapi.Client, title, marks string) (tasksapi.Task, string) {
	t.Helper()
	ctx := context.Background()
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Description: marks, Repository: repo})
	require.NoError(t, err)
	kicked, err := api.RunTask(ctx, task.ID)
	require.NoError(t, err)
	return task, kicked.LatestRun.ID
}

// waitCompleted waits for the run to end, and requires that it completed.
func waitCompleted(t *testing.T, api *tasksapi.Client, taskID, runID string) tasksapi.TaskRun {
	t.Helper()
	var run tasksapi.TaskRun
	require.Eventually(t, func() bool {
		var err error
		run, err = api.GetRun(context.Background(), taskID, runID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, 2*time.Minute, 100*time.Millisecond)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	return run
}

// logText is the run's log, its entries as they are, one after another.
func logText(t *testing.T, api *tasksapi.Client, taskID, runID string) string {
	t.Helper()
	raw, err := api.Logs(context.Background(), taskID, runID)
	require.NoError(t, err)
	var all strings.Builder
	for _, r := range raw {
		all.Write(r)
	}
	return all.String()
}

// holderOf is the daemon that runs the agent whose PID is in file, once the
// agent has written it, and that PID.
func holderOf(t *testing.T, daemons map[int]daemon, file string) (daemon, int) {
	var agent int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		agent, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	}, time.Minute, 20*time.Millisecond, "the agent never started")
	// The agent runs under the shell that started it, under its sandbox's
	// init, under a daemon.
	holder := agent
	for range 4 {
		if d, ok := daemons[holder]; ok {
			return d, agent
		}
		var err error
		holder, err = proctest.Parent(holder)
		require.NoError(t, err)
	}
	t.Fatalf("no daemon runs agent %d", agent)
	return daemon{}, 0
}

// TestAWorkerCutOffFromTemporalStopsItsAgent cuts the network between the
// daemon whose agent works and Temporal, leaving the daemon running. Its
// steps' heartbeats stop getting through, the workflow gives it up and
// starts the run over on the other daemon; the cut-off daemon stops its own
// agent once none got through for the heartbeat timeout, saying so, so the
// two agents never work on the run at once.
func TestAWorkerCutOffFromTemporalStopsItsAgent(t *testing.T) {
	own := newOwnStack(t, devstack.Options{NoWorker: true})
	stack, api := own.start(t)
	defer stack.Stop()
	daemons := startDaemons(t, own, stack, "3s", true)

	ctx := context.Background()
	marks := agenttest.SharedDir(t)
	task, runID := startMarkedRun(t, api, "cut off", marks)
	cutOff, first := holderOf(t, daemons, filepath.Join(marks, "first"))
	cutOff.link.Cut()

	// The heartbeat timeout (3 s) and the agent's stop, with room for a
	// loaded machine.
	require.Eventually(t, func() bool { return !proctest.Alive(first) }, 15*time.Second, 20*time.Millisecond,
		"the cut-off worker stops its agent")
	require.True(t, proctest.Alive(cutOff.cmd.Process.Pid), "the cut-off worker is alive: only its network is gone")

	run := waitCompleted(t, api, task.ID, runID)
	require.EqualValues(t, 2, run.State["host_attempt"], "the second attempt recorded itself: %v", run.State)

	raw, err := api.Logs(ctx, task.ID, run.ID)
	require.NoError(t, err)
	var lastOfFirst, firstOfSecond time.Time
	var all strings.Builder
	for _, r := range raw {
		all.Write(r)
		var e entry
		require.NoError(t, json.Unmarshal(r, &e))
		msg, _ := e.Notification.Params["message"].(string)
		at, err := time.Parse(time.RFC3339Nano, e.Timestamp)
		require.NoError(t, err)
		switch {
		case msg == "first attempt: working":
			lastOfFirst = at
		case strings.HasPrefix(msg, "second attempt:") && firstOfSecond.IsZero():
			firstOfSecond = at
		}
	}
	require.Contains(t, all.String(), "agent stopped: no heartbeat of this worker reached Temporal for 3s")
	require.NotContains(t, all.String(), "agent stopped: the run was cancelled", "nobody cancelled the run")
	require.Contains(t, all.String(), "starting over on another worker, attempt 2 of 3")
	require.Contains(t, all.String(), "second attempt: the first attempt's agent is gone")
	require.False(t, lastOfFirst.IsZero() || firstOfSecond.IsZero(), "both attempts wrote to the log")
	require.True(t, lastOfFirst.Before(firstOfSecond), "the first agent's last line (%s) comes before the second agent's first (%s)",
		lastOfFirst.Format(time.RFC3339Nano), firstOfSecond.Format(time.RFC3339Nano))

	bare := filepath.Join(own.Dir, "git", repo+".git")
	require.Equal(t, run.Output["base_sha"], gitOut(t, bare, "rev-parse", *run.Branch+"^"), "one commit on the branch: the second attempt's")
	require.Contains(t, gitOut(t, bare, "show", *run.Branch+":README.md"), "finished on attempt 2")
	keepHistory(t, stack.Client, kickoff.WorkflowID(task.ID, run.ID), "lost-host")
}

// TestAWorkerBrieflyCutOffFromTemporalKeepsItsAgent cuts the daemon whose
// agent works off from Temporal for less than the heartbeat timeout (10 s):
// until no heartbeat has reached Temporal for 4 s, twice the SDK's own wait
// for one. Its agent goes on, and once the network is back the run
// completes on its first attempt. (The SDK's heartbeat cancels the step on
// the first heartbeat that goes unanswered for 2 s, whatever the timeout.)
func TestAWorkerBrieflyCutOffFromTemporalKeepsItsAgent(t *testing.T) {
	own := newOwnStack(t, devstack.Options{NoWorker: true})
	stack, api := own.start(t)
	defer stack.Stop()
	daemons := startDaemons(t, own, stack, "10s", true)

	ctx := context.Background()
	marks := agenttest.SharedDir(t)
	task, runID := startMarkedRun(t, api, "wait to be told", marks)
	workflowID := kickoff.WorkflowID(task.ID, runID)
	cutOff, agent := holderOf(t, daemons, filepath.Join(marks, "pid"))

	lastHeartbeat := func() time.Time {
		desc, err := stack.Client.DescribeWorkflowExecution(ctx, workflowID, "")
		require.NoError(t, err)
		for _, a := range desc.GetPendingActivities() {
			if a.GetActivityType().GetName() == "RunAgent" {
				return a.GetLastHeartbeatTime().AsTime()
			}
		}
		t.Fatal("RunAgent is not running")
		return time.Time{}
	}
	require.Eventually(t, func() bool { return !lastHeartbeat().IsZero() }, time.Minute, 50*time.Millisecond, "RunAgent heartbeats")
	cutOff.link.Cut()
	var lost time.Time
	require.Eventually(t, func() bool {
		lost = lastHeartbeat()
		return time.Since(lost) >= 4*time.Second
	}, 30*time.Second, 50*time.Millisecond, "the heartbeats stop getting through")
	cutOff.link.Heal()
	require.Eventually(t, func() bool { return lastHeartbeat().After(lost) }, 30*time.Second, 50*time.Millisecond,
		"the heartbeats get through again")
	require.True(t, proctest.Alive(agent), "the agent works on through a partition shorter than the heartbeat timeout")

	require.NoError(t, os.WriteFile(filepath.Join(marks, "go"), nil, 0o644))
	run := waitCompleted(t, api, task.ID, runID)
	require.EqualValues(t, 1, run.State["host_attempt"], "on its first attempt: %v", run.State)
	all := logText(t, api, task.ID, run.ID)
	require.Contains(t, all, "told to finish")
	require.NotContains(t, all, "agent stopped")
	require.NotContains(t, all, "starting over on another worker")
}
