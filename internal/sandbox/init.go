package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The worker's binary is also the run's init: started again under these
// names, it does the init's job instead of the worker's (as a container
// runtime's init does), so the sandbox needs no binary of its own.
const (
	initArg0  = "taskworker-sandbox-init"
	probeArg0 = "taskworker-sandbox-probe"
	killArg0  = "taskworker-sandbox-kill"
)

// The init's file descriptors.
const (
	specFD      = 3
	statusFD    = 4
	firstBindFD = 5
)

func init() {
	if len(os.Args) == 0 {
		return
	}
	switch os.Args[0] {
	case initArg0:
		runInit()
	case probeArg0:
		runProbe()
	case killArg0:
		runKill()
	}
}

// initSpec is what the worker tells the init to run, and how.
type initSpec struct {
	Mode           Mode     `json:"mode"`
	Path           string   `json:"path"`
	Args           []string `json:"args"`
	Dir            string   `json:"dir"`
	Env            []string `json:"env"`
	Binds          []bind   `json:"binds,omitempty"`
	Limits         Limits   `json:"limits"`
	Hostname       string   `json:"hostname"`
	IsolateNetwork bool     `json:"isolate_network"`
	// GatewayFD, when set, is the socket the init hands the listener at
	// GatewayAddr to the worker through.
	GatewayFD   int    `json:"gateway_fd,omitempty"`
	GatewayAddr string `json:"gateway_addr,omitempty"`
}

// bind is a path of the run's root: a mount of an open descriptor's file,
// or a symlink.
type bind struct {
	FD       int    `json:"fd"`
	Target   string `json:"target"`
	Writable bool   `json:"writable,omitempty"`
	File     bool   `json:"file,omitempty"`
	// Detached is a mount tree the worker cloned and locked for the run.
	Detached bool   `json:"detached,omitempty"`
	Symlink  string `json:"symlink,omitempty"`
}

// initStatus is the init's report: how the command ended, or why it never
// started.
type initStatus struct {
	Exit   int    `json:"exit"`
	Signal string `json:"signal,omitempty"`
	Error  string `json:"error,omitempty"`
}

func report(st initStatus) {
	f := os.NewFile(statusFD, "status")
	_ = json.NewEncoder(f).Encode(st)
	f.Close()
}

func fatalf(format string, args ...any) {
	report(initStatus{Error: fmt.Sprintf(format, args...)})
	// Nothing of the run may outlive a failed init.
	_ = syscall.Kill(-1, syscall.SIGKILL)
	os.Exit(125)
}

// runInit builds the run's world, starts the command in it, and stays as
// its init: it reaps what is orphaned, passes the worker's stop signal to
// every process of the run, and when the command ends, kills the rest.
func runInit() {
	// Capabilities, no_new_privs and the ambient set are per thread: the
	// command is started from this one.
	runtime.LockOSThread()
	for _, fd := range []int{specFD, statusFD} {
		syscall.CloseOnExec(fd)
	}
	var spec initSpec
	specFile := os.NewFile(specFD, "spec")
	if err := json.NewDecoder(specFile).Decode(&spec); err != nil {
		fatalf("read the run's spec: %v", err)
	}
	specFile.Close()
	if spec.GatewayFD > 0 {
		syscall.CloseOnExec(spec.GatewayFD)
	}
	if spec.Mode.namespaced() {
		if err := buildRoot(spec); err != nil {
			fatalf("%v", err)
		}
	} else {
		// Without a PID namespace, what the command orphans comes back to
		// the init, which then sees (and reaps) the whole tree.
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	for _, b := range spec.Binds {
		if b.FD >= 0 {
			syscall.Close(b.FD)
		}
	}
	if err := applyLimits(spec.Limits); err != nil {
		fatalf("%v", err)
	}
	// Nothing the run executes gains a privilege (setuid binaries, file
	// capabilities), and the init's capabilities stay with the init.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fatalf("no_new_privs: %v", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		fatalf("drop ambient capabilities: %v", err)
	}
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	proc, err := os.StartProcess(spec.Path, append([]string{spec.Path}, spec.Args...), &os.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		// A session of its own, without the worker's terminal: nothing it
		// runs can type into the terminal the worker was started from.
		Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true},
	})
	if err != nil {
		fatalf("start %s: %v", spec.Path, err)
	}
	os.Stdin.Close()
	go func() {
		for sig := range signals {
			// Every process of the run, whatever group or session it is in.
			_ = syscall.Kill(-1, sig.(syscall.Signal))
		}
	}()
	st := reap(proc.Pid)
	_ = syscall.Kill(-1, syscall.SIGKILL)
	// Reaped here, the run's processes are gone before its uid is given to
	// another: zombies would still count against its process limit.
	reapAll()
	report(st)
	os.Exit(0)
}

// reap waits for every child until the command itself ends.
func reap(pid int) initStatus {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return initStatus{Exit: -1, Error: fmt.Sprintf("wait for %d: %v", pid, err)}
		}
		if got != pid {
			continue
		}
		if ws.Signaled() {
			return initStatus{Exit: -1, Signal: ws.Signal().String()}
		}
		return initStatus{Exit: ws.ExitStatus()}
	}
}

// reapAll waits for every child left, killed a moment ago.
func reapAll() {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
	}
}

func applyLimits(l Limits) error {
	set := func(name string, resource int, v uint64) error {
		if v == 0 {
			return nil
		}
		if err := syscall.Setrlimit(resource, &syscall.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("limit %s to %d: %w", name, v, err)
		}
		return nil
	}
	for _, lim := range []struct {
		name     string
		resource int
		value    uint64
	}{
		{"processes", unix.RLIMIT_NPROC, uint64(max(l.Processes, 0))},
		{"file size", syscall.RLIMIT_FSIZE, uint64(max(l.FileBytes, 0))},
		{"memory", syscall.RLIMIT_AS, uint64(max(l.MemoryBytes, 0))},
	} {
		if err := set(lim.name, lim.resource, lim.value); err != nil {
			return err
		}
	}
	// No core dumps: they would hold whatever the run had in memory.
	return set("core dumps", syscall.RLIMIT_CORE, 0)
}

// buildRoot gives the init a root of its own, made of the spec's binds over
// an empty tmpfs, and leaves nothing of the host's mounts reachable.
func buildRoot(spec initSpec) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// The new root is built where the host's /tmp was: a place that exists
	// everywhere and that, once pivoted away, nothing refers to.
	root := "/tmp"
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("mount the run's root: %w", err)
	}
	in := func(p string) string { return filepath.Join(root, p) }
	tmpSize := spec.Limits.TmpBytes
	if tmpSize <= 0 {
		tmpSize = DefaultTmpBytes
	}
	if err := mountTmpfs(in("/tmp"), fmt.Sprintf("mode=1777,size=%d", tmpSize)); err != nil {
		return err
	}
	binds := append([]bind(nil), spec.Binds...)
	// Parents before what is mounted inside them.
	sort.SliceStable(binds, func(i, j int) bool { return depth(binds[i].Target) < depth(binds[j].Target) })
	for _, b := range binds {
		if err := mountBind(in(b.Target), b); err != nil {
			return err
		}
	}
	if err := buildDev(in("/dev")); err != nil {
		return err
	}
	if err := os.MkdirAll(in("/proc"), 0o555); err != nil {
		return fmt.Errorf("create /proc: %w", err)
	}
	if err := unix.Mount("proc", in("/proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, p := range []string{"/run", "/var/tmp"} {
		if err := mountTmpfs(in(p), "mode=1777,size=1m"); err != nil {
			return err
		}
	}
	if err := os.Chdir(root); err != nil {
		return fmt.Errorf("enter the run's root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot into the run's root: %w", err)
	}
	// The host's root is stacked under the new one: detach it, so nothing of
	// it can be reached or mounted again.
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make the run's root read-only: %w", err)
	}
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fmt.Errorf("set the hostname: %w", err)
	}
	if spec.IsolateNetwork {
		if err := loopbackUp(); err != nil {
			return err
		}
		if spec.GatewayFD > 0 {
			if err := listenGateway(spec.GatewayFD, spec.GatewayAddr); err != nil {
				return err
			}
		}
	}
	return nil
}

// DefaultTmpBytes is the size of a run's private /tmp.
const DefaultTmpBytes = 1 << 30

func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }

func mountTmpfs(target, opts string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", target, err)
	}
	return nil
}

func mountBind(target string, b bind) error {
	if b.Symlink != "" {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(target), err)
		}
		if err := os.Symlink(b.Symlink, target); err != nil {
			return fmt.Errorf("symlink %s: %w", target, err)
		}
		return nil
	}
	if b.File {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(target), err)
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", target, err)
		}
		f.Close()
	} else if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	if b.Detached {
		if err := unix.MoveMount(b.FD, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("mount %s: %w", target, err)
		}
		return nil
	}
	src := fmt.Sprintf("/proc/self/fd/%d", b.FD)
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", target, err)
	}
	return nil
}

// buildDev is a /dev of the harmless devices only.
func buildDev(dev string) error {
	if err := mountTmpfs(dev, "mode=0755,size=64k"); err != nil {
		return err
	}
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		fd, err := unix.Open("/dev/"+name, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		err = mountBind(filepath.Join(dev, name), bind{FD: fd, File: true, Writable: true})
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	for link, to := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(to, filepath.Join(dev, link)); err != nil {
			return fmt.Errorf("create /dev/%s: %w", link, err)
		}
	}
	return mountTmpfs(filepath.Join(dev, "shm"), "mode=1777,size=64m")
}

// loopbackUp brings up lo, the only interface of a run's own network.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	defer unix.Close(fd)
	var req [unix.IFNAMSIZ + 24]byte
	copy(req[:], "lo")
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		return fmt.Errorf("bring up loopback: %w", errno)
	}
	flags := (*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ]))
	*flags |= unix.IFF_UP
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		return fmt.Errorf("bring up loopback: %w", errno)
	}
	return nil
}

// runKill runs as a run's uid and kills every process of that uid:
// kill(-1) reaches each process the caller may signal, whatever it did to
// hide (a session of its own, a zombie leader with live threads), and the
// kernel takes it as one step that a fork can't outrun.
func runKill() {
	for i := 0; i < 1000; i++ {
		if err := syscall.Kill(-1, syscall.SIGKILL); err == syscall.ESRCH {
			os.Exit(0)
		}
	}
	os.Exit(1)
}

// runProbe is the init's dry run: the mounts a run's root starts with.
func runProbe() {
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail("make mounts private", err)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m"); err != nil {
		fail("mount a tmpfs", err)
	}
	if err := os.MkdirAll("/tmp/proc", 0o555); err != nil {
		fail("create /proc", err)
	}
	if err := unix.Mount("proc", "/tmp/proc", "proc", 0, ""); err != nil {
		fail("mount /proc", err)
	}
	os.Exit(0)
}
