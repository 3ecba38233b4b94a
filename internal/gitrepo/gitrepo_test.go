package gitrepo

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/redact"
)

func TestValidateRepository(t *testing.T) {
	for _, ok := range []string{"acme/app", "Org.Name/repo_1", "a-b/c.d"} {
		require.NoError(t, ValidateRepository(ok), ok)
	}
	for _, bad := range []string{"", "acme", "a/b/c", "../x", "-x/y", "x/-y", ".x/y", "a//b", "a/b c", "a/$(id)", "/a/b"} {
		require.Error(t, ValidateRepository(bad), bad)
	}
}

// TestTokenReachesGitOnlyThroughItsEnvironment clones from an HTTP server
// that records what git sends, through a git wrapper that records argv.
func TestTokenReachesGitOnlyThroughItsEnvironment(t *testing.T) {
	const token = "ghs_supersecrettokenvalue123"
	var mu sync.Mutex
	var authHeaders []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		authHeaders = append(authHeaders, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "Repository not found. token was "+token, http.StatusNotFound)
	}))
	defer srv.Close()

	// A git on PATH that logs its argv, then runs the real one.
	realGit, err := exec.LookPath("git")
	require.NoError(t, err)
	bin := t.TempDir()
	argvLog := filepath.Join(bin, "argv")
	wrapper := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + argvLog + "\nexec " + realGit + " \"$@\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "git"), []byte(wrapper), 0o755))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	g := &Git{Token: token, Redactor: redact.New(token)}
	_, err = g.Clone(context.Background(), srv.URL+"/acme/app.git", filepath.Join(t.TempDir(), "repo"), "")
	require.Error(t, err)
	var gitErr *Error
	require.ErrorAs(t, err, &gitErr)
	require.True(t, gitErr.NotFound(), "a 404 from the remote is final: %v", err)
	require.NotContains(t, err.Error(), token)
	require.NotContains(t, err.Error(), base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token)))

	argv, err := os.ReadFile(argvLog)
	require.NoError(t, err)
	require.Contains(t, string(argv), "clone")
	require.NotContains(t, string(argv), token, "the token is never in git's argv")
	require.NotContains(t, string(argv), base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token)))

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, authHeaders)
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))
	require.Contains(t, authHeaders, want, "git sent the token as an extra header")
}

func TestCommitPushAndDiffStat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	origin := filepath.Join(dir, "origin.git")
	run := func(dir string, args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	run(dir, "init", "--quiet", "--bare", "--initial-branch=main", origin)
	seed := filepath.Join(dir, "seed")
	run(dir, "init", "--quiet", "--initial-branch=main", seed)
	require.NoError(t, os.WriteFile(filepath.Join(seed, "a.txt"), []byte("one\ntwo\n"), 0o644))
	run(seed, "add", ".")
	run(seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "init")
	run(seed, "push", "--quiet", origin, "main")

	g := &Git{}
	repo, err := g.Clone(ctx, origin, filepath.Join(dir, "work"), "")
	require.NoError(t, err)
	base, err := repo.Head(ctx)
	require.NoError(t, err)
	branch, err := repo.CurrentBranch(ctx)
	require.NoError(t, err)
	require.Equal(t, "main", branch)

	// An agent-installed hook must not run.
	hook := filepath.Join(repo.Dir, ".git", "hooks", "pre-commit")
	require.NoError(t, os.WriteFile(hook, []byte("#!/bin/sh\ntouch "+filepath.Join(dir, "hook-ran")+"\nexit 1\n"), 0o755))

	changed, err := repo.CommitAll(ctx, "nothing", Author{Name: "A", Email: "a@a"})
	require.NoError(t, err)
	require.False(t, changed)

	require.NoError(t, os.WriteFile(filepath.Join(repo.Dir, "a.txt"), []byte("one\n2\nthree\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(repo.Dir, "b.txt"), []byte("new\n"), 0o644))
	changed, err = repo.CommitAll(ctx, "Change things\n\nTask-Id: t", Author{Name: "Bot", Email: "bot@x"})
	require.NoError(t, err)
	require.True(t, changed)
	_, err = os.Stat(filepath.Join(dir, "hook-ran"))
	require.True(t, os.IsNotExist(err), "repository hooks never run")

	head, err := repo.Head(ctx)
	require.NoError(t, err)
	require.NoError(t, repo.SwitchBranch(ctx, "posthog/task-1"))
	remote, err := repo.RemoteBranch(ctx, origin, "posthog/task-1")
	require.NoError(t, err)
	require.Empty(t, remote)
	require.NoError(t, repo.Push(ctx, origin, "posthog/task-1", ""))
	require.Equal(t, head, run(origin, "rev-parse", "refs/heads/posthog/task-1"))
	require.Equal(t, "Bot <bot@x>", run(origin, "log", "-1", "--format=%an <%ae>", "posthog/task-1"))

	// A push that expects the branch to be absent does not overwrite it; one
	// that names its current commit does.
	require.NoError(t, os.WriteFile(filepath.Join(repo.Dir, "c.txt"), []byte("c\n"), 0o644))
	_, err = repo.CommitAll(ctx, "more", Author{Name: "Bot", Email: "bot@x"})
	require.NoError(t, err)
	require.Error(t, repo.Push(ctx, origin, "posthog/task-1", ""))
	require.NoError(t, repo.Push(ctx, origin, "posthog/task-1", head))

	st, err := repo.DiffStat(ctx, base, head)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a.txt", "b.txt"}, st.Files)
	require.Equal(t, 3, st.Insertions)
	require.Equal(t, 1, st.Deletions)

	require.True(t, g.ValidBranchName(ctx, "posthog/task-abc-1"))
	require.False(t, g.ValidBranchName(ctx, "posthog/task..x"))
	require.False(t, g.ValidBranchName(ctx, "bad branch"))
}
