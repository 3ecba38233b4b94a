package activities

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
