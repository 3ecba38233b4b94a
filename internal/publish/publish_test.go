package publish_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/publish"
)

func TestBranchName(t *testing.T) {
	run := publish.Run{TaskID: "t-1", RunID: "r-1", Slug: "ABC 12/x"}
	require.Equal(t, "posthog/task-ABC-12/x", publish.Branch("posthog/task-{slug}", run), "the slug as PostHog's runner writes it")
	require.Equal(t, "posthog/task-abc-12/x", publish.LegacyBranch("posthog/task-{slug}", run))
	require.Equal(t, "agents/t-1/r-1", publish.Branch("agents/{task_id}/{run_id}", run))
	run.Slug = ""
	require.Equal(t, "posthog/task-t-1", publish.Branch("posthog/task-{slug}", run))
}

func TestTheCommitAndPullRequestNameTheTask(t *testing.T) {
	run := publish.Run{TaskID: "t-1", RunID: "r-1", Title: "Fix the login\nmore words", Description: "  Users can't log in.  "}
	require.Equal(t, "Fix the login\n\nTask-Id: t-1\nRun-Id: r-1\n", publish.CommitMessage(run))
	require.Equal(t, "Changes for task t-1", publish.Title(publish.Run{TaskID: "t-1"}))
	url := publish.RunURL("https://ph.example/tasks/{task_id}/runs/{run_id}", run)
	require.Equal(t, "https://ph.example/tasks/t-1/runs/r-1", url)
	require.Empty(t, publish.RunURL("", run))
	require.Equal(t, "Users can't log in.\n\n## What the agent did\n\nFixed it.\n\n2 files changed, 3 insertions(+), 1 deletions(-)\n\nMade by a PostHog task run: "+url+"\n",
		publish.Body(run, publish.Change{Summary: "Fixed it.", FilesChanged: 2, Insertions: 3, Deletions: 1, RunURL: url}))
}
