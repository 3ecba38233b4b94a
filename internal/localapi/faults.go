package localapi

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// ControlUserAgent marks requests the faults never touch: a test's own
// reads of what the worker did.
const ControlUserAgent = "taskworker-control"

// Faults makes the local API fail the way a service under load does: 500,
// 502, 503 and 429 with Retry-After, slow answers, and "stored but answered
// 502". A test sets a rate, or an outage in which every request gets 503.
type Faults struct {
	mu     sync.Mutex
	rng    *rand.Rand
	rate   float64
	outage bool
	counts map[string]int
}

// NewFaults returns faults that start switched off.
func NewFaults(seed uint64) *Faults {
	return &Faults{rng: rand.New(rand.NewPCG(seed, seed+1)), counts: map[string]int{}}
}

// SetRate makes that share of requests fail (0 to 1).
func (f *Faults) SetRate(rate float64) { f.mu.Lock(); f.rate = rate; f.mu.Unlock() }

// SetOutage answers every request with 503 while on.
func (f *Faults) SetOutage(on bool) { f.mu.Lock(); f.outage = on; f.mu.Unlock() }

// Counts says how many of each fault were served.
func (f *Faults) Counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

func (f *Faults) pick(r *http.Request) string {
	if strings.HasPrefix(r.UserAgent(), ControlUserAgent) {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fault := ""
	switch {
	case f.outage:
		fault = "outage"
	case f.rate > 0 && f.rng.Float64() < f.rate:
		kinds := []string{"500", "502", "503", "429", "slow"}
		if r.Method != http.MethodGet {
			kinds = append(kinds, "stored-502")
		}
		fault = kinds[f.rng.IntN(len(kinds))]
	}
	if fault != "" {
		f.counts[fault]++
	}
	return fault
}

// wrap serves next through the faults.
func (f *Faults) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch f.pick(r) {
		case "":
			next.ServeHTTP(w, r)
		case "slow":
			time.Sleep(300 * time.Millisecond)
			next.ServeHTTP(w, r)
		case "stored-502":
			next.ServeHTTP(httptest.NewRecorder(), r)
			writeJSON(w, http.StatusBadGateway, map[string]string{"detail": "Bad gateway."})
		case "500":
			writeJSON(w, http.StatusInternalServerError, map[string]string{"detail": "A server error occurred."})
		case "502":
			writeJSON(w, http.StatusBadGateway, map[string]string{"detail": "Bad gateway."})
		case "429":
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"detail": "Request was throttled."})
		case "503", "outage":
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"detail": "Service unavailable."})
		}
	})
}
