package activities

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/redact"
)

// recordedLog keeps what a run's log stream sent.
type recordedLog struct {
	mu      sync.Mutex
	entries []acp.Entry
}

func (r *recordedLog) AppendLog(_ context.Context, _, _ string, entries []json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, raw := range entries {
		var e acp.Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		r.entries = append(r.entries, e)
	}
	return nil
}

// console is the log's console lines, as "level: message".
func (r *recordedLog) console() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lines []string
	for _, e := range r.entries {
		if e.Notification.Method == acp.MethodConsole {
			lines = append(lines, e.Notification.Params["level"].(string)+": "+e.Notification.Params["message"].(string))
		}
	}
	return lines
}

// gitHost is a worker's git side: repositories under Root, reached through
// the URL template as a worker reaches GitHub.
type gitHost struct {
	a    *Activities
	Root string
}

func newGitHost(t *testing.T) *gitHost {
	dir := t.TempDir()
	root := filepath.Join(dir, "remote")
	g := &gitrepo.Git{}
	return &gitHost{Root: root, a: &Activities{
		Git: g, Cache: &gitrepo.Cache{Dir: filepath.Join(dir, "cache"), Git: g},
		Redactor: redact.New(), Logger: zap.NewNop(),
		Config: Config{
			WorkspaceDir:    filepath.Join(dir, "workspaces"),
			RepoURLTemplate: "file://" + root + "/{repo}.git",
			BranchTemplate:  "posthog/task-{slug}",
		},
	}}
}

func (h *gitHost) git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...).CombinedOutput()
	require.NoError(t, err, string(out))
	return strings.TrimSpace(string(out))
}

// origin makes an empty bare repository for repository, HEAD naming main.
func (h *gitHost) origin(t *testing.T, repository string) string {
	bare := filepath.Join(h.Root, repository+".git")
	h.git(t, filepath.Dir(h.Root), "init", "--quiet", "--bare", "--initial-branch=main", bare)
	return bare
}

// push commits file on top of origin's branch (a first commit when it has
// none) and pushes it there, returning the commit.
func (h *gitHost) push(t *testing.T, origin, branch, file string) string {
	work := t.TempDir()
	h.git(t, work, "init", "--quiet")
	if h.git(t, origin, "branch", "--list", branch) != "" {
		h.git(t, work, "fetch", "--quiet", origin, branch)
		h.git(t, work, "reset", "--quiet", "--hard", "FETCH_HEAD")
	}
	require.NoError(t, os.WriteFile(filepath.Join(work, file), []byte(file+"\n"), 0o644))
	h.git(t, work, "add", ".")
	h.git(t, work, "commit", "--quiet", "-m", file)
	h.git(t, work, "push", "--quiet", origin, "HEAD:refs/heads/"+branch)
	return h.git(t, work, "rev-parse", "HEAD")
}

// prepare runs the clone step's work for run and returns its console lines.
func (h *gitHost) prepare(t *testing.T, run RunContext) (Workspace, []string, error) {
	ctx := context.Background()
	rec := &recordedLog{}
	log := logstream.New(rec, run.TaskID, run.RunID, h.a.Redactor, logstream.Config{})
	ws, err := h.a.prepareWorkspace(ctx, run, log)
	_, closeErr := log.Close(ctx)
	require.NoError(t, closeErr)
	return ws, rec.console(), err
}

func TestARunSaysWhichDefaultBranchItStartsFrom(t *testing.T) {
	h := newGitHost(t)
	origin := h.origin(t, "acme/app")
	h.push(t, origin, "main", "a.txt")
	run := RunContext{RunRef: RunRef{TaskID: "t", RunID: "r1"}, Repository: "acme/app", Branch: "posthog/task-1"}
	ws, lines, err := h.prepare(t, run)
	require.NoError(t, err)
	require.Equal(t, "main", ws.BaseBranch)
	require.Contains(t, lines, "info: starting from main, the repository's default branch")

	h.git(t, origin, "branch", "-m", "main", "trunk")
	tip := h.git(t, origin, "rev-parse", "trunk")
	run.RunID = "r2"
	ws, lines, err = h.prepare(t, run)
	require.NoError(t, err)
	require.True(t, ws.CacheHit)
	require.Equal(t, "trunk", ws.BaseBranch)
	require.Equal(t, tip, ws.BaseSHA)
	require.Contains(t, lines, "info: starting from trunk, the repository's default branch")

	// A base branch the run names is not the default; nothing to say.
	run.RunID, run.BaseBranch = "r3", "trunk"
	_, lines, err = h.prepare(t, run)
	require.NoError(t, err)
	for _, l := range lines {
		require.NotContains(t, l, "default branch")
	}
}

func TestARunOnAnEmptyRepositorySaysWhatToDo(t *testing.T) {
	h := newGitHost(t)
	origin := h.origin(t, "acme/app")
	run := RunContext{RunRef: RunRef{TaskID: "t", RunID: "r1"}, Repository: "acme/app", Branch: "posthog/task-1"}
	_, _, err := h.prepare(t, run)
	require.ErrorContains(t, err, "clone acme/app: the repository has no branches (it is empty): push a commit to it and run the task again")
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(h.a.classify(err), &appErr) && appErr.NonRetryable(), "no retry fills a repository: %v", err)

	// Pushed, but not to the branch HEAD names.
	h.push(t, origin, "feature", "a.txt")
	run.RunID = "r2"
	_, _, err = h.prepare(t, run)
	require.ErrorContains(t, err, `clone acme/app: the repository's default branch "main" has no commits: push a commit to it, make a branch that has commits the default, or name the base branch`)
	require.True(t, errors.As(h.a.classify(err), &appErr) && appErr.NonRetryable(), "%v", err)

	run.RunID, run.BaseBranch = "r3", "feature"
	ws, _, err := h.prepare(t, run)
	require.NoError(t, err)
	require.Equal(t, "feature", ws.BaseBranch)
}
