package activities

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/structured"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// recordLog keeps the entries a step's log sends.
type recordLog struct {
	mu      sync.Mutex
	entries []string
}

func (r *recordLog) AppendLog(_ context.Context, _, _ string, entries []json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range entries {
		r.entries = append(r.entries, string(e))
	}
	return nil
}

func (r *recordLog) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.entries, "\n")
}

// artifactsAPI is a Tasks API that records the names of the artifacts uploaded to it.
func artifactsAPI(t *testing.T) (*tasksapi.Client, func() []string) {
	var mu sync.Mutex
	var names []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Artifacts []tasksapi.Artifact `json:"artifacts"`
		}
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/artifacts/") {
			_ = json.NewDecoder(r.Body).Decode(&body)
			mu.Lock()
			for _, a := range body.Artifacts {
				names = append(names, a.Name)
			}
			mu.Unlock()
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	api := tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: 1, RetryWait: time.Millisecond, RetryMaxWait: time.Millisecond})
	return api, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(names)
	}
}

func uploadWithin(t *testing.T, a *Activities, ws Workspace) ([]string, string) {
	t.Helper()
	rec := &recordLog{}
	log := logstream.New(rec, "t", "r", a.Redactor, logstream.Config{})
	done := make(chan struct{})
	var names []string
	go func() {
		defer close(done)
		var err error
		names, err = a.uploadArtifacts(context.Background(), PublishInput{Run: RunContext{RunRef: RunRef{TaskID: "t", RunID: "r"}}, Workspace: ws}, PublishOutput{}, log)
		require.NoError(t, err)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("uploadArtifacts did not return within 10s: it is blocked on what the agent left")
	}
	_, _ = log.Close(context.Background())
	return names, rec.text()
}

func TestArtifactsAreReadBackSafely(t *testing.T) {
	api, uploaded := artifactsAPI(t)
	a := &Activities{API: api, Redactor: redact.New(), Logger: zap.NewNop(), Config: Config{WorkspaceDir: t.TempDir()}}
	ws := a.workspaceFor(RunRef{TaskID: "t", RunID: "r"})
	require.NoError(t, os.MkdirAll(ws.ArtifactsDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ws.ArtifactsDir, "plan.md"), []byte("# Plan\n"), 0o644))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(ws.ArtifactsDir, "passwd")))
	require.NoError(t, unix.Mkfifo(filepath.Join(ws.ArtifactsDir, "pipe"), 0o644))

	names, log := uploadWithin(t, a, ws)
	require.Equal(t, []string{"plan.md"}, names)
	require.Equal(t, []string{"plan.md"}, uploaded())
	require.Contains(t, log, "artifact passwd is a symlink (never followed); skipped")
	require.Contains(t, log, "artifact pipe is a named pipe, not a regular file; skipped")
}

func TestArtifactsAreNotReadThroughASymlinkedRunFolder(t *testing.T) {
	api, uploaded := artifactsAPI(t)
	a := &Activities{API: api, Redactor: redact.New(), Logger: zap.NewNop(), Config: Config{WorkspaceDir: t.TempDir()}}
	// The agent replaced its run's folder with a symlink to another run's.
	other := a.workspaceFor(RunRef{TaskID: "t", RunID: "other"})
	require.NoError(t, os.MkdirAll(other.ArtifactsDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(other.ArtifactsDir, "their-plan.md"), []byte("theirs"), 0o644))
	ws := a.workspaceFor(RunRef{TaskID: "t", RunID: "r"})
	require.NoError(t, os.Symlink(other.Root, ws.Root))

	names, log := uploadWithin(t, a, ws)
	require.Empty(t, names)
	require.Empty(t, uploaded())
	require.Contains(t, log, "the artifacts folder: r is a symlink (never followed); no artifacts read")
}

func TestAResultCantOverwriteWhatTheWorkerRecorded(t *testing.T) {
	rec := &recordLog{}
	log := logstream.New(rec, "t", "r", redact.New(), logstream.Config{})
	output := map[string]any{"pr_url": "https://github.com/acme/app/pull/7", "commit_sha": "abc123", "changed": true}
	got := withResult(output, json.RawMessage(`{"pr_url":"https://evil.example","commit_sha":"0000","changed":false,"severity":"high"}`), log)
	_, _ = log.Close(context.Background())
	require.Equal(t, "https://github.com/acme/app/pull/7", got["pr_url"])
	require.Equal(t, "abc123", got["commit_sha"])
	require.Equal(t, true, got["changed"])
	require.Equal(t, "high", got["severity"])
	require.Equal(t, map[string]any{"pr_url": "https://evil.example", "commit_sha": "0000", "changed": false}, got["result"])
	require.Contains(t, rec.text(), "the agent's result has keys the worker writes itself (changed, commit_sha, pr_url); they are kept under output.result")
}

// TestEveryOutputKeyTheWorkerWritesIsReserved reads this package's code for
// the keys it writes into a run's output: each must be one a result can't set.
func TestEveryOutputKeyTheWorkerWritesIsReserved(t *testing.T) {
	written := regexp.MustCompile(`output\["([a-z_]+)"\]\s*=|output := map\[string\]any\{"([a-z_]+)"|Output = map\[string\]any\{"([a-z_]+)"`)
	literal := regexp.MustCompile(`"([a-z_]+)":`)
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	var keys []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		src, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, m := range written.FindAllStringSubmatchIndex(string(src), -1) {
			line := string(src[m[0]:])
			line = line[:strings.IndexByte(line, '\n')]
			for _, k := range literal.FindAllStringSubmatch(line, -1) {
				keys = append(keys, k[1])
			}
			if m[2] >= 0 {
				keys = append(keys, string(src[m[2]:m[3]]))
			}
		}
	}
	require.Subset(t, keys, []string{"pr_url", "commit_sha", "changed", "usage", "log_entries_dropped"}, "the scan finds the worker's keys")
	for _, k := range keys {
		require.Contains(t, structured.WorkerKeys, k, "output key %q is written by the worker: add it to structured.WorkerKeys", k)
	}
}
