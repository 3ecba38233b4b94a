package logstream

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// logServer is an append_log endpoint that stores entries in order and can
// be told to fail.
type logServer struct {
	mu       sync.Mutex
	entries  []map[string]any
	batches  []int
	inFlight atomic.Int32
	maxSeen  atomic.Int32
	// fail decides the answer to a batch; 0 stores it.
	fail func(entries []map[string]any) int
}

func (s *logServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxSeen.Load()
		if n <= m || s.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	var body struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Entries) == 0 {
		http.Error(w, `{"detail":"bad body"}`, http.StatusBadRequest)
		return
	}
	if s.fail != nil {
		if code := s.fail(body.Entries); code != 0 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(code)
			_, _ = fmt.Fprintf(w, `{"detail":"entry refused"}`)
			return
		}
	}
	s.mu.Lock()
	s.entries = append(s.entries, body.Entries...)
	s.batches = append(s.batches, len(body.Entries))
	s.mu.Unlock()
	_, _ = w.Write([]byte(`{}`))
}

func (s *logServer) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.entries {
		params := e["notification"].(map[string]any)["params"].(map[string]any)
		out = append(out, fmt.Sprint(params["message"]))
	}
	return out
}

func newStream(t *testing.T, srv *logServer, cfg Config, secrets ...string) *Stream {
	httpSrv := httptest.NewServer(srv)
	t.Cleanup(httpSrv.Close)
	api := tasksapi.New(tasksapi.Config{BaseURL: httpSrv.URL, APIKey: "k", ProjectID: "1", Retries: 1,
		RetryWait: time.Millisecond, RetryMaxWait: 2 * time.Millisecond})
	if cfg.RetryWait == 0 {
		cfg.RetryWait, cfg.RetryMaxWait = time.Millisecond, 5*time.Millisecond
	}
	return New(api, "task", "run", redact.New(secrets...), cfg)
}

func closeStream(t *testing.T, s *Stream) Stats {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stats, err := s.Close(ctx)
	require.NoError(t, err)
	return stats
}

func TestEntriesArriveInOrderInBatchesOneRequestAtATime(t *testing.T) {
	srv := &logServer{}
	s := newStream(t, srv, Config{MaxBatchEntries: 50})
	var want []string
	for i := range 1000 {
		msg := fmt.Sprintf("line %d", i)
		want = append(want, msg)
		s.Console(acp.LevelInfo, msg)
	}
	stats := closeStream(t, s)
	require.Equal(t, want, srv.messages())
	require.Equal(t, 1000, stats.Sent)
	require.Zero(t, stats.Dropped)
	require.EqualValues(t, 1, srv.maxSeen.Load(), "one append in flight at a time")
	for _, n := range srv.batches {
		require.LessOrEqual(t, n, 50)
	}
	require.Less(t, len(srv.batches), 100, "entries are batched")
}

func TestEveryEntryHasAnEventIDAndUTCTimestamp(t *testing.T) {
	srv := &logServer{}
	s := newStream(t, srv, Config{})
	s.Console(acp.LevelInfo, "a")
	s.Console(acp.LevelInfo, "b")
	closeStream(t, s)
	seen := map[string]bool{}
	for _, e := range srv.entries {
		id := e["event_id"].(string)
		require.NotEmpty(t, id)
		require.False(t, seen[id])
		seen[id] = true
		ts, err := time.Parse(time.RFC3339Nano, e["timestamp"].(string))
		require.NoError(t, err)
		require.Equal(t, time.UTC, ts.Location())
	}
}

// A stream with a scope derives its entries' IDs from it and their place
// in the stream, in the log's order: the same entries written again by a
// second stream of the same scope (a retried step) carry the same IDs.
func TestEventIDsFollowTheStreamsScope(t *testing.T) {
	var logs [][]string
	for range 2 {
		srv := &logServer{}
		s := newStream(t, srv, Config{EventIDScope: "run/wf/finish", MaxBytes: 1000})
		s.Console(acp.LevelInfo, "a")
		s.Console(acp.LevelInfo, "b")
		s.Console(acp.LevelInfo, strings.Repeat("x", 2000)) // past the cap: cut, a note at Close
		closeStream(t, s)
		var ids []string
		for _, e := range srv.entries {
			ids = append(ids, e["event_id"].(string))
		}
		logs = append(logs, ids)
	}
	require.Equal(t, []string{
		acp.EventID("run/wf/finish", 0), acp.EventID("run/wf/finish", 1), acp.EventID("run/wf/finish", 3),
	}, logs[0], "the cut entry keeps its number; the note about it has the next")
	require.Equal(t, logs[0], logs[1])
}

func TestAPartialBatchIsSentAfterTheFlushDelay(t *testing.T) {
	srv := &logServer{}
	s := newStream(t, srv, Config{FlushDelay: 50 * time.Millisecond})
	s.Console(acp.LevelInfo, "alone")
	require.Eventually(t, func() bool { return len(srv.messages()) == 1 }, 5*time.Second, 5*time.Millisecond,
		"a lone entry is sent without waiting for Close")
	closeStream(t, s)
}

func TestTransientFailuresAreRetriedWithoutLossOrDuplicates(t *testing.T) {
	var calls atomic.Int32
	srv := &logServer{fail: func([]map[string]any) int {
		switch calls.Add(1) % 3 {
		case 1:
			return http.StatusServiceUnavailable
		case 2:
			return http.StatusBadGateway
		}
		return 0
	}}
	s := newStream(t, srv, Config{MaxBatchEntries: 10})
	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprint(i))
		s.Console(acp.LevelInfo, fmt.Sprint(i))
	}
	stats := closeStream(t, s)
	require.Equal(t, want, srv.messages())
	require.Zero(t, stats.Dropped)
}

func TestARejectedEntryIsIsolatedAndReported(t *testing.T) {
	srv := &logServer{fail: func(entries []map[string]any) int {
		for _, e := range entries {
			if strings.Contains(fmt.Sprint(e), "poison") {
				return http.StatusBadRequest
			}
		}
		return 0
	}}
	s := newStream(t, srv, Config{MaxBatchEntries: 8})
	for i := range 8 {
		msg := fmt.Sprint(i)
		if i == 5 {
			msg = "poison"
		}
		s.Console(acp.LevelInfo, msg)
	}
	stats := closeStream(t, s)
	got := srv.messages()
	require.Len(t, got, 8)
	require.Equal(t, []string{"0", "1", "2", "3", "4"}, got[:5])
	require.Contains(t, got[5], "was rejected by the Tasks API: entry refused")
	require.Equal(t, []string{"6", "7"}, got[6:])
	require.Equal(t, 1, stats.Rejected)
}

func TestUnsentEntriesAreCountedWhenTheCloseDeadlinePasses(t *testing.T) {
	srv := &logServer{fail: func([]map[string]any) int { return http.StatusServiceUnavailable }}
	s := newStream(t, srv, Config{})
	for range 5 {
		s.Console(acp.LevelInfo, "x")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	stats, err := s.Close(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, stats.Dropped)
}

func TestAFatalAnswerStopsTheStream(t *testing.T) {
	srv := &logServer{fail: func([]map[string]any) int { return http.StatusForbidden }}
	s := newStream(t, srv, Config{})
	s.Console(acp.LevelInfo, "x")
	stats, err := s.Close(context.Background())
	require.ErrorContains(t, err, "HTTP 403")
	require.Equal(t, 1, stats.Dropped)
}

func TestSecretsAreRedactedBeforeQueueing(t *testing.T) {
	srv := &logServer{}
	s := newStream(t, srv, Config{}, "hunter2-secret-value")
	s.Console(acp.LevelInfo, "password is hunter2-secret-value and token ghp_abcdefghijklmnop1234")
	s.Console(acp.LevelInfo, "nothing secret here")
	stats := closeStream(t, s)
	require.Equal(t, []string{"password is [REDACTED] and token [REDACTED]", "nothing secret here"}, srv.messages())
	require.Equal(t, 1, stats.Redacted)
}

// Emit never waits for the network. The API holds the first append
// unanswered; meanwhile a producer emits past a batch and past the memory
// bound, and every Emit returns: by structure, not speed, since nothing was
// answered before the last Emit was done.
func TestEmitNeverBlocksWhileTheAPIIsDown(t *testing.T) {
	release := make(chan struct{})
	srv := &logServer{fail: func([]map[string]any) int {
		<-release
		return 0
	}}
	const memory = 4 << 10
	s := newStream(t, srv, Config{MaxBatchEntries: 10, MemoryBytes: memory, SpillDir: t.TempDir()})
	const entries = 2000
	var want []string
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		for i := range entries {
			want = append(want, fmt.Sprintf("line %d", i))
			s.Console(acp.LevelInfo, want[i])
		}
	}()
	select {
	case <-emitted:
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("Emit blocked while the Tasks API was not answering")
	}
	require.Empty(t, srv.messages(), "every Emit returned before any append was answered")

	require.Eventually(t, func() bool { return srv.inFlight.Load() == 1 }, time.Minute, time.Millisecond,
		"the sender waits on the held append")
	s.mu.Lock()
	queued, spilling := s.queue.len(), s.queue.spilling()
	s.mu.Unlock()
	require.Equal(t, entries, queued, "everything waits, the held batch included")
	require.True(t, spilling, "past the memory bound, entries wait on disk")

	close(release)
	stats := closeStream(t, s)
	require.Equal(t, entries, stats.Sent)
	require.Equal(t, want, srv.messages())
}

// The stream's loop is an append's one level of retries, and it waits what
// the API's Retry-After asks for when that is longer than its own backoff.
func TestAFailedAppendWaitsTheAPIsRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var sent []time.Time
	httpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, time.Now())
		first := len(sent) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"detail":"contended"}`))
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer httpSrv.Close()
	api := tasksapi.New(tasksapi.Config{BaseURL: httpSrv.URL, APIKey: "k", ProjectID: "1", Retries: tasksapi.NoRetries})
	s := New(api, "task", "run", redact.New(), Config{RetryWait: time.Millisecond, RetryMaxWait: 2 * time.Millisecond})
	s.Console(acp.LevelInfo, "a")
	stats := closeStream(t, s)
	require.Equal(t, 1, stats.Sent)
	require.Equal(t, 2, stats.Requests)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, sent, 2, "each try of the stream is one request")
	// Its own backoff is 2 ms at most here: a second is the API's.
	require.GreaterOrEqual(t, sent[1].Sub(sent[0]), 900*time.Millisecond)
}
