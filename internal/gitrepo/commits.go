package gitrepo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// CommitExporter writes the commits of the clone in repoDir that base lacks
// to a git bundle at bundlePath, and writes nothing when there are none. It
// runs git in the agent's clone, reading what the agent wrote there, so it
// should run with no more rights than the agent has: all it needs is the
// clone, the bundle's folder and git on PATH.
type CommitExporter func(ctx context.Context, repoDir, base, bundlePath string) error

// ExportCommits is the CommitExporter of a worker that runs it itself: git
// in the clone, as a child of the worker, with the environment and fixed
// configuration of the worker's own commands and no transport at all.
func (g *Git) ExportCommits(ctx context.Context, repoDir, base, bundlePath string) error {
	gitDir := filepath.Join(repoDir, ".git")
	if err := ownObjects(gitDir); err != nil {
		return err
	}
	// No transport: a partial clone would fetch missing objects from a
	// remote the agent names, with a program the agent names.
	run := func(args ...string) (string, error) {
		return g.Run(ctx, "", append([]string{"--git-dir", gitDir, "-c", "protocol.allow=never"}, args...)...)
	}
	head, err := run("rev-parse", "--verify", "HEAD^{commit}")
	if err != nil {
		return fmt.Errorf("read the clone's HEAD: %w", err)
	}
	if head == base {
		return nil
	}
	commits := "HEAD"
	if _, err := run("rev-parse", "--verify", "--quiet", base+"^{commit}"); err == nil {
		commits = base + "..HEAD"
	}
	if _, err := run("bundle", "create", bundlePath, commits); err != nil {
		return fmt.Errorf("bundle the clone's commits: %w", err)
	}
	return nil
}

// ownObjects refuses a clone whose objects are not its own: the export reads
// them with the worker's rights, which may reach other repositories.
func ownObjects(gitDir string) error {
	for _, dir := range []string{gitDir, filepath.Join(gitDir, "objects")} {
		info, err := os.Lstat(dir)
		if err != nil {
			return fmt.Errorf("the clone's git dir: %w", err)
		}
		if !info.IsDir() {
			return fmt.Errorf("the clone's %s is not a directory", filepath.Base(dir))
		}
	}
	for _, redirect := range []string{"commondir", filepath.Join("objects", "info", "alternates")} {
		if _, err := os.Lstat(filepath.Join(gitDir, redirect)); err == nil {
			return fmt.Errorf("the clone borrows objects from elsewhere (.git/%s)", redirect)
		}
	}
	return nil
}

// MaxBundleBytes bounds the bundle of the agent's commits the worker reads.
var MaxBundleBytes int64 = 1 << 30

// KeepCommits brings the commits the agent made in its clone into the
// worker's git dir, on top of base, and returns how many there were. export
// writes them to bundlePath (it is the only code that runs git in the
// clone); the worker reads the bundle as untrusted data, checks every object
// in it, and keeps its head only if it descends from base. An error says why
// nothing was kept: HEAD then stays at base, where the agent's files are
// committed as they are. A HEAD already past base (a retried publish) is
// left as it is.
func (r *Repo) KeepCommits(ctx context.Context, export CommitExporter, base, bundlePath string) (int, error) {
	head, err := r.Head(ctx)
	if err != nil || head != base {
		return 0, err
	}
	// Whatever is there now is not the export.
	for _, p := range []string{bundlePath, bundlePath + ".lock"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("clear %s: %w", p, err)
		}
	}
	if err := export(ctx, r.Dir, base, bundlePath); err != nil {
		return 0, err
	}
	return r.importBundle(ctx, bundlePath, base)
}

func (r *Repo) importBundle(ctx context.Context, path, base string) (int, error) {
	// Not a symlink (O_NOFOLLOW), and never a FIFO's endless wait (O_NONBLOCK).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil
	case errors.Is(err, syscall.ELOOP):
		return 0, errors.New("the bundle is a symlink")
	case err != nil:
		return 0, fmt.Errorf("open the bundle: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	switch {
	case err != nil:
		return 0, fmt.Errorf("open the bundle: %w", err)
	case !info.Mode().IsRegular():
		return 0, errors.New("the bundle is not a regular file")
	case info.Size() > MaxBundleBytes:
		return 0, fmt.Errorf("the bundle is %d bytes, over the %d byte limit", info.Size(), MaxBundleBytes)
	}
	in := bufio.NewReader(io.LimitReader(f, MaxBundleBytes))
	head, err := readBundleHeader(in)
	if err != nil {
		return 0, fmt.Errorf("the bundle: %w", err)
	}
	// The pack goes through index-pack --strict: every object is checked as
	// transfer.fsckObjects checks a fetch (which git does not do for a
	// bundle), and so is every object they name, in the pack or already here.
	if _, err := r.git.exec(ctx, "", execOptions{stdin: in}, "--git-dir", r.GitDir, "index-pack", "--stdin", "--fix-thin", "--strict"); err != nil {
		return 0, fmt.Errorf("the bundle's objects: %w", err)
	}
	if head == base {
		return 0, nil
	}
	if _, err := r.Run(ctx, "rev-parse", "--verify", "--quiet", head+"^{commit}"); err != nil {
		return 0, fmt.Errorf("the bundle's head %s is not a commit", head)
	}
	if _, err := r.Run(ctx, "merge-base", "--is-ancestor", base, head); err != nil {
		return 0, fmt.Errorf("the bundle's head %s does not descend from the base %s", short(head), short(base))
	}
	count, err := r.Run(ctx, "rev-list", "--count", base+".."+head)
	if err != nil {
		return 0, err
	}
	n, _ := strconv.Atoi(count)
	if _, err := r.Run(ctx, "update-ref", "HEAD", head, base); err != nil {
		return 0, err
	}
	// The index follows HEAD, keeping the file stats of what didn't change.
	if _, err := r.inWorkTree(ctx, execOptions{}, "read-tree", "-m", "HEAD"); err != nil {
		return 0, err
	}
	return n, nil
}

var (
	objectID     = `(?:[0-9a-f]{40}|[0-9a-f]{64})`
	prerequisite = regexp.MustCompile(`^-` + objectID + `(?: .*)?$`)
	bundleRef    = regexp.MustCompile(`^(` + objectID + `) (\S+)$`)
)

// readBundleHeader reads a bundle's header (v2, or v3 naming only its object
// format) up to the pack, and returns the commit of its one reference.
func readBundleHeader(in *bufio.Reader) (string, error) {
	const maxLines = 10_000
	var head string
	for n := 0; ; n++ {
		line, err := in.ReadString('\n')
		if err != nil {
			return "", errors.New("the header is cut short")
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case n == 0:
			if line != "# v2 git bundle" && line != "# v3 git bundle" {
				return "", errors.New("not a git bundle (v2 or v3)")
			}
		case n >= maxLines || len(line) > 1024:
			return "", errors.New("the header is too long")
		case line == "":
			if head == "" {
				return "", errors.New("it names no commit")
			}
			return head, nil
		case strings.HasPrefix(line, "@"):
			if !strings.HasPrefix(line, "@object-format=") {
				return "", fmt.Errorf("unsupported capability %q", line)
			}
		case prerequisite.MatchString(line):
		case bundleRef.MatchString(line):
			if head != "" {
				return "", errors.New("it names more than one reference")
			}
			head = bundleRef.FindStringSubmatch(line)[1]
		default:
			return "", fmt.Errorf("unexpected header line %q", line)
		}
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
