// Package gitrepo drives the git CLI for a run: clone, branch, commit, push and
// diff statistics, with the token passed to git only through its environment.
package gitrepo

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/taskworker/taskworker/internal/redact"
)

// Git runs git commands with the worker's credentials.
type Git struct {
	// Token authenticates HTTP(S) remotes; it reaches git as an
	// http.extraHeader in GIT_CONFIG_* environment variables only.
	Token    string
	Redactor *redact.Redactor
}

// Author is who commits the agent's changes.
type Author struct {
	Name  string
	Email string
}

// Error is a failed git command, with its redacted output.
type Error struct {
	Args     []string
	ExitCode int
	Stderr   string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("git %s exited with code %d", strings.Join(e.Args, " "), e.ExitCode)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unreachable reports whether git could not reach the remote at all (DNS,
// connection, TLS, HTTP 5xx): worth retrying, and no sign of a broken cache.
func (e *Error) Unreachable() bool {
	s := strings.ToLower(e.Stderr)
	for _, marker := range []string{"could not resolve", "unable to access", "connection refused", "connection reset",
		"timed out", "couldn't connect", "failed to connect", "the remote end hung up", "early eof", "http 5", "returned error: 5"} {
		if strings.Contains(s, marker) {
			return true
		}
	}
	return false
}

// NotFound reports whether git said the remote repository does not exist or
// can't be read with the credentials given, which no retry will change.
func (e *Error) NotFound() bool {
	if e.RemoteBranchMissing() {
		return false
	}
	s := strings.ToLower(e.Stderr)
	for _, marker := range []string{"not found", "does not exist", "does not appear to be a git repository",
		"authentication failed", "could not read username", "permission denied", "access denied",
		"returned error: 401", "returned error: 403", "returned error: 404"} {
		if strings.Contains(s, marker) {
			return true
		}
	}
	return false
}

// RemoteBranchMissing reports whether a clone asked for a branch the
// repository does not have.
func (e *Error) RemoteBranchMissing() bool {
	return strings.Contains(e.Stderr, "Remote branch") && strings.Contains(e.Stderr, "not found in upstream")
}

// RemoteMoved reports a push refused because the remote's branch is no
// longer where the push expected it (a lease gone stale).
func (e *Error) RemoteMoved() bool { return strings.Contains(e.Stderr, "stale info") }

var repositoryPart = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// ValidateRepository checks an "org/repo" name before it gets near a git command.
func ValidateRepository(name string) error {
	parts := strings.Split(name, "/")
	if len(parts) != 2 {
		return fmt.Errorf("repository %q is not of the form org/repo", name)
	}
	for _, p := range parts {
		if p == "" || !repositoryPart.MatchString(p) || strings.HasPrefix(p, "-") || strings.HasPrefix(p, ".") {
			return fmt.Errorf("repository %q is not of the form org/repo (each part letters, digits, '.', '_' or '-', not starting with '-' or '.')", name)
		}
	}
	return nil
}

// RemoteURL fills {repo} in a URL template.
func RemoteURL(template, repository string) string {
	return strings.ReplaceAll(template, "{repo}", repository)
}

// env is the environment of every git command: the worker's basics, no
// prompts, and — for commands that talk to the remote — the token as an
// extra header. Commands in an agent's clone never get the token: its config
// is the agent's to write, and could run a command (core.fsmonitor, say).
func (g *Git) env(credentials bool) []string {
	env := []string{"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "GCM_INTERACTIVE=never",
		// No configuration but the repository's and the command line's: the
		// worker's HOME is the agent's to write when the agent runs as the
		// worker's user.
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_ATTR_NOSYSTEM=1",
		// Nor any other file git or curl would look for in a HOME (.netrc,
		// ~/.config/git/attributes and ignore): there is none.
		"HOME=" + noHome}
	for _, name := range []string{"PATH", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
		"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	if credentials {
		env = append(env, g.CredentialEnv()...)
	}
	return env
}

// noHome is a HOME that does not exist and that only root could create.
const noHome = "/nonexistent"

// fixedConfig comes before every git command's own arguments, and wins over
// any repository's configuration.
var fixedConfig = []string{
	// Hooks and the fsmonitor are programs from the repository (or the agent).
	"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
	"-c", "core.attributesFile=/dev/null", "-c", "core.excludesFile=/dev/null",
	// An ext:: URL is a command line.
	"-c", "protocol.ext.allow=never",
}

// CredentialEnv is the environment that gives git the token, empty without one.
func (g *Git) CredentialEnv() []string {
	if g.Token == "" {
		return nil
	}
	basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + g.Token))
	return []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic " + basic}
}

func (g *Git) secretRedactor() *redact.Redactor {
	if g.Token == "" {
		return g.Redactor
	}
	basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + g.Token))
	return redact.New(g.Token, basic).Chain(g.Redactor)
}

// Run runs git in dir, without credentials, and returns its trimmed stdout.
func (g *Git) Run(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := g.exec(ctx, dir, execOptions{}, args...)
	return strings.TrimSpace(string(out)), err
}

// runRemote runs a git command that talks to the remote, with credentials.
// It must only ever run in a repository the agent can't touch (the mirror).
func (g *Git) runRemote(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := g.exec(ctx, dir, execOptions{credentials: true}, args...)
	return strings.TrimSpace(string(out)), err
}

type execOptions struct {
	stdin       io.Reader
	extraEnv    []string
	credentials bool
	// strict fails the command when git reported an error on stderr but
	// still exited 0, as it does reading around a damaged pack.
	strict bool
}

func (g *Git) exec(ctx context.Context, dir string, opts execOptions, args ...string) ([]byte, error) {
	full := append(append([]string(nil), fixedConfig...), args...)
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Dir = dir
	cmd.Env = append(g.env(opts.credentials), opts.extraEnv...)
	cmd.Stdin = opts.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("git %s: %w", args[0], ctx.Err())
		}
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return stdout.Bytes(), &Error{Args: args, ExitCode: exitErr.ExitCode(), Stderr: g.secretRedactor().String(lastLines(stderr.String(), 8))}
		}
		return nil, fmt.Errorf("git %s: %w", args[0], err)
	}
	if opts.strict && strings.Contains(stderr.String(), "error:") {
		return stdout.Bytes(), &Error{Args: args, Stderr: g.secretRedactor().String(lastLines(stderr.String(), 8))}
	}
	return stdout.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Repo is a run's repository: the agent's clone, and the worker's own git
// dir that reads the clone's files as its work tree.
type Repo struct {
	// Dir is the agent's clone. Its .git is the agent's to write, so once the
	// agent has run no git command of the worker's runs in it: the worker's
	// git reads the clone's files, and files are all it reads there.
	Dir string
	// GitDir is the worker's own repository of the run, somewhere the agent
	// can't write: its HEAD is where the run's commits go, its index stages
	// them, and its configuration defines no filter, driver or program.
	GitDir string
	git    *Git
}

// Open returns the run's repository: the agent's clone in dir and the
// worker's git dir made for it at the checkout.
func (g *Git) Open(dir, gitDir string) *Repo { return &Repo{Dir: dir, GitDir: gitDir, git: g} }

// Run runs git in the worker's git dir, without a work tree.
func (r *Repo) Run(ctx context.Context, args ...string) (string, error) {
	return r.git.Run(ctx, "", append([]string{"--git-dir", r.GitDir}, args...)...)
}

// inWorkTree runs git in the worker's git dir with the agent's clone as its
// work tree. A .gitattributes there can only name filters and diff drivers,
// which the worker's configuration never defines: nothing runs.
func (r *Repo) inWorkTree(ctx context.Context, opts execOptions, args ...string) ([]byte, error) {
	return r.git.exec(ctx, "", opts, append([]string{"--git-dir", r.GitDir, "--work-tree", r.Dir}, args...)...)
}

// Head is the commit the worker's git dir is at.
func (r *Repo) Head(ctx context.Context) (string, error) {
	sha, err := r.Run(ctx, "rev-parse", "--verify", "HEAD^{commit}")
	if err != nil {
		return "", fmt.Errorf("read HEAD (is the repository empty?): %w", err)
	}
	return sha, nil
}

// CurrentBranch is the branch the worker's git dir is on.
func (r *Repo) CurrentBranch(ctx context.Context) (string, error) {
	return r.Run(ctx, "symbolic-ref", "--short", "HEAD")
}

// CheckoutBranch creates (or resets) branch at sha and checks it out, in
// the clone and in the worker's git dir. It runs git in the clone, so only
// before the agent does.
func (r *Repo) CheckoutBranch(ctx context.Context, branch, sha string) error {
	if _, err := r.git.Run(ctx, r.Dir, "checkout", "--quiet", "-B", branch, sha); err != nil {
		return err
	}
	if _, err := r.Run(ctx, "update-ref", "refs/heads/"+branch, sha); err != nil {
		return err
	}
	if _, err := r.Run(ctx, "symbolic-ref", "HEAD", "refs/heads/"+branch); err != nil {
		return err
	}
	return r.adoptIndex()
}

// adoptIndex gives the worker's git dir the clone's index. The checkout just
// wrote it, before any agent ran: it describes the same commit and the same
// files, and its file stats spare the worker's git hashing every file anew.
func (r *Repo) adoptIndex() error {
	data, err := os.ReadFile(filepath.Join(r.Dir, ".git", "index"))
	if err != nil {
		return fmt.Errorf("read the clone's index: %w", err)
	}
	tmp := filepath.Join(r.GitDir, "index.new-"+randomSuffix())
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write the worker's index: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(r.GitDir, "index")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write the worker's index: %w", err)
	}
	return nil
}

// CommitAll stages every change in the clone's files and commits it in the
// worker's git dir; it returns false when there was nothing to commit.
func (r *Repo) CommitAll(ctx context.Context, message string, author Author) (bool, error) {
	if err := r.skipSubmodules(ctx); err != nil {
		return false, fmt.Errorf("stage changes: %w", err)
	}
	if _, err := r.inWorkTree(ctx, execOptions{}, "add", "--all"); err != nil {
		return false, fmt.Errorf("stage changes: %w", err)
	}
	if _, err := r.inWorkTree(ctx, execOptions{}, "diff", "--cached", "--quiet", "--no-ext-diff", "--no-textconv"); err == nil {
		return false, nil
	}
	identity := []string{
		"GIT_AUTHOR_NAME=" + author.Name, "GIT_AUTHOR_EMAIL=" + author.Email,
		"GIT_COMMITTER_NAME=" + author.Name, "GIT_COMMITTER_EMAIL=" + author.Email,
	}
	if _, err := r.inWorkTree(ctx, execOptions{stdin: strings.NewReader(message), extraEnv: identity},
		"commit", "--quiet", "--no-verify", "--no-gpg-sign", "--file", "-"); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return true, nil
}

// skipSubmodules keeps git from looking into the submodules' folders: for
// one that is a repository, staging runs git status in it, with the
// configuration the agent wrote there. A submodule moves only by the agent's
// own commits.
func (r *Repo) skipSubmodules(ctx context.Context) error {
	out, err := r.inWorkTree(ctx, execOptions{}, "ls-files", "--stage", "-z")
	if err != nil {
		return err
	}
	var paths strings.Builder
	for _, rec := range strings.Split(string(out), "\x00") {
		if meta, path, ok := strings.Cut(rec, "\t"); ok && strings.HasPrefix(meta, "160000 ") {
			paths.WriteString(path + "\x00")
		}
	}
	if paths.Len() == 0 {
		return nil
	}
	_, err = r.inWorkTree(ctx, execOptions{stdin: strings.NewReader(paths.String())}, "update-index", "--skip-worktree", "-z", "--stdin")
	return err
}

// SwitchBranch creates (or resets) branch at the current commit and puts
// the worker's git dir on it.
func (r *Repo) SwitchBranch(ctx context.Context, branch string) error {
	head, err := r.Head(ctx)
	if err != nil {
		return err
	}
	if _, err := r.Run(ctx, "update-ref", "refs/heads/"+branch, head); err != nil {
		return err
	}
	_, err = r.Run(ctx, "symbolic-ref", "HEAD", "refs/heads/"+branch)
	return err
}

// ValidBranchName reports whether git accepts name as a branch.
func (g *Git) ValidBranchName(ctx context.Context, name string) bool {
	_, err := g.Run(ctx, "", "check-ref-format", "refs/heads/"+name)
	return err == nil
}

// DiffStat counts what changed between two commits.
type DiffStat struct {
	Files      []string
	Insertions int
	Deletions  int
}

// DiffStat compares base and head.
func (r *Repo) DiffStat(ctx context.Context, base, head string) (DiffStat, error) {
	out, err := r.Run(ctx, "diff", "--numstat", "-z", "--no-renames", "--no-ext-diff", "--no-textconv", base, head)
	if err != nil {
		return DiffStat{}, fmt.Errorf("diff %s..%s: %w", base, head, err)
	}
	var st DiffStat
	for _, rec := range strings.Split(out, "\x00") {
		fields := strings.SplitN(rec, "\t", 3)
		if len(fields) != 3 {
			continue
		}
		ins, _ := strconv.Atoi(fields[0]) // "-" for binary files
		del, _ := strconv.Atoi(fields[1])
		st.Insertions += ins
		st.Deletions += del
		st.Files = append(st.Files, fields[2])
	}
	return st, nil
}

// Patch is the diff from base to head, binary changes included.
func (r *Repo) Patch(ctx context.Context, base, head string) ([]byte, error) {
	out, err := r.git.exec(ctx, "", execOptions{}, "--git-dir", r.GitDir, "diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", base, head)
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", base, head, err)
	}
	return out, nil
}
