package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/standin/anthropictest"
)

const farewell = "Now add a farewell too."

// followUps are the model requests of the conversations' follow-up turns.
var followUps struct {
	sync.Mutex
	seen []anthropictest.Conversation
}

// converse is the model of an interactive run: a greeting in the first
// turn, a farewell when the follow-up asks for one.
func converse(c anthropictest.Conversation) anthropictest.Reply {
	if !strings.Contains(strings.Join(c.Said, "\n"), farewell) {
		if len(c.Results) == 0 {
			return anthropictest.Reply{Text: "Adding a greeting.", Tools: []anthropictest.ToolUse{{Name: "Write",
				Input: map[string]any{"file_path": filepath.Join(c.WorkDir, "greeting.txt"), "content": "hello\n"}}}}
		}
		return anthropictest.Reply{Text: "Added greeting.txt. What next?"}
	}
	followUps.Lock()
	followUps.seen = append(followUps.seen, c)
	followUps.Unlock()
	if c.Latest == farewell {
		return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Write",
			Input: map[string]any{"file_path": filepath.Join(c.WorkDir, "farewell.txt"), "content": "goodbye\n"}}}}
	}
	return anthropictest.Reply{Text: "Added farewell.txt."}
}

// post sends a JSON body to path under the stack's project, as PostHog's UI does.
func post(t *testing.T, stack *devstack.Stack, path, body string) (int, map[string]any) {
	t.Helper()
	cfg := stack.WorkerConfig
	req, err := http.NewRequest(http.MethodPost, stack.APIURL+"/api/projects/"+cfg.ProjectID+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// interactiveRuns are the scenarios of PostHog's conversation with a run,
// on a stack whose agent is Claude Code and whose model follows claudeScript.
func interactiveRuns(t *testing.T, stack *devstack.Stack, client *tasksapi.Client, bare string, logOfRun func(tasksapi.TaskRun) []entry) {
	ctx := context.Background()
	consoleOf := func(taskID, runID string) []string {
		return consoleLines(logOfRun(tasksapi.TaskRun{ID: runID, Task: taskID}))
	}
	waitForLine := func(t *testing.T, taskID, runID, line string) {
		t.Helper()
		found := func() bool {
			for _, l := range consoleOf(taskID, runID) {
				if l == line {
					return true
				}
			}
			return false
		}
		if !assert.Eventually(t, found, 2*time.Minute, 100*time.Millisecond, "no %q in the run's log", line) {
			for _, l := range consoleOf(taskID, runID) {
				t.Log(l)
			}
			t.FailNow()
		}
	}

	t.Run("an interactive run answers a follow-up in a second turn of the same conversation, then ends on complete_task", func(t *testing.T) {
		task, err := client.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "Converse", Description: "Greet first.", Repository: repo})
		require.NoError(t, err)
		code, kicked := post(t, stack, "/tasks/"+task.ID+"/run/", `{"mode":"interactive"}`)
		require.Equal(t, http.StatusOK, code, kicked)
		runID := kicked["latest_run"].(map[string]any)["id"].(string)

		waitForLine(t, task.ID, runID, "info: turn 1 done; waiting for a follow-up message (the run ends when you end it, or after 1h0m0s without one)")
		run, err := client.GetRun(ctx, task.ID, runID)
		require.NoError(t, err)
		require.Equal(t, tasksapi.StatusInProgress, run.Status, "the run stays open for the user")
		branch := run.Output["head_branch"].(string)
		require.Equal(t, "hello", gitOut(t, bare, "show", branch+":greeting.txt"), "the first turn was published")

		code, body := post(t, stack, "/tasks/"+task.ID+"/runs/"+runID+"/command/",
			`{"jsonrpc":"2.0","method":"user_message","params":{"content":"`+farewell+`"},"id":1}`)
		require.Equal(t, http.StatusOK, code, body)
		waitForLine(t, task.ID, runID, "info: turn 2 done; waiting for a follow-up message (the run ends when you end it, or after 1h0m0s without one)")

		followUps.Lock()
		seen := append([]anthropictest.Conversation(nil), followUps.seen...)
		followUps.Unlock()
		require.NotEmpty(t, seen, "the follow-up reached the model")
		said := strings.Join(seen[0].Said, "\n")
		require.Equal(t, farewell, seen[0].Latest, "the second turn's request carries the follow-up")
		require.Contains(t, said, "user: Converse\n\nGreet first.", "and the first turn's prompt")
		require.Contains(t, said, "assistant: Added greeting.txt. What next?", "and the first turn's answer")
		require.Equal(t, "goodbye", gitOut(t, bare, "show", branch+":farewell.txt"), "the second turn was pushed to the same branch")
		require.Equal(t, "hello", gitOut(t, bare, "show", branch+":greeting.txt"))

		var users []string
		for _, u := range sessionUpdates(logOfRun(tasksapi.TaskRun{ID: runID, Task: task.ID})) {
			if u["sessionUpdate"] == "user_message_chunk" {
				users = append(users, u["content"].(map[string]any)["text"].(string))
			}
		}
		require.Equal(t, []string{farewell}, users, "the user's message is in the log where PostHog's UI shows one")

		// PostHog's complete_task("completed", null), from a PATCH of the run.
		_, err = client.UpdateRun(ctx, task.ID, runID, tasksapi.RunUpdate{Status: tasksapi.StatusCompleted})
		require.NoError(t, err)
		require.NoError(t, stack.Client.GetWorkflow(ctx, kickoff.WorkflowID(task.ID, runID), "").Get(ctx, nil))
		keepHistory(t, stack.Client, kickoff.WorkflowID(task.ID, runID), "interactive-two-turns")
		require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCompleted},
			statusHistoryOf(t, stack, runID), "one terminal status, the API's")
		require.Eventually(t, func() bool {
			_, err := os.Stat(filepath.Join(stack.WorkerConfig.WorkspaceDir, runID))
			return os.IsNotExist(err) && len(claudeProcesses(t)) == 0
		}, 30*time.Second, 50*time.Millisecond, "the workspace and the agent went with the run")
	})
}

func statusHistoryOf(t *testing.T, stack *devstack.Stack, runID string) []tasksapi.Status {
	t.Helper()
	history, err := stack.API.StatusHistory(context.Background(), runID)
	require.NoError(t, err)
	return history
}
