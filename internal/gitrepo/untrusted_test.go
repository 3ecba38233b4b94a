package gitrepo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// These tests are the agent's attacks on the worker's git: each plants one
// thing in the agent's clone (or a HOME the agent could write), then the
// worker publishes the run as Publish does, and the test checks that the
// planted program never ran, that the branch and changes.patch are the
// agent's real changes, and that nothing reached the mirror it shouldn't.

// cleanGit runs git the way no attack reaches: no configuration but the
// repository's, no HOME.
func cleanGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	return cleanGitInput(t, dir, "", args...)
}

func cleanGitInput(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %v: %s", args, out)
	return strings.TrimSpace(string(out))
}

type untrustedRun struct {
	t      *testing.T
	dir    string
	origin string // a file:// URL, so the mirror shares no file with it
	cache  *Cache
	repo   *Repo
	base   string
	// evil is a program that records that it ran in marker, then passes
	// its input through with a line of its own added.
	evil, marker string
	// export is the CommitExporter the run publishes with.
	export CommitExporter
	// kept and keepErr are what KeepCommits said.
	kept    int
	keepErr error
}

func newUntrustedRun(t *testing.T) *untrustedRun {
	dir := t.TempDir()
	origin := filepath.Join(dir, "origin.git")
	cleanGit(t, dir, "init", "--quiet", "--bare", "--initial-branch=main", origin)
	seed := filepath.Join(dir, "seed")
	cleanGit(t, dir, "init", "--quiet", "--initial-branch=main", seed)
	require.NoError(t, os.WriteFile(filepath.Join(seed, "a.txt"), []byte("one\ntwo\n"), 0o644))
	cleanGit(t, seed, "add", ".")
	cleanGit(t, seed, "commit", "--quiet", "-m", "init")
	cleanGit(t, seed, "push", "--quiet", origin, "main")
	r := &untrustedRun{t: t, dir: dir, origin: "file://" + origin, cache: &Cache{Dir: filepath.Join(dir, "cache"), Git: &Git{}},
		evil: filepath.Join(dir, "evil.sh"), marker: filepath.Join(dir, "ran")}
	r.export = r.cache.Git.ExportCommits
	require.NoError(t, os.WriteFile(r.evil, []byte("#!/bin/sh\necho \"$0 $*\" >> "+r.marker+"\ncat\necho planted\n"), 0o755))
	r.checkout("acme/app")
	return r
}

func (r *untrustedRun) checkout(repository string) Checkout {
	ws := filepath.Join(r.dir, "ws-"+randomSuffix())
	co, err := r.cache.Checkout(context.Background(), repository, r.origin, filepath.Join(ws, "repo"), filepath.Join(ws, "worker", "git"), "")
	require.NoError(r.t, err)
	require.NoError(r.t, os.Mkdir(filepath.Join(ws, "out"), 0o755))
	r.repo = co.Repo
	r.base, err = r.repo.Head(context.Background())
	require.NoError(r.t, err)
	return co
}

// agentWrites changes the clone's files as an agent would.
func (r *untrustedRun) agentWrites(files map[string]string) {
	for name, content := range files {
		path := filepath.Join(r.repo.Dir, name)
		require.NoError(r.t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(r.t, os.WriteFile(path, []byte(content), 0o644))
	}
}

// gitConfig writes configuration into a file as the agent would, with no
// program of the file's running.
func (r *untrustedRun) gitConfig(file string, kv ...string) {
	for i := 0; i < len(kv); i += 2 {
		cleanGit(r.t, r.dir, "config", "--file", file, kv[i], kv[i+1])
	}
}

// publish does what the Publish step does, and returns the head it pushed
// and changes.patch.
func (r *untrustedRun) publish(repository string) (string, []byte) {
	t, ctx := r.t, context.Background()
	r.kept, r.keepErr = r.repo.KeepCommits(ctx, r.export, r.base, filepath.Join(filepath.Dir(r.repo.Dir), "out", "commits.bundle"))
	_, err := r.repo.CommitAll(ctx, "The worker's commit", Author{Name: "Worker", Email: "worker@x"})
	require.NoError(t, err)
	head, err := r.repo.Head(ctx)
	require.NoError(t, err)
	require.NoError(t, r.repo.SwitchBranch(ctx, "task"))
	require.NoError(t, r.cache.Push(ctx, repository, r.origin, r.repo, "task", ""))
	_, err = r.repo.DiffStat(ctx, r.base, head)
	require.NoError(t, err)
	patch, err := r.repo.Patch(ctx, r.base, head)
	require.NoError(t, err)
	return head, patch
}

// requireNothingRan fails if the planted program ran.
func (r *untrustedRun) requireNothingRan() {
	r.t.Helper()
	ran, err := os.ReadFile(r.marker)
	require.True(r.t, os.IsNotExist(err), "a program the agent planted ran: %s", ran)
}

// requireRealPatch checks the pushed branch and changes.patch against a
// clean git's view of the origin.
// publishPlanted publishes a run whose agent wrote files and planted plant,
// and requires that nothing planted ran and the patch is the files' own:
// that patch.
func publishPlanted(t *testing.T, files map[string]string, plant func(r *untrustedRun)) []byte {
	t.Helper()
	r := newUntrustedRun(t)
	r.agentWrites(files)
	plant(r)
	head, patch := r.publish("acme/app")
	r.requireNothingRan()
	r.requireRealPatch(head, patch, files)
	return patch
}

func (r *untrustedRun) requireRealPatch(head string, patch []byte, files map[string]string) {
	t := r.t
	origin := strings.TrimPrefix(r.origin, "file://")
	require.Equal(t, head, cleanGit(t, origin, "rev-parse", "refs/heads/task"))
	for name, content := range files {
		require.Equal(t, strings.TrimSuffix(content, "\n"), cleanGit(t, origin, "show", head+":"+name), name)
	}
	want := cleanGit(t, origin, "diff", "--binary", "--no-color", r.base, head)
	require.Equal(t, want, strings.TrimSpace(string(patch)), "changes.patch is the real diff")
}

var agentFiles = map[string]string{"a.txt": "one\n2\nthree\n", "b.txt": "new\n", ".gitattributes": "* filter=evil diff=evil\n"}

func TestAPlantedFilterNeverRuns(t *testing.T) {
	for name, plant := range map[string]func(r *untrustedRun){
		"in .git/config": func(r *untrustedRun) {
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "filter.evil.clean", r.evil, "filter.evil.smudge", r.evil, "filter.evil.required", "true")
		},
		"through include.path": func(r *untrustedRun) {
			included := filepath.Join(r.dir, "included.config")
			r.gitConfig(included, "filter.evil.clean", r.evil, "filter.evil.smudge", r.evil)
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "include.path", included)
		},
		"named in .git/info/attributes": func(r *untrustedRun) {
			require.NoError(t, os.WriteFile(filepath.Join(r.repo.Dir, ".git", "info", "attributes"), []byte("* filter=sneaky\n"), 0o644))
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "filter.sneaky.clean", r.evil)
		},
	} {
		t.Run(name, func(t *testing.T) {
			publishPlanted(t, agentFiles, plant)
		})
	}
}

func TestAPlantedDiffProgramNeverRunsNorWritesThePatch(t *testing.T) {
	for name, plant := range map[string]func(r *untrustedRun){
		"diff.external": func(r *untrustedRun) {
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "diff.external", r.evil)
		},
		"textconv": func(r *untrustedRun) {
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "diff.evil.textconv", r.evil, "diff.evil.command", r.evil)
			require.NoError(t, os.WriteFile(filepath.Join(r.repo.Dir, ".git", "info", "attributes"), []byte("* diff=evil\n"), 0o644))
		},
	} {
		t.Run(name, func(t *testing.T) {
			patch := publishPlanted(t, agentFiles, plant)
			require.NotContains(t, string(patch), "planted")
		})
	}
}

func TestAPlantedSigningProgramFsmonitorOrHookNeverRuns(t *testing.T) {
	for name, plant := range map[string]func(r *untrustedRun){
		"commit.gpgSign": func(r *untrustedRun) {
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "commit.gpgSign", "true", "gpg.program", r.evil)
		},
		"core.fsmonitor": func(r *untrustedRun) {
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "core.fsmonitor", r.evil)
		},
		"hooks": func(r *untrustedRun) {
			for _, hook := range []string{"pre-commit", "post-commit", "commit-msg", "prepare-commit-msg", "post-index-change", "reference-transaction"} {
				require.NoError(t, os.Symlink(r.evil, filepath.Join(r.repo.Dir, ".git", "hooks", hook)))
			}
		},
		"core.hooksPath": func(r *untrustedRun) {
			hooks := filepath.Join(r.dir, "hooks")
			require.NoError(t, os.MkdirAll(hooks, 0o755))
			require.NoError(t, os.Symlink(r.evil, filepath.Join(hooks, "post-commit")))
			r.gitConfig(filepath.Join(r.repo.Dir, ".git", "config"), "core.hooksPath", hooks)
		},
	} {
		t.Run(name, func(t *testing.T) {
			publishPlanted(t, map[string]string{"a.txt": "one\n2\nthree\n", "b.txt": "new\n"}, plant)
		})
	}
}

// TestAPlantedProgramInASubmoduleNeverRuns: staging would look into a
// submodule's folder that is a repository with git status, run with the
// configuration the agent wrote there.
func TestAPlantedProgramInASubmoduleNeverRuns(t *testing.T) {
	r := newUntrustedRun(t)
	ctx := context.Background()
	// The base has a submodule at sub; the clone's sub is an empty folder.
	seed := filepath.Join(r.dir, "seed")
	pinned := cleanGit(t, seed, "rev-parse", "HEAD")
	cleanGit(t, seed, "update-index", "--add", "--cacheinfo", "160000,"+pinned+",sub")
	cleanGit(t, seed, "commit", "--quiet", "-m", "add a submodule")
	cleanGit(t, seed, "push", "--quiet", strings.TrimPrefix(r.origin, "file://"), "main")
	r.checkout("acme/app")

	// The agent makes sub a repository at the pinned commit, with a file
	// changed but of the same size, which git status reads through the
	// agent's filter to compare.
	sub := filepath.Join(r.repo.Dir, "sub")
	cleanGit(t, r.dir, "clone", "--quiet", "--no-checkout", r.origin, sub)
	cleanGit(t, sub, "checkout", "--quiet", "--detach", pinned)
	require.NoError(t, os.WriteFile(filepath.Join(sub, ".git", "info", "attributes"), []byte("* filter=evil\n"), 0o644))
	r.gitConfig(filepath.Join(sub, ".git", "config"), "filter.evil.clean", r.evil, "core.fsmonitor", r.evil)
	require.NoError(t, os.WriteFile(filepath.Join(sub, "a.txt"), []byte("ONE\nTWO\n"), 0o644))

	files := map[string]string{"a.txt": "changed\n"}
	r.agentWrites(files)
	head, patch := r.publish("acme/app")
	r.requireNothingRan()
	r.requireRealPatch(head, patch, files)
	tree, err := r.repo.Run(ctx, "ls-tree", head, "sub")
	require.NoError(t, err)
	require.Contains(t, tree, "160000 commit "+pinned)
}

// TestObjectsBorrowedFromElsewhereAreNeverPushed: an agent that points its
// clone's alternates at another repository's objects, and commits a tree of
// that repository's, gets none of it into the branch.
func TestObjectsBorrowedFromElsewhereAreNeverPushed(t *testing.T) {
	r := newUntrustedRun(t)
	other := filepath.Join(r.dir, "other.git")
	cleanGit(t, r.dir, "init", "--quiet", "--bare", other)
	secretFile := filepath.Join(r.dir, "secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("another repository's secret\n"), 0o644))
	secret := cleanGit(t, other, "hash-object", "-w", secretFile)

	// The agent's commit names a blob it can't read itself.
	alternates := filepath.Join(r.repo.Dir, ".git", "objects", "info", "alternates")
	require.NoError(t, os.WriteFile(alternates, []byte(filepath.Join(other, "objects")+"\n"), 0o644))
	tree := cleanGitInput(t, r.repo.Dir, fmt.Sprintf("100644 blob %s\tstolen.txt\n", secret), "mktree")
	commit := cleanGit(t, r.repo.Dir, "commit-tree", "-p", r.base, "-m", "borrowed", tree)
	cleanGit(t, r.repo.Dir, "update-ref", "HEAD", commit)

	files := map[string]string{"b.txt": "mine\n"}
	r.agentWrites(files)
	head, patch := r.publish("acme/app")
	require.Error(t, r.keepErr, "the borrowed commit is not kept")
	r.requireRealPatch(head, patch, files)
	origin := strings.TrimPrefix(r.origin, "file://")
	require.Error(t, exec.Command("git", "--git-dir", origin, "cat-file", "-e", secret).Run(), "the secret never reaches the remote")
	require.Error(t, exec.Command("git", "--git-dir", filepath.Join(r.dir, "cache", "acme", "app.git"), "cat-file", "-e", secret).Run(), "nor the mirror")
}

// TestAHomeTheAgentWroteNeverRedirectsGit: an agent that runs as the
// worker's user can write the worker's HOME, whose configuration would send
// clones and pushes (and their token) elsewhere, or run commands.
func TestAHomeTheAgentWroteNeverRedirectsGit(t *testing.T) {
	r := newUntrustedRun(t)
	origin := strings.TrimPrefix(r.origin, "file://")
	elsewhere := filepath.Join(r.dir, "elsewhere.git")
	cleanGit(t, r.dir, "clone", "--quiet", "--bare", origin, elsewhere)
	home := filepath.Join(r.dir, "home")
	attributes := filepath.Join(home, ".config", "git", "attributes")
	require.NoError(t, os.MkdirAll(filepath.Dir(attributes), 0o755))
	require.NoError(t, os.WriteFile(attributes, []byte("* filter=evil\n"), 0o644))
	r.gitConfig(filepath.Join(home, ".gitconfig"),
		"url.file://"+elsewhere+".insteadOf", r.origin,
		"url.ext::sh -c touch% "+r.marker+"% ;false.pushInsteadOf", r.origin,
		"protocol.ext.allow", "always",
		"filter.evil.clean", r.evil,
		"core.attributesFile", attributes)
	r.gitConfig(filepath.Join(home, ".config", "git", "config"), "core.fsmonitor", r.evil)
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))

	// A new mirror, and a warm one.
	for _, repository := range []string{"acme/new", "acme/app"} {
		r.checkout(repository)
		files := map[string]string{"a.txt": "changed for " + repository + "\n"}
		r.agentWrites(files)
		head, patch := r.publish(repository)
		r.requireNothingRan()
		r.requireRealPatch(head, patch, files)
		require.Error(t, exec.Command("git", "--git-dir", elsewhere, "rev-parse", "--verify", "task").Run(), "nothing is pushed elsewhere")
		cleanGit(t, origin, "update-ref", "-d", "refs/heads/task")
	}
}

// TestTheAgentsCloneSharesNoObjectFileWithTheMirror: rewriting an object
// file of the clone in place, as an agent can, must leave the mirror whole.
func TestTheAgentsCloneSharesNoObjectFileWithTheMirror(t *testing.T) {
	r := newUntrustedRun(t)
	mirror := filepath.Join(r.dir, "cache", "acme", "app.git")
	inodes := map[uint64]string{}
	for _, dir := range []string{filepath.Join(mirror, "objects"), filepath.Join(r.repo.GitDir, "objects")} {
		require.NoError(t, filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				inodes[info.Sys().(*syscall.Stat_t).Ino] = path
			}
			return err
		}))
	}
	var rewritten int
	require.NoError(t, filepath.Walk(filepath.Join(r.repo.Dir, ".git", "objects"), func(path string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		if other, ok := inodes[info.Sys().(*syscall.Stat_t).Ino]; ok {
			t.Errorf("%s is the same file as %s", path, other)
		}
		// In place: the same inode, as a hard link would share it.
		require.NoError(t, os.Chmod(path, 0o644))
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte("poisoned by the agent"), 12)
		require.NoError(t, err)
		rewritten++
		return f.Close()
	}))
	require.NotZero(t, rewritten)

	co := r.checkout("acme/app")
	require.False(t, co.Rebuilt, "the mirror was not damaged")
	require.Equal(t, "one\ntwo", cleanGit(t, co.Repo.Dir, "show", "HEAD:a.txt"))
	cleanGit(t, mirror, "fsck", "--no-progress")
}
