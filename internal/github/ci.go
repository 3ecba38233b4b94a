package github

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Check is one check of a commit: a check run (GitHub Actions' jobs are
// these) or a commit status.
type Check struct {
	// Kind is "check_run" or "status".
	Kind string
	ID   int64
	// Name is a check run's name, or a status's context.
	Name string
	// Status is queued, in_progress or completed for a check run (GitHub
	// also has waiting, requested and pending); a status is completed, or
	// pending while it is.
	Status string
	// Conclusion of a completed check run: success, failure, neutral,
	// cancelled, skipped, timed_out, action_required or stale. A status's
	// state: success, failure (GitHub's error too) or pending.
	Conclusion string
	DetailsURL string
	// Summary is a check run's output title, summary and text, or a
	// status's description.
	Summary string
	// suite is a check run's check suite: two workflows (two suites) may
	// each have a job of one name, and each counts.
	suite int64
}

// CI is the checks of a commit, each name once per check suite, and the rate limit GitHub
// said was left after reading them.
type CI struct {
	Checks    []Check
	RateLimit RateLimit
}

// passing conclusions; any other completed one fails, an unknown one too.
// stale is GitHub giving up on a check run after 14 days: not a failure of
// the change.
var passing = map[string]bool{"success": true, "neutral": true, "skipped": true, "stale": true}

// State is "none" when the commit has no checks, "pending" while any is not
// completed (even when another has failed already: Failing tells those),
// then "failure" when any failed, else "success".
func (ci CI) State() string {
	if len(ci.Checks) == 0 {
		return "none"
	}
	for _, c := range ci.Checks {
		if c.Status != "completed" {
			return "pending"
		}
	}
	if len(ci.Failing()) > 0 {
		return "failure"
	}
	return "success"
}

// Failing returns the completed checks that failed.
func (ci CI) Failing() []Check {
	var out []Check
	for _, c := range ci.Checks {
		if c.Status == "completed" && !passing[c.Conclusion] {
			out = append(out, c)
		}
	}
	return out
}

// maxCheckRunPages of 100 is more check runs than any commit should have
// (re-runs included); past it CI refuses rather than judge on part of them.
const maxCheckRunPages = 10

var nextLink = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

// CI reads the check runs and statuses of commit sha, the newest of each
// name in each check suite: a re-run's check run has a higher id than the
// one it re-runs, in the same suite.
func (c *Client) CI(ctx context.Context, owner, repo, sha string) (CI, error) {
	repoPath := repoPath(owner, repo)
	var ci CI
	at := map[string]int{}
	keep := func(check Check) {
		key := fmt.Sprintf("%s\x00%d\x00%s", check.Kind, check.suite, check.Name)
		if i, seen := at[key]; seen {
			if check.ID > ci.Checks[i].ID {
				ci.Checks[i] = check
			}
			return
		}
		at[key] = len(ci.Checks)
		ci.Checks = append(ci.Checks, check)
	}

	// filter=all: GitHub's default (latest) is its own choice of the most
	// recent runs; the newest per name is chosen here instead.
	next := repoPath + "/commits/" + url.PathEscape(sha) + "/check-runs?per_page=100&filter=all"
	for page := 1; next != ""; page++ {
		if page > maxCheckRunPages {
			return CI{}, fmt.Errorf("read the check runs of %s in %s/%s: more than %d pages of 100, too many to watch", sha, owner, repo, maxCheckRunPages)
		}
		var body struct {
			CheckRuns []struct {
				ID         int64  `json:"id"`
				Name       string `json:"name"`
				CheckSuite struct {
					ID int64 `json:"id"`
				} `json:"check_suite"`
				Status     string  `json:"status"`
				Conclusion *string `json:"conclusion"`
				DetailsURL string  `json:"details_url"`
				HTMLURL    string  `json:"html_url"`
				Output     struct {
					Title   *string `json:"title"`
					Summary *string `json:"summary"`
					Text    *string `json:"text"`
				} `json:"output"`
			} `json:"check_runs"`
		}
		h, err := c.answer(c.http.R().SetContext(ctx), http.MethodGet, next, &body)
		if err != nil {
			return CI{}, fmt.Errorf("read the check runs of %s in %s/%s: %w", sha, owner, repo, err)
		}
		ci.RateLimit = rateLimitIn(h)
		for _, r := range body.CheckRuns {
			check := Check{Kind: "check_run", ID: r.ID, Name: r.Name, Status: r.Status, DetailsURL: r.DetailsURL, suite: r.CheckSuite.ID}
			if r.Conclusion != nil {
				check.Conclusion = *r.Conclusion
			}
			if check.DetailsURL == "" {
				check.DetailsURL = r.HTMLURL
			}
			var parts []string
			for _, p := range []*string{r.Output.Title, r.Output.Summary, r.Output.Text} {
				if p != nil && strings.TrimSpace(*p) != "" {
					parts = append(parts, strings.TrimSpace(*p))
				}
			}
			check.Summary = strings.Join(parts, "\n\n")
			keep(check)
		}
		next = ""
		if m := nextLink.FindStringSubmatch(h.Get("Link")); m != nil {
			if next, err = c.sameOrigin(m[1]); err != nil {
				return CI{}, fmt.Errorf("read the check runs of %s in %s/%s: %w", sha, owner, repo, err)
			}
		}
	}

	// One page: the combined status holds one status per context, and a
	// commit with more than 100 contexts is not one this worker watches
	// (refused, not judged on part of them).
	var combined struct {
		TotalCount int `json:"total_count"`
		Statuses   []struct {
			ID          int64   `json:"id"`
			Context     string  `json:"context"`
			State       string  `json:"state"`
			Description *string `json:"description"`
			TargetURL   *string `json:"target_url"`
		} `json:"statuses"`
	}
	h, err := c.answer(c.http.R().SetContext(ctx).SetQueryParam("per_page", "100"), http.MethodGet, repoPath+"/commits/"+url.PathEscape(sha)+"/status", &combined)
	if err != nil {
		return CI{}, fmt.Errorf("read the commit statuses of %s in %s/%s: %w", sha, owner, repo, err)
	}
	ci.RateLimit = rateLimitIn(h)
	if combined.TotalCount > len(combined.Statuses) {
		return CI{}, fmt.Errorf("read the commit statuses of %s in %s/%s: %d of them, more than the 100 this worker reads", sha, owner, repo, combined.TotalCount)
	}
	for _, s := range combined.Statuses {
		check := Check{Kind: "status", ID: s.ID, Name: s.Context, Status: "completed", Conclusion: s.State}
		switch s.State {
		case "pending":
			check.Status = "pending"
		case "error":
			check.Conclusion = "failure"
		}
		if s.Description != nil {
			check.Summary = *s.Description
		}
		if s.TargetURL != nil {
			check.DetailsURL = *s.TargetURL
		}
		keep(check)
	}
	return ci, nil
}

// sameOrigin resolves a link GitHub gave, refusing one that would take the
// token to another origin.
func (c *Client) sameOrigin(link string) (string, error) {
	u, err := c.base.Parse(link)
	if err != nil {
		return "", fmt.Errorf("GitHub's Link header has a next page that is not a URL: %w", err)
	}
	if u.Scheme != c.base.Scheme || u.Host != c.base.Host {
		return "", fmt.Errorf("GitHub's Link header has a next page on %s, not on the API at %s; not followed with the token", u.Host, c.base.Host)
	}
	return u.String(), nil
}

// CheckLog returns the last maxBytes bytes (at most) of a check's log: an
// Actions job's log, or the check's summary when it has none (a status, a
// check run of another app, a log GitHub no longer keeps).
func (c *Client) CheckLog(ctx context.Context, owner, repo string, check Check, maxBytes int) (string, error) {
	if maxBytes <= 0 {
		return "", fmt.Errorf("read the log of check %q: maxBytes is %d, it must be positive", check.Name, maxBytes)
	}
	if check.Kind != "check_run" {
		return tailString(check.Summary, maxBytes), nil
	}
	path := repoPath(owner, repo) + "/actions/jobs/" + strconv.FormatInt(check.ID, 10) + "/logs"
	resp, err := c.noRedirect.R().SetContext(ctx).Get(path)
	if err != nil {
		return "", fmt.Errorf("read the log of check %q in %s/%s: GET %s: %w", check.Name, owner, repo, path, err)
	}
	if rl := rateLimitOf(resp); rl != nil {
		return "", fmt.Errorf("read the log of check %q in %s/%s: %w", check.Name, owner, repo, rl)
	}
	switch code := resp.StatusCode(); {
	case code == http.StatusNotFound || code == http.StatusGone:
		return tailString(check.Summary, maxBytes), nil
	case resp.IsError():
		return "", fmt.Errorf("read the log of check %q in %s/%s: %w", check.Name, owner, repo, errorOf(resp))
	case code != http.StatusFound && code != http.StatusMovedPermanently && code != http.StatusTemporaryRedirect:
		return "", fmt.Errorf("read the log of check %q in %s/%s: GitHub answered HTTP %d, not the redirect to the log its API documents", check.Name, owner, repo, code)
	}
	location, err := url.Parse(resp.Header().Get("Location"))
	if err != nil || !location.IsAbs() {
		// Not the whole Location: its query is a signature.
		return "", fmt.Errorf("read the log of check %q in %s/%s: GitHub redirected to something that is not a URL to download from", check.Name, owner, repo)
	}
	log, err := c.downloadTail(ctx, location, maxBytes)
	if err != nil {
		return "", fmt.Errorf("read the log of check %q in %s/%s: %w", check.Name, owner, repo, err)
	}
	return log, nil
}

// downloadTail fetches a signed URL without the token. It is tried once:
// GitHub signs it for a minute or so, and CheckLog as a whole is what to try
// again. Errors name its host only, its query being the signature.
func (c *Client) downloadTail(ctx context.Context, u *url.URL, maxBytes int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("download the log from %s: %w", u.Host, err)
	}
	req.Header.Set("User-Agent", "taskworker")
	resp, err := c.download.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("download the log from %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download the log from %s: HTTP %d; the job's logs may have expired", u.Host, resp.StatusCode)
	}
	b, err := tail(resp.Body, maxBytes)
	if err != nil {
		return "", fmt.Errorf("download the log from %s: %w", u.Host, err)
	}
	return string(b), nil
}

// tail reads r to its end keeping its last n bytes, in at most 2n (plus a
// read's chunk) of memory whatever r's length: logs may be gigabytes.
func tail(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, 2*n)
	chunk := make([]byte, min(n, 64<<10))
	for {
		k, err := r.Read(chunk)
		if len(buf)+k > 2*n {
			keep := min(len(buf), n)
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
		buf = append(buf, chunk[:k]...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return trimRune(buf[max(len(buf)-n, 0):], len(buf) > n), nil
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return string(trimRune([]byte(s[len(s)-n:]), true))
}

// trimRune drops the bytes of a character cut in two by the tail.
func trimRune(b []byte, cut bool) []byte {
	for i := 0; cut && i < utf8.UTFMax && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	return b
}
