package artifacts

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

// deadline is how long a read-back may take before a test calls it stuck:
// a blocked open would take for ever, a prompt one takes microseconds.
const deadline = 10 * time.Second

// prompt runs fn and fails the test if it does not return in time.
func prompt(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatalf("%s did not return within %s: it is blocked", what, deadline)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

// sparse makes a file of size bytes that takes no room on disk.
func sparse(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
}

type walked struct {
	artifacts []tasksapi.Artifact
	warnings  []string
}

func (w *walked) names() []string {
	var names []string
	for _, a := range w.artifacts {
		names = append(names, a.Name)
	}
	return names
}

func (w *walked) content(name string) string {
	for _, a := range w.artifacts {
		if a.Name == name {
			return a.Content
		}
	}
	return ""
}

// walkDir walks the artifacts folder dir (beneath its parent) with limits.
func walkDir(t *testing.T, dir string, limits Limits) walked {
	t.Helper()
	var w walked
	p := Path{Base: filepath.Dir(dir), Rel: filepath.Base(dir)}
	prompt(t, "the walk", func() {
		err := walk(p, limits, func(s string) { w.warnings = append(w.warnings, s) }, func(a tasksapi.Artifact) error {
			w.artifacts = append(w.artifacts, a)
			return nil
		})
		require.NoError(t, err)
	})
	return w
}

func TestRegularFilesAreReadInOrderByTheirBaseName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	write(t, filepath.Join(dir, "plan.md"), "# Plan\n")
	write(t, filepath.Join(dir, "b", "notes.txt"), "notes")
	write(t, filepath.Join(dir, "c.bin"), "\x01\xff")
	write(t, filepath.Join(dir, "d", "plan.md"), "a second plan")
	w := walkDir(t, dir, DefaultLimits)
	require.Equal(t, []string{"notes.txt", "c.bin", "plan.md"}, w.names())
	require.Equal(t, "a second plan", w.content("plan.md"), "d/plan.md comes first, as d sorts before plan.md")
	require.Equal(t, tasksapi.ArtifactPlan, w.artifacts[2].Type)
	require.Equal(t, tasksapi.EncodingBase64, w.artifacts[1].ContentEncoding)
	require.Equal(t, []string{"artifact plan.md has the same name as another one; skipped"}, w.warnings)
}

func TestAMissingArtifactsFolderHasNoArtifacts(t *testing.T) {
	w := walkDir(t, filepath.Join(t.TempDir(), "artifacts"), DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Empty(t, w.warnings)
}

func TestASymlinkToAFileOutsideIsNeverRead(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "secret"), "the worker's secret")
	dir := filepath.Join(root, "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.Symlink(filepath.Join(root, "secret"), filepath.Join(dir, "passwd")))
	w := walkDir(t, dir, DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Equal(t, []string{"artifact passwd is a symlink (never followed); skipped"}, w.warnings)

	_, err := ReadFile(Path{Base: root, Rel: "artifacts/passwd"}, 1<<20)
	require.ErrorIs(t, err, ErrSymlink)
	require.EqualError(t, err, "artifacts/passwd is a symlink (never followed)")
}

func TestASymlinkedFolderIsNeverWalked(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "elsewhere", "id_rsa"), "a private key")
	dir := filepath.Join(root, "artifacts")
	write(t, filepath.Join(dir, "report.md"), "report")
	require.NoError(t, os.Symlink(filepath.Join(root, "elsewhere"), filepath.Join(dir, "keys")))
	w := walkDir(t, dir, DefaultLimits)
	require.Equal(t, []string{"report.md"}, w.names())
	require.Equal(t, []string{"artifact keys is a symlink (never followed); skipped"}, w.warnings)
}

func TestASymlinkPlantedInAParentPathIsNeverFollowed(t *testing.T) {
	// The agent replaced the run's folder with a symlink to another's: the
	// worker's own folder (Base) is trusted, nothing beneath it is.
	base := t.TempDir()
	write(t, filepath.Join(base, "other-run", "artifacts", "their-plan.md"), "another run's plan")
	write(t, filepath.Join(base, "other-run", "output.json"), `{"their":"result"}`)
	require.NoError(t, os.Symlink(filepath.Join(base, "other-run"), filepath.Join(base, "run")))

	var w walked
	prompt(t, "the walk", func() {
		require.NoError(t, Walk(Path{Base: base, Rel: "run/artifacts"}, func(s string) { w.warnings = append(w.warnings, s) },
			func(a tasksapi.Artifact) error { w.artifacts = append(w.artifacts, a); return nil }))
	})
	require.Empty(t, w.artifacts)
	require.Equal(t, []string{"the artifacts folder: run is a symlink (never followed); no artifacts read"}, w.warnings)

	_, err := ReadFile(Path{Base: base, Rel: "run/output.json"}, 1<<20)
	require.ErrorIs(t, err, ErrSymlink)
	require.EqualError(t, err, "run is a symlink (never followed)")

	// The artifacts folder itself a symlink: the same.
	require.NoError(t, os.MkdirAll(filepath.Join(base, "mine"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(base, "other-run", "artifacts"), filepath.Join(base, "mine", "artifacts")))
	w = walkDir(t, filepath.Join(base, "mine", "artifacts"), DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Equal(t, []string{"the artifacts folder: artifacts is a symlink (never followed); no artifacts read"}, w.warnings)
}

func TestAFileSwappedForASymlinkAfterItWasLookedAtIsNotFollowed(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "secret"), "the worker's secret")
	dir := filepath.Join(root, "artifacts")
	write(t, filepath.Join(dir, "report.md"), "report")
	// Between the look at the entry and its open, the agent swaps it.
	beforeOpen = func(string) {
		_ = os.Remove(filepath.Join(dir, "report.md"))
		_ = os.Symlink(filepath.Join(root, "secret"), filepath.Join(dir, "report.md"))
	}
	defer func() { beforeOpen = nil }()
	w := walkDir(t, dir, DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Equal(t, []string{"artifact report.md is a symlink (never followed); skipped"}, w.warnings)
}

func TestANamedPipeNeverBlocks(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "pipe"), 0o644))
	write(t, filepath.Join(dir, "z.txt"), "after the pipe")
	w := walkDir(t, dir, DefaultLimits)
	require.Equal(t, []string{"z.txt"}, w.names())
	require.Equal(t, []string{"artifact pipe is a named pipe, not a regular file; skipped"}, w.warnings)

	prompt(t, "ReadFile of a pipe", func() {
		_, err := ReadFile(Path{Base: root, Rel: "artifacts/pipe"}, 1<<20)
		require.ErrorIs(t, err, ErrNotRegular)
	})
}

func TestAFileSwappedForANamedPipeAfterItWasLookedAtNeverBlocks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	write(t, filepath.Join(dir, "report.md"), "report")
	beforeOpen = func(string) {
		_ = os.Remove(filepath.Join(dir, "report.md"))
		_ = unix.Mkfifo(filepath.Join(dir, "report.md"), 0o644)
	}
	defer func() { beforeOpen = nil }()
	w := walkDir(t, dir, DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Equal(t, []string{"artifact report.md is a named pipe, not a regular file; skipped"}, w.warnings)
}

func TestSocketsAndDevicesAreSkipped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	l, err := net.Listen("unix", filepath.Join(dir, "sock"))
	require.NoError(t, err)
	defer l.Close()
	want := []string{"artifact sock is a socket, not a regular file; skipped"}
	// A device (here /dev/null's numbers) can be made as root only.
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err == nil {
		want = append([]string{"artifact null is a device, not a regular file; skipped"}, want...)
	} else {
		t.Logf("no device made (%v): only the socket is checked", err)
	}
	w := walkDir(t, dir, DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Equal(t, want, w.warnings)
}

func TestAFileOverTheCapIsSkippedUnread(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	sparse(t, filepath.Join(dir, "too-big.bin"), MaxFileBytes+1)
	write(t, filepath.Join(dir, "small.txt"), "small")
	w := walkDir(t, dir, DefaultLimits)
	require.Equal(t, []string{"small.txt"}, w.names())
	require.Equal(t, []string{"artifact too-big.bin is 31457281 bytes, over the 31457280 byte limit; skipped"}, w.warnings)

	_, err := ReadFile(Path{Base: root, Rel: "artifacts/too-big.bin"}, 1<<20)
	require.ErrorIs(t, err, ErrTooLarge)
	require.EqualError(t, err, "artifacts/too-big.bin is 31457281 bytes, over the 1048576 byte limit")
	data, err := ReadFile(Path{Base: root, Rel: "artifacts/small.txt"}, 5)
	require.NoError(t, err, "a file of exactly the cap is read")
	require.Equal(t, "small", string(data))
}

func TestAFileThatGrowsAfterItWasOpenedIsStillCapped(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "log.txt"), "0123456789")
	f, size, err := Open(Path{Base: root, Rel: "log.txt"}, 20)
	require.NoError(t, err)
	defer f.Close()
	require.EqualValues(t, 10, size)
	// The agent goes on writing after the size was checked.
	more, err := os.OpenFile(filepath.Join(root, "log.txt"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = more.WriteString(strings.Repeat("x", 1000))
	require.NoError(t, err)
	require.NoError(t, more.Close())
	_, err = readCapped(f, "log.txt", size, 20)
	require.ErrorIs(t, err, ErrTooLarge)
	require.EqualError(t, err, "log.txt grew past the 20 byte limit while it was read")
}

func TestTheNumberOfFilesIsCapped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	for i := range MaxFiles + 5 {
		write(t, filepath.Join(dir, fmt.Sprintf("f%04d.txt", i)), "x")
	}
	w := walkDir(t, dir, DefaultLimits)
	require.Len(t, w.artifacts, MaxFiles)
	require.Equal(t, []string{"artifact f0200.txt and any after it are skipped: a run uploads at most 200 artifacts"}, w.warnings)
}

func TestTheTotalIsCapped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	write(t, filepath.Join(dir, "a"), "aaaa")
	write(t, filepath.Join(dir, "b"), "bbbb")
	write(t, filepath.Join(dir, "c"), "cccc")
	write(t, filepath.Join(dir, "d"), "dd")
	limits := DefaultLimits
	limits.TotalBytes = 10
	w := walkDir(t, dir, limits)
	require.Equal(t, []string{"a", "b", "d"}, w.names(), "what still fits is read")
	require.Equal(t, []string{"artifact c is 4 bytes, past the 10 bytes a run's artifacts may take together; skipped"}, w.warnings)
}

func TestTheDefaultTotalCapHolds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	n := int(MaxTotalBytes/MaxFileBytes) + 1
	for i := range n {
		sparse(t, filepath.Join(dir, fmt.Sprintf("big%04d", i)), MaxFileBytes)
	}
	var read int64
	var warnings []string
	prompt(t, "the walk", func() {
		require.NoError(t, Walk(Path{Base: filepath.Dir(dir), Rel: "artifacts"}, func(s string) { warnings = append(warnings, s) },
			func(a tasksapi.Artifact) error { read += int64(len(a.Content)); return nil }))
	})
	require.EqualValues(t, MaxTotalBytes, read)
	require.Equal(t, []string{"artifact big0010 is 31457280 bytes, past the 314572800 bytes a run's artifacts may take together; skipped"}, warnings)
}

func TestTheEntriesLookedAtAreCapped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	for _, name := range []string{"a", "b", "c", "sub/d", "sub/e", "sub/f"} {
		write(t, filepath.Join(dir, name), name)
	}
	limits := DefaultLimits
	limits.Entries = 6
	w := walkDir(t, dir, limits)
	require.Len(t, w.artifacts, 5, "a, b, c and two of sub's three")
	require.Equal(t, []string{"the artifacts folder holds more than 6 entries; the ones past them are skipped"}, w.warnings)
}

func TestTheDepthIsCapped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	write(t, filepath.Join(dir, "1", "2", "ok.txt"), "ok")
	write(t, filepath.Join(dir, "1", "2", "3", "deep.txt"), "deep")
	limits := DefaultLimits
	limits.Depth = 2
	w := walkDir(t, dir, limits)
	require.Equal(t, []string{"ok.txt"}, w.names())
	require.Equal(t, []string{"folder 1/2/3 is more than 2 levels below the artifacts folder; its files are skipped"}, w.warnings)
}

func TestOneArtifactIsReadAtATime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	write(t, filepath.Join(dir, "a.txt"), "first")
	write(t, filepath.Join(dir, "b.txt"), "before")
	var got []string
	prompt(t, "the walk", func() {
		require.NoError(t, Walk(Path{Base: filepath.Dir(dir), Rel: "artifacts"}, func(string) {}, func(a tasksapi.Artifact) error {
			got = append(got, a.Content)
			// b.txt is read only after a.txt was handled.
			return os.WriteFile(filepath.Join(dir, "b.txt"), []byte("after"), 0o644)
		}))
	})
	require.Equal(t, []string{"first", "after"}, got)

	stop := errors.New("upload failed")
	calls := 0
	err := Walk(Path{Base: filepath.Dir(dir), Rel: "artifacts"}, func(string) {}, func(tasksapi.Artifact) error { calls++; return stop })
	require.ErrorIs(t, err, stop, "the caller's error ends the walk")
	require.Equal(t, 1, calls)
}

func TestCopyNeverWritesThroughWhatTheAgentPutAtTheName(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "repo", "report.md"), "the report")
	write(t, filepath.Join(root, "victim"), "the worker's own file")
	dst := Path{Base: root, Rel: "artifacts"}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "artifacts"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(root, "victim"), filepath.Join(root, "artifacts", "report.md")))
	require.NoError(t, unix.Mkfifo(filepath.Join(root, "artifacts", "pipe.md"), 0o644))

	require.NoError(t, Copy(Path{Base: root, Rel: "repo/report.md"}, dst, "report.md", 1<<20))
	victim, err := os.ReadFile(filepath.Join(root, "victim"))
	require.NoError(t, err)
	require.Equal(t, "the worker's own file", string(victim), "the symlink's target is untouched")
	data, err := ReadFile(Path{Base: root, Rel: "artifacts/report.md"}, 1<<20)
	require.NoError(t, err, "the symlink was replaced by the copy")
	require.Equal(t, "the report", string(data))

	prompt(t, "a copy over a pipe", func() {
		require.NoError(t, Copy(Path{Base: root, Rel: "repo/report.md"}, dst, "pipe.md", 1<<20))
	})
	entries, err := os.ReadDir(filepath.Join(root, "artifacts"))
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temporary file is left: %v", entries)
}

func TestCopyRefusesWhatOpenRefusesAndMakesTheFolder(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "secret"), "secret")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "repo"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(root, "secret"), filepath.Join(root, "repo", "link")))
	sparse(t, filepath.Join(root, "repo", "big"), 2<<20)
	dst := Path{Base: root, Rel: "artifacts"}
	require.ErrorIs(t, Copy(Path{Base: root, Rel: "repo/link"}, dst, "link", 1<<20), ErrSymlink)
	require.ErrorIs(t, Copy(Path{Base: root, Rel: "repo/big"}, dst, "big", 1<<20), ErrTooLarge)
	require.ErrorContains(t, Copy(Path{Base: root, Rel: "repo/big"}, dst, "../x", 1<<20), "is not a file name")
	_, err := os.Stat(filepath.Join(root, "artifacts", "link"))
	require.ErrorIs(t, err, os.ErrNotExist)

	write(t, filepath.Join(root, "repo", "ok.txt"), "ok")
	require.NoError(t, Copy(Path{Base: root, Rel: "repo/ok.txt"}, Path{Base: root, Rel: "new/artifacts"}, "ok.txt", 1<<20))
	data, err := os.ReadFile(filepath.Join(root, "new", "artifacts", "ok.txt"))
	require.NoError(t, err)
	require.Equal(t, "ok", string(data))

	// A missing folder is made, a symlinked one refused.
	require.NoError(t, os.Symlink(filepath.Join(root, "repo"), filepath.Join(root, "linked")))
	require.ErrorIs(t, Copy(Path{Base: root, Rel: "repo/ok.txt"}, Path{Base: root, Rel: "linked"}, "x", 1<<20), ErrSymlink)
}

func TestBeneathKeepsThePathInside(t *testing.T) {
	p, err := Beneath("/work/ws", "/work/ws/run-1/artifacts")
	require.NoError(t, err)
	require.Equal(t, Path{Base: "/work/ws", Rel: "run-1/artifacts"}, p)
	_, err = Beneath("/work/ws", "/work/other")
	require.Error(t, err)
	p, err = Beneath("/work/ws", "/work/ws")
	require.NoError(t, err)
	require.Equal(t, ".", p.Rel, "the base itself")
	_, err = ReadFile(Path{Base: "/work/ws", Rel: "../etc/passwd"}, 10)
	require.ErrorContains(t, err, "is not a path beneath its folder")
}

func TestArtifactTypeAndEncoding(t *testing.T) {
	require.Equal(t, tasksapi.ArtifactPlan, TypeOf("PLAN.md"))
	require.Equal(t, tasksapi.ArtifactContext, TypeOf("context.md"))
	require.Equal(t, tasksapi.ArtifactGeneric, TypeOf("notes.txt"))
	text := Encode("a.md", "plan", "", []byte("héllo"))
	require.Equal(t, tasksapi.EncodingUTF8, text.ContentEncoding)
	require.Equal(t, "héllo", text.Content)
	bin := Encode("a.bin", "artifact", "", []byte{0xff, 0x00})
	require.Equal(t, tasksapi.EncodingBase64, bin.ContentEncoding)
	require.Equal(t, "/wA=", bin.Content)
	require.Equal(t, "application/octet-stream", bin.ContentType)
}

func TestAnArtifactsFolderThatIsAFileHasNoArtifacts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "artifacts")
	write(t, dir, "not a folder")
	w := walkDir(t, dir, DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Equal(t, []string{"the artifacts folder: artifacts is a file, not a folder; no artifacts read"}, w.warnings)
}

func TestAHardLinkIsNotRead(t *testing.T) {
	// A hard link the agent made to a file it may not upload (the worker's,
	// another run's) is that file: only its link count tells.
	root := t.TempDir()
	write(t, filepath.Join(root, "other-run", "secret.txt"), "another run's secret")
	dir := filepath.Join(root, "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.Link(filepath.Join(root, "other-run", "secret.txt"), filepath.Join(dir, "notes.txt")))
	w := walkDir(t, dir, DefaultLimits)
	require.Empty(t, w.artifacts)
	require.Equal(t, []string{"artifact notes.txt has 2 hard links, and one may be a file outside; skipped"}, w.warnings)
	_, err := ReadFile(Path{Base: root, Rel: "artifacts/notes.txt"}, 1<<20)
	require.ErrorIs(t, err, ErrHardLink)
}
