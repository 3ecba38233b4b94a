package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/taskworker/taskworker/internal/artifacts"
)

// workspace is a run's folder as the worker lays it out: the clone and the
// artifacts folder side by side, and a file of the worker's beside them.
type workspace struct {
	root, clone, artifacts, secret string
}

func newWorkspace(t *testing.T) workspace {
	root := t.TempDir()
	ws := workspace{root: root, clone: filepath.Join(root, "repo"), artifacts: filepath.Join(root, "artifacts"), secret: filepath.Join(root, "secret")}
	require.NoError(t, os.MkdirAll(ws.clone, 0o755))
	require.NoError(t, os.MkdirAll(ws.artifacts, 0o755))
	require.NoError(t, os.WriteFile(ws.secret, []byte("the worker's secret"), 0o600))
	return ws
}

// artifactLine sends the protocol an artifact line and returns what it
// said, failing the test if it does not return in time (a blocked open never
// would).
func artifactLine(t *testing.T, ws workspace, path, name string) string {
	t.Helper()
	var s sink
	p := &protocol{sink: &s, artifactsDir: ws.artifacts, workDir: ws.clone}
	line, err := json.Marshal(map[string]string{"type": "artifact", "path": path, "name": name})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.line(string(line))
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the artifact line for %s did not return within 10s: it is blocked", path)
	}
	require.Len(t, s.lines(), 1)
	return s.lines()[0]
}

func saved(t *testing.T, ws workspace, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(ws.artifacts, name))
	require.NoError(t, err)
	return string(data)
}

func TestAnArtifactLineCopiesAFileOfTheClone(t *testing.T) {
	ws := newWorkspace(t)
	require.NoError(t, os.MkdirAll(filepath.Join(ws.clone, "docs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ws.clone, "docs", "report.md"), []byte("the report"), 0o644))
	require.Equal(t, "info: artifact report.md saved for upload", artifactLine(t, ws, "docs/report.md", ""))
	require.Equal(t, "the report", saved(t, ws, "report.md"))
	require.Equal(t, "info: artifact notes.md saved for upload", artifactLine(t, ws, filepath.Join(ws.clone, "docs", "report.md"), "sub/notes.md"))
	require.Equal(t, "the report", saved(t, ws, "notes.md"))
	// A file already in the artifacts folder may be named, and renamed.
	require.Equal(t, "info: artifact again.md saved for upload", artifactLine(t, ws, filepath.Join(ws.artifacts, "notes.md"), "again.md"))
	require.Equal(t, "the report", saved(t, ws, "again.md"))
}

func TestAnArtifactLineStaysInTheCloneAndTheArtifactsFolder(t *testing.T) {
	ws := newWorkspace(t)
	for _, path := range []string{"../secret", ws.secret, "/etc/passwd"} {
		require.Contains(t, artifactLine(t, ws, path, ""), "is outside the working directory", path)
	}
	_, err := os.Stat(filepath.Join(ws.artifacts, "secret"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestAnArtifactLineFollowsNoSymlink(t *testing.T) {
	ws := newWorkspace(t)
	require.NoError(t, os.WriteFile(filepath.Join(ws.clone, "real.md"), []byte("real"), 0o644))
	require.NoError(t, os.Symlink(ws.secret, filepath.Join(ws.clone, "passwd")))
	require.NoError(t, os.Symlink(filepath.Join(ws.clone, "real.md"), filepath.Join(ws.clone, "inside.md")))
	require.NoError(t, os.Symlink(ws.root, filepath.Join(ws.clone, "up")))
	for path, refused := range map[string]string{
		"passwd":    "passwd is a symlink (never followed)",
		"inside.md": "inside.md is a symlink (never followed)", // even one that stays in the clone
		"up/secret": "up is a symlink (never followed)",        // a symlinked folder on the way
	} {
		msg := artifactLine(t, ws, path, "")
		require.True(t, strings.HasPrefix(msg, "warn: agent protocol: artifact line: path "+path+": repo/"+refused), msg)
	}
	entries, err := os.ReadDir(ws.artifacts)
	require.NoError(t, err)
	require.Empty(t, entries)
}

func TestAnArtifactLineIsNotReadThroughASymlinkedClone(t *testing.T) {
	ws := newWorkspace(t)
	// The agent replaced its clone's folder with a symlink to elsewhere.
	elsewhere := filepath.Join(ws.root, "elsewhere")
	require.NoError(t, os.MkdirAll(elsewhere, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(elsewhere, "id_rsa"), []byte("a private key"), 0o600))
	require.NoError(t, os.RemoveAll(ws.clone))
	require.NoError(t, os.Symlink(elsewhere, ws.clone))
	msg := artifactLine(t, ws, "id_rsa", "")
	require.Contains(t, msg, "path id_rsa: repo is a symlink (never followed)")
	_, err := os.Stat(filepath.Join(ws.artifacts, "id_rsa"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestAnArtifactLineNamingAPipeDoesNotBlock(t *testing.T) {
	ws := newWorkspace(t)
	require.NoError(t, unix.Mkfifo(filepath.Join(ws.clone, "pipe"), 0o644))
	require.Contains(t, artifactLine(t, ws, "pipe", ""), "path pipe: repo/pipe is a named pipe, not a regular file")
}

func TestAnArtifactLineNeverWritesThroughASymlinkInTheArtifactsFolder(t *testing.T) {
	ws := newWorkspace(t)
	require.NoError(t, os.WriteFile(filepath.Join(ws.clone, "report.md"), []byte("the report"), 0o644))
	require.NoError(t, os.Symlink(ws.secret, filepath.Join(ws.artifacts, "report.md")))
	require.Equal(t, "info: artifact report.md saved for upload", artifactLine(t, ws, "report.md", ""))
	secret, err := os.ReadFile(ws.secret)
	require.NoError(t, err)
	require.Equal(t, "the worker's secret", string(secret), "the symlink's target is untouched")
	data, err := artifacts.ReadFile(artifacts.Path{Base: ws.root, Rel: "artifacts/report.md"}, 1<<20)
	require.NoError(t, err, "the symlink was replaced by the copy")
	require.Equal(t, "the report", string(data))
}

func TestAnArtifactLineNamingAFileOverTheLimitCopiesNothing(t *testing.T) {
	ws := newWorkspace(t)
	f, err := os.Create(filepath.Join(ws.clone, "huge.bin"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(artifacts.MaxFileBytes+1)) // sparse: no room taken
	require.NoError(t, f.Close())
	require.Contains(t, artifactLine(t, ws, "huge.bin", ""), "path huge.bin: repo/huge.bin is 31457281 bytes, over the 31457280 byte limit")
	_, err = os.Stat(filepath.Join(ws.artifacts, "huge.bin"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
