package dispatch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/localapi"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// localAPI is the local Tasks API behind refuse, which answers a request
// itself (true) or leaves it to the API; control is a client the test reads
// and sets up with, and api the dispatcher's, which sends each call once as
// the worker's does.
func localAPI(t *testing.T, refuse func(w http.ResponseWriter, r *http.Request, body []byte) bool) (control, api *tasksapi.Client) {
	local, err := localapi.New(localapi.Config{APIKey: "k", ProjectID: "1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = local.Close() })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !strings.HasPrefix(r.UserAgent(), localapi.ControlUserAgent) && refuse(w, r, body) {
			return
		}
		local.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	control = tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", UserAgent: localapi.ControlUserAgent})
	api = tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: tasksapi.NoRetries,
		RetryWait: time.Millisecond, RetryMaxWait: time.Millisecond})
	return control, api
}

// queuedLocalRun creates a task with a queued local run.
func queuedLocalRun(t *testing.T, control *tasksapi.Client) (taskID, runID string) {
	ctx := context.Background()
	task, err := control.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: t.Name(), Repository: "acme/app"})
	require.NoError(t, err)
	run, err := control.CreateRun(ctx, task.ID)
	require.NoError(t, err)
	_, err = control.UpdateRun(ctx, task.ID, run.ID, tasksapi.RunUpdate{Status: tasksapi.StatusQueued})
	require.NoError(t, err)
	return task.ID, run.ID
}

// The next cycle finds the run taken and marks it no more, nor says who
// took it: those two calls are retried by the client, while the cycle's
// other calls are sent once.
func TestWhatTheNextCycleWontRedoIsRetriedByTheClient(t *testing.T) {
	var mu sync.Mutex
	failed := map[string]bool{}
	sent := map[string]int{}
	control, api := localAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		kind := r.Method + " " + r.URL.Path
		switch {
		case r.Method == http.MethodPatch && bytes.Contains(body, []byte(DispatchedKey)):
			kind = "mark"
		case strings.HasSuffix(r.URL.Path, "/append_log/"):
			kind = "note"
		default:
			return false
		}
		sent[kind]++
		if failed[kind] {
			return false
		}
		failed[kind] = true
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"detail":"Service unavailable."}`))
		return true
	})
	taskID, runID := queuedLocalRun(t, control)
	temporal := &fakeTemporal{}
	d := &Dispatcher{API: api, Temporal: temporal, Logger: zap.NewNop(),
		Config: Config{PageSize: 100, MaxPages: 1, TaskQueue: "q", Pool: "p"}}
	stats, err := d.Cycle(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, stats.Started)

	run, err := control.GetRun(context.Background(), taskID, runID)
	require.NoError(t, err)
	require.Contains(t, run.State, DispatchedKey, "the mark got through its 503")
	logs, err := control.Logs(context.Background(), taskID, runID)
	require.NoError(t, err)
	require.Len(t, logs, 1)
	require.Contains(t, string(logs[0]), "dispatched to worker pool p")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int{"mark": 2, "note": 2}, sent)
}

// A cycle the API ended with a Retry-After longer than the interval is
// followed by the next one only once it has passed.
func TestTheNextCycleWaitsOutTheAPIsRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var lists []time.Time
	_, api := localAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/tasks/") {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		lists = append(lists, time.Now())
		if len(lists) > 1 {
			return false
		}
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"detail":"Request was throttled."}`))
		return true
	})
	d := &Dispatcher{API: api, Temporal: &fakeTemporal{}, Logger: zap.NewNop(),
		Config: Config{PageSize: 100, MaxPages: 1, TaskQueue: "q", Pool: "p", PollInterval: 10 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lists) >= 2
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, lists[1].Sub(lists[0]), 900*time.Millisecond, "the 10 ms interval waited for the API's second")
}
