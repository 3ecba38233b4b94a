package e2e

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/standin/githubtest"
)

// ciOfCommit is the stand-in's CI for the suite's repository: a commit whose
// ci.txt says "broken" fails its test check, with a log that says why;
// every other commit passes.
func ciOfCommit(owner, repo, sha string) ([]githubtest.Check, bool) {
	bare := filepath.Join(h.GitRoot, owner, repo+".git")
	if exec.Command("git", "--git-dir", bare, "cat-file", "-e", sha+"^{commit}").Run() != nil {
		return nil, false
	}
	build := githubtest.Check{Name: "build", Conclusion: "success"}
	out, _ := exec.Command("git", "--git-dir", bare, "show", sha+":ci.txt").Output()
	if strings.TrimSpace(string(out)) == "broken" {
		return []githubtest.Check{build, {Name: "test", Conclusion: "failure", Summary: "1 test failed",
			Log: "=== RUN   TestCI\n    ci_test.go:7: ci.txt says broken; it must say fixed\n--- FAIL: TestCI (0.00s)\n"}}, true
	}
	return []githubtest.Check{build, {Name: "test", Conclusion: "success"}}, true
}

func ciRounds(run tasksapi.TaskRun) any { return run.Output["ci_rounds"] }

func TestARunWhoseChecksFailGetsARoundThatSeesTheirLogAndFixesThem(t *testing.T) {
	task, run := startRun(t, "ci", "fix", repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.EqualValues(t, 2, ciRounds(run), "the first push failed, the second passed")
	ci := run.Output["ci"].(map[string]any)
	require.Equal(t, "success", ci["state"])

	branch := *run.Branch
	bare := filepath.Join(h.GitRoot, repo+".git")
	require.Equal(t, "fixed", gitOut(t, bare, "show", branch+":ci.txt"), "the fix is on the run's branch")
	require.Equal(t, "2", gitOut(t, bare, "rev-list", "--count", "main.."+branch), "pushed on top of the first")
	pulls := 0
	for _, p := range h.GitHub.Pulls() {
		if p.Head == branch {
			pulls++
		}
	}
	require.Equal(t, 1, pulls, "one pull request, updated by the fix")

	entries := logOf(t, task.ID, run.ID)
	lines := consoleLines(entries)
	require.Contains(t, lines, "info: told: ci_test.go:7: ci.txt says broken; it must say fixed", "the round's agent saw the failing check's log")
	var rounds []string
	for _, e := range entries {
		if e.Notification.Method == "_posthog/progress" {
			p := e.Notification.Params
			rounds = append(rounds, p["group"].(string)+":"+p["step"].(string)+":"+p["status"].(string))
		}
	}
	require.Equal(t, []string{
		"run:clone:started", "run:clone:completed", "run:agent:started", "run:agent:completed",
		"run:publish:started", "run:publish:completed", "run:artifacts:started", "run:artifacts:completed",
		"ci_round_1:checks:started", "ci_round_1:checks:failed",
		"ci_round_2:clone:started", "ci_round_2:clone:completed", "ci_round_2:agent:started", "ci_round_2:agent:completed",
		"ci_round_2:publish:started", "ci_round_2:publish:completed", "ci_round_2:artifacts:started", "ci_round_2:artifacts:completed",
		"ci_round_2:checks:started", "ci_round_2:checks:completed",
	}, rounds, "each round is its own group of steps")
	keepHistory(t, h.Stack.Client, kickoff.WorkflowID(task.ID, run.ID), "ci-fixed")
}

func TestARunWhoseChecksNeverPassFailsNamingThemAfterThreeRounds(t *testing.T) {
	task, run := startRun(t, "ci", "never", repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Equal(t, "the pull request's checks still fail after 3 rounds of fixes (TASKWORKER_CI_MAX_ROUNDS): test", deref(run.ErrorMessage))
	require.EqualValues(t, 3, ciRounds(run))
	require.Equal(t, "failure", run.Output["ci"].(map[string]any)["state"])
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusFailed}, statusHistory(t, run.ID))
}

func TestARunWithAutoPublishOffPushesNothingAndUploadsItsPatch(t *testing.T) {
	ctx := context.Background()
	task, err := h.API.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "change the README", Description: "Say what changed.", Repository: repo})
	require.NoError(t, err)
	code, kicked := post(t, h.Stack, "/tasks/"+task.ID+"/run/", `{"auto_publish": false}`)
	require.Equal(t, http.StatusOK, code, kicked)
	run := waitForEnd(t, task.ID, kicked["latest_run"].(map[string]any)["id"].(string))
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Nil(t, run.Branch, "no branch recorded")
	require.Equal(t, false, run.Output["published"])
	require.Equal(t, true, run.Output["changed"])
	require.NotContains(t, run.Output, "pr_url")
	bare := filepath.Join(h.GitRoot, repo+".git")
	require.Error(t, exec.Command("git", "--git-dir", bare, "rev-parse", "--verify", "--quiet", "refs/heads/posthog/task-"+task.Slug).Run(), "nothing pushed")
	var names []string
	for _, a := range run.Artifacts {
		names = append(names, a.Name)
	}
	require.Contains(t, names, "changes.patch")
	require.Contains(t, consoleLines(logOf(t, task.ID, run.ID)),
		"info: the run's state.auto_publish is false: nothing is pushed; its changes are uploaded as changes.patch")
}
