package github

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/testkit/standin/githubtest"
)

func TestOpenThenFindTheExistingPullRequest(t *testing.T) {
	srv := githubtest.NewServer("ghs_token_123456")
	defer srv.Close()
	c := New(srv.URL, "ghs_token_123456")
	pr := NewPullRequest{Title: "Fix the bug", Head: "posthog/task-1", Base: "main", Body: "It crashed."}

	opened, created, err := c.OpenOrFind(context.Background(), "acme", "app", pr)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "https://github.example/acme/app/pull/1", opened.HTMLURL)

	again, created, err := c.OpenOrFind(context.Background(), "acme", "app", pr)
	require.NoError(t, err)
	require.False(t, created, "the second run finds the pull request the first opened")
	require.Equal(t, opened.HTMLURL, again.HTMLURL)
	require.Len(t, srv.Pulls(), 1)
	require.Equal(t, "It crashed.", srv.Pulls()[0].Body)
}

func TestErrorsSayWhatGitHubSaid(t *testing.T) {
	srv := githubtest.NewServer("right")
	defer srv.Close()
	_, _, err := New(srv.URL, "wrong").OpenOrFind(context.Background(), "acme", "app", NewPullRequest{Title: "t", Head: "h", Base: "main"})
	require.ErrorContains(t, err, "HTTP 401: Bad credentials")

	srv.BranchExists = func(_, _, branch string) bool { return branch == "main" }
	_, _, err = New(srv.URL, "right").OpenOrFind(context.Background(), "acme", "app", NewPullRequest{Title: "t", Head: "gone", Base: "main"})
	require.ErrorContains(t, err, "HTTP 422: Validation Failed (head invalid)")
}

func TestAPermanentErrorIsARefusalNoRetryChanges(t *testing.T) {
	for _, tc := range []struct {
		err       Error
		permanent bool
	}{
		{Error{StatusCode: 422, Message: "Validation Failed"}, true},
		{Error{StatusCode: 404, Message: "Not Found"}, true},
		{Error{StatusCode: 403, Message: "Resource not accessible by integration"}, true},
		{Error{StatusCode: 403, Message: "You have exceeded a secondary rate limit."}, false},
		{Error{StatusCode: 429, Message: "Too Many Requests"}, false},
		{Error{StatusCode: 408}, false},
		{Error{StatusCode: 502, Message: "Bad Gateway"}, false},
	} {
		require.Equal(t, tc.permanent, tc.err.Permanent(), "%v", &tc.err)
	}
}

// GitHub's client is a call's one level of retries: what a retry may fix (a
// 5xx, a secondary rate limit) is sent again, waiting GitHub's Retry-After;
// a refusal is not.
func TestTheClientRetriesWhatARetryMayFix(t *testing.T) {
	var mu sync.Mutex
	var sent []time.Time
	answers := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) },
		func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"message":"You have exceeded a secondary rate limit."}`))
		},
		func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"number":1,"html_url":"https://github.example/acme/app/pull/1","state":"open"}`))
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, time.Now())
		answer := answers[min(len(sent), len(answers))-1]
		mu.Unlock()
		answer(w)
	}))
	defer srv.Close()
	pr, created, err := New(srv.URL, "t").OpenOrFind(context.Background(), "acme", "app", NewPullRequest{Title: "t", Head: "h", Base: "main"})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, 1, pr.Number)
	mu.Lock()
	require.Len(t, sent, 3)
	require.GreaterOrEqual(t, sent[2].Sub(sent[1]), 900*time.Millisecond, "GitHub's Retry-After was waited")
	mu.Unlock()

	refusals := 0
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refusals++
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"message":"Resource not accessible by integration"}`))
	}))
	defer refusing.Close()
	_, _, err = New(refusing.URL, "t").OpenOrFind(context.Background(), "acme", "app", NewPullRequest{Title: "t", Head: "h", Base: "main"})
	require.ErrorContains(t, err, "HTTP 403")
	require.Equal(t, 1, refusals, "a refusal is not sent again")
}
