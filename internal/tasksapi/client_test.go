package tasksapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestClient(t *testing.T, h http.HandlerFunc) (*Client, *httptest.Server) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return New(Config{BaseURL: srv.URL, APIKey: "phx_secretkey123456", ProjectID: "7",
		RetryWait: 5 * time.Millisecond, RetryMaxWait: 20 * time.Millisecond}), srv
}

func TestSendsBearerAuthToTheProjectPath(t *testing.T) {
	var auth, path string
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		auth, path = r.Header.Get("Authorization"), r.URL.Path
		_ = json.NewEncoder(w).Encode(Task{ID: "t1", Title: "Fix"})
	})
	task, err := c.GetTask(context.Background(), "t1")
	require.NoError(t, err)
	require.Equal(t, "Fix", task.Title)
	require.Equal(t, "Bearer phx_secretkey123456", auth)
	require.Equal(t, "/api/projects/7/tasks/t1/", path)
}

func TestRetriesServerErrorsThenSucceeds(t *testing.T) {
	var calls atomic.Int32
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			w.WriteHeader(http.StatusBadGateway)
		case 2:
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			_ = json.NewEncoder(w).Encode(TaskRun{ID: "r1", Status: StatusInProgress})
		}
	})
	run, err := c.UpdateRun(context.Background(), "t1", "r1", RunUpdate{Status: StatusInProgress})
	require.NoError(t, err)
	require.Equal(t, StatusInProgress, run.Status)
	require.EqualValues(t, 3, calls.Load())
}

func TestHonoursRetryAfter(t *testing.T) {
	var first time.Time
	var gap time.Duration
	var calls atomic.Int32
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		gap = time.Since(first)
		w.WriteHeader(http.StatusOK)
	})
	require.NoError(t, c.AppendLog(context.Background(), "t1", "r1", []json.RawMessage{json.RawMessage(`{"a":1}`)}))
	require.EqualValues(t, 2, calls.Load())
	// The backoff without Retry-After is at most 20 ms here; a second proves the header was used.
	require.GreaterOrEqual(t, gap, 900*time.Millisecond)
}

func TestGivesUpAfterTheRetryBudget(t *testing.T) {
	var calls atomic.Int32
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"detail":"boom"}`))
	})
	_, err := c.GetRun(context.Background(), "t1", "r1")
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 500, apiErr.StatusCode)
	require.True(t, IsRetryable(err), "a 5xx stays retryable for the caller's own retries")
	require.EqualValues(t, 5, calls.Load(), "1 try + 4 retries")
}

func TestClientErrorsAreFinalAndCarryTheDetail(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   string
	}{
		{400, `{"type":"validation_error","code":"invalid_choice","detail":"\"done\" is not a valid choice.","attr":"status"}`, `"done" is not a valid choice. (field status)`},
		{401, `{"detail":"Invalid personal API key."}`, "check POSTHOG_PERSONAL_API_KEY"},
		{403, `{"detail":"You don't have access to the project."}`, "task:read and task:write"},
		{404, `{"detail":"Not found."}`, "HTTP 404: Not found."},
		{404, `<html>gateway page</html>`, "<html>gateway page</html>"},
	}
	for _, tc := range cases {
		var calls atomic.Int32
		c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(tc.body))
		})
		_, err := c.UpdateRun(context.Background(), "t1", "r1", RunUpdate{Status: "done"})
		require.ErrorContains(t, err, tc.want)
		require.False(t, IsRetryable(err), "HTTP %d", tc.status)
		require.EqualValues(t, 1, calls.Load(), "HTTP %d is not retried", tc.status)
		require.Equal(t, tc.status == 404, IsNotFound(err))
	}
}

func TestInvalidJSONIsAFinalDecodeError(t *testing.T) {
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"id": "t1", "title": `))
	})
	_, err := c.GetTask(context.Background(), "t1")
	var decodeErr *DecodeError
	require.True(t, errors.As(err, &decodeErr), "got %v", err)
	require.False(t, IsRetryable(err))
	require.ErrorContains(t, err, "not valid JSON")
}

func TestRetriesConnectionErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	c := New(Config{BaseURL: url, APIKey: "k", ProjectID: "1", Retries: 2, RetryWait: time.Millisecond, RetryMaxWait: 2 * time.Millisecond})
	_, err := c.GetTask(context.Background(), "t1")
	require.Error(t, err)
	require.True(t, IsRetryable(err))
	require.NotContains(t, err.Error(), "Bearer")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, 2*time.Second, ParseRetryAfter("2", now))
	require.Equal(t, 1500*time.Millisecond, ParseRetryAfter("1.5", now))
	require.Equal(t, 10*time.Second, ParseRetryAfter(now.Add(10*time.Second).Format(http.TimeFormat), now))
	require.Equal(t, maxRetryAfter, ParseRetryAfter("86400", now))
	require.Zero(t, ParseRetryAfter("", now))
	require.Zero(t, ParseRetryAfter("soon", now))
	require.Zero(t, ParseRetryAfter("-3", now))
}

// A caller that retries on its own sends each call once and learns from the
// error how long the API asked it to wait.
func TestACallSentOnceCarriesTheAPIsRetryAfter(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"detail":"Request was throttled."}`))
	}))
	defer srv.Close()
	c := New(Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: NoRetries})
	_, err := c.GetRun(context.Background(), "t1", "r1")
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.EqualValues(t, 1, calls.Load(), "sent once")
	require.Equal(t, 1, Attempts(err))
	require.Equal(t, 7*time.Second, RetryAfter(err))
	require.True(t, IsRetryable(err), "the caller's own retry may succeed")
}

// A context's retries override the client's, either way.
func TestAContextsRetriesOverrideTheClients(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	once := New(Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: NoRetries, RetryWait: time.Millisecond, RetryMaxWait: time.Millisecond})
	retrying := New(Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", RetryWait: time.Millisecond, RetryMaxWait: time.Millisecond})
	for _, tc := range []struct {
		c    *Client
		ctx  context.Context
		want int
	}{
		{once, context.Background(), 1},
		{once, WithRetries(context.Background(), 2), 3},
		{retrying, context.Background(), 5},
		{retrying, WithRetries(context.Background(), NoRetries), 1},
	} {
		calls.Store(0)
		_, err := tc.c.GetTask(tc.ctx, "t1")
		require.Error(t, err)
		require.EqualValues(t, tc.want, calls.Load())
		require.Equal(t, tc.want, Attempts(err))
	}
}

// A call that got no answer says how often it was sent, too.
func TestANetworkErrorCountsItsAttempts(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := New(Config{BaseURL: url, APIKey: "k", ProjectID: "1", Retries: 1, RetryWait: time.Millisecond, RetryMaxWait: time.Millisecond})
	_, err := c.GetTask(context.Background(), "t1")
	var netErr *NetworkError
	require.ErrorAs(t, err, &netErr)
	require.Equal(t, 2, Attempts(err))
	require.Contains(t, err.Error(), "GET /tasks/t1/: ")
}
