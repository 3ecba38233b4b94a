// Package tasksapi is a typed client of PostHog's Tasks API: tasks, runs, log
// entries and artifacts, with bearer auth and retries that honour Retry-After.
// A caller with retries of its own (a Temporal step's policy, a loop) sends
// each call once (NoRetries) and finds the API's Retry-After in the error.
package tasksapi

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"
)

// Config says where the API is and how to call it.
type Config struct {
	BaseURL   string // e.g. https://us.posthog.com
	APIKey    string // personal API key with task:read and task:write
	ProjectID string
	// Retries is how many times the client sends a call again after a
	// transient failure (see IsRetryable): 0 takes the default, 4; NoRetries
	// sends each call once. WithRetries overrides it for one context's calls.
	Retries int
	// RetryWait and RetryMaxWait bound the jittered exponential backoff
	// between retries; a longer Retry-After of the API's is waited instead.
	RetryWait    time.Duration
	RetryMaxWait time.Duration
	// RequestTimeout bounds one HTTP attempt.
	RequestTimeout time.Duration
	UserAgent      string
	// Observe, when set, hears about every HTTP attempt (retries included):
	// its method and path, status code (0 when no answer came) and latency.
	Observe func(method, path string, code int, took time.Duration)
}

// NoRetries, as Config.Retries or to WithRetries, sends each call once.
const NoRetries = -1

// maxRetryAfter caps a Retry-After the API sends, so one answer can't park a
// call for longer than the activity that made it is willing to wait.
const maxRetryAfter = 60 * time.Second

// Client calls the Tasks API of one project.
type Client struct {
	http          *resty.Client
	retries       int
	wait, maxWait time.Duration
}

type retriesKey struct{}

// WithRetries returns a context whose calls the client sends again up to n
// times after a transient failure, whatever its Config.Retries; n of 0 or
// NoRetries sends them once.
func WithRetries(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, retriesKey{}, max(n, 0))
}

// New returns a client; zero retry settings get defaults that ride out a
// contended append (503, Retry-After: 2) and short blips.
func New(cfg Config) *Client {
	if cfg.Retries == 0 {
		cfg.Retries = 4
	}
	if cfg.RetryWait == 0 {
		cfg.RetryWait = 250 * time.Millisecond
	}
	if cfg.RetryMaxWait == 0 {
		cfg.RetryMaxWait = 10 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "taskworker"
	}
	base := strings.TrimRight(cfg.BaseURL, "/") + "/api/projects/" + url.PathEscape(cfg.ProjectID)
	h := resty.New().
		SetBaseURL(base).
		SetAuthToken(cfg.APIKey).
		SetHeader("Accept", "application/json").
		SetHeader("User-Agent", cfg.UserAgent).
		SetTimeout(cfg.RequestTimeout)
	// resty logs request failures on its own; the callers wrap and report them.
	h.SetLogger(silentLogger{})
	if cfg.Observe != nil {
		h.SetTransport(observed{next: http.DefaultTransport, observe: cfg.Observe})
	}
	return &Client{http: h, retries: max(cfg.Retries, 0), wait: cfg.RetryWait, maxWait: cfg.RetryMaxWait}
}

// send makes a call, retrying a transient failure as often as ctx's or the
// client's retries allow. Its worst case is 1+retries requests of up to
// RequestTimeout each, apart by RetryMaxWait at most, or by the API's
// Retry-After when longer (up to maxRetryAfter).
func (c *Client) send(ctx context.Context, method, path string, body any) (*resty.Response, error) {
	retries := c.retries
	if n, ok := ctx.Value(retriesKey{}).(int); ok {
		retries = n
	}
	for attempt := 1; ; attempt++ {
		req := c.http.R().SetContext(ctx)
		if body != nil {
			req.SetHeader("Content-Type", "application/json").SetBody(body)
		}
		resp, err := req.Execute(method, path)
		var failure error
		switch {
		case err != nil:
			failure = &NetworkError{Method: method, Path: path, Attempts: attempt, Err: err}
		case resp.IsError():
			failure = newAPIError(method, path, resp, attempt)
		default:
			return resp, nil
		}
		if attempt > retries || ctx.Err() != nil || !IsRetryable(failure) {
			return resp, failure
		}
		t := time.NewTimer(max(c.backoff(attempt), RetryAfter(failure)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return resp, &NetworkError{Method: method, Path: path, Attempts: attempt, Err: ctx.Err()}
		}
	}
}

// backoff is the wait before retry number attempt: exponential from wait up
// to maxWait, with full jitter on its upper half.
func (c *Client) backoff(attempt int) time.Duration {
	d := min(c.wait<<min(attempt-1, 20), c.maxWait)
	return d/2 + rand.N(d/2+1)
}

// ParseRetryAfter reads a Retry-After value (seconds or an HTTP date); 0 when absent or invalid.
func ParseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(value, 64); err == nil {
		d = time.Duration(secs * float64(time.Second))
	} else if at, err := http.ParseTime(value); err == nil {
		d = at.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	if out == nil || resp.StatusCode() == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(resp.Body(), out); err != nil {
		return &DecodeError{Method: method, Path: path, Err: err}
	}
	return nil
}

func newAPIError(method, path string, resp *resty.Response, attempts int) *APIError {
	e := &APIError{Method: method, Path: path, StatusCode: resp.StatusCode(), Attempts: attempts,
		RetryAfter: ParseRetryAfter(resp.Header().Get("Retry-After"), time.Now())}
	var body struct {
		Detail any    `json:"detail"`
		Code   string `json:"code"`
		Attr   string `json:"attr"`
	}
	if json.Unmarshal(resp.Body(), &body) == nil && body.Detail != nil {
		e.Detail = fmt.Sprint(body.Detail)
		e.Code, e.Attr = body.Code, body.Attr
	} else {
		e.Detail = snippet(string(resp.Body()), 200)
	}
	return e
}

func snippet(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func taskPath(taskID string) string { return "/tasks/" + url.PathEscape(taskID) + "/" }

func runPath(taskID, runID string) string {
	return taskPath(taskID) + "runs/" + url.PathEscape(runID) + "/"
}

// GetTask reads a task.
func (c *Client) GetTask(ctx context.Context, taskID string) (Task, error) {
	var t Task
	return t, c.do(ctx, http.MethodGet, taskPath(taskID), nil, &t)
}

// CreateTaskRequest is the body of POST /tasks/.
type CreateTaskRequest struct {
	Title         string  `json:"title"`
	Description   string  `json:"description"`
	OriginProduct string  `json:"origin_product,omitempty"`
	Repository    string  `json:"repository,omitempty"`
	Assignee      *string `json:"assignee,omitempty"`
	// JSONSchema makes the run's result JSON matching it.
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
}

// CreateTask creates a task.
func (c *Client) CreateTask(ctx context.Context, req CreateTaskRequest) (Task, error) {
	var t Task
	return t, c.do(ctx, http.MethodPost, "/tasks/", req, &t)
}

// RunTask creates a queued run and kicks off its workflow; the answer's
// LatestRun is the new run.
func (c *Client) RunTask(ctx context.Context, taskID string) (Task, error) {
	var t Task
	return t, c.do(ctx, http.MethodPost, taskPath(taskID)+"run/", nil, &t)
}

// CreateRun creates a run of the task without starting it: not_started, and
// environment local, a run for a client outside PostHog's cloud to drive.
func (c *Client) CreateRun(ctx context.Context, taskID string) (TaskRun, error) {
	var r TaskRun
	return r, c.do(ctx, http.MethodPost, taskPath(taskID)+"runs/", nil, &r)
}

// GetRun reads a run.
func (c *Client) GetRun(ctx context.Context, taskID, runID string) (TaskRun, error) {
	var r TaskRun
	return r, c.do(ctx, http.MethodGet, runPath(taskID, runID), nil, &r)
}

// UpdateRun patches a run.
func (c *Client) UpdateRun(ctx context.Context, taskID, runID string, update RunUpdate) (TaskRun, error) {
	var r TaskRun
	return r, c.do(ctx, http.MethodPatch, runPath(taskID, runID), update, &r)
}

// AppendLog appends encoded entries (JSON objects, see package acp) to a run's log, in order.
func (c *Client) AppendLog(ctx context.Context, taskID, runID string, entries []json.RawMessage) error {
	body := struct {
		Entries []json.RawMessage `json:"entries"`
	}{entries}
	return c.do(ctx, http.MethodPost, runPath(taskID, runID)+"append_log/", body, nil)
}

// UploadArtifacts uploads files to a run and returns the run's whole manifest.
func (c *Client) UploadArtifacts(ctx context.Context, taskID, runID string, artifacts []Artifact) ([]ArtifactRecord, error) {
	body := struct {
		Artifacts []Artifact `json:"artifacts"`
	}{artifacts}
	var out struct {
		Artifacts []ArtifactRecord `json:"artifacts"`
	}
	err := c.do(ctx, http.MethodPost, runPath(taskID, runID)+"artifacts/", body, &out)
	return out.Artifacts, err
}

// Logs returns a run's log entries as raw JSON objects, in stored order.
func (c *Client) Logs(ctx context.Context, taskID, runID string) ([]json.RawMessage, error) {
	path := runPath(taskID, runID) + "logs/"
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	var entries []json.RawMessage
	for _, line := range strings.Split(string(resp.Body()), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !json.Valid([]byte(line)) {
			return nil, &DecodeError{Method: http.MethodGet, Path: path, Err: fmt.Errorf("line %q is not JSON", snippet(line, 80))}
		}
		entries = append(entries, json.RawMessage(line))
	}
	return entries, nil
}

// observed measures each HTTP attempt.
type observed struct {
	next    http.RoundTripper
	observe func(method, path string, code int, took time.Duration)
}

func (o observed) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := o.next.RoundTrip(req)
	code := 0
	if err == nil {
		code = resp.StatusCode
	}
	o.observe(req.Method, req.URL.Path, code, time.Since(start))
	return resp, err
}

type silentLogger struct{}

func (silentLogger) Errorf(string, ...any) {}
func (silentLogger) Warnf(string, ...any)  {}
func (silentLogger) Debugf(string, ...any) {}

// TaskFilter narrows GET /tasks/.
type TaskFilter struct {
	OriginProduct string
	Organization  string
	Repository    string
	Stage         string
}

// ListTasks reads one page of tasks, newest first.
func (c *Client) ListTasks(ctx context.Context, f TaskFilter, limit, offset int) (Page[Task], error) {
	var page Page[Task]
	q := url.Values{"limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}}
	for k, v := range map[string]string{"origin_product": f.OriginProduct, "organization": f.Organization, "repository": f.Repository, "stage": f.Stage} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return page, c.do(ctx, http.MethodGet, "/tasks/?"+q.Encode(), nil, &page)
}

// ListRuns reads one page of a task's runs, newest first.
func (c *Client) ListRuns(ctx context.Context, taskID string, limit, offset int) (Page[TaskRun], error) {
	var page Page[TaskRun]
	q := url.Values{"limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}}
	return page, c.do(ctx, http.MethodGet, taskPath(taskID)+"runs/?"+q.Encode(), nil, &page)
}

// NextOffset reads the offset of a page's next link; ok is false on the last page.
func NextOffset[T any](p Page[T]) (offset int, ok bool) {
	if p.Next == nil || *p.Next == "" {
		return 0, false
	}
	u, err := url.Parse(*p.Next)
	if err != nil {
		return 0, false
	}
	offset, err = strconv.Atoi(u.Query().Get("offset"))
	return offset, err == nil
}
