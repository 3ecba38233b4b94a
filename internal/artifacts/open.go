// Package artifacts is the safe read-back of what the agent wrote: the files
// it leaves for upload, its result file, the files it names on the command
// protocol.
//
// The agent is untrusted, and so is everything it can write. A file it leaves
// may be a symlink (to /etc/shadow, to another run's workspace, to the
// worker's secrets), a named pipe (a naive open blocks for ever), a device, or
// ten gigabytes; a folder on the way may be a symlink too, swapped in between
// a check and a read. So nothing here resolves a path by name: each folder is
// opened beneath the one before it with O_NOFOLLOW|O_DIRECTORY and walked by
// descriptor, each file is opened with O_NOFOLLOW|O_NONBLOCK and checked on
// its open descriptor (regular, within its cap), and no more than the cap is
// ever read.
package artifacts

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Path is a file or folder the agent may have written: Rel, beneath the
// folder Base. Base is the worker's own — its configuration, or a folder it
// made in a place the agent can't write — and is opened as it is, symlinks
// and all. Every component of Rel is opened without following a symlink.
type Path struct {
	Base string
	Rel  string
}

// Beneath is path as a Path under base, which the worker trusts; the part
// of path below base is what the agent may have written.
func Beneath(base, path string) (Path, error) {
	rel, err := filepath.Rel(base, path)
	if err != nil || !local(rel) {
		return Path{}, fmt.Errorf("%s is not inside %s", path, base)
	}
	return Path{Base: base, Rel: rel}, nil
}

// String is the path as one.
func (p Path) String() string { return filepath.Join(p.Base, p.Rel) }

// IsZero reports the Path of nothing.
func (p Path) IsZero() bool { return p.Base == "" }

// local reports a relative path that stays beneath its base.
func local(rel string) bool {
	return rel != "" && filepath.IsLocal(rel)
}

// The reasons a file is refused; a *RefusedError wraps one.
var (
	ErrSymlink    = errors.New("symlink")
	ErrNotRegular = errors.New("not a regular file")
	ErrTooLarge   = errors.New("over the size limit")
	ErrNotDir     = errors.New("not a folder")
	ErrHardLink   = errors.New("hard link")
	ErrChanged    = errors.New("changed while being read")
)

// RefusedError is a file, or a folder on its way, that is not read back for
// what it is. Name is the refused one, relative to where the reading began.
type RefusedError struct {
	Name   string
	Reason string
	Kind   error
}

func (e *RefusedError) Error() string { return e.Name + " " + e.Reason }

// Unwrap makes errors.Is(err, ErrSymlink) and the like work.
func (e *RefusedError) Unwrap() error { return e.Kind }

const (
	// dirFlags open a folder, never a symlink to one.
	dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	// fileFlags open a file: never through a symlink, never waiting for a
	// named pipe's writer, never making a terminal the worker's.
	fileFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
)

// refusal says why an entry of the given stat mode is not read as a file or
// walked as a folder, nil for a regular file or a folder.
func refusal(name string, mode uint32) *RefusedError {
	what := ""
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		return nil
	case unix.S_IFLNK:
		return &RefusedError{Name: name, Reason: "is a symlink (never followed)", Kind: ErrSymlink}
	case unix.S_IFIFO:
		what = "a named pipe"
	case unix.S_IFSOCK:
		what = "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		what = "a device"
	default:
		what = "of an unknown kind"
	}
	return &RefusedError{Name: name, Reason: "is " + what + ", not a regular file", Kind: ErrNotRegular}
}

func tooLarge(name string, size, limit int64) *RefusedError {
	return &RefusedError{Name: name, Reason: fmt.Sprintf("is %d bytes, over the %d byte limit", size, limit), Kind: ErrTooLarge}
}

// openBase opens the worker's own folder, following what it is configured as.
func openBase(base string) (int, error) {
	fd, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: base, Err: err}
	}
	return fd, nil
}

// beforeOpen, when set, runs between the look at an entry and its open: a
// test swaps the entry there, as an agent racing the worker would.
var beforeOpen func(shown string)

// openAt opens the entry name of the folder dir, which must be of the kind
// wantDir asks for: it is looked at first (without following it), so a
// device or a pipe is never opened, then opened without following a symlink,
// and the open descriptor is checked to be what was looked at. shown names
// the entry in errors.
func openAt(dir int, name, shown string, wantDir bool) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, st, &os.PathError{Op: "stat", Path: shown, Err: err}
	}
	if r := refusal(shown, uint32(st.Mode)); r != nil {
		return -1, st, r
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if isDir != wantDir {
		if wantDir {
			return -1, st, &RefusedError{Name: shown, Reason: "is a file, not a folder", Kind: ErrNotDir}
		}
		return -1, st, &RefusedError{Name: shown, Reason: "is a folder, not a regular file", Kind: ErrNotRegular}
	}
	if beforeOpen != nil {
		beforeOpen(shown)
	}
	flags := fileFlags
	if wantDir {
		flags = dirFlags
	}
	fd, err := unix.Openat(dir, name, flags, 0)
	if err != nil {
		if err == unix.ELOOP || err == unix.EMLINK {
			return -1, st, &RefusedError{Name: shown, Reason: "is a symlink (never followed)", Kind: ErrSymlink}
		}
		return -1, st, &os.PathError{Op: "open", Path: shown, Err: err}
	}
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		unix.Close(fd)
		return -1, st, &os.PathError{Op: "stat", Path: shown, Err: err}
	}
	if got.Dev != st.Dev || got.Ino != st.Ino || got.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		unix.Close(fd)
		if r := refusal(shown, uint32(got.Mode)); r != nil {
			return -1, got, r
		}
		return -1, got, &RefusedError{Name: shown, Reason: "changed while being read", Kind: ErrChanged}
	}
	if !wantDir && got.Nlink > 1 {
		// A hard link is the file itself, wherever its other names are: one
		// the agent made to a file of the worker's or another run's looks
		// like any file of its own, but for the count.
		unix.Close(fd)
		return -1, got, &RefusedError{Name: shown, Reason: fmt.Sprintf("has %d hard links, and one may be a file outside", got.Nlink), Kind: ErrHardLink}
	}
	return fd, got, nil
}

// openDirs opens the folders of parts one beneath the other, starting at the
// folder dir (which stays open), and returns the last one's descriptor.
func openDirs(dir int, parts []string) (int, error) {
	fd := dir
	for i, part := range parts {
		next, _, err := openAt(fd, part, strings.Join(parts[:i+1], "/"), true)
		if fd != dir {
			unix.Close(fd)
		}
		if err != nil {
			return -1, err
		}
		fd = next
	}
	if fd == dir {
		// The caller closes what it opened; give it a descriptor of its own.
		return unix.Dup(dir)
	}
	return fd, nil
}

// split is rel's components; rel must stay beneath its base.
func split(rel string) ([]string, error) {
	rel = filepath.Clean(rel)
	if rel == "." {
		return nil, nil
	}
	if !local(rel) {
		return nil, fmt.Errorf("%s is not a path beneath its folder", rel)
	}
	return strings.Split(filepath.ToSlash(rel), "/"), nil
}

// OpenDir opens the folder p without following a symlink below p.Base.
func OpenDir(p Path) (*os.File, error) {
	parts, err := split(p.Rel)
	if err != nil {
		return nil, err
	}
	base, err := openBase(p.Base)
	if err != nil {
		return nil, err
	}
	defer unix.Close(base)
	fd, err := openDirs(base, parts)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p.String()), nil
}

// Open opens the regular file p for reading: no component below p.Base may
// be a symlink, the file must be regular (a named pipe or a device is never
// opened) with no other hard link, and at most limit bytes long when opened. It returns the file and
// its size then; a reader must still read at most limit+1 bytes, for the
// file may grow (see ReadFile).
func Open(p Path, limit int64) (*os.File, int64, error) {
	parts, err := split(p.Rel)
	if err != nil {
		return nil, 0, err
	}
	if len(parts) == 0 {
		return nil, 0, &RefusedError{Name: p.Base, Reason: "is a folder, not a regular file", Kind: ErrNotRegular}
	}
	base, err := openBase(p.Base)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(base)
	dir, err := openDirs(base, parts[:len(parts)-1])
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(dir)
	fd, st, err := openAt(dir, parts[len(parts)-1], strings.Join(parts, "/"), false)
	if err != nil {
		return nil, 0, err
	}
	if st.Size > limit {
		unix.Close(fd)
		return nil, 0, tooLarge(strings.Join(parts, "/"), st.Size, limit)
	}
	return os.NewFile(uintptr(fd), p.String()), st.Size, nil
}

// ReadFile reads the regular file p whole, refusing what Open refuses and a
// file that grew past limit while it was read.
func ReadFile(p Path, limit int64) ([]byte, error) {
	f, size, err := Open(p, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readCapped(f, filepath.ToSlash(filepath.Clean(p.Rel)), size, limit)
}

// readCapped reads r, of size bytes when it was opened, reading at most
// limit+1 bytes: one more than the limit tells a file that grew past it.
func readCapped(r io.Reader, name string, size, limit int64) ([]byte, error) {
	buf := make([]byte, 0, min(size, limit)+1)
	data, err := readAll(io.LimitReader(r, limit+1), buf)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, &RefusedError{Name: name, Reason: fmt.Sprintf("grew past the %d byte limit while it was read", limit), Kind: ErrTooLarge}
	}
	return data, nil
}

// readAll is io.ReadAll into buf, so a file's known size is allocated once.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
