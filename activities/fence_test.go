package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/fence"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/localapi"
	"github.com/taskworker/taskworker/internal/publish"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/slots"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
)

// fenceAgent is the agent of these tests. "hang" writes its PID and works
// until it is stopped; "change" edits a file, leaves an artifact and ends.
const fenceAgent = `set -eu
case "$TASK_TITLE" in
hang)
	echo "$$" > "$TASK_DESCRIPTION/pid.tmp" && mv "$TASK_DESCRIPTION/pid.tmp" "$TASK_DESCRIPTION/pid"
	echo "working"
	exec sleep 300
	;;
change)
	printf 'changed\n' >> README.md
	printf 'notes\n' > "$TASK_ARTIFACTS_DIR/notes.md"
	;;
esac
`

// fenceHost is one worker's side of a run: the local Tasks API, a bare
// repository standing in for GitHub, and the steps.
type fenceHost struct {
	api    *tasksapi.Client
	origin string
	acts   *activities.Activities
	env    *testsuite.TestActivityEnvironment
	marks  string
}

func newFenceHost(t *testing.T) *fenceHost {
	dir := t.TempDir()
	server, err := localapi.New(localapi.Config{APIKey: "key", ProjectID: "1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = server.Close() })
	srv := httptest.NewServer(server)
	t.Cleanup(srv.Close)
	api := tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "key", ProjectID: "1"})

	root := filepath.Join(dir, "remote")
	origin := filepath.Join(root, "acme", "app.git")
	work := filepath.Join(dir, "seed")
	for _, args := range [][]string{
		{"init", "--quiet", "--bare", "--initial-branch=main", origin},
		{"init", "--quiet", "--initial-branch=main", work},
		{"-C", work, "commit", "--quiet", "--allow-empty", "-m", "start"},
		{"-C", work, "push", "--quiet", origin, "HEAD:refs/heads/main"},
	} {
		gitIn(t, args...)
	}
	script := filepath.Join(dir, "agent.sh")
	require.NoError(t, os.WriteFile(script, []byte(fenceAgent), 0o644))
	git := &gitrepo.Git{}
	h := &fenceHost{api: api, origin: origin, marks: t.TempDir(), acts: &activities.Activities{
		API: api, Git: git, Cache: &gitrepo.Cache{Dir: filepath.Join(dir, "cache"), Git: git},
		Agent:    &agent.Command{Command: "sh " + script, Options: agent.Options{StopGrace: time.Second}},
		Slots:    slots.New(1),
		Redactor: redact.New(), Logger: zap.NewNop(),
		Config: activities.Config{
			WorkspaceDir:     filepath.Join(dir, "workspaces"),
			RepoURLTemplate:  "file://" + root + "/{repo}.git",
			BranchTemplate:   "posthog/task-{slug}",
			Author:           gitrepo.Author{Name: "Bot", Email: "bot@example.com"},
			StatusCheckEvery: 50 * time.Millisecond,
		},
	}}
	var suite testsuite.WorkflowTestSuite
	h.env = suite.NewTestActivityEnvironment()
	h.env.RegisterActivity(h.acts.RunAgent)
	h.env.RegisterActivity(h.acts.Publish)
	return h
}

func gitIn(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t"}, args...)...).CombinedOutput()
	require.NoError(t, err, string(out))
	return strings.TrimSpace(string(out))
}

// newRun creates a task and a run on the API whose state PostHog has
// written to, and the context host attempt attempt works on it with.
func (h *fenceHost) newRun(t *testing.T, title string, attempt int) activities.RunContext {
	ctx := context.Background()
	repository := "acme/app"
	task, err := h.api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Description: h.marks, Repository: repository})
	require.NoError(t, err)
	run, err := h.api.CreateRun(ctx, task.ID)
	require.NoError(t, err)
	_, err = h.api.UpdateRun(ctx, task.ID, run.ID, tasksapi.RunUpdate{Status: tasksapi.StatusInProgress,
		State: map[string]any{"mode": "background", "runtime_adapter": "claude"}})
	require.NoError(t, err)
	rc := activities.RunContext{RunRef: activities.RunRef{TaskID: task.ID, RunID: run.ID}, Title: title,
		Description: h.marks, Repository: repository, Slug: task.Slug, AgentTimeout: time.Hour, HostAttempt: attempt}
	rc.Branch = publish.Branch(h.acts.Config.BranchTemplate, publish.Run{TaskID: rc.TaskID, RunID: rc.RunID, Slug: rc.Slug})
	return rc
}

func (h *fenceHost) state(t *testing.T, run activities.RunContext) map[string]any {
	current, err := h.api.GetRun(context.Background(), run.TaskID, run.RunID)
	require.NoError(t, err)
	return current.State
}

// supersede records a later attempt on the run, as that attempt's RunAgent
// does on the worker the workflow moved the run to.
func (h *fenceHost) supersede(t *testing.T, run activities.RunContext, attempt int) {
	_, err := h.api.UpdateRun(context.Background(), run.TaskID, run.RunID, tasksapi.RunUpdate{State: fence.State(attempt)})
	require.NoError(t, err)
}

func (h *fenceHost) console(t *testing.T, run activities.RunContext) string {
	raw, err := h.api.Logs(context.Background(), run.TaskID, run.RunID)
	require.NoError(t, err)
	var lines []string
	for _, r := range raw {
		var e struct {
			Notification struct {
				Params map[string]any `json:"params"`
			} `json:"notification"`
		}
		require.NoError(t, json.Unmarshal(r, &e))
		if msg, ok := e.Notification.Params["message"].(string); ok {
			lines = append(lines, msg)
		}
	}
	return strings.Join(lines, "\n")
}

func requireFenced(t *testing.T, err error, want string) {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "a fenced step fails with an application error: %v", err)
	require.Equal(t, activities.ErrAttemptFenced, appErr.Type())
	require.True(t, appErr.NonRetryable())
	require.Contains(t, appErr.Message(), want)
}

// An agent whose host attempt was superseded (the workflow gave its worker
// up and started the run over on another, which recorded its attempt on the
// run) is stopped at the next read of the run, and its step fails saying so.
// Its attempt recorded itself when it began, beside PostHog's state.
func TestAnAgentWhoseAttemptWasSupersededIsStopped(t *testing.T) {
	h := newFenceHost(t)
	run := h.newRun(t, "hang", 1)
	done := make(chan error, 1)
	go func() {
		_, err := h.env.ExecuteActivity(h.acts.RunAgent, activities.AgentInput{Run: run})
		done <- err
	}()
	var pid int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(filepath.Join(h.marks, "pid"))
		if err == nil {
			pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		}
		return err == nil
	}, time.Minute, 10*time.Millisecond, "the agent never started")
	state := h.state(t, run)
	require.Equal(t, 1, fence.Recorded(state), "the attempt recorded itself")
	require.Equal(t, "background", state["mode"], "PostHog's state stays")
	require.Equal(t, "claude", state["runtime_adapter"])

	h.supersede(t, run, 2)
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the superseded attempt's agent was not stopped")
	}
	requireFenced(t, err, "host attempt 1 of this run was superseded: attempt 2 holds it now")
	require.False(t, proctest.Alive(pid), "the agent is gone")
	require.Contains(t, h.console(t, run), "agent stopped: host attempt 1 of this run was superseded")
	require.Equal(t, 2, fence.Recorded(h.state(t, run)), "nothing wrote over the later attempt's record")
}

// Publish of an attempt that was superseded pushes nothing, PATCHes nothing
// and uploads nothing; the attempt that holds the run publishes the same
// workspace.
func TestASupersededAttemptNeitherPushesNorPatchesNorUploads(t *testing.T) {
	h := newFenceHost(t)
	run := h.newRun(t, "change", 1)
	val, err := h.env.ExecuteActivity(h.acts.RunAgent, activities.AgentInput{Run: run})
	require.NoError(t, err)
	var agentOut activities.AgentOutput
	require.NoError(t, val.Get(&agentOut))
	before, err := h.api.GetRun(context.Background(), run.TaskID, run.RunID)
	require.NoError(t, err)

	h.supersede(t, run, 2)
	_, err = h.env.ExecuteActivity(h.acts.Publish, activities.PublishInput{Run: run, Workspace: agentOut.Workspace, Agent: agentOut})
	requireFenced(t, err, "host attempt 1 of this run was superseded")
	require.Empty(t, gitIn(t, "--git-dir", h.origin, "branch", "--list", run.Branch), "nothing pushed")
	after, err := h.api.GetRun(context.Background(), run.TaskID, run.RunID)
	require.NoError(t, err)
	require.Equal(t, before.Stage, after.Stage, "no PATCH: not even the stage")
	require.Equal(t, before.Output, after.Output)
	require.Nil(t, after.Branch)
	require.Empty(t, after.Artifacts, "nothing uploaded")

	current := run
	current.HostAttempt = 2
	val, err = h.env.ExecuteActivity(h.acts.Publish, activities.PublishInput{Run: current, Workspace: agentOut.Workspace, Agent: agentOut})
	require.NoError(t, err)
	var pub activities.PublishOutput
	require.NoError(t, val.Get(&pub))
	require.True(t, pub.Changed)
	require.Equal(t, pub.CommitSHA, gitIn(t, "--git-dir", h.origin, "rev-parse", "refs/heads/"+run.Branch))
	published, err := h.api.GetRun(context.Background(), run.TaskID, run.RunID)
	require.NoError(t, err)
	require.Equal(t, run.Branch, *published.Branch)
	require.Len(t, published.Artifacts, 2, "notes.md and changes.patch")
}
