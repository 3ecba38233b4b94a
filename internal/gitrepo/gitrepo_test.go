package gitrepo

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
	cache := &Cache{Dir: t.TempDir(), Git: g}
	_, err = cache.Checkout(context.Background(), "acme/app", srv.URL+"/acme/app.git", filepath.Join(t.TempDir(), "repo"), filepath.Join(t.TempDir(), "git"), "")
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

// seedOrigin makes a bare repository with a.txt on main.
func seedOrigin(t *testing.T, dir string) (origin string, run func(dir string, args ...string) string) {
	run = func(dir string, args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	origin = filepath.Join(dir, "origin.git")
	run(dir, "init", "--quiet", "--bare", "--initial-branch=main", origin)
	seed := filepath.Join(dir, "seed")
	run(dir, "init", "--quiet", "--initial-branch=main", seed)
	require.NoError(t, os.WriteFile(filepath.Join(seed, "a.txt"), []byte("one\ntwo\n"), 0o644))
	run(seed, "add", ".")
	run(seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "init")
	run(seed, "push", "--quiet", origin, "main")
	return origin, run
}

// seededCache is a folder holding a seeded origin (see seedOrigin) and a
// cache in front of it, for workspaces to be checked out into.
func seededCache(t *testing.T) (dir, origin string, run func(dir string, args ...string) string, cache *Cache) {
	dir = t.TempDir()
	origin, run = seedOrigin(t, dir)
	return dir, origin, run, &Cache{Dir: filepath.Join(dir, "cache"), Git: &Git{}}
}

// checkoutIn checks acme/app out of origin from base into the workspace
// name under dir, its git folder beside it.
func checkoutIn(ctx context.Context, cache *Cache, origin, dir, name, base string) (Checkout, error) {
	return cache.Checkout(ctx, "acme/app", origin, filepath.Join(dir, name), filepath.Join(dir, name+".git"), base)
}

func TestCommitPushAndDiffStat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	origin, run := seedOrigin(t, dir)

	g := &Git{}
	cache := &Cache{Dir: filepath.Join(dir, "cache"), Git: g}
	co, err := checkoutIn(ctx, cache, origin, dir, "work", "")
	require.NoError(t, err)
	require.False(t, co.Hit)
	repo := co.Repo
	base, err := repo.Head(ctx)
	require.NoError(t, err)
	branch, err := repo.CurrentBranch(ctx)
	require.NoError(t, err)
	require.Equal(t, "main", branch)
	require.Equal(t, origin, run(repo.Dir, "remote", "get-url", "origin"), "the clone's origin is the real remote, not the cache")

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
	remote, err := cache.RemoteBranch(ctx, "acme/app", "posthog/task-1")
	require.NoError(t, err)
	require.Empty(t, remote)
	require.NoError(t, cache.Push(ctx, "acme/app", origin, repo, "posthog/task-1", ""))
	require.Equal(t, head, run(origin, "rev-parse", "refs/heads/posthog/task-1"))
	require.Equal(t, "Bot <bot@x>", run(origin, "log", "-1", "--format=%an <%ae>", "posthog/task-1"))
	remote, err = cache.RemoteBranch(ctx, "acme/app", "posthog/task-1")
	require.NoError(t, err)
	require.Equal(t, head, remote, "the mirror knows what it pushed")
	require.Empty(t, run(filepath.Join(dir, "cache", "acme", "app.git"), "for-each-ref", "refs/taskworker/"), "no staging ref is left")

	// A push that expects the branch to be absent does not overwrite it; one
	// that names its current commit does.
	require.NoError(t, os.WriteFile(filepath.Join(repo.Dir, "c.txt"), []byte("c\n"), 0o644))
	_, err = repo.CommitAll(ctx, "more", Author{Name: "Bot", Email: "bot@x"})
	require.NoError(t, err)
	require.Error(t, cache.Push(ctx, "acme/app", origin, repo, "posthog/task-1", ""))
	require.NoError(t, cache.Push(ctx, "acme/app", origin, repo, "posthog/task-1", head))

	st, err := repo.DiffStat(ctx, base, head)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a.txt", "b.txt"}, st.Files)
	require.Equal(t, 3, st.Insertions)
	require.Equal(t, 1, st.Deletions)

	require.True(t, g.ValidBranchName(ctx, "posthog/task-abc-1"))
	require.False(t, g.ValidBranchName(ctx, "posthog/task..x"))
	require.False(t, g.ValidBranchName(ctx, "bad branch"))
}

func TestWarmCheckoutFetchesAndIsIndependentOfTheCache(t *testing.T) {
	ctx := context.Background()
	dir, origin, run, cache := seededCache(t)
	_, err := checkoutIn(ctx, cache, origin, dir, "w1", "")
	require.NoError(t, err)

	// Upstream moves on.
	up := filepath.Join(dir, "up")
	run(dir, "clone", "--quiet", origin, up)
	require.NoError(t, os.WriteFile(filepath.Join(up, "new.txt"), []byte("new\n"), 0o644))
	run(up, "add", ".")
	run(up, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "upstream change")
	run(up, "push", "--quiet", "origin", "main")
	tip := run(up, "rev-parse", "HEAD")

	co, err := checkoutIn(ctx, cache, origin, dir, "w2", "")
	require.NoError(t, err)
	require.True(t, co.Hit)
	head, err := co.Repo.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, tip, head, "a warm checkout has the upstream change")

	// Removing the cache does not break the workspace.
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "cache")))
	run(co.Repo.Dir, "fsck", "--no-progress")
	require.Equal(t, "new\n", run(co.Repo.Dir, "show", "HEAD:new.txt")+"\n")
}

func TestACorruptMirrorNeverFailsTheCheckout(t *testing.T) {
	damage := map[string]func(mirror string){
		"objects": func(mirror string) {
			files, _ := filepath.Glob(filepath.Join(mirror, "objects", "pack", "*"))
			loose, _ := filepath.Glob(filepath.Join(mirror, "objects", "??", "*"))
			for _, p := range append(files, loose...) {
				require.NoError(t, os.WriteFile(p, []byte("garbage"), 0o644))
			}
		},
		"head and config": func(mirror string) {
			require.NoError(t, os.WriteFile(filepath.Join(mirror, "HEAD"), []byte("garbage"), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(mirror, "config"), []byte("[[[garbage"), 0o644))
		},
		"refs": func(mirror string) {
			require.NoError(t, os.RemoveAll(filepath.Join(mirror, "refs")))
		},
	}
	for name, breakIt := range damage {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			origin, _ := seedOrigin(t, dir)
			// Over file://, git copies objects instead of hard-linking them, so
			// damaging the mirror's files leaves the origin whole (as a real remote is).
			origin = "file://" + origin
			cache := &Cache{Dir: filepath.Join(dir, "cache"), Git: &Git{}}
			_, err := checkoutIn(ctx, cache, origin, dir, "w1", "")
			require.NoError(t, err)

			breakIt(filepath.Join(dir, "cache", "acme", "app.git"))

			co, err := checkoutIn(ctx, cache, origin, dir, "w2", "")
			require.NoError(t, err, "a broken cache never fails the run")
			out, err := exec.Command("git", "-C", co.Repo.Dir, "show", "HEAD:a.txt").CombinedOutput()
			require.NoError(t, err, string(out))
			require.Equal(t, "one\ntwo\n", string(out))
			if name == "head and config" {
				require.True(t, co.Rebuilt, "%+v", co)
			}
		})
	}
}

func TestEvictionRemovesTheLeastRecentlyUsedMirror(t *testing.T) {
	ctx := context.Background()
	dir, origin, _, cache := seededCache(t)
	for _, name := range []string{"acme/one", "acme/two"} {
		_, err := cache.Checkout(ctx, name, origin, filepath.Join(dir, "w-"+filepath.Base(name)), filepath.Join(dir, "w-"+filepath.Base(name)+".git"), "")
		require.NoError(t, err)
	}
	one := filepath.Join(dir, "cache", "acme", "one.git")
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(one, old, old))
	cache.MaxBytes = 1 // anything over: keep only the mirror in use
	_, err := cache.Checkout(ctx, "acme/three", origin, filepath.Join(dir, "w-three"), filepath.Join(dir, "w-three.git"), "")
	require.NoError(t, err)
	require.NoDirExists(t, one)
	require.NoDirExists(t, filepath.Join(dir, "cache", "acme", "two.git"))
	require.DirExists(t, filepath.Join(dir, "cache", "acme", "three.git"))
}

func TestConcurrentCheckoutsOfOneRepositoryTakeTurns(t *testing.T) {
	ctx := context.Background()
	dir, origin, _, cache := seededCache(t)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = checkoutIn(ctx, cache, origin, dir, fmt.Sprintf("w%d", i), "")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// pushHistory pushes a commit with no parent to origin's branch, replacing
// whatever was there, and returns it.
func pushHistory(t *testing.T, origin, branch, file string) string {
	t.Helper()
	work := t.TempDir()
	run := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", work}, args...)...).CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	run("init", "--quiet")
	require.NoError(t, os.WriteFile(filepath.Join(work, file), []byte(file+"\n"), 0o644))
	run("add", ".")
	run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", file)
	run("push", "--quiet", "--force", origin, "HEAD:refs/heads/"+branch)
	return run("rev-parse", "HEAD")
}

// checkedOut is the branch and commit a checkout's clone is at.
func checkedOut(t *testing.T, co Checkout) (branch, head string) {
	t.Helper()
	branch, err := co.Repo.CurrentBranch(context.Background())
	require.NoError(t, err)
	head, err = co.Repo.Head(context.Background())
	require.NoError(t, err)
	return branch, head
}

func TestTheMirrorFollowsTheRemotesDefaultBranch(t *testing.T) {
	ctx := context.Background()
	dir, origin, run, cache := seededCache(t)
	_, err := checkoutIn(ctx, cache, origin, dir, "w1", "")
	require.NoError(t, err)

	// Renamed, as GitHub's settings do it: the old name is gone.
	run(origin, "branch", "-m", "main", "trunk")
	co, err := checkoutIn(ctx, cache, origin, dir, "w2", "")
	require.NoError(t, err)
	require.True(t, co.Hit)
	require.False(t, co.Rebuilt, "following the remote needs no rebuild")
	branch, head := checkedOut(t, co)
	require.Equal(t, "trunk", branch)
	require.Equal(t, "trunk", co.Branch)
	require.Equal(t, run(origin, "rev-parse", "trunk"), head)

	// Another branch made the default, the old one kept.
	release := pushHistory(t, origin, "release", "release.txt")
	run(origin, "symbolic-ref", "HEAD", "refs/heads/release")
	co, err = checkoutIn(ctx, cache, origin, dir, "w3", "")
	require.NoError(t, err)
	branch, head = checkedOut(t, co)
	require.Equal(t, "release", branch)
	require.Equal(t, release, head)
}

func TestADefaultBranchPushedAfterTheFirstCloneIsFollowed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	origin := filepath.Join(dir, "origin.git")
	out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch=main", origin).CombinedOutput()
	require.NoError(t, err, string(out))
	cache := &Cache{Dir: filepath.Join(dir, "cache"), Git: &Git{}}

	_, err = checkoutIn(ctx, cache, origin, dir, "w1", "")
	var unborn *UnbornHeadError
	require.ErrorAs(t, err, &unborn, "an empty repository has nothing to start from: %v", err)
	require.True(t, unborn.NoBranches, "%+v", unborn)

	// The first push names the default branch, as on GitHub.
	tip := pushHistory(t, origin, "master", "a.txt")
	require.NoError(t, exec.Command("git", "--git-dir", origin, "symbolic-ref", "HEAD", "refs/heads/master").Run())
	co, err := checkoutIn(ctx, cache, origin, dir, "w2", "")
	require.NoError(t, err)
	require.True(t, co.Hit)
	branch, head := checkedOut(t, co)
	require.Equal(t, "master", branch)
	require.Equal(t, tip, head)
}

func TestARepositoryEmptiedAndPushedAgain(t *testing.T) {
	ctx := context.Background()
	dir, origin, run, cache := seededCache(t)
	_, err := checkoutIn(ctx, cache, origin, dir, "w1", "")
	require.NoError(t, err)

	require.NoError(t, os.RemoveAll(origin))
	run(dir, "init", "--quiet", "--bare", "--initial-branch=trunk", origin)
	_, err = checkoutIn(ctx, cache, origin, dir, "w2", "")
	var unborn *UnbornHeadError
	require.ErrorAs(t, err, &unborn, "the mirror's old commits are not the repository's: %v", err)
	require.True(t, unborn.NoBranches, "%+v", unborn)
	require.Contains(t, err.Error(), "no branches")

	tip := pushHistory(t, origin, "trunk", "fresh.txt")
	co, err := checkoutIn(ctx, cache, origin, dir, "w3", "")
	require.NoError(t, err)
	require.True(t, co.Hit)
	branch, head := checkedOut(t, co)
	require.Equal(t, "trunk", branch)
	require.Equal(t, tip, head)
	require.Equal(t, tip, run(co.Repo.Dir, "rev-list", "--all"), "nothing of the old history is left")
}

func TestAForcePushedBaseBranchStartsFromItsNewTip(t *testing.T) {
	ctx := context.Background()
	dir, origin, run, cache := seededCache(t)
	_, err := checkoutIn(ctx, cache, origin, dir, "w1", "main")
	require.NoError(t, err)
	old := run(origin, "rev-parse", "main")

	tip := pushHistory(t, origin, "main", "rewritten.txt")
	co, err := checkoutIn(ctx, cache, origin, dir, "w2", "main")
	require.NoError(t, err)
	require.True(t, co.Hit)
	require.False(t, co.Rebuilt, "a forced update is fetched, not a reason to rebuild")
	_, head := checkedOut(t, co)
	require.Equal(t, tip, head)
	require.NotEqual(t, old, head)
}

func TestABranchDeletedOnTheRemoteIsGoneFromTheMirror(t *testing.T) {
	ctx := context.Background()
	dir, origin, run, cache := seededCache(t)
	co, err := checkoutIn(ctx, cache, origin, dir, "w1", "")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(co.Repo.Dir, "b.txt"), []byte("b\n"), 0o644))
	_, err = co.Repo.CommitAll(ctx, "work", Author{Name: "Bot", Email: "bot@x"})
	require.NoError(t, err)
	require.NoError(t, cache.Push(ctx, "acme/app", origin, co.Repo, "posthog/task-1", ""))
	sha, err := cache.RemoteBranch(ctx, "acme/app", "posthog/task-1")
	require.NoError(t, err)
	require.NotEmpty(t, sha)

	run(origin, "branch", "-D", "posthog/task-1")
	_, err = checkoutIn(ctx, cache, origin, dir, "w2", "")
	require.NoError(t, err)
	sha, err = cache.RemoteBranch(ctx, "acme/app", "posthog/task-1")
	require.NoError(t, err)
	require.Empty(t, sha, "a branch the remote no longer has is not continued")
}

// TestAnUnchangedRemoteIsAskedOnce counts the git commands that reach the
// remote on a warm checkout: one listing, and a fetch only when it showed a
// change.
func TestAnUnchangedRemoteIsAskedOnce(t *testing.T) {
	realGit, err := exec.LookPath("git")
	require.NoError(t, err)
	bin := t.TempDir()
	argvLog := filepath.Join(bin, "argv")
	wrapper := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + argvLog + "\nexec " + realGit + " \"$@\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "git"), []byte(wrapper), 0o755))

	ctx := context.Background()
	dir, origin, _, cache := seededCache(t)
	_, err = checkoutIn(ctx, cache, origin, dir, "w1", "")
	require.NoError(t, err)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	remoteCommands := func() []string {
		raw, _ := os.ReadFile(argvLog)
		require.NoError(t, os.RemoveAll(argvLog))
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			for _, cmd := range []string{"ls-remote", "fetch"} {
				if strings.Contains(line, " "+cmd+" ") {
					out = append(out, cmd)
				}
			}
		}
		return out
	}

	_, err = checkoutIn(ctx, cache, origin, dir, "w2", "")
	require.NoError(t, err)
	require.Equal(t, []string{"ls-remote"}, remoteCommands())

	pushHistory(t, origin, "other", "other.txt")
	_, err = checkoutIn(ctx, cache, origin, dir, "w3", "")
	require.NoError(t, err)
	require.Equal(t, []string{"ls-remote", "fetch"}, remoteCommands())
}

func TestAMissingBaseBranchIsNotAMissingRepository(t *testing.T) {
	ctx := context.Background()
	dir, origin, _, cache := seededCache(t)
	for _, name := range []string{"cold", "warm"} {
		_, err := checkoutIn(ctx, cache, origin, dir, name, "no-such-branch")
		var gitErr *Error
		require.ErrorAs(t, err, &gitErr, name)
		require.True(t, gitErr.RemoteBranchMissing(), "%s: %v", name, err)
		require.False(t, gitErr.NotFound(), "%s: the repository is there: %v", name, err)
	}
}
