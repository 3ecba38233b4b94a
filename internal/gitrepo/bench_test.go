package gitrepo

import (
	"bufio"
	"context"
	"fmt"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkCheckoutColdVsWarm prepares a workspace of a generated repository
// (5,000 commits, 20,000 files) served by git's own smart-HTTP backend: once
// with an empty cache (a full clone), once with the cache present and one new
// commit upstream; the figures are the medians of five rounds. Run it with:
//
//	go test -run '^$' -bench CheckoutColdVsWarm -benchtime 1x ./internal/gitrepo/
func BenchmarkCheckoutColdVsWarm(b *testing.B) {
	dir := b.TempDir()
	origin := filepath.Join(dir, "srv", "acme", "big.git")
	start := time.Now()
	generateRepository(b, origin, 20_000, 5_000)
	b.Logf("generated %s in %s", origin, time.Since(start).Round(time.Millisecond))
	url := serveHTTP(b, filepath.Join(dir, "srv")) + "/acme/big.git"

	ctx := context.Background()
	var colds, warms []time.Duration
	for i := range b.N * 5 {
		cache := &Cache{Dir: filepath.Join(dir, fmt.Sprintf("cache-%d", i)), Git: &Git{}}
		coldDir, warmDir := filepath.Join(dir, "cold"), filepath.Join(dir, "warm")
		t0 := time.Now()
		if _, err := cache.Checkout(ctx, "acme/big", url, coldDir, coldDir+".git", ""); err != nil {
			b.Fatal(err)
		}
		colds = append(colds, time.Since(t0))

		addUpstreamCommit(b, origin, i)
		t1 := time.Now()
		co, err := cache.Checkout(ctx, "acme/big", url, warmDir, warmDir+".git", "")
		if err != nil || !co.Hit {
			b.Fatalf("warm checkout: hit=%v err=%v", co.Hit, err)
		}
		warms = append(warms, time.Since(t1))
		for _, d := range []string{coldDir, coldDir + ".git", warmDir, warmDir + ".git", cache.Dir} {
			os.RemoveAll(d)
		}
	}
	cold, warm := median(colds), median(warms)
	b.Logf("cold %v, warm %v", colds, warms)
	b.ReportMetric(float64(cold.Milliseconds()), "cold-ms")
	b.ReportMetric(float64(warm.Milliseconds()), "warm-ms")
	b.ReportMetric(cold.Seconds()/warm.Seconds(), "speedup-x")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// generateRepository writes a repository with files files and commits
// commits through git fast-import: the first commit adds every file, each
// later one changes three of them.
func generateRepository(b *testing.B, path string, files, commits int) {
	if out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch=main", path).CombinedOutput(); err != nil {
		b.Fatal(err, string(out))
	}
	cmd := exec.Command("git", "--git-dir", path, "fast-import", "--quiet")
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(stdin, 1<<20)
	blob := func(content string) {
		fmt.Fprintf(w, "data %d\n%s\n", len(content), content)
	}
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for c := range commits {
		msg := fmt.Sprintf("commit %d", c)
		fmt.Fprintf(w, "commit refs/heads/main\ncommitter Gen <gen@example.com> %d +0000\ndata %d\n%s\n", when+int64(c), len(msg), msg)
		if c == 0 {
			for f := range files {
				fmt.Fprintf(w, "M 100644 inline src/pkg%03d/file%05d.go\n", f/100, f)
				blob(fmt.Sprintf("package pkg%03d\n\n// File %d.\nfunc F%d() int { return %d }\n", f/100, f, f, f))
			}
			continue
		}
		for k := range 3 {
			f := (c*7 + k*1013) % files
			fmt.Fprintf(w, "M 100644 inline src/pkg%03d/file%05d.go\n", f/100, f)
			blob(fmt.Sprintf("package pkg%03d\n\n// File %d, changed by commit %d.\nfunc F%d() int { return %d }\n", f/100, f, c, f, c))
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	// As a hosting service would have it: packed, with bitmaps.
	if out, err := exec.Command("git", "--git-dir", path, "repack", "-a", "-d", "-b", "--quiet").CombinedOutput(); err != nil {
		b.Fatal(err, string(out))
	}
}

func addUpstreamCommit(b *testing.B, origin string, n int) {
	run := func(stdin string, args ...string) string {
		cmd := exec.Command("git", append([]string{"--git-dir", origin}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=u", "GIT_AUTHOR_EMAIL=u@x", "GIT_COMMITTER_NAME=u", "GIT_COMMITTER_EMAIL=u@x")
		out, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	blobSHA := run(fmt.Sprintf("upstream change %d\n", n), "hash-object", "-w", "--stdin")
	tree := run("", "rev-parse", "main^{tree}")
	// A new top-level file in the existing tree.
	entries := run("", "ls-tree", tree)
	newTree := run(entries+"\n100644 blob "+blobSHA+"\tUPSTREAM-"+fmt.Sprint(n)+".md\n", "mktree")
	commit := run("upstream change", "commit-tree", newTree, "-p", "main")
	run("", "update-ref", "refs/heads/main", commit)
}

// serveHTTP serves the repositories under root over git's smart-HTTP
// protocol, through git http-backend as a CGI program.
func serveHTTP(b *testing.B, root string) string {
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		b.Fatal(err)
	}
	h := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv.URL
}
