package gitrepo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Cache keeps a bare mirror of each repository a worker has cloned, so a run
// fetches what changed instead of cloning everything. The mirrors are the
// only repositories git ever talks to the remote from: the agent's clone is
// made from its mirror, and its commits are pushed through it.
type Cache struct {
	Dir string
	// MaxBytes bounds the mirrors' total size; the least recently used go first.
	MaxBytes int64
	Git      *Git
}

// Checkout reports how a workspace was made.
type Checkout struct {
	Repo *Repo
	// Hit is true when the mirror was there already (it was fetched, not cloned).
	Hit bool
	// Rebuilt is true when the mirror was found broken and made anew.
	Rebuilt bool
	// Branch is the branch checked out: the one asked for, or the remote's
	// default as it was at this fetch.
	Branch string
}

// Checkout refreshes the mirror of repository from url (creating it on first
// use) and makes from it, at branch (the remote's default when empty), the
// worker's git dir gitDir and the agent's clone dest. The clone shares no
// file with the mirror or gitDir.
func (c *Cache) Checkout(ctx context.Context, repository, url, dest, gitDir, branch string) (Checkout, error) {
	if err := ValidateRepository(repository); err != nil {
		return Checkout{}, err
	}
	unlock, err := c.lock(ctx, repository)
	if err != nil {
		return Checkout{}, err
	}
	defer unlock()

	mirror := c.mirrorPath(repository)
	out := Checkout{Hit: exists(filepath.Join(mirror, "HEAD"))}
	if out.Hit {
		if err := c.fetch(ctx, mirror, url); err != nil {
			if !brokenCache(err) {
				return out, err
			}
			out.Hit, out.Rebuilt = false, true
		}
	}
	if !out.Hit {
		if err := c.create(ctx, mirror, url); err != nil {
			return out, err
		}
	}
	repo, err := c.cloneBranch(ctx, mirror, url, dest, gitDir, branch, &out)
	var unborn *UnbornHeadError
	if err != nil && out.Hit && !isRemoteBranchMissing(err) && !errors.As(err, &unborn) {
		// The mirror fetched but can't be cloned from: it is broken.
		out.Hit, out.Rebuilt = false, true
		if err = c.create(ctx, mirror, url); err == nil {
			repo, err = c.cloneBranch(ctx, mirror, url, dest, gitDir, branch, &out)
		}
	}
	if err != nil {
		return out, err
	}
	out.Repo = repo
	now := time.Now()
	_ = os.Chtimes(mirror, now, now)
	c.evict(repository)
	return out, nil
}

// brokenCache tells a mirror that is damaged from a remote that refused or
// could not be reached: only the first is fixed by building the mirror anew.
func brokenCache(err error) bool {
	var gitErr *Error
	if !errors.As(err, &gitErr) {
		return false
	}
	return !gitErr.NotFound() && !gitErr.Unreachable()
}

func isRemoteBranchMissing(err error) bool {
	var gitErr *Error
	return errors.As(err, &gitErr) && gitErr.RemoteBranchMissing()
}

// UnbornHeadError is a checkout of the remote's default branch when that
// branch has no commits: the repository is empty, or its HEAD names a branch
// nobody pushed.
type UnbornHeadError struct {
	// Branch is the branch HEAD names.
	Branch string
	// NoBranches is true when the repository has no branch at all.
	NoBranches bool
}

func (e *UnbornHeadError) Error() string {
	if e.NoBranches {
		return "the repository has no branches (it is empty)"
	}
	return fmt.Sprintf("the repository's default branch %q has no commits", e.Branch)
}

// cloneBranch clones the mirror at branch, or at the default branch the
// mirror's HEAD names, and records in out which it was.
func (c *Cache) cloneBranch(ctx context.Context, mirror, url, dest, gitDir, branch string, out *Checkout) (*Repo, error) {
	if branch == "" {
		var err error
		if branch, err = c.defaultBranch(ctx, mirror); err != nil {
			return nil, err
		}
	}
	out.Branch = branch
	return c.cloneFromMirror(ctx, mirror, url, dest, gitDir, branch)
}

// defaultBranch is the branch the mirror's HEAD names, which fetch keeps the
// one the remote calls default.
func (c *Cache) defaultBranch(ctx context.Context, mirror string) (string, error) {
	ref, err := c.Git.Run(ctx, "", "--git-dir", mirror, "symbolic-ref", "HEAD")
	if err != nil {
		return "", err
	}
	branch := strings.TrimPrefix(ref, "refs/heads/")
	heads, err := c.heads(ctx, mirror)
	if err != nil {
		return "", err
	}
	if _, ok := heads[branch]; !ok {
		return "", &UnbornHeadError{Branch: branch, NoBranches: len(heads) == 0}
	}
	return branch, nil
}

// heads maps the mirror's branches to their commits.
func (c *Cache) heads(ctx context.Context, mirror string) (map[string]string, error) {
	out, err := c.Git.Run(ctx, "", "--git-dir", mirror, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
	if err != nil {
		return nil, err
	}
	heads := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if sha, ref, ok := strings.Cut(line, " "); ok {
			heads[strings.TrimPrefix(ref, "refs/heads/")] = sha
		}
	}
	return heads, nil
}

func (c *Cache) mirrorPath(repository string) string {
	return filepath.Join(c.Dir, repository+".git")
}

// create makes the mirror anew: heads only (no pull-request refs, no tags),
// never garbage-collected behind a run's back.
func (c *Cache) create(ctx context.Context, mirror, url string) error {
	if err := os.RemoveAll(mirror); err != nil {
		return fmt.Errorf("remove the old mirror %s: %w", mirror, err)
	}
	tmp := mirror + ".new-" + randomSuffix()
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(mirror), 0o755); err != nil {
		return fmt.Errorf("create the cache dir: %w", err)
	}
	if _, err := c.Git.runRemote(ctx, "", "clone", "--bare", "--quiet", "--no-tags", "--", url, tmp); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"remote.origin.fetch", "+refs/heads/*:refs/heads/*"}, {"gc.auto", "0"}, {"remote.origin.tagOpt", "--no-tags"}} {
		if _, err := c.Git.Run(ctx, "", "--git-dir", tmp, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, mirror); err != nil {
		return fmt.Errorf("move the new mirror into place: %w", err)
	}
	return nil
}

// fetch brings the mirror's branches and HEAD to where the remote has them.
// HEAD matters as much as the branches (a default branch gets renamed, or is
// first pushed after the mirror was made), and fetch leaves a bare
// repository's HEAD alone. Listing the remote's refs is how git tells what
// its HEAD names; the listing also shows whether anything changed, so an
// unchanged remote costs one round trip.
func (c *Cache) fetch(ctx context.Context, mirror, url string) error {
	// The URL is given again: the configured one may be from another template.
	if _, err := c.Git.Run(ctx, "", "--git-dir", mirror, "config", "remote.origin.url", url); err != nil {
		return err
	}
	listing, err := c.Git.runRemote(ctx, "", "--git-dir", mirror, "ls-remote", "--symref", "origin")
	if err != nil {
		return err
	}
	head, remote := parseListing(listing)
	local, err := c.heads(ctx, mirror)
	if err != nil {
		return err
	}
	if !maps.Equal(local, remote) {
		if _, err := c.Git.runRemote(ctx, "", "--git-dir", mirror, "fetch", "--quiet", "--prune", "origin"); err != nil {
			return err
		}
	}
	// A remote whose HEAD is unborn names no branch: HEAD stays, and the
	// checkout says the default branch has no commits.
	if head == "" {
		return nil
	}
	_, err = c.Git.Run(ctx, "", "--git-dir", mirror, "symbolic-ref", "HEAD", "refs/heads/"+head)
	return err
}

// parseListing reads `git ls-remote --symref`: the branch HEAD names ("" for
// none), and each branch's commit.
func parseListing(listing string) (head string, heads map[string]string) {
	heads = map[string]string{}
	for _, line := range strings.Split(listing, "\n") {
		left, name, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		switch {
		case name == "HEAD" && strings.HasPrefix(left, "ref: refs/heads/"):
			head = strings.TrimPrefix(left, "ref: refs/heads/")
		case strings.HasPrefix(name, "refs/heads/"):
			heads[strings.TrimPrefix(name, "refs/heads/")] = left
		}
	}
	return head, heads
}

// cloneFromMirror makes gitDir and dest from the mirror. gitDir, a bare
// clone, hard-links the mirror's pack files, which git never changes once
// written: it is as independent of later fetches, repacks and eviction as
// --dissociate makes it, without copying the objects, and only the worker
// can write where it is. dest, the agent's clone, is cloned from gitDir
// with copies of the objects: an object file it shared with the mirror
// would be the agent's to rewrite for every later run.
func (c *Cache) cloneFromMirror(ctx context.Context, mirror, url, dest, gitDir, branch string) (*Repo, error) {
	for _, d := range []string{dest, gitDir} {
		if err := os.RemoveAll(d); err != nil {
			return nil, fmt.Errorf("clear %s: %w", d, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(gitDir), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(gitDir), err)
	}
	// A run's git dir lives for minutes: housekeeping would only cost time.
	args := []string{"clone", "--quiet", "--bare", "--no-tags", "-c", "gc.auto=0", "-c", "maintenance.auto=false"}
	if branch != "" {
		args = append(args, "--branch", branch)
	}
	if _, err := c.Git.exec(ctx, "", execOptions{strict: true}, append(args, "--", mirror, gitDir)...); err != nil {
		return nil, err
	}
	if _, err := c.Git.exec(ctx, "", execOptions{strict: true}, "clone", "--quiet", "--no-hardlinks", "--no-tags", "--", gitDir, dest); err != nil {
		return nil, err
	}
	repo := c.Git.Open(dest, gitDir)
	if _, err := c.Git.Run(ctx, dest, "remote", "set-url", "origin", url); err != nil {
		return nil, err
	}
	if err := repo.adoptIndex(); err != nil {
		return nil, err
	}
	return repo, nil
}

// RemoteBranch is the commit branch had on the remote when the mirror was
// last fetched, "" when it had none.
func (c *Cache) RemoteBranch(ctx context.Context, repository, branch string) (string, error) {
	sha, err := c.Git.Run(ctx, "", "--git-dir", c.mirrorPath(repository), "rev-parse", "--verify", "--quiet", "refs/heads/"+branch)
	var gitErr *Error
	if errors.As(err, &gitErr) && gitErr.ExitCode == 1 {
		return "", nil
	}
	return sha, err
}

// Push publishes the HEAD of the run's git dir as branch on url. The commits
// are first brought into the mirror (from the worker's git dir, never from
// the agent's clone), and pushed from there: the push never runs with
// configuration the agent could have written. expected is the commit the
// remote branch must be at now ("" for none), so nothing is overwritten.
func (c *Cache) Push(ctx context.Context, repository, url string, ws *Repo, branch, expected string) error {
	unlock, err := c.lock(ctx, repository)
	if err != nil {
		return err
	}
	defer unlock()
	mirror := c.mirrorPath(repository)
	staging := "refs/taskworker/push-" + randomSuffix()
	// The agent's objects are checked on their way into the mirror, where
	// every later run of the repository reads.
	if _, err := c.Git.Run(ctx, "", "--git-dir", mirror, "-c", "transfer.fsckObjects=true",
		"fetch", "--quiet", "--no-tags", "--", ws.GitDir, "+HEAD:"+staging); err != nil {
		return fmt.Errorf("bring the commits into the mirror: %w", err)
	}
	defer c.Git.Run(context.WithoutCancel(ctx), "", "--git-dir", mirror, "update-ref", "-d", staging)
	ref := "refs/heads/" + branch
	if _, err := c.Git.runRemote(ctx, "", "--git-dir", mirror, "push", "--quiet", "--no-verify",
		"--force-with-lease="+ref+":"+expected, "--", url, staging+":"+ref); err != nil {
		// A retried push whose commit already got there has nothing to do.
		if c.remoteHas(ctx, mirror, url, ref, staging) {
			return nil
		}
		return err
	}
	// The mirror learns the new tip now rather than at its next fetch.
	_, err = c.Git.Run(ctx, "", "--git-dir", mirror, "update-ref", ref, staging)
	return err
}

// remoteHas reports whether ref on url is at the commit local names.
func (c *Cache) remoteHas(ctx context.Context, mirror, url, ref, local string) bool {
	want, err := c.Git.Run(ctx, "", "--git-dir", mirror, "rev-parse", local)
	if err != nil {
		return false
	}
	out, err := c.Git.runRemote(ctx, "", "--git-dir", mirror, "ls-remote", "--", url, ref)
	got, _, _ := strings.Cut(out, "\t")
	return err == nil && got == want
}

// lock takes the repository's lock; runs of one repository on one worker
// take turns at its mirror.
func (c *Cache) lock(ctx context.Context, repository string) (func(), error) {
	path := c.mirrorPath(repository) + ".lock"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create the cache dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the cache lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for the cache lock of %s: %w", repository, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// evict removes the least recently used mirrors until the cache fits in
// MaxBytes. The mirror just used, and any a run holds, stay.
func (c *Cache) evict(keep string) {
	if c.MaxBytes <= 0 {
		return
	}
	type mirror struct {
		repository string
		size       int64
		used       time.Time
	}
	var mirrors []mirror
	var total int64
	orgs, _ := os.ReadDir(c.Dir)
	for _, org := range orgs {
		repos, _ := os.ReadDir(filepath.Join(c.Dir, org.Name()))
		for _, r := range repos {
			if !r.IsDir() || !strings.HasSuffix(r.Name(), ".git") || strings.Contains(r.Name(), ".new-") {
				continue
			}
			path := filepath.Join(c.Dir, org.Name(), r.Name())
			info, err := os.Stat(path)
			if err != nil {
				continue
			}
			m := mirror{repository: org.Name() + "/" + strings.TrimSuffix(r.Name(), ".git"), size: dirSize(path), used: info.ModTime()}
			mirrors = append(mirrors, m)
			total += m.size
		}
	}
	sort.Slice(mirrors, func(i, j int) bool { return mirrors[i].used.Before(mirrors[j].used) })
	for _, m := range mirrors {
		if total <= c.MaxBytes {
			return
		}
		if m.repository == keep {
			continue
		}
		if c.tryRemove(m.repository) {
			total -= m.size
		}
	}
}

// tryRemove deletes a mirror unless a run holds its lock.
func (c *Cache) tryRemove(repository string) bool {
	path := c.mirrorPath(repository) + ".lock"
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return false
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return os.RemoveAll(c.mirrorPath(repository)) == nil
}

func dirSize(path string) int64 {
	var size int64
	_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				size += info.Size()
			}
		}
		return nil
	})
	return size
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
