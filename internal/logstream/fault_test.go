package logstream

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// faultyAPI is an append_log endpoint that misbehaves the way a real service
// under load does. It stores what it accepts, in order, by event_id.
type faultyAPI struct {
	mu        sync.Mutex
	rng       *rand.Rand
	stored    []string
	outage    bool
	requests  int
	faults    map[string]int
	faultRate float64
}

func (f *faultyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Entries []struct {
			EventID string `json:"event_id"`
		} `json:"entries"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Entries) == 0 {
		http.Error(w, `{"detail":"bad body"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.requests++
	fault := ""
	switch {
	case f.outage:
		fault = "outage"
	case f.rng.Float64() < f.faultRate:
		fault = []string{"500", "502", "503", "429", "slow", "reset", "stored-502"}[f.rng.IntN(7)]
	}
	f.faults[fault]++
	store := func() {
		for _, e := range body.Entries {
			f.stored = append(f.stored, e.EventID)
		}
	}
	if fault == "" || fault == "stored-502" || fault == "slow" {
		store()
	}
	f.mu.Unlock()

	switch fault {
	case "", "slow":
		if fault == "slow" {
			time.Sleep(100 * time.Millisecond)
		}
		_, _ = w.Write([]byte(`{}`))
	case "reset":
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	case "503", "outage":
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusServiceUnavailable)
	case "429":
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
	case "500":
		w.WriteHeader(http.StatusInternalServerError)
	case "502", "stored-502":
		w.WriteHeader(http.StatusBadGateway)
	}
}

func (f *faultyAPI) setOutage(on bool) {
	f.mu.Lock()
	f.outage = on
	f.mu.Unlock()
}

// outageAnswers is how many requests the outage has refused.
func (f *faultyAPI) outageAnswers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.faults["outage"]
}

func (f *faultyAPI) storedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.stored...)
}

// TestNothingIsLostThroughFaultsAndAnOutage emits 200,000 lines while the API
// fails 30% of requests in every way it can, and goes down for as long as it
// takes the sender to be refused again and again with entries waiting on
// disk: the outage ends on what the test sees, not after a set time.
func TestNothingIsLostThroughFaultsAndAnOutage(t *testing.T) {
	t.Parallel()
	api := &faultyAPI{rng: rand.New(rand.NewPCG(1, 2)), faults: map[string]int{}, faultRate: 0.3}
	srv := httptest.NewServer(api)
	defer srv.Close()
	client := tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1",
		RetryWait: time.Millisecond, RetryMaxWait: 10 * time.Millisecond, RequestTimeout: 5 * time.Second})
	spillDir := t.TempDir()
	const memory = 256 << 10
	s := New(client, "task", "run", redact.New(), Config{
		MemoryBytes: memory, SpillDir: spillDir, RetryWait: time.Millisecond, RetryMaxWait: 50 * time.Millisecond,
	})

	const total = 200_000
	emitted := make([]string, 0, total)
	var mu sync.Mutex
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			e := acp.Console(acp.LevelInfo, fmt.Sprintf("line %06d of the agent's output", i))
			e.EventID = fmt.Sprintf("evt-%06d", i)
			mu.Lock()
			emitted = append(emitted, e.EventID)
			mu.Unlock()
			s.Emit(e)
		}
	}

	produce(0, total/2)
	// The API goes down; the agent keeps writing. Entries beyond the memory
	// bound wait in the spill file.
	api.setOutage(true)
	produce(total/2, total)
	require.Eventually(t, func() bool {
		files, _ := os.ReadDir(spillDir)
		for _, f := range files {
			if info, err := f.Info(); err == nil && info.Size() > memory {
				return true
			}
		}
		return false
	}, time.Minute, 10*time.Millisecond, "entries past the memory bound wait in a spill file")
	// The sender keeps trying through the outage, backing off, and gives
	// nothing up: refused this often, it has ridden out many of its waits.
	const refusals = 20
	require.Eventually(t, func() bool { return api.outageAnswers() >= refusals }, time.Minute, 10*time.Millisecond,
		"the sender retries through the outage")
	api.setOutage(false)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stats, err := s.Close(ctx)
	require.NoError(t, err)
	require.Zero(t, stats.Dropped)
	require.Greater(t, stats.SpilledBytes, int64(memory))

	// Every event_id at least once, first occurrences in production order,
	// and nothing that was not emitted.
	stored := api.storedIDs()
	seen := map[string]bool{}
	var firsts []string
	for _, id := range stored {
		if !seen[id] {
			seen[id] = true
			firsts = append(firsts, id)
		}
	}
	require.Equal(t, emitted, firsts)
	t.Logf("requests %d, stored %d (%d duplicates from ambiguous answers), faults %v, spilled %d bytes",
		api.requests, len(stored), len(stored)-len(firsts), api.faults, stats.SpilledBytes)
	require.Positive(t, api.faults["stored-502"], "the ambiguous answer was exercised")
	files, _ := os.ReadDir(spillDir)
	require.Empty(t, files, "the spill file is gone once drained")
}

func TestALogPastItsCapIsCountedNotSent(t *testing.T) {
	srv := &logServer{}
	s := newStream(t, srv, Config{MaxBytes: 10 << 10})
	for i := range 1000 {
		s.Console(acp.LevelInfo, fmt.Sprintf("line %d", i))
	}
	stats := closeStream(t, s)
	msgs := srv.messages()
	require.Less(t, len(msgs), 1000)
	last := msgs[len(msgs)-1]
	require.Contains(t, last, fmt.Sprintf("log cut: %d entries", stats.CutEntries))
	require.Equal(t, 1000, len(msgs)-1+stats.CutEntries, "every entry was either sent or counted")
	require.Equal(t, "line 0", msgs[0])
}
