package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
)

// ownStack is a stack of a test's own (the shared one won't do: the test
// restarts it or changes how it kicks runs off), with the test agent and a
// seeded acme/app under dir. opts.Worker's agent, repositories, workspace and
// cache are filled in. Call start for each (re)start; the caller stops it.
type ownStack struct {
	dir  string
	opts devstack.Options
}

func newOwnStack(t *testing.T, opts devstack.Options) *ownStack {
	dir := t.TempDir()
	agenttest.Reachable(t, dir)
	if opts.Worker.Sandbox == "" {
		opts.Worker.Sandbox = agenttest.SuiteSandbox()
	}
	gitRoot := filepath.Join(dir, "git")
	_, err := devstack.SeedRepository(context.Background(), gitRoot, repo, map[string]string{"README.md": "# app\n"})
	require.NoError(t, err)
	agent, err := filepath.Abs("testdata/agent.sh")
	require.NoError(t, err)
	opts.Worker.AgentCommand = "sh " + agent
	opts.Worker.RepoURLTemplate = devstack.RepoURLTemplate(gitRoot)
	opts.Worker.WorkspaceDir = filepath.Join(dir, "workspaces")
	opts.Worker.CacheDir = filepath.Join(dir, "cache")
	return &ownStack{dir: dir, opts: opts}
}

func (o *ownStack) start(t *testing.T) (*devstack.Stack, *tasksapi.Client) {
	stack, err := devstack.Start(context.Background(), o.opts)
	require.NoError(t, err)
	cfg := stack.WorkerConfig
	return stack, tasksapi.New(tasksapi.Config{BaseURL: stack.APIURL, APIKey: cfg.APIKey, ProjectID: cfg.ProjectID})
}

// runToEnd creates a task, runs it, and waits (up to within) for the run to
// end and its workflow to return.
func runToEnd(t *testing.T, stack *devstack.Stack, api *tasksapi.Client, title, description string, within time.Duration) (tasksapi.Task, tasksapi.TaskRun) {
	t.Helper()
	return runTaskToEnd(t, stack, api, tasksapi.CreateTaskRequest{Title: title, Description: description, Repository: repo}, within)
}

// runTaskToEnd is runToEnd for a task described in full.
func runTaskToEnd(t *testing.T, stack *devstack.Stack, api *tasksapi.Client, req tasksapi.CreateTaskRequest, within time.Duration) (tasksapi.Task, tasksapi.TaskRun) {
	t.Helper()
	ctx := context.Background()
	task, err := api.CreateTask(ctx, req)
	require.NoError(t, err)
	kicked, err := api.RunTask(ctx, task.ID)
	require.NoError(t, err)
	var run tasksapi.TaskRun
	require.Eventually(t, func() bool {
		run, err = api.GetRun(ctx, task.ID, kicked.LatestRun.ID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, within, 50*time.Millisecond, "run %s did not end", kicked.LatestRun.ID)
	// The workflow returns just after its terminal PATCH; a failed run's with its error.
	err = stack.Client.GetWorkflow(ctx, kickoff.WorkflowID(task.ID, run.ID), "").Get(ctx, nil)
	if run.Status == tasksapi.StatusCompleted {
		require.NoError(t, err)
	}
	return task, run
}
