package localapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/kickoff"
)

const key = "test-key-123456"

type apiClient struct {
	t    *testing.T
	base string
}

func newServer(t *testing.T) (*Server, *apiClient) {
	s, err := New(Config{DataDir: t.TempDir(), APIKey: key, ProjectID: "1"})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	return s, &apiClient{t: t, base: srv.URL + "/api/projects/1"}
}

func (c *apiClient) do(method, path, body string, headers ...string) (int, map[string]any) {
	c.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	require.NoError(c.t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

func (c *apiClient) task() (taskID, runID string) {
	c.t.Helper()
	code, task := c.do("POST", "/tasks/", `{"title":"Fix","description":"d","repository":"Acme/App"}`)
	require.Equal(c.t, 201, code, task)
	require.Equal(c.t, "acme/app", task["repository"], "repositories are stored lower-case")
	code, run := c.do("POST", "/tasks/"+task["id"].(string)+"/runs/", "")
	require.Equal(c.t, 201, code)
	return task["id"].(string), run["id"].(string)
}

// A run PostHog kicks off is its cloud runner's; one created without being
// started is local, for a client outside PostHog's cloud to drive.
func TestARunsEnvironmentSaysWhoDrivesIt(t *testing.T) {
	_, c := newServer(t)
	taskID, runID := c.task()
	code, run := c.do("GET", "/tasks/"+taskID+"/runs/"+runID+"/", "")
	require.Equal(t, 200, code)
	require.Equal(t, "local", run["environment"])
	require.Equal(t, "not_started", run["status"])
	code, task := c.do("POST", "/tasks/"+taskID+"/run/", "")
	require.Equal(t, 200, code)
	latest := task["latest_run"].(map[string]any)
	require.Equal(t, "cloud", latest["environment"])
	require.Equal(t, "queued", latest["status"])
}

func TestAuthAndProject(t *testing.T) {
	_, c := newServer(t)
	code, body := c.do("GET", "/tasks/", "", "Authorization", "")
	require.Equal(t, 401, code)
	require.Equal(t, "Authentication credentials were not provided.", body["detail"])
	code, _ = c.do("GET", "/tasks/", "", "Authorization", "Bearer wrong")
	require.Equal(t, 401, code)
	c2 := &apiClient{t: t, base: strings.Replace(c.base, "/projects/1", "/projects/2", 1)}
	code, _ = c2.do("GET", "/tasks/", "")
	require.Equal(t, 403, code)
}

func TestPathsNeedTheirTrailingSlash(t *testing.T) {
	_, c := newServer(t)
	code, body := c.do("GET", "/tasks", "")
	require.Equal(t, 404, code)
	require.Equal(t, "Not found.", body["detail"])
}

func TestTaskValidation(t *testing.T) {
	_, c := newServer(t)
	cases := []struct{ body, attr string }{
		{`{"description":"no title"}`, "title"},
		{`{"title":"  "}`, "title"},
		{`{"title":{"x":1}}`, "title"},
		{`{"title":"t","repository":"a/b/c"}`, "repository"},
		{`{"title":"t","repository":"nope"}`, "repository"},
		{`{"title":"t","origin_product":"made_up"}`, "origin_product"},
		{`{"title":"t","github_integration":"x"}`, "github_integration"},
		{`{"title":"t","json_schema":[1]}`, "json_schema"},
	}
	for _, tc := range cases {
		code, body := c.do("POST", "/tasks/", tc.body)
		require.Equal(t, 400, code, tc.body)
		require.Equal(t, tc.attr, body["attr"], tc.body)
		require.Equal(t, "validation_error", body["type"])
	}
	code, _ := c.do("POST", "/tasks/", `{"title":"t"}`, "Content-Type", "text/plain")
	require.Equal(t, 415, code)
	code, _ = c.do("POST", "/tasks/", `not json`)
	require.Equal(t, 400, code)
}

func TestRunPatchValidationAndMerge(t *testing.T) {
	_, c := newServer(t)
	taskID, runID := c.task()
	path := "/tasks/" + taskID + "/runs/" + runID + "/"
	for body, attr := range map[string]string{
		`{"status":"done"}`:          "status",
		`{"status":3}`:               "status",
		`{"state":null}`:             "state",
		`{"branch":{"a":1}}`:         "branch",
		`{"stage":["x"]}`:            "stage",
		`{"error_message":true}`:     "error_message",
		`{"output":"not an object"}`: "output",
	} {
		code, resp := c.do("PATCH", path, body)
		require.Equal(t, 400, code, body)
		require.Equal(t, attr, resp["attr"], body)
	}

	code, run := c.do("PATCH", path, `{"status":"in_progress","output":{"a":1},"state":{"s":1},"unknown_key":1}`)
	require.Equal(t, 200, code)
	require.Nil(t, run["completed_at"])
	code, run = c.do("PATCH", path, `{"status":"completed","output":{"b":2},"branch":"x"}`)
	require.Equal(t, 200, code)
	require.Equal(t, map[string]any{"a": 1.0, "b": 2.0}, run["output"], "output is merged by top-level key")
	require.Equal(t, map[string]any{"s": 1.0}, run["state"])
	require.NotNil(t, run["completed_at"], "a terminal status sets completed_at")

	code, _ = c.do("PATCH", "/tasks/"+taskID+"/runs/00000000-0000-0000-0000-000000000000/", `{"stage":"x"}`)
	require.Equal(t, 404, code)
}

func TestAppendLogValidationAndOrder(t *testing.T) {
	s, c := newServer(t)
	taskID, runID := c.task()
	path := "/tasks/" + taskID + "/runs/" + runID + "/append_log/"
	for _, body := range []string{`{}`, `{"entries":{}}`, `{"entries":[]}`, `{"entries":[1]}`, `{"entries":[{"a":1},"x"]}`} {
		code, _ := c.do("POST", path, body)
		require.Equal(t, 400, code, body)
	}
	for _, body := range []string{`{"entries":[{"n":1},{"n":2}]}`, `{"entries":[{"n":3}]}`} {
		code, _ := c.do("POST", path, body)
		require.Equal(t, 200, code)
	}
	lines, err := s.store.logs(t.Context(), runID)
	require.NoError(t, err)
	require.Equal(t, []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}, lines)
}

func TestArtifactsValidationAndManifest(t *testing.T) {
	s, c := newServer(t)
	taskID, runID := c.task()
	path := "/tasks/" + taskID + "/runs/" + runID + "/artifacts/"
	for body, attr := range map[string]string{
		`{"artifacts":[{"name":"a","type":"weird","content":"x"}]}`:                               "artifacts__0__type",
		`{"artifacts":[{"name":"a","type":"plan","content":"%%%","content_encoding":"base64"}]}`:  "artifacts__0__content",
		`{"artifacts":[{"type":"plan","content":"x"}]}`:                                           "artifacts__0__name",
		`{"artifacts":[{"name":"` + strings.Repeat("n", 256) + `","type":"plan","content":"x"}]}`: "artifacts__0__name",
	} {
		code, resp := c.do("POST", path, body)
		require.Equal(t, 400, code, body)
		require.Equal(t, attr, resp["attr"], body)
	}
	code, resp := c.do("POST", path, `{"artifacts":[{"name":"dir/plan.md","type":"plan","content":"# Plan"},{"name":"b.bin","type":"artifact","content":"AAEC","content_encoding":"base64"}]}`)
	require.Equal(t, 200, code)
	manifest := resp["artifacts"].([]any)
	require.Len(t, manifest, 2)
	first := manifest[0].(map[string]any)
	require.Equal(t, "plan.md", first["name"], "stored under its base name")
	require.EqualValues(t, 6, first["size"])
	data, err := os.ReadFile(s.ArtifactPath(runID, "b.bin"))
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2}, data)
	code, resp = c.do("POST", path, `{"artifacts":[{"name":"c.txt","type":"output","content":"c"}]}`)
	require.Equal(t, 200, code)
	require.Len(t, resp["artifacts"].([]any), 3, "the answer is the run's whole manifest")
}

func TestListsPaginate(t *testing.T) {
	_, c := newServer(t)
	for range 5 {
		code, _ := c.do("POST", "/tasks/", `{"title":"t","repository":"org/one"}`)
		require.Equal(t, 201, code)
	}
	code, _ := c.do("POST", "/tasks/", `{"title":"t","repository":"other/two"}`)
	require.Equal(t, 201, code)
	code, page := c.do("GET", "/tasks/?limit=2&organization=org", "")
	require.Equal(t, 200, code)
	require.EqualValues(t, 5, page["count"])
	require.Len(t, page["results"], 2)
	require.Contains(t, page["next"], "offset=2")
	require.Nil(t, page["previous"])
	code, _ = c.do("GET", "/tasks/?limit=0", "")
	require.Equal(t, 400, code)
}

func TestDeleteIsSoft(t *testing.T) {
	_, c := newServer(t)
	taskID, _ := c.task()
	code, _ := c.do("DELETE", "/tasks/"+taskID+"/", "")
	require.Equal(t, 204, code)
	code, _ = c.do("GET", "/tasks/"+taskID+"/", "")
	require.Equal(t, 404, code)
	code, _ = c.do("POST", "/tasks/"+taskID+"/run/", "")
	require.Equal(t, 404, code)
}

func TestStateSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir, APIKey: key, ProjectID: "1"})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	c := &apiClient{t: t, base: srv.URL + "/api/projects/1"}
	taskID, _ := c.task()
	srv.Close()
	require.NoError(t, s.Close())

	s2, err := New(Config{DataDir: dir, APIKey: key, ProjectID: "1"})
	require.NoError(t, err)
	srv2 := httptest.NewServer(s2)
	t.Cleanup(func() { srv2.Close(); s2.Close() })
	c2 := &apiClient{t: t, base: srv2.URL + "/api/projects/1"}
	code, task := c2.do("GET", "/tasks/"+taskID+"/", "")
	require.Equal(t, 200, code)
	require.NotNil(t, task["latest_run"])
}

func TestConcurrentCreatesGetDistinctNumbers(t *testing.T) {
	_, c := newServer(t)
	var wg sync.WaitGroup
	slugs := make(chan string, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, task := c.do("POST", "/tasks/", `{"title":"t"}`)
			require.Equal(t, 201, code)
			slugs <- task["slug"].(string)
		}()
	}
	wg.Wait()
	close(slugs)
	seen := map[string]bool{}
	for s := range slugs {
		require.False(t, seen[s], "slug %s given twice", s)
		seen[s] = true
	}
}

func TestGetAnswersCarryAnETagAndA304WhenUnchanged(t *testing.T) {
	_, c := newServer(t)
	taskID, runID := c.task()
	path := c.base + "/tasks/" + taskID + "/runs/" + runID + "/logs/"
	get := func(etag string) *http.Response {
		req, _ := http.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	first := get("")
	etag := first.Header.Get("ETag")
	require.NotEmpty(t, etag)
	require.Equal(t, http.StatusNotModified, get(etag).StatusCode)
	code, _ := c.do("POST", "/tasks/"+taskID+"/runs/"+runID+"/append_log/", `{"entries":[{"n":1}]}`)
	require.Equal(t, 200, code)
	require.Equal(t, http.StatusOK, get(etag).StatusCode, "a new entry changes the ETag")
}

func TestFaultsSpareControlRequestsAndServeOutages(t *testing.T) {
	faults := NewFaults(1)
	s, err := New(Config{DataDir: t.TempDir(), APIKey: key, ProjectID: "1", Faults: faults})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	defer srv.Close()
	get := func(agent string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/api/projects/1/tasks/", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("User-Agent", agent)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	faults.SetOutage(true)
	require.Equal(t, http.StatusServiceUnavailable, get("taskworker/dev"))
	require.Equal(t, http.StatusOK, get(ControlUserAgent+"/test"), "control requests are never faulted")
	faults.SetOutage(false)
	faults.SetRate(1)
	failed := 0
	for range 20 {
		if get("taskworker/dev") != http.StatusOK {
			failed++
		}
	}
	counts := faults.Counts()
	require.Equal(t, 1, counts["outage"])
	total := 0
	for kind, n := range counts {
		if kind != "outage" {
			total += n
		}
	}
	require.Equal(t, 20, total, "every request faulted: %v", counts)
	require.Equal(t, 20-counts["slow"], failed, "all but the slow ones answered an error")
	faults.SetRate(0)
	require.Equal(t, http.StatusOK, get("taskworker/dev"))
}

// starterRecorder takes the API's kick-offs in place of Temporal.
type starterRecorder struct {
	mu     sync.Mutex
	starts []kickoff.RunOptions
}

func (r *starterRecorder) StartRun(_ context.Context, _, _ string, run kickoff.RunOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, run)
	return nil
}

func (r *starterRecorder) last(t *testing.T) kickoff.RunOptions {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.NotEmpty(t, r.starts, "no run was started")
	return r.starts[len(r.starts)-1]
}

func newStartingServer(t *testing.T) (*apiClient, *starterRecorder) {
	rec := &starterRecorder{}
	s, err := New(Config{DataDir: t.TempDir(), APIKey: key, ProjectID: "1", Starter: rec})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	return &apiClient{t: t, base: srv.URL + "/api/projects/1"}, rec
}

func latestRun(t *testing.T, task map[string]any) map[string]any {
	t.Helper()
	run, ok := task["latest_run"].(map[string]any)
	require.True(t, ok, "no latest_run in %v", task)
	return run
}

// No body, an empty one or {} is what PostHog's own clients send: a
// background run with nothing more in its state or its workflow input.
func TestRunWithoutABodyIsABackgroundRun(t *testing.T) {
	c, rec := newStartingServer(t)
	taskID, _ := c.task()
	for _, body := range []string{"", "{}", `{"unknown_key": 1}`} {
		code, task := c.do("POST", "/tasks/"+taskID+"/run/", body)
		require.Equal(t, 200, code, body)
		require.Equal(t, map[string]any{"mode": "background"}, latestRun(t, task)["state"], body)
		require.Nil(t, rec.last(t).InitialMessage, body)
	}
}

func TestRunStoresTheChosenOptionsInTheRunsState(t *testing.T) {
	c, rec := newStartingServer(t)
	taskID, _ := c.task()
	code, task := c.do("POST", "/tasks/"+taskID+"/run/", `{"mode":"interactive","branch":"release","auto_publish":false,
		"runtime_adapter":"codex","model":"gpt-5","reasoning_effort":"xhigh","initial_permission_mode":"plan",
		"pending_user_message":"  start with the tests  ","pending_user_artifact_ids":["a1","a2"]}`)
	require.Equal(t, 200, code, task)
	run := latestRun(t, task)
	require.Equal(t, map[string]any{
		"mode": "interactive", "pr_base_branch": "release", "auto_publish": false,
		"runtime_adapter": "codex", "model": "gpt-5", "reasoning_effort": "xhigh", "initial_permission_mode": "plan",
	}, run["state"])
	require.Equal(t, "queued", run["status"])
	msg := rec.last(t).InitialMessage
	require.NotNil(t, msg)
	require.Equal(t, "start with the tests", msg.Message)
	require.Equal(t, []string{"a1", "a2"}, msg.ArtifactIDs)
	require.Regexp(t, "^"+kickoff.UUIDPattern+"$", msg.MessageID)
	require.Nil(t, msg.ActorUserID, "the local API knows no user ID")

	// Only the keys given are stored, and a blank message is none.
	code, task = c.do("POST", "/tasks/"+taskID+"/run/", `{"mode":"interactive","branch":null,"auto_publish":null,"pending_user_message":"   "}`)
	require.Equal(t, 200, code, task)
	require.Equal(t, map[string]any{"mode": "interactive"}, latestRun(t, task)["state"])
	require.Nil(t, rec.last(t).InitialMessage)
}

func TestRunRequestValidation(t *testing.T) {
	c, rec := newStartingServer(t)
	taskID, _ := c.task()
	cases := []struct{ body, attr, detail string }{
		{`{"mode":"sometimes"}`, "mode", `"sometimes" is not a valid choice.`},
		{`{"mode":null}`, "mode", "This field may not be null."},
		{`{"branch":"` + strings.Repeat("b", 256) + `"}`, "branch", "Ensure this field has no more than 255 characters."},
		{`{"branch":{"name":"x"}}`, "branch", "Not a valid string."},
		{`{"auto_publish":"yes"}`, "auto_publish", "Must be a valid boolean."},
		{`{"pending_user_message":["x"]}`, "pending_user_message", "Not a valid string."},
		{`{"pending_user_artifact_ids":"a1"}`, "pending_user_artifact_ids", "Expected a list of items."},
		{`{"pending_user_artifact_ids":["ok","` + strings.Repeat("a", 129) + `"]}`, "pending_user_artifact_ids__1", "Ensure this field has no more than 128 characters."},
		{`{"pending_user_artifact_ids":[1]}`, "pending_user_artifact_ids__0", "Not a valid string."},
		{`{"runtime_adapter":"gemini","model":"m"}`, "runtime_adapter", `"gemini" is not a valid choice.`},
		{`{"runtime_adapter":"claude","model":"  "}`, "model", "This field may not be blank."},
		{`{"runtime_adapter":"claude","model":"m","reasoning_effort":"extreme"}`, "reasoning_effort", `"extreme" is not a valid choice.`},
		{`{"runtime_adapter":"claude"}`, "model", "This field is required when selecting a cloud runtime."},
		{`{"model":"m"}`, "runtime_adapter", "This field is required when selecting a cloud runtime."},
		{`{"reasoning_effort":"low"}`, "runtime_adapter", "This field is required when selecting a cloud runtime."},
		{`{"initial_permission_mode":"plan"}`, "initial_permission_mode", "This field requires runtime_adapter to be set."},
		{`[1]`, "", "JSON parse error: the body must be a JSON object."},
	}
	for _, tc := range cases {
		code, body := c.do("POST", "/tasks/"+taskID+"/run/", tc.body)
		require.Equal(t, 400, code, tc.body)
		require.Equal(t, "validation_error", body["type"], tc.body)
		if tc.attr == "" {
			require.Nil(t, body["attr"], tc.body)
		} else {
			require.Equal(t, tc.attr, body["attr"], tc.body)
		}
		require.Equal(t, tc.detail, body["detail"], tc.body)
	}
	code, body := c.do("POST", "/tasks/00000000-0000-4000-8000-000000000000/run/", `{"mode":"sometimes"}`)
	require.Equal(t, 404, code, "an unknown task is not found before its body is read: %v", body)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Empty(t, rec.starts, "a refused request starts nothing")
	_, runs := c.do("GET", "/tasks/"+taskID+"/runs/", "")
	require.EqualValues(t, 1, runs["count"], "a refused request creates no run, only c.task's")
}
