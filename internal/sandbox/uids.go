package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// uidPool hands out the uids of the range, one per run. A uid is held by an
// flock on a file of its own, so the workers of one host never share one, and
// a worker that dies gives its uids back with its file descriptors.
type uidPool struct {
	dir         string
	first, size int
	mu          sync.Mutex
	next        int
}

func newUIDPool(dir string, first, size int) (*uidPool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the sandbox's uid locks in %s: %w", dir, err)
	}
	return &uidPool{dir: dir, first: first, size: size}, nil
}

// lease is one uid held.
type lease struct {
	uid  int
	file *os.File
}

// acquire takes a free uid; every process that still runs as it (left by a
// worker that died) is killed first, so the run starts alone.
func (p *uidPool) acquire() (*lease, error) {
	p.mu.Lock()
	start := p.next
	p.mu.Unlock()
	for i := 0; i < p.size; i++ {
		n := (start + i) % p.size
		uid := p.first + n
		f, err := os.OpenFile(filepath.Join(p.dir, strconv.Itoa(uid)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock sandbox uid %d: %w", uid, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue
			}
			return nil, fmt.Errorf("lock sandbox uid %d: %w", uid, err)
		}
		p.mu.Lock()
		p.next = (n + 1) % p.size
		p.mu.Unlock()
		killUID(uid)
		return &lease{uid: uid, file: f}, nil
	}
	return nil, fmt.Errorf("all %d sandbox uids (TASKWORKER_SANDBOX_UIDS) are in use: widen the range to at least the runs of all workers on this host", p.size)
}

func (l *lease) release() {
	killUID(l.uid)
	_ = syscall.Flock(int(l.file.Fd()), syscall.LOCK_UN)
	l.file.Close()
}
