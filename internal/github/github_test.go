package github

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
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

func TestALaterPushUpdatesThePullRequestsBody(t *testing.T) {
	srv := githubtest.NewServer("ghs_token_123456")
	defer srv.Close()
	c := New(srv.URL, "ghs_token_123456")
	opened, _, err := c.OpenOrFind(context.Background(), "acme", "app", NewPullRequest{Title: "Fix", Head: "posthog/task-1", Base: "main", Body: "1 file changed"})
	require.NoError(t, err)
	require.NoError(t, c.UpdateBody(context.Background(), "acme", "app", opened.Number, "2 files changed"))
	require.Equal(t, "2 files changed", srv.Pulls()[0].Body)
	err = c.UpdateBody(context.Background(), "acme", "app", 99, "x")
	require.ErrorContains(t, err, "update pull request #99 in acme/app")
	require.ErrorContains(t, err, "404")
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

func TestADraftIsOpenedAsADraft(t *testing.T) {
	srv := githubtest.NewServer("ghs_token_123456")
	defer srv.Close()
	_, _, err := New(srv.URL, "ghs_token_123456").OpenOrFind(context.Background(), "acme", "app", NewPullRequest{Title: "t", Head: "h", Base: "main", Draft: true})
	require.NoError(t, err)
	require.True(t, srv.Pulls()[0].Draft)
}

func ciOf(checks map[string][]githubtest.Check) func(owner, repo, sha string) ([]githubtest.Check, bool) {
	return func(_, _, sha string) ([]githubtest.Check, bool) {
		c, ok := checks[sha]
		return c, ok
	}
}

func TestCIReadsEveryPageAndKeepsTheNewestOfEachName(t *testing.T) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	checks := []githubtest.Check{
		// The re-run is listed first: the newest is told by id, not order.
		{Name: "build", Conclusion: "success", Attempt: 1},
		{Name: "build", Conclusion: "failure", Attempt: 0},
	}
	for i := range 250 {
		checks = append(checks, githubtest.Check{Name: fmt.Sprintf("job-%03d", i), Conclusion: "success"})
	}
	checks = append(checks, githubtest.Check{Name: "ci/legacy", Kind: "status", Conclusion: "success", Summary: "All good"})
	srv.CI = ciOf(map[string][]githubtest.Check{"abc123": checks})

	before := srv.Calls()
	ci, err := New(srv.URL, "tok").CI(context.Background(), "acme", "app", "abc123")
	require.NoError(t, err)
	require.Equal(t, 3+1, srv.Calls()-before, "252 check runs are 3 pages of 100, then the combined status")
	require.Len(t, ci.Checks, 252, "build once, 250 jobs, one status")
	names := map[string]Check{}
	for _, c := range ci.Checks {
		_, twice := names[c.Kind+c.Name]
		require.False(t, twice, "%s is kept once", c.Name)
		names[c.Kind+c.Name] = c
	}
	require.Equal(t, "success", names["check_runbuild"].Conclusion, "the re-run's answer is kept")
	require.Equal(t, "All good", names["statusci/legacy"].Summary)
	require.Equal(t, "success", ci.State())
	require.Empty(t, ci.Failing())
	require.True(t, ci.RateLimit.Known)
	require.Equal(t, 4999, ci.RateLimit.Remaining)
}

func TestCIStatesAndStatuses(t *testing.T) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	srv.CI = ciOf(map[string][]githubtest.Check{
		"none":    nil,
		"errored": {{Name: "build", Conclusion: "success"}, {Name: "ci/old", Kind: "status", Conclusion: "error", Summary: "crashed"}},
		"waiting": {{Name: "build", Conclusion: "failure"}, {Name: "ci/old", Kind: "status", Status: "pending"}},
		"running": {{Name: "build", Status: "in_progress"}},
		"neutral": {{Name: "lint", Conclusion: "neutral"}, {Name: "deploy", Conclusion: "skipped"}, {Name: "ci/old", Kind: "status", Conclusion: "success"}},
	})
	c := New(srv.URL, "tok")
	for sha, want := range map[string]string{"none": "none", "errored": "failure", "waiting": "pending", "running": "pending", "neutral": "success"} {
		ci, err := c.CI(context.Background(), "acme", "app", sha)
		require.NoError(t, err)
		require.Equal(t, want, ci.State(), sha)
	}
	ci, err := c.CI(context.Background(), "acme", "app", "errored")
	require.NoError(t, err)
	require.Equal(t, []Check{{Kind: "status", ID: ci.Checks[1].ID, Name: "ci/old", Status: "completed", Conclusion: "failure",
		DetailsURL: "https://ci.example/acme/app/ci/old", Summary: "crashed"}}, ci.Failing(), "a status's error is a failure")
	ci, err = c.CI(context.Background(), "acme", "app", "waiting")
	require.NoError(t, err)
	require.Len(t, ci.Failing(), 1, "a failure is told while another check is pending")

	_, err = c.CI(context.Background(), "acme", "app", "unknown")
	require.ErrorContains(t, err, "HTTP 422: No commit found for SHA: unknown")
	srv.RepoExists = func(_, repo string) bool { return repo == "app" }
	_, err = c.CI(context.Background(), "acme", "gone", "none")
	require.ErrorContains(t, err, "HTTP 404: Not Found")
}

func TestCIKeepsAJobOfOneNameInEachWorkflow(t *testing.T) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	srv.CI = ciOf(map[string][]githubtest.Check{"two": {
		{Name: "test", Suite: 1, Conclusion: "failure"},
		{Name: "test", Suite: 2, Conclusion: "success"},
		{Name: "test", Suite: 2, Attempt: 1, Conclusion: "success"},
	}})
	ci, err := New(srv.URL, "tok").CI(context.Background(), "acme", "app", "two")
	require.NoError(t, err)
	require.Len(t, ci.Checks, 2, "one per suite: the re-run replaced its own suite's")
	require.Equal(t, "failure", ci.State(), "another workflow's passing job of that name does not hide the failure")
}

func TestCIRefusesToJudgeOnPartOfTheStatuses(t *testing.T) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	var many []githubtest.Check
	for i := 0; i < 101; i++ {
		many = append(many, githubtest.Check{Name: fmt.Sprintf("ci/%d", i), Kind: "status", Conclusion: "success"})
	}
	srv.CI = ciOf(map[string][]githubtest.Check{"many": many})
	_, err := New(srv.URL, "tok").CI(context.Background(), "acme", "app", "many")
	require.ErrorContains(t, err, "101 of them, more than the 100 this worker reads")
}

func TestCIStateOfEachConclusion(t *testing.T) {
	for _, tc := range []struct {
		checks []Check
		want   string
	}{
		{nil, "none"},
		{[]Check{{Status: "completed", Conclusion: "success"}}, "success"},
		{[]Check{{Status: "completed", Conclusion: "neutral"}, {Status: "completed", Conclusion: "skipped"}}, "success"},
		{[]Check{{Status: "completed", Conclusion: "stale"}}, "success"},
		{[]Check{{Status: "completed", Conclusion: "failure"}}, "failure"},
		{[]Check{{Status: "completed", Conclusion: "timed_out"}}, "failure"},
		{[]Check{{Status: "completed", Conclusion: "cancelled"}}, "failure"},
		{[]Check{{Status: "completed", Conclusion: "action_required"}}, "failure"},
		{[]Check{{Status: "completed", Conclusion: "startup_failure"}}, "failure"},
		{[]Check{{Status: "completed", Conclusion: "failure"}, {Status: "queued"}}, "pending"},
		{[]Check{{Kind: "status", Status: "pending", Conclusion: "pending"}}, "pending"},
	} {
		require.Equal(t, tc.want, CI{Checks: tc.checks}.State(), "%+v", tc.checks)
	}
}

func TestCheckLogIsTheTailOfTheJobsLogWithoutTheToken(t *testing.T) {
	srv := githubtest.NewServer("ghs_token_123456")
	defer srv.Close()
	srv.CI = ciOf(map[string][]githubtest.Check{"abc": {
		{Name: "test", Conclusion: "failure", Summary: "2 tests failed", LogBytes: 20 << 20, Log: "FAIL: TestThing — résumé\n"},
	}})
	c := New(srv.URL, "ghs_token_123456")
	ci, err := c.CI(context.Background(), "acme", "app", "abc")
	require.NoError(t, err)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	log, err := c.CheckLog(context.Background(), "acme", "app", ci.Checks[0], 1000)
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.LessOrEqual(t, len(log), 1000)
	require.Greater(t, len(log), 900)
	require.True(t, strings.HasSuffix(log, "FAIL: TestThing — résumé\n"), "%q", log[max(len(log)-80, 0):])
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20), "the 20 MB log is read through, not held")
	require.False(t, srv.DownloadAuthSeen(), "the token is not sent to the download host")

	// The recorder sees a token that a redirect carries to the same host
	// name on another port, as Go's own client does.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/repos/acme/app/actions/jobs/"+strconv.FormatInt(ci.Checks[0].ID, 10)+"/logs", nil)
	req.Header.Set("Authorization", "Bearer ghs_token_123456")
	req.Header.Set("Accept", "application/vnd.github+json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.True(t, srv.DownloadAuthSeen())
}

func TestCheckLogFallsBackToTheSummary(t *testing.T) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	c := New(srv.URL, "tok")
	log, err := c.CheckLog(context.Background(), "acme", "app", Check{Kind: "check_run", ID: 42, Name: "other-app", Summary: "Coverage fell"}, 100)
	require.NoError(t, err, "a check run that is no Actions job has no log: GitHub answers 404")
	require.Equal(t, "Coverage fell", log)
	log, err = c.CheckLog(context.Background(), "acme", "app", Check{Kind: "status", ID: 7, Name: "ci/old", Summary: "0123456789"}, 4)
	require.NoError(t, err)
	require.Equal(t, "6789", log)
}

func TestTailKeepsTheLastBytes(t *testing.T) {
	for _, n := range []int{1, 7, 64 << 10, 100 << 10} {
		in := strings.Repeat("0123456789", 30<<10) // 300 KiB
		got, err := tail(strings.NewReader(in), n)
		require.NoError(t, err)
		require.Equal(t, in[max(len(in)-n, 0):], string(got), "n=%d", n)
	}
}

func TestARateLimitIsAnErrorUntilItsResetUnlessSoon(t *testing.T) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	srv.CI = ciOf(map[string][]githubtest.Check{"abc": {{Name: "build"}}})
	reset := time.Now().Add(time.Hour).Truncate(time.Second)
	srv.SetRateLimit(2, reset)
	c := New(srv.URL, "tok")
	ci, err := c.CI(context.Background(), "acme", "app", "abc")
	require.NoError(t, err)
	require.Equal(t, RateLimit{Remaining: 0, Reset: reset, Known: true}, ci.RateLimit)

	before := srv.Calls()
	_, err = c.CI(context.Background(), "acme", "app", "abc")
	var limited *RateLimited
	require.ErrorAs(t, err, &limited)
	require.Equal(t, reset.Add(time.Second), limited.Until)
	require.ErrorContains(t, err, "HTTP 403: API rate limit exceeded")
	require.Equal(t, 1, srv.Calls()-before, "a limit that lifts in an hour is not waited for")

	// A limit that lifts within a minute is waited for.
	soon := time.Now().Add(1500 * time.Millisecond)
	srv.SetRateLimit(0, soon)
	_, err = c.CI(context.Background(), "acme", "app", "abc")
	require.NoError(t, err)
	require.False(t, time.Now().Before(soon))

	secondary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"message":"You have exceeded a secondary rate limit."}`))
	}))
	defer secondary.Close()
	_, err = New(secondary.URL, "tok").CI(context.Background(), "acme", "app", "abc")
	require.ErrorAs(t, err, &limited)
	require.WithinDuration(t, time.Now().Add(2*time.Minute), limited.Until, 5*time.Second)
	require.NotContains(t, err.Error(), "tok")
}

// Every call's redirects keep the token on the API's origin only: Go's
// client would send it to the same host name on another port.
func TestARedirectToAnotherOriginDropsTheToken(t *testing.T) {
	for to, kept := range map[string]bool{
		"https://api.github.example/next":     true,
		"https://api.github.example:8443/x":   false,
		"http://api.github.example/x":         false,
		"https://objects.githubusercontent/x": false,
	} {
		from, _ := http.NewRequest(http.MethodGet, "https://api.github.example/repos", nil)
		req, _ := http.NewRequest(http.MethodGet, to, nil)
		req.Header.Set("Authorization", "Bearer secret")
		require.NoError(t, sameOriginAuth(req, []*http.Request{from}))
		require.Equal(t, kept, req.Header.Get("Authorization") != "", to)
	}
}

func TestAPullRequestIsReadWithItsHeadCommit(t *testing.T) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	srv.HeadSHA = func(_, _, branch string) string { return "sha-of-" + branch }
	c := New(srv.URL, "tok")
	opened, _, err := c.OpenOrFind(context.Background(), "acme", "app", NewPullRequest{Title: "t", Head: "posthog/task-1", Base: "main", Draft: true})
	require.NoError(t, err)
	pr, err := c.PullRequest(context.Background(), "acme", "app", opened.Number)
	require.NoError(t, err)
	require.Equal(t, PullRequest{Number: 1, HTMLURL: opened.HTMLURL, State: "open", Draft: true,
		Head: Ref{Ref: "posthog/task-1", SHA: "sha-of-posthog/task-1"}, Base: Ref{Ref: "main"}}, pr)
	_, err = c.PullRequest(context.Background(), "acme", "app", 2)
	require.ErrorContains(t, err, "read pull request #2 of acme/app: GitHub answered HTTP 404: Not Found")
}
