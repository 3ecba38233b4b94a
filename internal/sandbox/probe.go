package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// host is what the machine lets the worker do.
type host struct {
	caps uint64
	// nsErr is why namespaces can't be made, nil when they can.
	nsErr error
	// usernsErr is the same for a worker that keeps its own uid.
	usernsErr error
}

// Capability bits of /proc/self/status's CapEff.
const (
	capChown    = 0
	capKill     = 5
	capSetgid   = 6
	capSetuid   = 7
	capSysAdmin = 21
)

func (h host) has(caps ...int) bool {
	for _, c := range caps {
		if h.caps&(1<<c) == 0 {
			return false
		}
	}
	return true
}

func probeHost() host {
	h := host{caps: effectiveCaps()}
	if h.has(capSetuid, capSetgid, capChown, capKill, capSysAdmin) {
		h.nsErr = tryNamespaces(true)
	} else {
		h.nsErr = fmt.Errorf("the worker lacks root's capabilities (uid %d)", os.Geteuid())
	}
	h.usernsErr = tryNamespaces(false)
	return h
}

// networkErr is why a run of the mode can't have a network namespace of its
// own, nil when it can: a host may allow user namespaces and refuse network
// ones, so it is asked where it matters.
func networkErr(mode Mode) error {
	if err := tryNamespacesWith(mode.ownUID(), true); err != nil {
		return fmt.Errorf("this host can't give a run a network namespace of its own: %v", err)
	}
	return nil
}

// provides says why mode can't run here, nil when it can.
func (h host) provides(mode Mode) error {
	switch mode {
	case Namespaces:
		if h.nsErr != nil {
			return fmt.Errorf("TASKWORKER_SANDBOX=namespaces can't run on this host: %v; run the worker as root on a host that allows user namespaces, or choose uid (a Kubernetes pod, see deploy/) — off only for trusted agents", h.nsErr)
		}
	case UserNS:
		if h.usernsErr != nil {
			return fmt.Errorf("TASKWORKER_SANDBOX=userns can't run on this host: %v; allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or AppArmor's restriction off) or choose another mode", h.usernsErr)
		}
	case UID:
		if !h.has(capSetuid, capSetgid, capChown, capKill) {
			return fmt.Errorf("TASKWORKER_SANDBOX=uid needs the capabilities SETUID, SETGID, CHOWN and KILL (root in the container; deploy/ grants exactly these), and this worker (uid %d) lacks them", os.Geteuid())
		}
	}
	return nil
}

// strongest is the best mode available, and why it is that one.
func (h host) strongest() (Mode, string) {
	switch {
	case h.nsErr == nil:
		return Namespaces, "the strongest this host offers"
	case h.provides(UID) == nil:
		return UID, "namespaces unavailable: " + h.nsErr.Error()
	case h.usernsErr == nil:
		return UserNS, "not root, so no uid of its own: " + h.nsErr.Error()
	}
	return Off, "this host offers no isolation: " + h.usernsErr.Error()
}

func effectiveCaps() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return caps
		}
	}
	return 0
}

// tryNamespaces starts the sandbox's init in probe mode in the namespaces a
// run gets: it makes its mounts private, a tmpfs and a /proc, and exits.
func tryNamespaces(ownUID bool) error { return tryNamespacesWith(ownUID, false) }

func tryNamespacesWith(ownUID, network bool) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the worker's own binary: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Path = "/proc/self/exe"
	cmd.Args = []string{probeArg0}
	cmd.Env = []string{}
	hostUID, hostGID := os.Getuid(), os.Getgid()
	if ownUID {
		// nobody's ids, which nothing of the worker's owns.
		hostUID, hostGID = 65534, 65534
	}
	cmd.SysProcAttr = namespaceAttrs(hostUID, hostGID, network)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("%s", msg)
		}
		if errno, ok := err.(*os.PathError); ok {
			return errno
		}
		return fmt.Errorf("start a process in new namespaces: %w", err)
	}
	return nil
}

// insideUID is the uid (and gid) a run has inside its user namespace: not
// root, so agents behave as they would for a user.
const insideUID = 1000

// namespaceAttrs starts a child as insideUID in new namespaces, mapped to
// hostUID, with the capabilities its init needs to build the root it runs in
// (the init drops them before it starts the agent).
func namespaceAttrs(hostUID, hostGID int, network bool) *syscall.SysProcAttr {
	flags := uintptr(syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS)
	if network {
		flags |= syscall.CLONE_NEWNET
	}
	return &syscall.SysProcAttr{
		Cloneflags:  flags,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: insideUID, HostID: hostUID, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: insideUID, HostID: hostGID, Size: 1}},
		Credential:  &syscall.Credential{Uid: insideUID, Gid: insideUID, NoSetGroups: true},
		AmbientCaps: []uintptr{capSysAdmin, 12 /* NET_ADMIN */, 18 /* SYS_CHROOT */},
		Setpgid:     true,
		Pdeathsig:   syscall.SIGKILL,
	}
}

// HostOffers says why this host can't run mode, nil when it can.
func HostOffers(mode Mode) error { return probeHost().provides(mode) }
