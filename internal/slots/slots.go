// Package slots counts the runs a worker has claimed, so it never takes more
// than it was sized for.
package slots

import (
	"sync"
	"time"
)

// Pool holds up to a fixed number of claims, each keyed by run and expiring
// on its own, so a run whose workflow vanished can't keep its slot forever.
type Pool struct {
	mu     sync.Mutex
	closed bool
	size   int
	claims map[string]time.Time
	now    func() time.Time
}

// New returns a pool of size slots.
func New(size int) *Pool {
	return &Pool{size: size, claims: map[string]time.Time{}, now: time.Now}
}

// Acquire claims a slot for key until ttl passes or Release; claiming again
// for a key that holds one renews it. It reports false when the pool is full.
func (p *Pool) Acquire(key string, ttl time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.expire(now)
	if _, held := p.claims[key]; !held && (p.closed || len(p.claims) >= p.size) {
		return false
	}
	p.claims[key] = now.Add(ttl)
	return true
}

// Release frees key's slot; releasing a free key does nothing.
func (p *Pool) Release(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.claims, key)
}

// expire forgets the claims past their expiry; the caller holds mu.
func (p *Pool) expire(now time.Time) {
	for k, expiry := range p.claims {
		if now.After(expiry) {
			delete(p.claims, k)
		}
	}
}

// Held reports whether key holds an unexpired claim.
func (p *Pool) Held(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	expiry, ok := p.claims[key]
	return ok && !p.now().After(expiry)
}

// InUse is how many slots are claimed; an expired claim holds none, so a
// drain doesn't wait on a run whose workflow is gone.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(p.now())
	return len(p.claims)
}

// Close makes the pool decline every new claim; claims held stay until released.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
}
