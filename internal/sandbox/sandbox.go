// Package sandbox runs a command as an untrusted run: a uid of its own, its
// own namespaces where the host allows them, limits, and nothing of the worker
// in reach; ending it ends everything it started.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Mode is how strongly runs are isolated.
type Mode string

// The modes, strongest first.
const (
	// Namespaces runs each run as a uid of its own from the configured
	// range, in its own user, PID, mount, IPC, UTS and (optionally) network
	// namespaces, with a root filesystem of its own. Needs a worker that is
	// root on the host and user namespaces allowed: VMs, CI, bare metal.
	Namespaces Mode = "namespaces"
	// UserNS is Namespaces for a worker that is not root: the same
	// namespaces, but the run keeps the worker's uid. For local use.
	UserNS Mode = "userns"
	// UID runs each run as a uid of its own with limits and no_new_privs,
	// without namespaces: a standard Kubernetes pod (root in a pod with
	// hostUsers: false and the capabilities deploy/ grants).
	UID Mode = "uid"
	// Off runs the agent as the worker's own child: only for trusted agents.
	Off Mode = "off"
	// Auto picks the strongest mode the host offers (the local stack).
	Auto Mode = "auto"
)

// Network says what the run's network is.
type Network string

// The networks.
const (
	// NetworkHost shares the worker's network.
	NetworkHost Network = "host"
	// NetworkIsolated gives the run a network namespace of its own, with
	// loopback only: its one way out is the gateway the worker serves in it
	// at GatewayAddr (the model broker and the egress proxy).
	NetworkIsolated Network = "isolated"
	// networkNone is the earlier name of NetworkIsolated.
	networkNone Network = "none"
)

// GatewayAddr is where a run with a network of its own reaches the worker.
const GatewayAddr = "127.0.0.1:3128"

// Config is the sandbox's configuration.
type Config struct {
	Mode Mode
	// FirstUID and UIDCount are the host uids (and gids) runs get, one each.
	FirstUID int
	UIDCount int
	Network  Network
	// Limits apply to each run.
	Limits Limits
	// ReadOnly are more host paths the run sees, read-only (toolchains
	// outside /usr and /opt).
	ReadOnly []string
	// Shared are host folders every run may write, as they are (a package
	// cache): what one run leaves there, the next may read.
	Shared []string
	// StateDir holds the locks of the uids in use (shared by the workers of
	// one host, so two never hand out the same uid).
	StateDir string
}

// Limits bound one run. Zero means no limit.
type Limits struct {
	Processes   int
	MemoryBytes int64
	FileBytes   int64
	// TmpBytes is the size of the run's private /tmp (namespaced modes).
	TmpBytes int64
}

// Defaults of Config.
const (
	DefaultFirstUID = 200000
	DefaultUIDCount = 1000
)

// Sandbox hands out isolated runs.
type Sandbox struct {
	cfg  Config
	uids *uidPool
	// why says why Auto picked the mode it did.
	why string
}

// New checks that the host can provide cfg.Mode (resolving Auto to the
// strongest mode it can) and returns the sandbox. A mode the host can't
// provide, or a uid range that includes the worker's own ids, is an error
// that says what to change.
func New(cfg Config) (*Sandbox, error) {
	if cfg.Network == networkNone {
		cfg.Network = NetworkIsolated
	}
	if cfg.Network != "" && cfg.Network != NetworkHost && cfg.Network != NetworkIsolated {
		return nil, fmt.Errorf("TASKWORKER_SANDBOX_NETWORK %q is not host or isolated", cfg.Network)
	}
	if cfg.FirstUID == 0 && cfg.UIDCount == 0 {
		cfg.FirstUID, cfg.UIDCount = DefaultFirstUID, DefaultUIDCount
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(os.TempDir(), "taskworker-sandbox")
	}
	s := &Sandbox{cfg: cfg}
	host := probeHost()
	switch cfg.Mode {
	case Auto:
		s.cfg.Mode, s.why = host.strongest()
	case Namespaces, UserNS, UID, Off:
		if err := host.provides(cfg.Mode); err != nil {
			return nil, err
		}
	case "":
		return nil, errors.New("TASKWORKER_SANDBOX is not set: choose namespaces, userns, uid or off (see docs/security.md)")
	default:
		return nil, fmt.Errorf("TASKWORKER_SANDBOX %q is not one of namespaces, userns, uid, off", cfg.Mode)
	}
	if s.cfg.Mode.ownUID() {
		if err := checkRange(cfg.FirstUID, cfg.UIDCount); err != nil {
			return nil, err
		}
		pool, err := newUIDPool(filepath.Join(cfg.StateDir, "uids"), cfg.FirstUID, cfg.UIDCount)
		if err != nil {
			return nil, err
		}
		s.uids = pool
	}
	if s.cfg.Network == "" {
		// A run that has namespaces gets a network of its own: egress is
		// closed unless the policy opens it.
		s.cfg.Network = NetworkHost
		if s.cfg.Mode.namespaced() {
			s.cfg.Network = NetworkIsolated
		}
	}
	if s.cfg.Mode.namespaced() && s.cfg.Network == NetworkIsolated {
		if err := networkErr(s.cfg.Mode); err != nil {
			if cfg.Mode != Auto {
				return nil, fmt.Errorf("TASKWORKER_SANDBOX_NETWORK=isolated (the default of %s): %v; set TASKWORKER_SANDBOX_NETWORK=host to give runs the worker's network, without the egress policy", s.cfg.Mode, err)
			}
			s.cfg.Network = NetworkHost
			s.why += "; network host: " + err.Error()
		}
	}
	if s.cfg.Mode == Off && s.cfg.Network == NetworkIsolated {
		return nil, errors.New("TASKWORKER_SANDBOX_NETWORK=isolated needs a namespaced sandbox (TASKWORKER_SANDBOX=namespaces or userns)")
	}
	if s.cfg.Mode == UID && s.cfg.Network == NetworkIsolated {
		return nil, errors.New("TASKWORKER_SANDBOX_NETWORK=isolated needs network namespaces, which the uid mode has none of: use namespaces, or set host and bound egress with the pod's NetworkPolicy")
	}
	return s, nil
}

// Mode is the mode runs get (Auto resolved).
func (s *Sandbox) Mode() Mode { return s.cfg.Mode }

// IsolatesNetwork reports runs that get a network of their own.
func (s *Sandbox) IsolatesNetwork() bool {
	return s.cfg.Mode.namespaced() && s.cfg.Network == NetworkIsolated
}

// Describe says in a line what runs get, e.g. for the start-up log.
func (s *Sandbox) Describe() string {
	var b strings.Builder
	b.WriteString(string(s.cfg.Mode))
	switch s.cfg.Mode {
	case Off:
		b.WriteString(": agents run as the worker's own children, with its uid and its view of the machine")
	case UserNS:
		b.WriteString(": own namespaces, the worker's uid")
	default:
		fmt.Fprintf(&b, ": uids %d-%d", s.cfg.FirstUID, s.cfg.FirstUID+s.cfg.UIDCount-1)
	}
	if s.cfg.Mode.namespaced() {
		fmt.Fprintf(&b, ", network %s", s.cfg.Network)
	}
	if s.why != "" {
		b.WriteString(" (" + s.why + ")")
	}
	return b.String()
}

// Warning is what every run's log says when the mode doesn't isolate the
// agent from the worker; "" when it does.
func (s *Sandbox) Warning() string {
	switch s.cfg.Mode {
	case Off:
		return "the sandbox is off (TASKWORKER_SANDBOX=off): the agent runs with the worker's uid and can reach its credentials, its other runs and its git"
	case UserNS:
		return "the sandbox runs the agent with the worker's uid (TASKWORKER_SANDBOX=userns): use namespaces (as root) or uid for untrusted agents"
	}
	return ""
}

func (m Mode) ownUID() bool     { return m == Namespaces || m == UID }
func (m Mode) namespaced() bool { return m == Namespaces || m == UserNS }

// checkRange refuses a uid range that holds the worker's own uid or gid, or
// root's: a run must never share an id with anything it could then act as.
func checkRange(first, count int) error {
	for _, id := range []struct {
		name  string
		value int
	}{{"uid", os.Getuid()}, {"gid", os.Getgid()}, {"effective uid", os.Geteuid()}} {
		if id.value >= first && id.value < first+count {
			return fmt.Errorf("TASKWORKER_SANDBOX_UIDS %d-%d includes the worker's own %s %d: runs would act as the worker; choose a range that doesn't, e.g. %d-%d",
				first, first+count-1, id.name, id.value, DefaultFirstUID, DefaultFirstUID+DefaultUIDCount-1)
		}
	}
	if first <= 0 || count <= 0 || first+count > 1<<31 {
		return fmt.Errorf("TASKWORKER_SANDBOX_UIDS %d-%d is not a range of positive uids: set it to FIRST-LAST, e.g. %d-%d",
			first, first+count-1, DefaultFirstUID, DefaultFirstUID+DefaultUIDCount-1)
	}
	return nil
}

// ParseUIDRange reads "FIRST-LAST".
func ParseUIDRange(s string) (first, count int, err error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, errA := strconv.Atoi(lo)
	b, errB := strconv.Atoi(hi)
	if !ok || errA != nil || errB != nil || b < a {
		return 0, 0, fmt.Errorf("TASKWORKER_SANDBOX_UIDS %q is not FIRST-LAST, e.g. %d-%d", s, DefaultFirstUID, DefaultFirstUID+DefaultUIDCount-1)
	}
	return a, b - a + 1, nil
}

// ProtectWorker makes the worker's memory, environment and file descriptors
// unreadable through /proc and ptrace by any process that is not root.
func ProtectWorker() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return fmt.Errorf("make the worker non-dumpable: %w", errno)
	}
	return nil
}
