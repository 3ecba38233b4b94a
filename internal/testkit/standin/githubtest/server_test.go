package githubtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// call makes an API call as GitHub's documentation asks, without following
// redirects.
func call(t *testing.T, s *Server, method, path, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Accept", "application/vnd.github+json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := map[string]any{}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && raw[0] == '{' {
		require.NoError(t, json.Unmarshal(raw, &out), "%s", raw)
	}
	return resp, out
}

func TestAPullRequestIsADraftOnlyByABoolean(t *testing.T) {
	s := NewServer("tok")
	defer s.Close()
	s.HeadSHA = func(_, _, branch string) string { return "sha-of-" + branch }
	resp, _ := call(t, s, http.MethodPost, "/repos/acme/app/pulls", `{"title":"t","head":"h","base":"main","draft":"yes"}`)
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
	require.Empty(t, s.Pulls())

	resp, _ = call(t, s, http.MethodPost, "/repos/acme/app/pulls", `{"title":"t","head":"h","base":"main","draft":true}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	resp, pr := call(t, s, http.MethodGet, "/repos/acme/app/pulls/1", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, true, pr["draft"])
	require.Equal(t, map[string]any{"ref": "h", "sha": "sha-of-h"}, pr["head"])
	for _, path := range []string{"/repos/acme/app/pulls/2", "/repos/acme/other/pulls/1", "/repos/acme/app/pulls/x"} {
		resp, body := call(t, s, http.MethodGet, path, "")
		require.Equal(t, http.StatusNotFound, resp.StatusCode, path)
		require.Equal(t, "Not Found", body["message"])
	}
}

func TestCheckRunsArePagedAsGitHubPagesThem(t *testing.T) {
	s := NewServer("tok")
	defer s.Close()
	var checks []Check
	for i := range 5 {
		checks = append(checks, Check{Name: fmt.Sprintf("job-%d", i)})
	}
	checks = append(checks, Check{Name: "job-0", Attempt: 1, Status: "in_progress"}, Check{Name: "ci/x", Kind: "status"})
	s.CI = func(_, _, sha string) ([]Check, bool) { return checks, sha == "abc" }

	resp, body := call(t, s, http.MethodGet, "/repos/acme/app/commits/abc/check-runs?per_page=2&page=2", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.EqualValues(t, 5, body["total_count"], "filter=latest, the default, keeps the latest attempt of each name")
	require.Len(t, body["check_runs"], 2)
	require.Contains(t, resp.Header.Get("Link"), `page=3&per_page=2>; rel="next"`)
	require.Contains(t, resp.Header.Get("Link"), `page=3&per_page=2>; rel="last"`)

	resp, body = call(t, s, http.MethodGet, "/repos/acme/app/commits/abc/check-runs?per_page=100&filter=all", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.EqualValues(t, 6, body["total_count"])
	require.Empty(t, resp.Header.Get("Link"), "one page has no next")
	runs := body["check_runs"].([]any)
	first, rerun := runs[0].(map[string]any), runs[5].(map[string]any)
	require.Equal(t, "job-0", rerun["name"])
	require.Greater(t, rerun["id"].(float64), first["id"].(float64), "a re-run has the higher id")
	require.Nil(t, rerun["conclusion"], "no conclusion before completion")
	require.Equal(t, "success", first["conclusion"])

	_, again := call(t, s, http.MethodGet, "/repos/acme/app/commits/abc/check-runs?per_page=100&filter=all", "")
	require.Equal(t, runs[0].(map[string]any)["id"], again["check_runs"].([]any)[0].(map[string]any)["id"], "ids are stable")

	for path, want := range map[string]int{
		"/repos/acme/app/commits/abc/check-runs?per_page=101": http.StatusUnprocessableEntity,
		"/repos/acme/app/commits/abc/check-runs?filter=some":  http.StatusUnprocessableEntity,
		"/repos/acme/app/commits/nope/check-runs":             http.StatusUnprocessableEntity,
		"/repos/acme/app/commits/nope/status":                 http.StatusUnprocessableEntity,
	} {
		resp, _ := call(t, s, http.MethodGet, path, "")
		require.Equal(t, want, resp.StatusCode, path)
	}
	_, body = call(t, s, http.MethodGet, "/repos/acme/app/commits/nope/status", "")
	require.Equal(t, "No commit found for SHA: nope", body["message"])
	s.RepoExists = func(_, repo string) bool { return repo == "app" }
	resp, _ = call(t, s, http.MethodGet, "/repos/acme/gone/commits/abc/check-runs", "")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestTheCombinedStatusIsPendingWithoutStatuses(t *testing.T) {
	s := NewServer("tok")
	defer s.Close()
	checks := map[string][]Check{
		"none":   {{Name: "build"}},
		"failed": {{Name: "a", Kind: "status"}, {Name: "b", Kind: "status", Conclusion: "error"}, {Name: "c", Kind: "status", Status: "pending"}},
		"ok":     {{Name: "a", Kind: "status"}, {Name: "a", Kind: "status", Attempt: 1, Conclusion: "success", Summary: "second"}},
	}
	s.CI = func(_, _, sha string) ([]Check, bool) { c, ok := checks[sha]; return c, ok }
	for sha, want := range map[string]string{"none": "pending", "failed": "failure", "ok": "success"} {
		_, body := call(t, s, http.MethodGet, "/repos/acme/app/commits/"+sha+"/status", "")
		require.Equal(t, want, body["state"], sha)
	}
	_, body := call(t, s, http.MethodGet, "/repos/acme/app/commits/ok/status", "")
	require.EqualValues(t, 1, body["total_count"], "one status per context")
	require.Equal(t, "second", body["statuses"].([]any)[0].(map[string]any)["description"])
}

func TestJobLogsRedirectToASignedDownload(t *testing.T) {
	s := NewServer("tok")
	defer s.Close()
	s.CI = func(_, _, _ string) ([]Check, bool) {
		return []Check{{Name: "test", Log: "the end\n", LogBytes: 1000}, {Name: "ci/x", Kind: "status"}}, true
	}
	resp, body := call(t, s, http.MethodGet, "/repos/acme/app/commits/abc/check-runs", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	jobID := strconv.FormatFloat(body["check_runs"].([]any)[0].(map[string]any)["id"].(float64), 'f', 0, 64)

	resp, _ = call(t, s, http.MethodGet, "/repos/acme/app/actions/jobs/"+jobID+"/logs", "")
	require.Equal(t, http.StatusFound, resp.StatusCode)
	location := resp.Header.Get("Location")
	require.NotContains(t, location, s.URL, "the download is another origin")
	got, err := http.Get(location)
	require.NoError(t, err)
	log, _ := io.ReadAll(got.Body)
	_ = got.Body.Close()
	require.Equal(t, http.StatusOK, got.StatusCode)
	require.Len(t, log, 1000)
	require.True(t, strings.HasSuffix(string(log), "the end\n"))
	require.False(t, s.DownloadAuthSeen())

	unsigned, err := http.Get(strings.Split(location, "?")[0])
	require.NoError(t, err)
	_ = unsigned.Body.Close()
	require.Equal(t, http.StatusForbidden, unsigned.StatusCode)

	for _, path := range []string{"/repos/acme/app/actions/jobs/1/logs", "/repos/acme/other/actions/jobs/" + jobID + "/logs"} {
		resp, _ = call(t, s, http.MethodGet, path, "")
		require.Equal(t, http.StatusNotFound, resp.StatusCode, path)
	}
}

func TestASpentRateLimitRefusesEveryCallUntilItsReset(t *testing.T) {
	s := NewServer("tok")
	defer s.Close()
	resp, _ := call(t, s, http.MethodGet, "/repos/acme/app/pulls", "")
	for _, h := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Used"} {
		require.NotEmpty(t, resp.Header.Get(h), h)
	}
	require.Equal(t, "core", resp.Header.Get("X-RateLimit-Resource"))

	reset := time.Now().Add(time.Hour)
	s.SetRateLimit(1, reset)
	resp, _ = call(t, s, http.MethodGet, "/repos/acme/app/pulls", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "0", resp.Header.Get("X-RateLimit-Remaining"))
	require.Equal(t, strconv.FormatInt(reset.Unix(), 10), resp.Header.Get("X-RateLimit-Reset"))
	for _, path := range []string{"/repos/acme/app/pulls", "/repos/acme/app/commits/abc/status"} {
		resp, body := call(t, s, http.MethodGet, path, "")
		require.Equal(t, http.StatusForbidden, resp.StatusCode, path)
		require.Equal(t, "0", resp.Header.Get("X-RateLimit-Remaining"))
		require.Equal(t, "API rate limit exceeded for installation ID 1.", body["message"])
	}

	s.SetRateLimit(0, time.Now().Add(-time.Second))
	resp, _ = call(t, s, http.MethodGet, "/repos/acme/app/pulls", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "a limit past its reset is whole again")
	require.Equal(t, "4999", resp.Header.Get("X-RateLimit-Remaining"))
}
