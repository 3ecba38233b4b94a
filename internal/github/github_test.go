package github

import (
	"context"
	"testing"

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
