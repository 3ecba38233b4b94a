// Package e2e runs task runs end to end: a real embedded Temporal server, the
// local Tasks API over HTTP, real git repositories and real agent processes.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
	"github.com/taskworker/taskworker/internal/testkit/stacktest"
	"github.com/taskworker/taskworker/internal/testkit/standin/githubtest"
	"github.com/taskworker/taskworker/worker"
)

const repo = stacktest.Repository

// githubTokenCanary is the worker's GitHub token; it has characters JSON escapes.
const githubTokenCanary = `gh"canary<&>token-77`

// One stack serves every test: the agent script picks its behaviour from the
// task title.
var h *stacktest.Suite

func TestMain(m *testing.M) {
	suite, stop, err := stacktest.Start(context.Background(), "e2e", stacktest.Options{
		Files:       map[string]string{"README.md": "# app\n", "main.go": "package main\n"},
		Agent:       "testdata/agent.sh",
		GitHubToken: githubTokenCanary,
		Stack: devstack.Options{Worker: worker.Config{
			Agent:             "command",
			RunURLTemplate:    "https://posthog.example/tasks/{task_id}/runs/{run_id}",
			MaxConcurrentRuns: 8,
			AgentTimeout:      2 * time.Minute,
			RunTimeout:        5 * time.Minute,
			StopGrace:         2 * time.Second,
			StatusCheckEvery:  200 * time.Millisecond,
			ReapInterval:      500 * time.Millisecond,
		}},
	})
	if err != nil {
		println("e2e:", err.Error())
		os.Exit(1)
	}
	h = suite
	h.GitHub.CI = ciOfCommit
	code := m.Run()
	stop()
	os.Exit(code)
}

// startRun creates a task and kicks off a run the way PostHog's UI does.
func startRun(t *testing.T, title, description, repository string) (tasksapi.Task, tasksapi.TaskRun) {
	t.Helper()
	ctx := context.Background()
	task, err := h.API.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Description: description, Repository: repository})
	require.NoError(t, err)
	kicked, err := h.API.RunTask(ctx, task.ID)
	require.NoError(t, err)
	require.NotNil(t, kicked.LatestRun)
	require.Equal(t, tasksapi.StatusQueued, kicked.LatestRun.Status)
	return task, *kicked.LatestRun
}

// waitForEnd polls the run until it is terminal.
func waitForEnd(t *testing.T, taskID, runID string) tasksapi.TaskRun {
	t.Helper()
	var run tasksapi.TaskRun
	require.Eventually(t, func() bool {
		var err error
		run, err = h.API.GetRun(context.Background(), taskID, runID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, 2*time.Minute, 50*time.Millisecond, "run %s did not end", runID)
	// The workflow has returned once Temporal says so: nothing may follow.
	wf := h.Stack.Client.GetWorkflow(context.Background(), kickoff.WorkflowID(taskID, runID), "")
	_ = wf.Get(context.Background(), nil)
	return run
}

func statusHistory(t *testing.T, runID string) []tasksapi.Status {
	t.Helper()
	history, err := h.Stack.API.StatusHistory(context.Background(), runID)
	require.NoError(t, err)
	return history
}

type entry struct {
	Type         string `json:"type"`
	Timestamp    string `json:"timestamp"`
	EventID      string `json:"event_id"`
	Notification struct {
		JSONRPC string         `json:"jsonrpc"`
		Method  string         `json:"method"`
		Params  map[string]any `json:"params"`
	} `json:"notification"`
}

// logOf reads the run's log and checks the envelope of every entry.
func logOf(t *testing.T, taskID, runID string) []entry {
	t.Helper()
	raw, err := h.API.Logs(context.Background(), taskID, runID)
	require.NoError(t, err)
	seen := map[string]bool{}
	var entries []entry
	for _, r := range raw {
		var e entry
		require.NoError(t, json.Unmarshal(r, &e))
		require.Equal(t, "notification", e.Type)
		require.Equal(t, "2.0", e.Notification.JSONRPC)
		ts, err := time.Parse(time.RFC3339Nano, e.Timestamp)
		require.NoError(t, err, "timestamp %q", e.Timestamp)
		require.Equal(t, time.UTC, ts.Location())
		require.NotEmpty(t, e.EventID)
		require.False(t, seen[e.EventID], "event_id %s appears twice", e.EventID)
		seen[e.EventID] = true
		entries = append(entries, e)
	}
	return entries
}

func consoleLines(entries []entry) []string {
	var lines []string
	for _, e := range entries {
		if e.Notification.Method == "_posthog/console" {
			lines = append(lines, e.Notification.Params["level"].(string)+": "+e.Notification.Params["message"].(string))
		}
	}
	return lines
}

func methods(entries []entry) []string {
	var out []string
	for _, e := range entries {
		m := e.Notification.Method
		if m == "_posthog/progress" {
			m += ":" + e.Notification.Params["step"].(string) + ":" + e.Notification.Params["status"].(string)
		}
		if m != "_posthog/console" {
			out = append(out, m)
		}
	}
	return out
}

func gitOut(t *testing.T, gitDir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", gitDir}, args...)...).CombinedOutput()
	require.NoError(t, err, string(out))
	return strings.TrimSpace(string(out))
}

func TestRunThatChangesFilesCompletesWithBranchLogAndArtifacts(t *testing.T) {
	task, run := startRun(t, "change the README", "Say what changed.", repo)
	run = waitForEnd(t, task.ID, run.ID)

	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCompleted}, statusHistory(t, run.ID))
	require.NotNil(t, run.CompletedAt)

	// The branch is on origin, at the commit the run reports, with the agent's change.
	branch := "posthog/task-" + task.Slug
	require.NotNil(t, run.Branch)
	require.Equal(t, branch, *run.Branch)
	bare := filepath.Join(h.GitRoot, repo+".git")
	require.Equal(t, run.Output["commit_sha"], gitOut(t, bare, "rev-parse", "refs/heads/"+branch))
	require.Contains(t, gitOut(t, bare, "show", branch+":README.md"), "changed by run "+run.ID)
	require.Equal(t, gitOut(t, bare, "rev-parse", "main"), run.Output["base_sha"])
	msg := gitOut(t, bare, "log", "-1", "--format=%an <%ae>%n%B", branch)
	require.Contains(t, msg, "PostHog Tasks <tasks@taskworker.invalid>")
	require.Contains(t, msg, "Task-Id: "+task.ID)
	require.Contains(t, msg, "Run-Id: "+run.ID)
	require.Equal(t, true, run.Output["changed"])
	require.Equal(t, branch, run.Output["head_branch"])
	require.EqualValues(t, 2, run.Output["files_changed"])
	require.EqualValues(t, 2, run.Output["insertions"])
	require.EqualValues(t, 0, run.Output["deletions"])
	require.EqualValues(t, 0, run.Output["log_entries_dropped"])

	// The pull request, opened through the GitHub stand-in.
	require.Equal(t, "main", run.Output["base_branch"])
	prURL, _ := run.Output["pr_url"].(string)
	require.NotEmpty(t, prURL, "output: %v", run.Output)
	var pr *githubtest.PullRequest
	for _, p := range h.GitHub.Pulls() {
		if p.Head == branch {
			pr = &p
		}
	}
	require.NotNil(t, pr)
	require.True(t, strings.HasSuffix(prURL, fmt.Sprintf("/pull/%d", pr.Number)))
	require.Equal(t, "acme", pr.Owner)
	require.Equal(t, "main", pr.Base)
	require.Equal(t, "change the README", pr.Title)
	require.Contains(t, pr.Body, "Say what changed.")
	require.Contains(t, pr.Body, "2 files changed, 2 insertions(+), 0 deletions(-)")
	require.Contains(t, pr.Body, "https://posthog.example/tasks/"+task.ID+"/runs/"+run.ID)

	// The log: the agent's lines in the order it wrote them, framed by the steps.
	entries := logOf(t, task.ID, run.ID)
	require.Equal(t, []string{
		"_posthog/run_started",
		"_posthog/progress:clone:started", "_posthog/progress:clone:completed",
		"_posthog/progress:agent:started", "_posthog/progress:agent:completed",
		"_posthog/progress:publish:started", "_posthog/branch_created", "_posthog/progress:publish:completed",
		"_posthog/progress:artifacts:started", "_posthog/progress:artifacts:completed",
		"_posthog/progress:checks:started", "_posthog/progress:checks:completed",
		"_posthog/task_complete",
	}, methods(entries))
	require.EqualValues(t, 1, run.Output["ci_rounds"], "its checks passed the first time")
	lines := consoleLines(entries)
	var stdout []string
	for _, l := range lines {
		if strings.HasPrefix(l, "info: line ") {
			stdout = append(stdout, l)
		}
	}
	require.Len(t, stdout, 3)
	require.True(t, strings.HasPrefix(stdout[0], "info: line 1: read the prompt"))
	require.Equal(t, []string{"info: line 2: editing", "info: line 3: done"}, stdout[1:])
	require.Contains(t, lines, "warn: a warning on stderr")
	require.Contains(t, lines, "warn: artifact passwd-link is a symlink (never followed); skipped")

	// Artifacts: the plan, the binary file as base64, and the diff; never the symlink.
	byName := map[string]tasksapi.ArtifactRecord{}
	for _, a := range run.Artifacts {
		byName[a.Name] = a
	}
	require.Len(t, byName, 3, "artifacts: %+v", run.Artifacts)
	require.Equal(t, tasksapi.ArtifactPlan, byName["plan.md"].Type)
	require.Equal(t, tasksapi.ArtifactGeneric, byName["blob.bin"].Type)
	require.Equal(t, tasksapi.ArtifactOutput, byName["changes.patch"].Type)
	plan, err := os.ReadFile(h.Stack.API.ArtifactPath(run.ID, "plan.md"))
	require.NoError(t, err)
	require.Equal(t, "# Plan\n\n1. Edit README.md\n", string(plan))
	blob, err := os.ReadFile(h.Stack.API.ArtifactPath(run.ID, "blob.bin"))
	require.NoError(t, err)
	require.Equal(t, "\x01\x02binary", string(blob))
	patch, err := os.ReadFile(h.Stack.API.ArtifactPath(run.ID, "changes.patch"))
	require.NoError(t, err)
	require.Contains(t, string(patch), "+changed by run "+run.ID)
	require.Contains(t, string(patch), "src/new.go")

	// The workspace is gone.
	_, err = os.Stat(filepath.Join(h.Stack.WorkerConfig.WorkspaceDir, run.ID))
	require.True(t, os.IsNotExist(err), "workspace left behind: %v", err)
	keepHistory(t, h.Stack.Client, kickoff.WorkflowID(task.ID, run.ID), "completed")
}

func TestRunWithoutChangesCompletesWithoutABranch(t *testing.T) {
	task, run := startRun(t, "nothing to do", "", repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Nil(t, run.Branch)
	require.Equal(t, false, run.Output["changed"])
	require.Contains(t, consoleLines(logOf(t, task.ID, run.ID)), "info: the agent changed nothing; no branch pushed")
}

func TestAgentExitingNonZeroFailsTheRunWithItsExitCodeAndStderr(t *testing.T) {
	task, run := startRun(t, "fail please", "", repo)
	run = waitForEnd(t, task.ID, run.ID)

	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusFailed}, statusHistory(t, run.ID))
	require.NotNil(t, run.ErrorMessage)
	require.Contains(t, *run.ErrorMessage, "exited with code 3")
	require.Contains(t, *run.ErrorMessage, "error: could not compile | fatal: giving up")
	require.Nil(t, run.Branch, "a failed agent pushes nothing")

	entries := logOf(t, task.ID, run.ID)
	require.Contains(t, consoleLines(entries), "info: trying something")
	last := entries[len(entries)-1]
	require.Equal(t, "_posthog/error", last.Notification.Method)
	require.Contains(t, last.Notification.Params["message"], "exited with code 3")
	require.Contains(t, methods(entries), "_posthog/progress:agent:failed")
	keepHistory(t, h.Stack.Client, kickoff.WorkflowID(task.ID, run.ID), "failed")
}

func TestCancelledRunEndsCancelledAndItsAgentIsGone(t *testing.T) {
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, run := startRun(t, "hang around", pidFile, repo)

	pids := waitForAgent(t, pidFile)
	for _, pid := range pids {
		require.True(t, proctest.Alive(pid), "pid %d should be running before the cancel", pid)
	}

	require.NoError(t, h.Stack.Client.CancelWorkflow(context.Background(), kickoff.WorkflowID(task.ID, run.ID), ""))
	run = waitForEnd(t, task.ID, run.ID)

	require.Equal(t, tasksapi.StatusCancelled, run.Status)
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCancelled}, statusHistory(t, run.ID))
	for _, pid := range pids {
		require.False(t, proctest.Alive(pid), "agent process %d still running after the run was cancelled", pid)
	}
	lines := consoleLines(logOf(t, task.ID, run.ID))
	require.Contains(t, lines, "info: working for a long time")
	require.Contains(t, lines, "warn: agent stopped: the run was cancelled")
	require.Contains(t, lines, "warn: run cancelled")
	// The agent was stopped before its workspace was removed and the run
	// marked cancelled: the workflow waited for RunAgent's cancellation.
	events := stepEvents(t, h.Stack.Client, kickoff.WorkflowID(task.ID, run.ID))
	requireBefore(t, events, "RunAgent canceled", "CleanupWorkspace scheduled")
	requireBefore(t, events, "RunAgent canceled", "FinishRun ran")
	keepHistory(t, h.Stack.Client, kickoff.WorkflowID(task.ID, run.ID), "cancelled")
}

// waitForAgent reads the PIDs the "hang" agent writes once it runs.
func waitForAgent(t *testing.T, pidFile string) []int {
	var pids []int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			require.NoError(t, err)
			pids = append(pids, pid)
		}
		return true
	}, time.Minute, 20*time.Millisecond, "the agent never started")
	require.Len(t, pids, 2)
	return pids
}

func TestARunCancelledFromTheUIStopsItsAgentAndKeepsItsStatus(t *testing.T) {
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, run := startRun(t, "hang around", pidFile, repo)
	pids := waitForAgent(t, pidFile)

	// What PostHog's UI does: set the run's status itself.
	_, err := h.API.UpdateRun(context.Background(), task.ID, run.ID, tasksapi.RunUpdate{Status: tasksapi.StatusCancelled})
	require.NoError(t, err)
	wf := h.Stack.Client.GetWorkflow(context.Background(), kickoff.WorkflowID(task.ID, run.ID), "")
	require.NoError(t, wf.Get(context.Background(), nil), "the workflow ends without error")

	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCancelled},
		statusHistory(t, run.ID), "the worker wrote no status over the UI's")
	for _, pid := range pids {
		require.False(t, proctest.Alive(pid), "agent process %d still running", pid)
	}
	require.Contains(t, consoleLines(logOf(t, task.ID, run.ID)), "warn: agent stopped: the run was ended elsewhere (cancelled)")
}

func TestMissingRepositoryFailsTheRunSayingSo(t *testing.T) {
	task, run := startRun(t, "change the README", "", "acme/does-not-exist")
	run = waitForEnd(t, task.ID, run.ID)

	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusFailed}, statusHistory(t, run.ID))
	require.NotNil(t, run.ErrorMessage)
	require.Contains(t, *run.ErrorMessage, "clone acme/does-not-exist: the repository does not exist or this worker can't read it")
	require.Contains(t, methods(logOf(t, task.ID, run.ID)), "_posthog/progress:clone:failed")
}

func TestTaskWithoutRepositoryFailsTheRun(t *testing.T) {
	task, run := startRun(t, "change the README", "", "")
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Contains(t, *run.ErrorMessage, "has no repository")
}

func TestWorkerKeepsServingAfterFailures(t *testing.T) {
	// Runs after the failing ones in this file share the worker; one more
	// success here proves it still serves.
	task, run := startRun(t, "nothing again", "", repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
}

func TestSecretsNeverReachTheLogOrTheRun(t *testing.T) {
	task, run := startRun(t, "leak the token", githubTokenCanary, repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusFailed, run.Status)

	raw, err := h.API.Logs(context.Background(), task.ID, run.ID)
	require.NoError(t, err)
	var all strings.Builder
	for _, r := range raw {
		all.Write(r)
		all.WriteByte('\n')
	}
	record, err := json.Marshal(run)
	require.NoError(t, err)
	escaped, _ := json.Marshal(githubTokenCanary)
	for name, text := range map[string]string{"log": all.String(), "run": string(record)} {
		require.NotContains(t, text, githubTokenCanary, name)
		require.NotContains(t, text, string(escaped[1:len(escaped)-1]), name)
		require.NotContains(t, text, `gh\"canary`, name)
		require.NotContains(t, text, "ghp_abcdefghijklmnopqrstuvwxyz012345", name)
	}
	lines := consoleLines(logOf(t, task.ID, run.ID))
	require.Contains(t, lines, "info: split across writes: [REDACTED] end")
	require.Contains(t, lines, `info: {"config":{"token":"[REDACTED]"}}`)
	require.Contains(t, lines, "info: cloning https://[REDACTED]@example.com/acme/app.git")
	require.Contains(t, lines, "info: [REDACTED] is a token shape")
	require.Contains(t, *run.ErrorMessage, "failed with [REDACTED]")
}

func TestASecondRunContinuesTheBranchAndItsPullRequest(t *testing.T) {
	ctx := context.Background()
	task, err := h.API.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "change the README again", Repository: repo})
	require.NoError(t, err)
	var runs []tasksapi.TaskRun
	for range 2 {
		kicked, err := h.API.RunTask(ctx, task.ID)
		require.NoError(t, err)
		run := waitForEnd(t, task.ID, kicked.LatestRun.ID)
		require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
		runs = append(runs, run)
	}
	first, second := runs[0], runs[1]
	branch := *first.Branch
	require.Equal(t, branch, *second.Branch)
	bare := filepath.Join(h.GitRoot, repo+".git")
	require.Equal(t, second.Output["commit_sha"], gitOut(t, bare, "rev-parse", "refs/heads/"+branch))
	require.Equal(t, first.Output["commit_sha"], gitOut(t, bare, "rev-parse", branch+"^"),
		"the second run's commit sits on the first's: no force push")
	require.Equal(t, first.Output["commit_sha"], second.Output["base_sha"], "the second run started from the branch")
	require.Equal(t, first.Output["pr_url"], second.Output["pr_url"], "the same pull request")
	readme := gitOut(t, bare, "show", branch+":README.md")
	require.Contains(t, readme, "changed by run "+first.ID)
	require.Contains(t, readme, "changed by run "+second.ID)

	entries := logOf(t, task.ID, second.ID)
	require.Contains(t, consoleLines(entries), fmt.Sprintf("info: branch %s exists from an earlier run (at %s); this run continues on it", branch, first.Output["commit_sha"].(string)[:12]))
	var cloneDetail string
	for _, e := range entries {
		if e.Notification.Method == "_posthog/progress" && e.Notification.Params["step"] == "clone" && e.Notification.Params["status"] == "completed" {
			cloneDetail, _ = e.Notification.Params["detail"].(string)
		}
	}
	require.True(t, strings.HasSuffix(cloneDetail, "from cache"), "the second clone came from the cache: %q", cloneDetail)
}

// TestARunGoesOnOnTheBranchAnOlderWorkerNamed: workers before this one
// lower-cased the slug in the branch name; a task one of them ran goes on on
// that branch, not on a second one.
func TestARunGoesOnOnTheBranchAnOlderWorkerNamed(t *testing.T) {
	ctx := context.Background()
	task, err := h.API.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "change the README", Repository: repo})
	require.NoError(t, err)
	bare := filepath.Join(h.GitRoot, repo+".git")
	legacy := "posthog/task-" + strings.ToLower(task.Slug)
	require.NotEqual(t, "posthog/task-"+task.Slug, legacy, "the slug has upper case: %s", task.Slug)
	work := t.TempDir()
	for _, args := range [][]string{
		{"clone", "--quiet", bare, work},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "an older worker's run"},
		{"-C", work, "push", "--quiet", "origin", "HEAD:refs/heads/" + legacy},
	} {
		out, err := exec.Command("git", args...).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	earlier := gitOut(t, bare, "rev-parse", "refs/heads/"+legacy)

	kicked, err := h.API.RunTask(ctx, task.ID)
	require.NoError(t, err)
	run := waitForEnd(t, task.ID, kicked.LatestRun.ID)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Equal(t, legacy, *run.Branch)
	require.Equal(t, earlier, run.Output["base_sha"])
	require.Equal(t, earlier, gitOut(t, bare, "rev-parse", legacy+"^"), "pushed on top of the earlier run's commit")
	require.Empty(t, gitOut(t, bare, "branch", "--list", "posthog/task-"+task.Slug), "no second branch")
}

func TestInvalidRepositoryNamesFailTheRunBeforeAnyGitCommand(t *testing.T) {
	for _, name := range []string{"../x", "-x/y", ".hidden/repo"} {
		task, run := startRun(t, "change the README", "", name)
		run = waitForEnd(t, task.ID, run.ID)
		require.Equal(t, tasksapi.StatusFailed, run.Status, name)
		require.Contains(t, *run.ErrorMessage, "is not of the form org/repo", name)
		require.NotContains(t, methods(logOf(t, task.ID, run.ID)), "_posthog/progress:clone:started", name)
	}
}

func TestTheAgentsOwnCommitsAreKept(t *testing.T) {
	task, run := startRun(t, "commit some work", "", repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	bare := filepath.Join(h.GitRoot, repo+".git")
	log := gitOut(t, bare, "log", "--format=%an: %s", run.Output["base_sha"].(string)+".."+*run.Branch)
	require.Equal(t, "PostHog Tasks: commit some work\nAgent: Agent's own commit", log)
	require.EqualValues(t, 2, run.Output["files_changed"])
}

// deref is a run's error message for a test's failure message.
func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}
