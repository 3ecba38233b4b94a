// Package github opens pull requests and reads their CI through GitHub's
// REST API (or GitHub Enterprise's, at another base URL).
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
	// noRedirect answers a redirect itself, for CheckLog to fetch the
	// download it leads to without the token.
	noRedirect *resty.Client
	download   *http.Client
	base       *url.URL
}

// The client is the one level of retries of a call to GitHub: Publish, which
// makes them, is not run again for a pull request (running it again would
// push and ask GitHub all over), and without TASKWORKER_PR_STRICT a failed
// one is only recorded. Worst case of one call: 1+retries requests of up to
// requestTimeout each, apart by 1 s doubling to 30 s (jittered down to half)
// or until GitHub's rate limit resets (its Retry-After, or the
// X-RateLimit-Reset of a spent primary limit) when longer, up to
// maxRetryAfter: 7 requests over half a minute to a minute of GitHub down,
// 4.5 min when each request times out, 9.5 min at the very most. A rate limit
// that lifts later than maxRetryAfter is not waited here: the call returns
// *RateLimited at once, for its caller to wait durably. OpenOrFind makes two
// such calls; CI up to maxCheckRunPages+1, CheckLog one and a download.
const (
	retries        = 6
	retryWait      = time.Second
	retryMaxWait   = 30 * time.Second
	maxRetryAfter  = time.Minute
	requestTimeout = 30 * time.Second
	// downloadTimeout bounds a log download, which may be many megabytes.
	downloadTimeout = 5 * time.Minute
)

// maxBodyBytes bounds an answer of the API (a page of 100 check runs is
// well under a megabyte).
const maxBodyBytes = 32 << 20

// repoPath is the API path of a repository.
func repoPath(owner, repo string) string {
	return "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo)
}

// New returns a client for the API at baseURL (https://api.github.com for github.com).
func New(baseURL, token string) *Client {
	base, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		base = &url.URL{}
	}
	return &Client{
		http: newREST(baseURL, token).SetRedirectPolicy(resty.RedirectPolicyFunc(sameOriginAuth)),
		noRedirect: newREST(baseURL, token).SetRedirectPolicy(resty.RedirectPolicyFunc(func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		})),
		download: &http.Client{Timeout: downloadTimeout, CheckRedirect: sameOriginAuth},
		base:     base,
	}
}

// sameOriginAuth follows a redirect without the token when it leads to
// another origin: Go's client keeps the header for the same host name on
// another port or scheme, and GitHub's downloads are on another host.
func sameOriginAuth(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host {
		req.Header.Del("Authorization")
	}
	return nil
}

func newREST(baseURL, token string) *resty.Client {
	h := resty.New().
		SetBaseURL(strings.TrimRight(baseURL, "/")).
		SetAuthToken(token).
		SetHeader("Accept", "application/vnd.github+json").
		SetHeader("X-GitHub-Api-Version", "2022-11-28").
		SetHeader("User-Agent", "taskworker").
		SetTimeout(requestTimeout).
		// No answer of the API's is this large; a larger one is refused,
		// not read into memory.
		SetResponseBodyLimit(maxBodyBytes).
		SetRetryCount(retries).
		// resty clamps every wait to these; backoff computes the rest.
		SetRetryWaitTime(retryWait / 2).
		SetRetryMaxWaitTime(maxRetryAfter).
		SetRetryAfter(backoff).
		AddRetryCondition(func(r *resty.Response, err error) bool {
			if err != nil {
				return r == nil || r.Request == nil || r.Request.Context().Err() == nil
			}
			if rl := rateLimitOf(r); rl != nil {
				return time.Until(rl.Until) <= maxRetryAfter
			}
			return r.IsError() && !errorOf(r).Permanent()
		})
	h.SetLogger(silent{})
	return h
}

// backoff waits until GitHub's rate limit lifts (rateLimitOf) when that is
// longer than an exponential backoff from retryWait to retryMaxWait.
func backoff(_ *resty.Client, r *resty.Response) (time.Duration, error) {
	attempt := 1
	if r != nil && r.Request != nil {
		attempt = max(r.Request.Attempt, 1)
	}
	d := min(retryWait<<min(attempt-1, 20), retryMaxWait)
	d = d/2 + rand.N(d/2+1)
	if rl := rateLimitOf(r); rl != nil {
		d = max(d, min(time.Until(rl.Until), maxRetryAfter))
	}
	return d, nil
}

// RateLimited is GitHub refusing a call for a rate limit until Until: the
// Retry-After of a secondary limit, or the reset of a spent primary one.
type RateLimited struct {
	Until time.Time
	Err   *Error
}

func (e *RateLimited) Error() string {
	return fmt.Sprintf("%v; GitHub's rate limit lifts at %s, call again then", e.Err, e.Until.UTC().Format(time.RFC3339))
}

func (e *RateLimited) Unwrap() error { return e.Err }

// rateLimitOf reads a refusal for a rate limit as GitHub documents it: a
// 403 or 429 with Retry-After, or with X-RateLimit-Remaining 0 until
// X-RateLimit-Reset. A secondary limit without either header is left to
// Error.Permanent and backoff.
func rateLimitOf(r *resty.Response) *RateLimited {
	if r == nil || r.RawResponse == nil || (r.StatusCode() != http.StatusForbidden && r.StatusCode() != http.StatusTooManyRequests) {
		return nil
	}
	h := r.Header()
	if secs, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && secs >= 0 {
		return &RateLimited{Until: time.Now().Add(time.Duration(secs) * time.Second), Err: errorOf(r)}
	}
	if rl := rateLimitIn(h); rl.Known && rl.Remaining == 0 {
		// The reset is in whole seconds: a second more is past it.
		return &RateLimited{Until: rl.Reset.Add(time.Second), Err: errorOf(r)}
	}
	return nil
}

// RateLimit is what GitHub said was left of the primary rate limit.
type RateLimit struct {
	Remaining int
	Reset     time.Time
	// Known is false when the answer had no (readable) rate limit headers.
	Known bool
}

func rateLimitIn(h http.Header) RateLimit {
	remaining, err1 := strconv.Atoi(strings.TrimSpace(h.Get("X-RateLimit-Remaining")))
	reset, err2 := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64)
	if err1 != nil || err2 != nil {
		return RateLimit{}
	}
	return RateLimit{Remaining: remaining, Reset: time.Unix(reset, 0), Known: true}
}

// NewPullRequest is what to open.
type NewPullRequest struct {
	Title string `json:"title"`
	Head  string `json:"head"`
	Base  string `json:"base"`
	Body  string `json:"body"`
	Draft bool   `json:"draft,omitempty"`
}

// PullRequest is an open pull request.
type PullRequest struct {
	Number  int    `json:"number"`
	HTMLURL string `json:"html_url"`
	State   string `json:"state"`
	Draft   bool   `json:"draft"`
	Head    Ref    `json:"head"`
	Base    Ref    `json:"base"`
}

// Ref is a branch of a pull request: its name and the commit it is at.
type Ref struct {
	Ref string `json:"ref"`
	SHA string `json:"sha"`
}

// PullRequest reads pull request number, as it is now (its head's commit is
// the one whose CI to watch).
func (c *Client) PullRequest(ctx context.Context, owner, repo string, number int) (PullRequest, error) {
	path := "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "/pulls/" + strconv.Itoa(number)
	var pr PullRequest
	if err := c.do(c.http.R().SetContext(ctx), http.MethodGet, path, &pr); err != nil {
		return PullRequest{}, fmt.Errorf("read pull request #%d of %s/%s: %w", number, owner, repo, err)
	}
	return pr, nil
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
	path := repoPath(owner, repo) + "/pulls"
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

// UpdateBody replaces the body of pull request number: a later push of the
// run's changes says what the whole change is now.
func (c *Client) UpdateBody(ctx context.Context, owner, repo string, number int, body string) error {
	path := repoPath(owner, repo) + "/pulls/" + strconv.Itoa(number)
	req := c.http.R().SetContext(ctx).SetBody(map[string]string{"body": body}).SetHeader("Content-Type", "application/json")
	var updated PullRequest
	if err := c.do(req, http.MethodPatch, path, &updated); err != nil {
		return fmt.Errorf("update pull request #%d in %s/%s: %w", number, owner, repo, err)
	}
	return nil
}

func (c *Client) do(req *resty.Request, method, path string, out any) error {
	_, err := c.answer(req, method, path, out)
	return err
}

// answer makes a call and reads its JSON answer into out, returning the
// answer's headers.
func (c *Client) answer(req *resty.Request, method, path string, out any) (http.Header, error) {
	resp, err := req.Execute(method, path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if rl := rateLimitOf(resp); rl != nil {
		return resp.Header(), rl
	}
	if resp.IsError() {
		return resp.Header(), errorOf(resp)
	}
	if err := json.Unmarshal(resp.Body(), out); err != nil {
		return resp.Header(), fmt.Errorf("%s %s: GitHub answered a body that is not what its API documents: %w", method, path, err)
	}
	return resp.Header(), nil
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
