package devstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// SeedRepository makes a bare repository at root/{repo}.git with one commit
// on main, to serve as a run's origin through the URL template
// file://{root}/{repo}.git. files maps paths to contents.
func SeedRepository(ctx context.Context, root, repo string, files map[string]string) (string, error) {
	bare := filepath.Join(root, repo+".git")
	if _, err := os.Stat(filepath.Join(bare, "HEAD")); err == nil {
		return bare, nil
	}
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		return "", err
	}
	if err := git(ctx, "", "init", "--quiet", "--bare", "--initial-branch=main", bare); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp("", "seed-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	if err := git(ctx, "", "init", "--quiet", "--initial-branch=main", work); err != nil {
		return "", err
	}
	for name, content := range files {
		path := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	for _, args := range [][]string{
		{"add", "--all"},
		{"commit", "--quiet", "-m", "Initial commit"},
		{"push", "--quiet", bare, "main"},
	} {
		if err := git(ctx, work, args...); err != nil {
			return "", err
		}
	}
	return bare, nil
}

// RepoURLTemplate is the URL template that makes {repo} resolve under root.
func RepoURLTemplate(root string) string {
	return "file://" + filepath.ToSlash(root) + "/{repo}.git"
}

func git(ctx context.Context, dir string, args ...string) error {
	full := append([]string{"-c", "user.name=Local Stack", "-c", "user.email=local@taskworker.invalid", "-c", "commit.gpgsign=false"}, args...)
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
