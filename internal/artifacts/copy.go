package artifacts

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Copy copies the regular file src, opened as Open opens it and at most
// limit bytes, into the folder dst as name. The folders of dst.Rel that are
// missing are made; none may be a symlink. The copy is written to a new file
// beside name and renamed over it, so whatever the agent put at name — a
// symlink, a pipe — is replaced, never written through or waited on.
func Copy(src, dst Path, name string, limit int64) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q is not a file name", name)
	}
	in, _, err := Open(src, limit)
	if err != nil {
		return err
	}
	defer in.Close()
	dir, err := makeDirs(dst)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	tmp, out, err := createTemp(dir, name)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, io.LimitReader(in, limit+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		err = fmt.Errorf("copy %s: %w", src.Rel, err)
	case n > limit:
		err = &RefusedError{Name: src.Rel, Reason: fmt.Sprintf("grew past the %d byte limit while it was read", limit), Kind: ErrTooLarge}
	default:
		if err = unix.Renameat(dir, tmp, dir, name); err != nil {
			err = &os.LinkError{Op: "rename", Old: tmp, New: name, Err: err}
		}
	}
	if err != nil {
		_ = unix.Unlinkat(dir, tmp, 0)
		return err
	}
	return nil
}

// makeDirs opens the folder p, making the folders of p.Rel that are missing,
// without following a symlink below p.Base.
func makeDirs(p Path) (int, error) {
	parts, err := split(p.Rel)
	if err != nil {
		return -1, err
	}
	fd, err := openBase(p.Base)
	if err != nil {
		return -1, err
	}
	for i, part := range parts {
		shown := strings.Join(parts[:i+1], "/")
		next, _, err := openAt(fd, part, shown, true)
		if errors.Is(err, os.ErrNotExist) {
			if err = unix.Mkdirat(fd, part, 0o755); err == nil || err == unix.EEXIST {
				next, _, err = openAt(fd, part, shown, true)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// createTemp makes a new file in the folder dir for a file to be named
// name, and opens it for writing.
func createTemp(dir int, name string) (string, *os.File, error) {
	for range 100 {
		tmp := fmt.Sprintf(".%s.%08x.tmp", name, rand.Uint32())
		fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return "", nil, &os.PathError{Op: "create", Path: tmp, Err: err}
		}
		return tmp, os.NewFile(uintptr(fd), tmp), nil
	}
	return "", nil, fmt.Errorf("create a file beside %s: every name tried exists", name)
}
