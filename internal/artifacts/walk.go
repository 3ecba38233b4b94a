package artifacts

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

// The caps of one walk of an artifacts folder. Past them the agent's files
// are skipped with a warning, so a hostile or careless agent can't make the
// artifacts step read, hold or upload without end.
const (
	// MaxFileBytes is the largest artifact read: the API refuses larger ones.
	MaxFileBytes = tasksapi.MaxArtifactBytes
	// MaxFiles is how many artifacts one run uploads, one request each: a
	// plan, notes, a report or a few screenshots are a handful, and each
	// upload is a request the API stores.
	MaxFiles = 200
	// MaxTotalBytes is what a run's artifacts may take together: it bounds
	// how long the step uploads and what one run stores in the API (ten
	// artifacts at the per-file limit).
	MaxTotalBytes = 10 * MaxFileBytes
	// MaxEntries is how many folder entries (files, folders and whatever
	// else) a walk looks at: a folder of a million empty files must not keep
	// the step busy, or its names fill the worker's memory.
	MaxEntries = 10_000
	// MaxDepth is how deep below the artifacts folder a file may be; a
	// folder deeper is skipped, so the walk holds at most this many open
	// folders.
	MaxDepth = 16
)

// Limits are the caps of a walk; Walk uses the constants above.
type Limits struct {
	FileBytes  int64
	Files      int
	TotalBytes int64
	Entries    int
	Depth      int
}

// DefaultLimits are the constants above.
var DefaultLimits = Limits{FileBytes: MaxFileBytes, Files: MaxFiles, TotalBytes: MaxTotalBytes, Entries: MaxEntries, Depth: MaxDepth}

// readDirBatch is how many names a folder is read by at a time.
const readDirBatch = 256

// errStop ends a walk that reached the cap on files.
var errStop = errors.New("stop")

// Walk reads the regular files under the folder dir, one at a time: fn gets
// each as an artifact, named by its base name, and the next file is read
// only after fn returned, so memory holds one artifact at a time. Files come
// in lexical order, a folder's files where the folder is. warn gets a line
// for each file skipped — symlinks, pipes, devices, files over a cap, a
// second file of the same name — naming it and saying why. A folder dir that
// does not exist has no artifacts; an error of fn ends the walk and is
// returned.
func Walk(dir Path, warn func(string), fn func(tasksapi.Artifact) error) error {
	return walk(dir, DefaultLimits, warn, fn)
}

func walk(dir Path, limits Limits, warn func(string), fn func(tasksapi.Artifact) error) error {
	root, err := OpenDir(dir)
	var refused *RefusedError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.As(err, &refused):
		warn(fmt.Sprintf("the artifacts folder: %s; no artifacts read", refused.Error()))
		return nil
	case err != nil:
		return fmt.Errorf("open the artifacts folder %s: %w", dir, err)
	}
	defer root.Close()
	w := &walker{limits: limits, warn: warn, fn: fn, seen: map[string]bool{}}
	if err := w.dir(root, "", 0); err != nil && err != errStop {
		return err
	}
	return nil
}

type walker struct {
	limits  Limits
	warn    func(string)
	fn      func(tasksapi.Artifact) error
	seen    map[string]bool
	files   int
	entries int
	bytes   int64
	// full is set once the walk looked at as many entries as it may.
	full bool
}

// dir walks the open folder f, which is rel below the artifacts folder
// ("" for the folder itself) and depth levels down.
func (w *walker) dir(f *os.File, rel string, depth int) error {
	names, err := w.names(f)
	if err != nil && rel != "" {
		w.warn(fmt.Sprintf("folder %s could not be listed (%v); its files are skipped", rel, err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("list the artifacts folder: %w", err)
	}
	fd := int(f.Fd())
	for _, name := range names {
		shown := name
		if rel != "" {
			shown = rel + "/" + name
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // gone since it was listed: nothing to say
				w.warn(fmt.Sprintf("artifact %s could not be read (%v); skipped", shown, err))
			}
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := w.subdir(fd, name, shown, depth+1); err != nil {
				return err
			}
			continue
		}
		if err := w.file(fd, name, shown); err != nil {
			return err
		}
	}
	return nil
}

// names lists the folder f, sorted, counting its entries against the cap.
// Past the cap the walk ends: the entries listed by then are still walked,
// and the first folder with more says so.
func (w *walker) names(f *os.File) ([]string, error) {
	var names []string
	for !w.full {
		room := w.limits.Entries - w.entries
		if room <= 0 {
			if more, _ := f.Readdirnames(1); len(more) > 0 {
				w.full = true
				w.warn(fmt.Sprintf("the artifacts folder holds more than %d entries; the ones past them are skipped", w.limits.Entries))
			}
			break
		}
		batch, err := f.Readdirnames(min(readDirBatch, room))
		names = append(names, batch...)
		w.entries += len(batch)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(names)
	return names, nil
}

func (w *walker) subdir(dir int, name, shown string, depth int) error {
	if depth > w.limits.Depth {
		w.warn(fmt.Sprintf("folder %s is more than %d levels below the artifacts folder; its files are skipped", shown, w.limits.Depth))
		return nil
	}
	fd, _, err := openAt(dir, name, shown, true)
	if err != nil {
		w.skip(shown, err)
		return nil
	}
	f := os.NewFile(uintptr(fd), shown)
	defer f.Close()
	return w.dir(f, shown, depth)
}

func (w *walker) file(dir int, name, shown string) error {
	if w.files >= w.limits.Files {
		w.warn(fmt.Sprintf("artifact %s and any after it are skipped: a run uploads at most %d artifacts", shown, w.limits.Files))
		return errStop
	}
	fd, st, err := openAt(dir, name, shown, false)
	if err != nil {
		w.skip(shown, err)
		return nil
	}
	f := os.NewFile(uintptr(fd), shown)
	defer f.Close()
	switch {
	case st.Size > w.limits.FileBytes:
		w.skip(shown, tooLarge(shown, st.Size, w.limits.FileBytes))
		return nil
	case st.Size > w.limits.TotalBytes-w.bytes:
		w.warn(fmt.Sprintf("artifact %s is %d bytes, past the %d bytes a run's artifacts may take together; skipped", shown, st.Size, w.limits.TotalBytes))
		return nil
	case w.seen[name]:
		w.warn(fmt.Sprintf("artifact %s has the same name as another one; skipped", shown))
		return nil
	}
	data, err := readCapped(f, shown, st.Size, min(w.limits.FileBytes, w.limits.TotalBytes-w.bytes))
	if err != nil {
		w.skip(shown, err)
		return nil
	}
	w.seen[name] = true
	w.files++
	w.bytes += int64(len(data))
	return w.fn(Encode(name, TypeOf(name), "", data))
}

// skip warns of a file not read.
func (w *walker) skip(shown string, err error) {
	var refused *RefusedError
	if errors.As(err, &refused) {
		w.warn(fmt.Sprintf("artifact %s; skipped", refused.Error()))
		return
	}
	w.warn(fmt.Sprintf("artifact %s could not be read (%v); skipped", shown, err))
}
