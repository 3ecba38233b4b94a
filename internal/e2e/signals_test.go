package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
)

// apiPost posts a JSON body to a run's path under the local Tasks API, as
// PostHog's UI does.
func apiPost(t *testing.T, taskID, runID, path, body string) (int, map[string]any) {
	t.Helper()
	return post(t, h.Stack, "/tasks/"+taskID+"/runs/"+runID+"/"+path+"/", body)
}

// requireGone polls until every pid has exited.
func requireGone(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, pid := range pids {
			if proctest.Alive(pid) {
				return false
			}
		}
		return true
	}, within, 20*time.Millisecond, "the agent was not stopped within %s", within)
}

func workflowEnds(t *testing.T, taskID, runID string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return h.Stack.Client.GetWorkflow(ctx, kickoff.WorkflowID(taskID, runID), "").Get(ctx, nil)
}

func TestACancelFromTheAPIStopsTheAgentAndKeepsTheAPIsOneTerminalStatus(t *testing.T) {
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, run := startRun(t, "hang around", pidFile, repo)
	pids := waitForAgent(t, pidFile)

	code, body := apiPost(t, task.ID, run.ID, "cancel", `{"reason":"the user changed their mind"}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "cancelled", body["status"])
	requireGone(t, pids, 10*time.Second)
	require.NoError(t, workflowEnds(t, task.ID, run.ID), "the workflow completes")

	got, err := h.API.GetRun(context.Background(), task.ID, run.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.StatusCancelled, got.Status)
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCancelled},
		statusHistory(t, run.ID), "one terminal PATCH, the API's")
	lines := consoleLines(logOf(t, task.ID, run.ID))
	require.Contains(t, lines, "warn: agent stopped: the run was ended elsewhere (cancelled)")
	// The reason is complete_task's second argument: the workflow read both.
	require.Contains(t, lines, "warn: run ended from outside (cancelled): the user changed their mind; its steps were stopped")
	require.NotContains(t, lines, "warn: run cancelled", "no terminal step of the worker's")
	keepHistory(t, h.Stack.Client, kickoff.WorkflowID(task.ID, run.ID), "cancelled-by-complete-task")
}

func TestAFailedPatchFromOutsideEndsTheWorkflowWithoutASecondPatch(t *testing.T) {
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, run := startRun(t, "hang around", pidFile, repo)
	pids := waitForAgent(t, pidFile)

	msg := "stopped by an operator"
	_, err := h.API.UpdateRun(context.Background(), task.ID, run.ID, tasksapi.RunUpdate{Status: tasksapi.StatusFailed, ErrorMessage: &msg})
	require.NoError(t, err)
	requireGone(t, pids, 10*time.Second)
	require.NoError(t, workflowEnds(t, task.ID, run.ID))

	got, err := h.API.GetRun(context.Background(), task.ID, run.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.StatusFailed, got.Status)
	require.Equal(t, msg, deref(got.ErrorMessage))
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusFailed}, statusHistory(t, run.ID))
	// Stopped by complete_task, not by the agent's own reads of the run.
	require.Contains(t, consoleLines(logOf(t, task.ID, run.ID)), "warn: run ended from outside (failed): stopped by an operator; its steps were stopped")
}

// The worker's own terminal PATCH comes back as complete_task: the run stays
// completed with one terminal status and the workflow completes.
func TestTheEchoOfTheWorkersOwnCompletionIsTolerated(t *testing.T) {
	task, run := startRun(t, "slow change", "", repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.NoError(t, workflowEnds(t, task.ID, run.ID))
	require.Equal(t, tasksapi.StatusCompleted, run.Status)
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCompleted}, statusHistory(t, run.ID))
	// A workflow task refused for the echo would run FinishRun again: its entry would be there twice.
	entries := logOf(t, task.ID, run.ID)
	require.Equal(t, "_posthog/task_complete", entries[len(entries)-1].Notification.Method)
}

func TestAFollowUpDuringABackgroundRunIsNotedAndRefusedOnceTheWorkflowEnded(t *testing.T) {
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, run := startRun(t, "hang around", pidFile, repo)
	waitForAgent(t, pidFile)

	command := `{"jsonrpc":"2.0","method":"user_message","params":{"content":"also fix the docs","message_id":"m-1"},"id":1}`
	code, body := apiPost(t, task.ID, run.ID, "command", command)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, map[string]any{"jsonrpc": "2.0", "result": map[string]any{"queued": true}, "id": float64(1)}, body)
	code, _ = apiPost(t, task.ID, run.ID, "command", command)
	require.Equal(t, http.StatusOK, code, "a message sent twice is queued, and dropped by the workflow")

	want := `warn: follow-up message "m-1" received; not answered: this run is in background mode, which ends with the agent's one turn (follow-ups are answered by interactive runs)`
	require.Eventually(t, func() bool {
		n := 0
		for _, l := range consoleLines(logOf(t, task.ID, run.ID)) {
			if l == want {
				n++
			}
		}
		return n == 1
	}, 30*time.Second, 100*time.Millisecond, "the follow-up is noted once in the run's log")

	code, _ = apiPost(t, task.ID, run.ID, "cancel", "")
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, workflowEnds(t, task.ID, run.ID))
	code, body = apiPost(t, task.ID, run.ID, "command", command)
	require.Equal(t, http.StatusConflict, code, body)
	require.Equal(t, "Task run workflow has ended", body["detail"])
}
