// Package fence keeps an older host attempt of a run from acting once the
// run has moved on. When the workflow decides that the worker holding a run
// is lost, it starts the run's workspace steps over on another worker — but a
// worker that is only cut off from Temporal is still alive, and its steps
// would go on working, streaming and pushing beside the new attempt's.
//
// Two things fence an attempt: its lease, kept by the heartbeats Temporal
// acknowledges and lost once none was for the heartbeat timeout (by then
// Temporal has given the run to another worker, or is about to), and the run's
// state, where each attempt records its number before it works: an attempt
// that reads a higher one has been superseded.
package fence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// StateKey is the key of a run's state that records the host attempt that
// holds the run. The API merges a PATCH's state into the stored one by its
// top-level keys, so writing it leaves PostHog's keys and the worker's others
// as they are.
const StateKey = "host_attempt"

// State is the state to PATCH for attempt to record that it holds the run.
func State(attempt int) map[string]any {
	return map[string]any{StateKey: attempt}
}

// Recorded is the attempt a run's state records; 0 when it records none (a
// run of a worker that did not record attempts) or something that is not a
// whole number.
func Recorded(state map[string]any) int {
	switch v := state[StateKey].(type) {
	case float64:
		if v == float64(int(v)) {
			return int(v)
		}
	case int:
		return v
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return int(n)
		}
	}
	return 0
}

// Check reports whether attempt own may still act on a run whose state is
// state: a SupersededError once the state records a later attempt. An
// attempt of 0 comes from a workflow that did not number its attempts, and
// is never fenced.
func Check(state map[string]any, own int) error {
	if recorded := Recorded(state); own > 0 && recorded > own {
		return &SupersededError{Own: own, Recorded: recorded}
	}
	return nil
}

// SupersededError is an attempt whose run records a later one.
type SupersededError struct{ Own, Recorded int }

func (e *SupersededError) Error() string {
	return fmt.Sprintf("host attempt %d of this run was superseded: attempt %d holds it now, on another worker", e.Own, e.Recorded)
}

// LeaseLostError is an attempt none of whose heartbeats reached Temporal for
// its heartbeat timeout.
type LeaseLostError struct{ After time.Duration }

func (e *LeaseLostError) Error() string {
	return fmt.Sprintf("no heartbeat of this worker reached Temporal for %s (the heartbeat timeout): the run goes on on another worker", e.After)
}

// Lease is a step's hold on its attempt. It is lost once Renew was not
// called for its ttl, or at once by Lose; then lost is called, once.
type Lease struct {
	ttl     time.Duration
	mu      sync.Mutex
	timer   *time.Timer
	err     error
	stopped bool
	lost    func(error)
}

// NewLease starts a lease of ttl, renewed as of now.
func NewLease(ttl time.Duration, lost func(error)) *Lease {
	l := &Lease{ttl: ttl, lost: lost}
	l.timer = time.AfterFunc(ttl, func() { l.Lose(&LeaseLostError{After: ttl}) })
	return l
}

// Renew extends the lease by its ttl from now; a lost lease stays lost.
func (l *Lease) Renew() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil && !l.stopped {
		l.timer.Reset(l.ttl)
	}
}

// Lose ends the lease now, for err; a lease already lost keeps its reason.
func (l *Lease) Lose(err error) {
	l.mu.Lock()
	if l.err != nil || l.stopped {
		l.mu.Unlock()
		return
	}
	l.err = err
	l.timer.Stop()
	l.mu.Unlock()
	l.lost(err)
}

// Err is why the lease was lost; nil while it holds.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stop ends the lease's clock without losing it: its step is over.
func (l *Lease) Stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	l.timer.Stop()
}

// Cause is why ctx was fenced: a *LeaseLostError or *SupersededError it was
// cancelled with, nil otherwise (a cancel of the run's, say).
func Cause(ctx context.Context) error {
	cause := context.Cause(ctx)
	var lost *LeaseLostError
	var superseded *SupersededError
	if errors.As(cause, &lost) || errors.As(cause, &superseded) {
		return cause
	}
	return nil
}

// Fenced reports whether err says an attempt was fenced.
func Fenced(err error) bool {
	var lost *LeaseLostError
	var superseded *SupersededError
	return errors.As(err, &lost) || errors.As(err, &superseded)
}
