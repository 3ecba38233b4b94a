package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/taskworker/taskworker/internal/process"
)

// Dirs are the folders of one run.
type Dirs struct {
	// Writable are the run's own folders (clone, artifacts, HOME, results):
	// the only ones it may write. They are handed over to its uid.
	Writable []string
	// ReadOnly are more folders or files it may read (the agent's install).
	ReadOnly []string
	// Refresh are the writable folders handed over again before each
	// command, for what the worker put in them in between (the agent's
	// configuration in its HOME); small ones, as each is walked whole.
	Refresh []string
}

// Run is one isolated run: its uid and folders. Every command it runs
// (the agent, then the worker's export of its commits) runs isolated, and
// Close ends whatever is left.
type Run struct {
	s       *Sandbox
	lease   *lease
	dirs    Dirs
	gateway http.Handler
}

// Start prepares a run in dirs: a uid of its own (in the modes that give
// one), and its writable folders handed over to that uid.
func (s *Sandbox) Start(dirs Dirs) (*Run, error) {
	r := &Run{s: s, dirs: dirs}
	if s.uids != nil {
		l, err := s.uids.acquire()
		if err != nil {
			return nil, err
		}
		r.lease = l
	}
	if err := r.handOver(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// UID is the host uid the run's processes have; -1 when it is the worker's.
func (r *Run) UID() int {
	if r.lease == nil {
		return -1
	}
	return r.lease.uid
}

// Mode is the run's sandbox mode.
func (r *Run) Mode() Mode { return r.s.cfg.Mode }

// IsolatedNetwork reports a run with a network of its own, which reaches
// the worker (and, through it, anything) only at GatewayAddr.
func (r *Run) IsolatedNetwork() bool { return r.s.IsolatesNetwork() }

// ServeGateway answers the run's commands at GatewayAddr with h, from the
// worker, for a run with a network of its own; set it before the first.
func (r *Run) ServeGateway(h http.Handler) { r.gateway = h }

// Close kills everything still running as the run's uid, and gives the uid back.
func (r *Run) Close() {
	if r.lease != nil {
		r.lease.release()
		r.lease = nil
	}
}

// handOver gives the run's writable folders to its uid. It runs while none
// of the run's processes does (before the first, after the last is killed),
// so nothing can swap a directory for a symlink during the walk; symlinks
// found are changed themselves, never followed.
func (r *Run) handOver() error { return r.handOverDirs(r.dirs.Writable) }

func (r *Run) handOverDirs(dirs []string) error {
	if r.lease == nil {
		return nil
	}
	uid := r.lease.uid
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			// A file linked from elsewhere is not the run's to be given.
			if st, ok := info.Sys().(*syscall.Stat_t); ok && !info.IsDir() && st.Nlink > 1 {
				return nil
			}
			return os.Lchown(path, uid, uid)
		})
		if err != nil {
			return fmt.Errorf("hand %s over to the run's uid %d: %w", dir, uid, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("hand %s over to the run's uid %d: %w", dir, uid, err)
		}
	}
	if r.s.cfg.Mode == UID {
		// Without a mount namespace, the run reaches its folders by path.
		for _, dir := range r.dirs.Writable {
			if err := searchableByOthers(filepath.Dir(dir)); err != nil {
				return err
			}
		}
	}
	return nil
}

// searchableByOthers checks that every folder above a run's folder lets
// other uids through (x), so a run in the uid mode can reach its own.
func searchableByOthers(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if info.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("sandbox (uid mode): %s is not searchable by other users, so a run can't reach its workspace: chmod o+x %s or move TASKWORKER_WORKSPACE_DIR", d, d)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// Isolation is how the run's commands are isolated; nil in the off mode,
// where they run as plain children.
func (r *Run) Isolation() process.Isolation {
	if r.s.cfg.Mode == Off {
		return nil
	}
	return r
}

// Isolate implements process.Isolation.
func (r *Run) Isolate(path string, args []string, dir string, env []string) (process.Isolated, error) {
	spec := initSpec{
		Mode: r.s.cfg.Mode, Path: path, Args: args, Dir: dir, Env: env,
		Limits: r.s.cfg.Limits, Hostname: "sandbox",
		IsolateNetwork: r.IsolatedNetwork(),
	}
	if err := r.handOverDirs(r.dirs.Refresh); err != nil {
		return nil, err
	}
	inv := &invocation{run: r, spec: spec}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{initArg0}
	cmd.Env = []string{}
	cmd.Dir = "/"
	var files []*os.File
	if r.s.cfg.Mode.namespaced() {
		binds, opened, err := r.binds(path, env)
		if err != nil {
			return nil, err
		}
		files = opened
		inv.spec.Binds = binds
		hostUID, hostGID := os.Getuid(), os.Getgid()
		if r.lease != nil {
			hostUID, hostGID = r.lease.uid, r.lease.uid
		}
		cmd.SysProcAttr = namespaceAttrs(hostUID, hostGID, spec.IsolateNetwork)
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(r.lease.uid), Gid: uint32(r.lease.uid), Groups: []uint32{}},
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
		}
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		closeAll(files)
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		closeAll(append(files, specR, specW))
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	// The init's fds: 3 the spec, 4 its report, then the binds' sources,
	// then the end of the gateway's socket pair.
	cmd.ExtraFiles = append([]*os.File{specR, statusW}, files...)
	if spec.IsolateNetwork && r.gateway != nil {
		ours, theirs, err := socketPair()
		if err != nil {
			closeAll(append(cmd.ExtraFiles, specW, statusR))
			return nil, err
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
		inv.spec.GatewayFD = 2 + len(cmd.ExtraFiles)
		inv.spec.GatewayAddr = GatewayAddr
		inv.gateway = &gateway{handler: r.gateway, conn: ours}
	}
	inv.cmd, inv.specW, inv.statusR = cmd, specW, statusR
	inv.childEnds = cmd.ExtraFiles
	return inv, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// invocation is one command run isolated.
type invocation struct {
	run       *Run
	cmd       *exec.Cmd
	spec      initSpec
	specW     *os.File
	statusR   *os.File
	childEnds []*os.File
	gateway   *gateway
}

func (inv *invocation) Cmd() *exec.Cmd { return inv.cmd }

// Started hands the init its spec, which it waits for: by then the worker
// has done all it does to the process from outside.
func (inv *invocation) Started() error {
	closeAll(inv.childEnds)
	if inv.gateway != nil {
		go inv.gateway.serve()
	}
	err := json.NewEncoder(inv.specW).Encode(inv.spec)
	inv.specW.Close()
	if err != nil {
		return fmt.Errorf("sandbox: send the run's spec: %w", err)
	}
	return nil
}

// Abort releases what Isolate opened for a command that never started.
func (inv *invocation) Abort() {
	closeAll(append(inv.childEnds, inv.specW, inv.statusR))
	inv.gateway.close()
}

// Ended reads the init's report of how the command ended, and, without
// namespaces to end with the init, kills whatever the run left running.
func (inv *invocation) Ended(res *process.Result) error {
	defer inv.statusR.Close()
	defer inv.gateway.close()
	if inv.run.s.cfg.Mode == UID && inv.run.lease != nil {
		killUID(inv.run.lease.uid)
	}
	data, _ := io.ReadAll(io.LimitReader(inv.statusR, 64<<10))
	if len(strings.TrimSpace(string(data))) == 0 {
		// The init died before it could say (killed from outside, with the
		// run): the process's own status says how.
		return nil
	}
	var st initStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("sandbox: unreadable report from the run's init: %w", err)
	}
	if st.Error != "" {
		return &SetupError{Msg: st.Error}
	}
	res.ExitCode, res.Signal = st.Exit, st.Signal
	return nil
}

// SetupError is a sandbox that could not be built for a command.
type SetupError struct{ Msg string }

func (e *SetupError) Error() string { return "sandbox: " + e.Msg }

// IsSetupError reports a sandbox that could not be built.
func IsSetupError(err error) bool {
	var s *SetupError
	return errors.As(err, &s)
}

// systemPaths are what every run sees of the host, read-only: programs,
// libraries and their configuration. Nothing of the worker's is in them.
var systemPaths = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

// binds lists what the run's root is made of, and opens each source: the
// init mounts them from these descriptors, so it never resolves a host path
// itself (nor needs the right to walk the folders above them).
func (r *Run) binds(path string, env []string) ([]bind, []*os.File, error) {
	var binds []bind
	var files []*os.File
	fail := func(err error) ([]bind, []*os.File, error) {
		closeAll(files)
		return nil, nil, err
	}
	add := func(src, target string, writable bool) error {
		// A detached copy of the mount, made here in the worker's mount
		// namespace (the init can't bind from it) and locked read-only
		// before the run gets it, so the run can't make it writable again.
		flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_RECURSIVE)
		attrs := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
		if writable {
			// The run's own folders must be what the worker made, not a
			// symlink the run left there in an earlier turn.
			flags |= unix.AT_SYMLINK_NOFOLLOW
		} else {
			attrs |= unix.MOUNT_ATTR_RDONLY
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
		if err != nil {
			return fmt.Errorf("sandbox: open %s: %w", src, err)
		}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attrs}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("sandbox: lock %s: %w", src, err)
		}
		f := os.NewFile(uintptr(fd), src)
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			f.Close()
			return fmt.Errorf("sandbox: stat %s: %w", src, err)
		}
		files = append(files, f)
		binds = append(binds, bind{FD: firstBindFD + len(files) - 1, Target: target, Writable: writable, Detached: true,
			File: st.Mode&syscall.S_IFMT != syscall.S_IFDIR})
		return nil
	}
	for _, p := range systemPaths {
		info, err := os.Lstat(p)
		switch {
		case err != nil:
			continue
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return fail(fmt.Errorf("sandbox: %w", err))
			}
			binds = append(binds, bind{FD: -1, Target: p, Symlink: link})
		case info.IsDir():
			if err := add(p, p, false); err != nil {
				return fail(err)
			}
		}
	}
	for _, p := range r.readOnly(path, env) {
		if err := add(p, p, false); err != nil {
			return fail(err)
		}
	}
	for _, p := range append(append([]string(nil), r.s.cfg.Shared...), r.dirs.Writable...) {
		if err := add(p, p, true); err != nil {
			return fail(err)
		}
	}
	return binds, files, nil
}

// readOnly are the host paths a run sees beyond the system's: the
// configured ones, the agent's install (its binary, and the directories of
// its PATH), each only when the system paths don't already hold it.
func (r *Run) readOnly(path string, env []string) []string {
	want := append(append([]string(nil), r.s.cfg.ReadOnly...), r.dirs.ReadOnly...)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		want = append(want, filepath.Dir(path), filepath.Dir(real))
	}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			want = append(want, filepath.SplitList(v)...)
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range want {
		if !filepath.IsAbs(p) {
			continue
		}
		p = packageRoot(filepath.Clean(p))
		if seen[p] || underAny(p, systemPaths) || underAny(p, r.dirs.Writable) || underAny(p, r.s.cfg.Shared) || !exists(p) {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	// A folder that holds another makes the inner one needless.
	var kept []string
	for _, p := range out {
		if !underAny(p, without(out, p)) {
			kept = append(kept, p)
		}
	}
	return kept
}

// packageRoot widens a path inside an npm install to its node_modules: an
// npm binary is a symlink into a package that loads its siblings.
func packageRoot(p string) string {
	if i := strings.Index(p, "/node_modules/"); i >= 0 {
		return p[:i+len("/node_modules")]
	}
	return p
}

func underAny(p string, roots []string) bool {
	for _, root := range roots {
		if p == root || strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/") {
			return true
		}
	}
	return false
}

func without(list []string, drop string) []string {
	var out []string
	for _, s := range list {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
