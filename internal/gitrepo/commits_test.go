package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// agentCommits makes one commit in the clone as an agent would, and leaves
// one change uncommitted.
func (r *untrustedRun) agentCommits() map[string]string {
	r.agentWrites(map[string]string{"AGENT.md": "agent commit\n"})
	cleanGit(r.t, r.repo.Dir, "add", "AGENT.md")
	cleanGit(r.t, r.repo.Dir, "-c", "user.name=Agent", "-c", "user.email=agent@x", "commit", "--quiet", "-m", "Agent's own commit")
	r.agentWrites(map[string]string{"WORKER.md": "left for the worker\n"})
	return map[string]string{"AGENT.md": "agent commit\n", "WORKER.md": "left for the worker\n", "a.txt": "one\ntwo\n"}
}

func TestTheAgentsOwnCommitsAreKeptUnderTheWorkers(t *testing.T) {
	r := newUntrustedRun(t)
	files := r.agentCommits()
	head, patch := r.publish("acme/app")
	require.NoError(t, r.keepErr)
	require.Equal(t, 1, r.kept)
	r.requireRealPatch(head, patch, files)
	origin := strings.TrimPrefix(r.origin, "file://")
	require.Equal(t, "Worker: The worker's commit\nAgent: Agent's own commit", cleanGit(t, origin, "log", "--format=%an: %s", r.base+"..task"))
	require.Equal(t, "AGENT.md\nWORKER.md", cleanGit(t, origin, "diff", "--name-only", r.base, "task"))

	// A publish that is tried again finds its commits made and keeps them.
	n, err := r.repo.KeepCommits(context.Background(), r.export, r.base, filepath.Join(r.dir, "bundle"))
	require.NoError(t, err)
	require.Zero(t, n)
	again, err := r.repo.Head(context.Background())
	require.NoError(t, err)
	require.Equal(t, head, again)
}

// TestACommitBundleThatCantBeTrustedCostsOnlyTheHistory: whatever the
// export leaves, the worker pushes the agent's files, as one commit on the
// base when the agent's commits can't be kept.
func TestACommitBundleThatCantBeTrustedCostsOnlyTheHistory(t *testing.T) {
	// bundle makes a bundle of what prepare commits in a scratch clone.
	bundle := func(r *untrustedRun, prepare func(scratch string) string) string {
		t := r.t
		scratch := filepath.Join(r.dir, "scratch-"+randomSuffix())
		cleanGit(t, r.dir, "clone", "--quiet", strings.TrimPrefix(r.origin, "file://"), scratch)
		commits := prepare(scratch)
		path := filepath.Join(r.dir, "made-"+randomSuffix()+".bundle")
		cleanGit(t, scratch, "bundle", "create", path, commits)
		return path
	}
	refusals := map[string]string{
		"the export fails": "sandbox said no", "a symlink": "symlink", "a FIFO": "not a regular file",
		"too big": "over the 100 byte limit", "not a bundle": "unexpected header line", "a malformed commit": "missingEmail",
		"not on the base": "does not descend from the base", "two heads": "more than one reference",
	}
	for name, export := range map[string]func(r *untrustedRun) CommitExporter{
		"the export fails": func(r *untrustedRun) CommitExporter {
			return func(context.Context, string, string, string) error { return errors.New("sandbox said no") }
		},
		"a symlink": func(r *untrustedRun) CommitExporter {
			return func(ctx context.Context, repoDir, base, path string) error {
				real := filepath.Join(r.dir, "real.bundle")
				if err := r.cache.Git.ExportCommits(ctx, repoDir, base, real); err != nil {
					return err
				}
				return os.Symlink(real, path)
			}
		},
		"a FIFO": func(r *untrustedRun) CommitExporter {
			return func(_ context.Context, _, _, path string) error { return syscall.Mkfifo(path, 0o644) }
		},
		"too big": func(r *untrustedRun) CommitExporter {
			old := MaxBundleBytes
			MaxBundleBytes = 100
			r.t.Cleanup(func() { MaxBundleBytes = old })
			return r.cache.Git.ExportCommits
		},
		"not a bundle": func(r *untrustedRun) CommitExporter {
			return func(_ context.Context, _, _, path string) error {
				return os.WriteFile(path, []byte("# v2 git bundle\nnot a header\n\nPACK"), 0o644)
			}
		},
		"a malformed commit": func(r *untrustedRun) CommitExporter {
			made := bundle(r, func(scratch string) string {
				t := r.t
				tree := cleanGit(t, scratch, "rev-parse", "HEAD^{tree}")
				bad := cleanGitInput(t, scratch, fmt.Sprintf("tree %s\nparent %s\nauthor no email 1 +0000\ncommitter x <x@x> 1 +0000\n\nbad\n", tree, r.base),
					"hash-object", "-t", "commit", "-w", "--literally", "--stdin")
				cleanGit(t, scratch, "update-ref", "refs/heads/bad", bad)
				return r.base + "..bad"
			})
			return func(_ context.Context, _, _, path string) error { return os.Rename(made, path) }
		},
		"not on the base": func(r *untrustedRun) CommitExporter {
			made := bundle(r, func(scratch string) string {
				t := r.t
				cleanGit(t, scratch, "checkout", "--quiet", "--orphan", "elsewhere")
				cleanGit(t, scratch, "commit", "--quiet", "-m", "unrelated")
				return "elsewhere"
			})
			return func(_ context.Context, _, _, path string) error { return os.Rename(made, path) }
		},
		"two heads": func(r *untrustedRun) CommitExporter {
			made := bundle(r, func(scratch string) string {
				t := r.t
				cleanGit(t, scratch, "commit", "--quiet", "--allow-empty", "-m", "one")
				cleanGit(t, scratch, "branch", "other")
				return "--branches"
			})
			return func(_ context.Context, _, _, path string) error { return os.Rename(made, path) }
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := newUntrustedRun(t)
			files := r.agentCommits()
			r.export = export(r)
			head, patch := r.publish("acme/app")
			require.ErrorContains(t, r.keepErr, refusals[name])
			require.Zero(t, r.kept)
			r.requireRealPatch(head, patch, files)
			origin := strings.TrimPrefix(r.origin, "file://")
			require.Equal(t, "Worker: The worker's commit", cleanGit(t, origin, "log", "--format=%an: %s", r.base+"..task"), "one commit on the base")
		})
	}
}
