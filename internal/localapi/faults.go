package localapi

import (
	"bytes"
	"io"
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
	// Targeted faults: by a string in the request's path, or in its body.
	forced      map[string]int  // path part → status code
	invalidJSON map[string]bool // path part → answer a broken body
	delays      map[string]time.Duration
}

// NewFaults returns faults that start switched off.
func NewFaults(seed uint64) *Faults {
	return &Faults{rng: rand.New(rand.NewPCG(seed, seed+1)), counts: map[string]int{},
		forced: map[string]int{}, invalidJSON: map[string]bool{}, delays: map[string]time.Duration{}}
}

// SetRate makes that share of requests fail (0 to 1).
func (f *Faults) SetRate(rate float64) { f.mu.Lock(); f.rate = rate; f.mu.Unlock() }

// SetOutage answers every request with 503 while on.
func (f *Faults) SetOutage(on bool) { f.mu.Lock(); f.outage = on; f.mu.Unlock() }

// Force answers every request whose path holds part (a task's ID, say) with code.
// A code of 0 takes it back.
func (f *Faults) Force(part string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if code == 0 {
		delete(f.forced, part)
		return
	}
	f.forced[part] = code
}

// InvalidJSON handles every request whose path holds part, then answers a
// body that is not JSON.
func (f *Faults) InvalidJSON(part string) { f.mu.Lock(); f.invalidJSON[part] = true; f.mu.Unlock() }

// Delay holds every request whose body holds part for d before handling it.
// A delay of 0 takes it back.
func (f *Faults) Delay(part string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d == 0 {
		delete(f.delays, part)
		return
	}
	f.delays[part] = d
}

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

// targeted finds the fault aimed at this request, if any.
func (f *Faults) targeted(r *http.Request, body []byte) (code int, invalid bool, delay time.Duration) {
	if strings.HasPrefix(r.UserAgent(), ControlUserAgent) {
		return 0, false, 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for part, c := range f.forced {
		if strings.Contains(r.URL.Path, part) {
			code = c
		}
	}
	for part := range f.invalidJSON {
		if strings.Contains(r.URL.Path, part) {
			invalid = true
		}
	}
	for part, d := range f.delays {
		if bytes.Contains(body, []byte(part)) {
			delay = d
		}
	}
	return code, invalid, delay
}

// wrap serves next through the faults.
func (f *Faults) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		code, invalid, delay := f.targeted(r, body)
		switch {
		case code != 0:
			writeJSON(w, code, map[string]string{"detail": http.StatusText(code)})
			return
		case invalid:
			next.ServeHTTP(httptest.NewRecorder(), r)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id": "truncated`))
			return
		case delay > 0:
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
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
