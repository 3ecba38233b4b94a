// Package github opens pull requests through GitHub's REST API (or GitHub
// Enterprise's, at another base URL).
package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"
)

// Client calls the REST API with a token.
type Client struct {
	http *resty.Client
}

// The client is the one level of retries of a call to GitHub: Publish, which
// makes them, is not run again for a pull request (running it again would
// push and ask GitHub all over), and without TASKWORKER_PR_STRICT a failed
// one is only recorded. Worst case of one call: 1+retries requests of up to
// requestTimeout each, apart by 1 s doubling to 30 s (jittered down to half)
// or by GitHub's Retry-After when longer, up to maxRetryAfter: 7 requests
// over half a minute to a minute of GitHub down, 4.5 min when each request
// times out, 9.5 min at the very most. OpenOrFind makes two such calls.
const (
	retries        = 6
	retryWait      = time.Second
	retryMaxWait   = 30 * time.Second
	maxRetryAfter  = time.Minute
	requestTimeout = 30 * time.Second
)

// New returns a client for the API at baseURL (https://api.github.com for github.com).
func New(baseURL, token string) *Client {
	h := resty.New().
		SetBaseURL(strings.TrimRight(baseURL, "/")).
		SetAuthToken(token).
		SetHeader("Accept", "application/vnd.github+json").
		SetHeader("X-GitHub-Api-Version", "2022-11-28").
		SetHeader("User-Agent", "taskworker").
		SetTimeout(requestTimeout).
		SetRetryCount(retries).
		// resty clamps every wait to these; backoff computes the rest.
		SetRetryWaitTime(retryWait / 2).
		SetRetryMaxWaitTime(maxRetryAfter).
		SetRetryAfter(backoff).
		AddRetryCondition(func(r *resty.Response, err error) bool {
			if err != nil {
				return r == nil || r.Request == nil || r.Request.Context().Err() == nil
			}
			return r.IsError() && !errorOf(r).Permanent()
		})
	h.SetLogger(silent{})
	return &Client{http: h}
}

// backoff waits GitHub's Retry-After (its secondary rate limits send one)
// when longer than an exponential backoff from retryWait to retryMaxWait.
func backoff(_ *resty.Client, r *resty.Response) (time.Duration, error) {
	attempt := 1
	if r != nil && r.Request != nil {
		attempt = max(r.Request.Attempt, 1)
	}
	d := min(retryWait<<min(attempt-1, 20), retryMaxWait)
	d = d/2 + rand.N(d/2+1)
	if r != nil {
		if secs, err := strconv.Atoi(strings.TrimSpace(r.Header().Get("Retry-After"))); err == nil && secs > 0 {
			d = max(d, min(time.Duration(secs)*time.Second, maxRetryAfter))
		}
	}
	return d, nil
}

// NewPullRequest is what to open.
type NewPullRequest struct {
	Title string `json:"title"`
	Head  string `json:"head"`
	Base  string `json:"base"`
	Body  string `json:"body"`
}

// PullRequest is an open pull request.
type PullRequest struct {
	Number  int    `json:"number"`
	HTMLURL string `json:"html_url"`
	State   string `json:"state"`
}

// Error is an answer of the API other than success.
type Error struct {
	StatusCode int
	Message    string
	Details    []string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("GitHub answered HTTP %d: %s", e.StatusCode, e.Message)
	if len(e.Details) > 0 {
		msg += " (" + strings.Join(e.Details, "; ") + ")"
	}
	return msg
}

// Permanent reports an answer no retry will change: a refusal (4xx) other
// than a timeout or a rate limit (429, or 403 saying so, as GitHub's
// secondary limits do).
func (e *Error) Permanent() bool {
	switch {
	case e.StatusCode == http.StatusRequestTimeout, e.StatusCode == http.StatusTooManyRequests:
		return false
	case e.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(e.Message), "rate limit"):
		return false
	}
	return e.StatusCode >= 400 && e.StatusCode < 500
}

func (e *Error) alreadyExists() bool {
	if e.StatusCode != http.StatusUnprocessableEntity {
		return false
	}
	for _, d := range e.Details {
		if strings.Contains(strings.ToLower(d), "already exists") {
			return true
		}
	}
	return false
}

// OpenOrFind opens a pull request for pr.Head, or finds the open one that
// already exists. created says which.
func (c *Client) OpenOrFind(ctx context.Context, owner, repo string, pr NewPullRequest) (PullRequest, bool, error) {
	path := "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "/pulls"
	var opened PullRequest
	err := c.do(c.http.R().SetContext(ctx).SetBody(pr).SetHeader("Content-Type", "application/json"), http.MethodPost, path, &opened)
	if err == nil {
		return opened, true, nil
	}
	var apiErr *Error
	if !errors.As(err, &apiErr) || !apiErr.alreadyExists() {
		return PullRequest{}, false, fmt.Errorf("open a pull request from %s into %s in %s/%s: %w", pr.Head, pr.Base, owner, repo, err)
	}
	var open []PullRequest
	req := c.http.R().SetContext(ctx).SetQueryParams(map[string]string{"head": owner + ":" + pr.Head, "state": "open"})
	if err := c.do(req, http.MethodGet, path, &open); err != nil {
		return PullRequest{}, false, fmt.Errorf("find the pull request from %s in %s/%s: %w", pr.Head, owner, repo, err)
	}
	if len(open) == 0 {
		return PullRequest{}, false, fmt.Errorf("GitHub says a pull request from %s exists in %s/%s, but lists none open", pr.Head, owner, repo)
	}
	return open[0], false, nil
}

func (c *Client) do(req *resty.Request, method, path string, out any) error {
	resp, err := req.Execute(method, path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.IsError() {
		return errorOf(resp)
	}
	if err := json.Unmarshal(resp.Body(), out); err != nil {
		return fmt.Errorf("%s %s: GitHub answered a body that is not what its API documents: %w", method, path, err)
	}
	return nil
}

// errorOf reads an error answer.
func errorOf(resp *resty.Response) *Error {
	var body struct {
		Message string `json:"message"`
		Errors  []struct {
			Message string `json:"message"`
			Field   string `json:"field"`
			Code    string `json:"code"`
		} `json:"errors"`
	}
	_ = json.Unmarshal(resp.Body(), &body)
	e := &Error{StatusCode: resp.StatusCode(), Message: body.Message}
	for _, d := range body.Errors {
		e.Details = append(e.Details, strings.Join(strings.Fields(d.Message+" "+d.Field+" "+d.Code), " "))
	}
	return e
}

type silent struct{}

func (silent) Errorf(string, ...any) {}
func (silent) Warnf(string, ...any)  {}
func (silent) Debugf(string, ...any) {}
