package activities

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/slots"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// A worker that starts removes the run folders a crashed one left, unless
// a claim still holds them: this process's, or one recorded on disk whose
// run may come back to the folder (a Publish retried on the queue of a
// worker that restarted under its name). It touches nothing it didn't make.
func TestAStartingWorkerSweepsTheWorkspacesNoClaimHolds(t *testing.T) {
	status := map[string]string{} // run ID → the run's status; absent: 404
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runID := filepath.Base(strings.TrimSuffix(r.URL.Path, "/"))
		s, ok := status[runID]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not found."}`))
			return
		}
		_, _ = fmt.Fprintf(w, `{"id":%q,"status":%q}`, runID, s)
	}))
	defer srv.Close()
	dir := t.TempDir()
	ws := filepath.Join(dir, "workspaces")
	a := &Activities{
		API:      tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: 1, RetryWait: time.Millisecond}),
		Slots:    slots.New(4),
		Redactor: redact.New(), Logger: zap.NewNop(),
		Config: Config{WorkspaceDir: ws, Project: "here"},
	}
	folder := func(name string) string {
		p := filepath.Join(ws, name)
		require.NoError(t, os.MkdirAll(filepath.Join(p, "repo"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(p, "repo", "f"), []byte("x"), 0o644))
		return name
	}
	claim := func(runID, project string, ttl time.Duration) {
		a.Config.Project = project
		require.NoError(t, a.recordClaim(RunContext{RunRef: RunRef{TaskID: "t", RunID: runID}}, ttl))
		a.Config.Project = "here"
	}
	id := func() string { return uuid.NewString() }

	unclaimed := folder(id())
	expired := folder(id())
	claim(expired, "here", -time.Minute)
	running := folder(id())
	claim(running, "here", time.Hour)
	status[running] = "in_progress"
	ended := folder(id())
	claim(ended, "here", time.Hour)
	status[ended] = "completed"
	gone := folder(id())
	claim(gone, "here", time.Hour)
	others := folder(id())
	claim(others, "elsewhere", time.Hour)
	held := folder(id())
	require.True(t, a.Slots.Acquire(held, time.Hour))
	notOurs := folder("notes")
	// A symlink named like a run, to a folder outside; and a run folder
	// holding a symlink out: neither outside folder loses anything.
	outside := filepath.Join(dir, "outside")
	require.NoError(t, os.MkdirAll(outside, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "keep"), []byte("x"), 0o644))
	link := id()
	require.NoError(t, os.Symlink(outside, filepath.Join(ws, link)))
	require.NoError(t, os.Symlink(outside, filepath.Join(ws, unclaimed, "repo", "out")))
	// Spilled log entries of a run that is gone, and of one that stays.
	for _, runID := range []string{unclaimed, running} {
		require.NoError(t, os.MkdirAll(filepath.Join(ws, ".logspill", runID), 0o700))
	}

	removed := a.SweepWorkspaces(context.Background())
	sort.Strings(removed)
	want := []string{unclaimed, expired, ended, gone}
	sort.Strings(want)
	require.Equal(t, want, removed)
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	for _, name := range want {
		require.False(t, exists(filepath.Join(ws, name)), name)
		require.False(t, exists(a.claimFile(name)), "its claim record goes with it")
	}
	for _, name := range []string{running, others, held, notOurs, link} {
		require.True(t, exists(filepath.Join(ws, name)), name)
	}
	require.True(t, exists(a.claimFile(running)), "a kept folder keeps its record for the next start")
	require.True(t, exists(filepath.Join(outside, "keep")), "no symlink was followed")
	require.False(t, exists(filepath.Join(ws, ".logspill", unclaimed)))
	require.True(t, exists(filepath.Join(ws, ".logspill", running)))
}

// The claim of a run is on disk from ClaimHost until its workspace is removed.
func TestAClaimIsRecordedUntilItsWorkspaceIsRemoved(t *testing.T) {
	a := &Activities{Slots: slots.New(1), Redactor: redact.New(), Logger: zap.NewNop(),
		Config: Config{WorkspaceDir: t.TempDir(), Project: "here", HostQueue: "q"}}
	run := RunContext{RunRef: RunRef{TaskID: "t", RunID: uuid.NewString()}, RunTimeout: time.Hour}
	_, err := a.ClaimHost(context.Background(), run)
	require.NoError(t, err)
	rec, ok := a.readClaim(run.RunID)
	require.True(t, ok)
	require.Equal(t, "t", rec.TaskID)
	require.Equal(t, "here", rec.Project)
	require.WithinDuration(t, time.Now().Add(time.Hour+claimMargin), rec.Expires, time.Minute)

	require.NoError(t, a.CleanupWorkspace(context.Background(), run.RunRef))
	_, ok = a.readClaim(run.RunID)
	require.False(t, ok)
}
