package e2e

import (
	"net"
	"sync"
	"testing"
)

// partition is the network between one daemon and Temporal, as a TCP proxy
// the test can cut and heal. Cut, it delivers nothing either way: what each
// side sends waits, connections stay open and new ones are accepted, as over
// a network that has stopped carrying packets — the daemon's calls are not
// refused, they go unanswered. Healed, it delivers what waited, in order, as
// TCP does once the packets get through again.
type partition struct {
	listener net.Listener
	target   string
	mu       sync.Mutex
	whole    *sync.Cond
	cut      bool
	conns    []net.Conn
}

func newPartition(t *testing.T, target string) *partition {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &partition{listener: l, target: target}
	p.whole = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is where the daemon reaches Temporal.
func (p *partition) Addr() string { return p.listener.Addr().String() }

// Cut stops delivering anything, on every connection.
func (p *partition) Cut() { p.set(true) }

// Heal delivers again, what waited first.
func (p *partition) Heal() { p.set(false) }

func (p *partition) set(cut bool) {
	p.mu.Lock()
	p.cut = cut
	p.mu.Unlock()
	p.whole.Broadcast()
}

// waitWhole returns once the network is not cut.
func (p *partition) waitWhole() {
	p.mu.Lock()
	for p.cut {
		p.whole.Wait()
	}
	p.mu.Unlock()
}

func (p *partition) accept() {
	for {
		down, err := p.listener.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		go p.carry(up, down)
		go p.carry(down, up)
	}
}

// carry copies from src to dst, holding what src sends while the network is
// cut (a read that began before the cut included).
func (p *partition) carry(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		p.waitWhole()
		n, err := src.Read(buf)
		if n > 0 {
			p.waitWhole()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}

func (p *partition) close() {
	p.listener.Close()
	p.set(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
