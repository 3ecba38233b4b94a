package activities

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/publish"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/tasksapi"
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

// push commits file on top of origin's branch (or of from, when the branch
// is new; a first commit when neither is there) and pushes it to the branch,
// returning the commit.
func (h *gitHost) push(t *testing.T, origin, from, branch, file string) string {
	work := t.TempDir()
	h.git(t, work, "init", "--quiet")
	for _, b := range []string{branch, from} {
		if b != "" && h.git(t, origin, "branch", "--list", b) != "" {
			h.git(t, work, "fetch", "--quiet", origin, b)
			h.git(t, work, "reset", "--quiet", "--hard", "FETCH_HEAD")
			break
		}
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
	h.push(t, origin, "", "main", "a.txt")
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
	require.True(t, errors.As(h.a.temporalError(err), &appErr) && appErr.NonRetryable(), "no retry fills a repository: %v", err)

	// Pushed, but not to the branch HEAD names.
	h.push(t, origin, "", "feature", "a.txt")
	run.RunID = "r2"
	_, _, err = h.prepare(t, run)
	require.ErrorContains(t, err, `clone acme/app: the repository's default branch "main" has no commits: push a commit to it, make a branch that has commits the default, or name the base branch`)
	require.True(t, errors.As(h.a.temporalError(err), &appErr) && appErr.NonRetryable(), "%v", err)

	run.RunID, run.BaseBranch = "r3", "feature"
	ws, _, err := h.prepare(t, run)
	require.NoError(t, err)
	require.Equal(t, "feature", ws.BaseBranch)
}

// apiRecord is a Tasks API that accepts every request and keeps the PATCHes
// of runs.
func apiRecord(t *testing.T) (*tasksapi.Client, func() []tasksapi.RunUpdate) {
	var mu sync.Mutex
	var patches []tasksapi.RunUpdate
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			var u tasksapi.RunUpdate
			require.NoError(t, json.NewDecoder(r.Body).Decode(&u))
			mu.Lock()
			patches = append(patches, u)
			mu.Unlock()
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	return tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1"}), func() []tasksapi.RunUpdate {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(patches)
	}
}

func TestABranchPushedUnderTheLowerCaseNameIsContinued(t *testing.T) {
	ctx := context.Background()
	h := newGitHost(t)
	var patches func() []tasksapi.RunUpdate
	h.a.API, patches = apiRecord(t)
	h.a.Config.Author = gitrepo.Author{Name: "Bot", Email: "bot@x"}
	origin := h.origin(t, "acme/app")
	h.push(t, origin, "", "main", "a.txt")
	run := RunContext{RunRef: RunRef{TaskID: "t", RunID: "r1"}, Repository: "acme/app", Slug: "ABC-12", Title: "Go on"}
	run.Branch = publish.Branch(h.a.Config.BranchTemplate, run.published())
	run.LegacyBranch = publish.LegacyBranch(h.a.Config.BranchTemplate, run.published())
	require.Equal(t, "posthog/task-ABC-12", run.Branch)
	earlier := h.push(t, origin, "main", "posthog/task-abc-12", "earlier.txt")

	ws, lines, err := h.prepare(t, run)
	require.NoError(t, err)
	require.Equal(t, "posthog/task-abc-12", ws.Branch)
	require.Equal(t, earlier, ws.BranchSHA)
	require.Equal(t, earlier, ws.BaseSHA, "the run starts where the earlier one ended")
	require.Contains(t, lines, "info: branch posthog/task-abc-12 exists from an earlier run (at "+earlier[:12]+"); this run continues on it")

	require.NoError(t, os.WriteFile(filepath.Join(ws.RepoDir, "more.txt"), []byte("more\n"), 0o644))
	rec := &recordedLog{}
	log := logstream.New(rec, run.TaskID, run.RunID, h.a.Redactor, logstream.Config{})
	pub, err := h.a.publish(ctx, PublishInput{Run: run, Workspace: ws}, log)
	_, _ = log.Close(ctx)
	require.NoError(t, err)
	require.Equal(t, "posthog/task-abc-12", pub.Branch)
	require.Equal(t, earlier, h.git(t, origin, "rev-parse", "posthog/task-abc-12^"), "pushed on top of the earlier run's commit")
	require.Empty(t, h.git(t, origin, "branch", "--list", "posthog/task-ABC-12"), "no second branch")
	recorded := patches()
	require.NotEmpty(t, recorded)
	require.Equal(t, "posthog/task-abc-12", *recorded[len(recorded)-1].Branch, "the run records the branch it pushed")

	// Once the branch with the slug's own case is there, it is the one.
	current := h.push(t, origin, "main", "posthog/task-ABC-12", "current.txt")
	run.RunID = "r2"
	ws, _, err = h.prepare(t, run)
	require.NoError(t, err)
	require.Equal(t, "posthog/task-ABC-12", ws.Branch)
	require.Equal(t, current, ws.BranchSHA)

	// Neither there: a new branch, named as PostHog names it.
	h.git(t, origin, "branch", "-D", "posthog/task-ABC-12", "posthog/task-abc-12")
	run.RunID = "r3"
	ws, _, err = h.prepare(t, run)
	require.NoError(t, err)
	require.Equal(t, "posthog/task-ABC-12", ws.Branch)
	require.Empty(t, ws.BranchSHA)
}
