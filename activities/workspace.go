package activities

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
)

func (a *Activities) prepareWorkspace(ctx context.Context, run RunContext, log *logstream.Stream) (Workspace, error) {
	ws := a.workspaceFor(run.RunRef)
	// A retried attempt starts from scratch.
	if err := os.RemoveAll(ws.Root); err != nil {
		return ws, fmt.Errorf("clear workspace %s: %w", ws.Root, err)
	}
	// The root lets the run's uid pass to its own folders, and no further.
	if err := os.MkdirAll(ws.Root, 0o711); err != nil {
		return ws, fmt.Errorf("create workspace %s: %w", ws.Root, err)
	}
	for _, dir := range []string{ws.ArtifactsDir, ws.HomeDir, ws.OutDir} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return ws, fmt.Errorf("create workspace %s: %w", ws.Root, err)
		}
	}
	if err := os.Mkdir(ws.WorkerDir, 0o700); err != nil {
		return ws, fmt.Errorf("create workspace %s: %w", ws.Root, err)
	}
	base := run.BaseBranch
	if base == "" {
		base = a.Config.BaseBranch
	}
	url := gitrepo.RemoteURL(a.Config.RepoURLTemplate, run.Repository)
	co, err := a.Cache.Checkout(ctx, run.Repository, url, ws.RepoDir, ws.GitDir, base)
	if err != nil {
		var gitErr *gitrepo.Error
		var unborn *gitrepo.UnbornHeadError
		switch {
		case errors.As(err, &unborn) && unborn.NoBranches:
			return ws, permanent("clone %s: %v: push a commit to it and run the task again", run.Repository, err)
		case errors.As(err, &unborn):
			return ws, permanent("clone %s: %v: push a commit to it, make a branch that has commits the default, or name the base branch (the run's state.pr_base_branch or TASKWORKER_BASE_BRANCH), and run the task again", run.Repository, err)
		case errors.As(err, &gitErr) && gitErr.NotFound():
			return ws, fmt.Errorf("clone %s: the repository does not exist or this worker can't read it (check the task's repository and TASKWORKER_GITHUB_TOKEN): %w", run.Repository, err)
		case errors.As(err, &gitErr) && gitErr.RemoteBranchMissing():
			return ws, permanent("clone %s: base branch %q does not exist (it comes from the run's state.pr_base_branch or TASKWORKER_BASE_BRANCH)", run.Repository, base)
		}
		return ws, fmt.Errorf("clone %s: %w", run.Repository, err)
	}
	ws.CacheHit = co.Hit
	switch {
	case co.Rebuilt:
		a.Metrics.CloneCache("rebuilt")
	case co.Hit:
		a.Metrics.CloneCache("hit")
	default:
		a.Metrics.CloneCache("miss")
	}
	if co.Rebuilt {
		log.Console(acp.LevelWarn, "the repository cache was damaged; it was rebuilt from the remote")
	}
	if base == "" {
		log.Console(acp.LevelInfo, fmt.Sprintf("starting from %s, the repository's default branch", co.Branch))
	}
	repo := co.Repo
	if ws.BaseBranch, err = repo.CurrentBranch(ctx); err != nil {
		return ws, fmt.Errorf("clone %s: %w", run.Repository, err)
	}
	// A branch an earlier run of this task pushed is where this run goes on,
	// so its pull request keeps its history and nothing needs a force push.
	// One pushed under the old lower-case name counts when it is the only one.
	ws.Branch = run.Branch
	for _, branch := range []string{run.Branch, run.LegacyBranch} {
		if branch == "" {
			continue
		}
		if ws.BranchSHA, err = a.Cache.RemoteBranch(ctx, run.Repository, branch); err != nil {
			return ws, err
		}
		if ws.BranchSHA != "" {
			ws.Branch = branch
			break
		}
	}
	if ws.BranchSHA != "" {
		if err := repo.CheckoutBranch(ctx, ws.Branch, ws.BranchSHA); err != nil {
			return ws, fmt.Errorf("check out %s: %w", ws.Branch, err)
		}
		log.Console(acp.LevelInfo, fmt.Sprintf("branch %s exists from an earlier run (at %s); this run continues on it", ws.Branch, short(ws.BranchSHA)))
	}
	if ws.BaseSHA, err = repo.Head(ctx); err != nil {
		return ws, permanent("clone %s: %v", run.Repository, err)
	}
	return ws, nil
}

// retryableClone reports a clone that failed for a reason a retry may fix.
func retryableClone(err error) bool {
	var gitErr *gitrepo.Error
	return errors.As(err, &gitErr) && gitErr.Unreachable()
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// Workspace is a run's folder on the host that claimed it.
type Workspace struct {
	Root         string `json:"root"`
	RepoDir      string `json:"repo_dir"`
	ArtifactsDir string `json:"artifacts_dir"`
	// HomeDir is the agent's HOME: with the clone, the artifacts and OutDir,
	// the only folders the agent can write.
	HomeDir string `json:"home_dir,omitempty"`
	// WorkerDir is the worker's own part of the workspace (output buffers),
	// out of the agent's reach.
	WorkerDir  string `json:"worker_dir,omitempty"`
	BaseBranch string `json:"base_branch"`
	BaseSHA    string `json:"base_sha"`
	// BranchSHA is where the run's branch was on the remote when the run
	// started ("" when new): the push may only move it from there.
	BranchSHA string `json:"branch_sha,omitempty"`
	CacheHit  bool   `json:"cache_hit"`
	// Branch is the branch the run pushes: the run's, or the legacy name of
	// it that an earlier run pushed.
	Branch string `json:"branch,omitempty"`
	// OutDir is where the agent's side of the run leaves files for the
	// worker to read as untrusted data (TASK_OUTPUT_FILE, commits.bundle).
	OutDir string `json:"out_dir,omitempty"`
	// GitDir is the worker's own git dir of the run, in a folder only the
	// worker may read or write: the agent never sees it.
	GitDir string `json:"git_dir,omitempty"`
	// PublishedSHA is the commit an earlier turn of the run published ("" when
	// none did): the next turn's changes are those after it, and its push
	// may only move the branch from there.
	PublishedSHA string `json:"published_sha,omitempty"`
}

// turnBase is the commit this turn's changes are counted from.
func (ws Workspace) turnBase() string { return cmp.Or(ws.PublishedSHA, ws.BaseSHA) }

// remoteBranchSHA is where the run's branch is on the remote before this turn's push.
func (ws Workspace) remoteBranchSHA() string { return cmp.Or(ws.PublishedSHA, ws.BranchSHA) }

func (a *Activities) workspaceFor(ref RunRef) Workspace {
	root := filepath.Join(a.Config.WorkspaceDir, ref.RunID)
	return Workspace{Root: root, RepoDir: filepath.Join(root, "repo"), ArtifactsDir: filepath.Join(root, "artifacts"),
		HomeDir: filepath.Join(root, "home"), OutDir: filepath.Join(root, "out"), WorkerDir: filepath.Join(root, "worker"),
		GitDir: filepath.Join(root, "worker", "git")}
}

// agentDirs are the folders of a workspace the agent may write.
func (ws Workspace) agentDirs() []string {
	return []string{ws.RepoDir, ws.ArtifactsDir, ws.HomeDir, ws.OutDir}
}
