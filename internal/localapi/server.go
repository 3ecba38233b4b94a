// Package localapi is a local Tasks API: every endpoint of the contract, as
// strict as the contract says, backed by SQLite with artifacts on disk. It
// stands in for PostHog in the local stack and the end-to-end tests.
package localapi

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Starter kicks off a run's workflow, as PostHog does on POST /tasks/{id}/run/.
type Starter interface {
	StartRun(ctx context.Context, taskID, runID string) error
}

// Config configures the server.
type Config struct {
	// DataDir holds tasks.db and the artifacts; empty keeps everything in
	// memory and in a temporary folder.
	DataDir   string
	APIKey    string
	ProjectID string
	// Starter may be nil: runs are then created queued and nothing starts them.
	Starter Starter
	// Faults, when set, make the API misbehave (tests).
	Faults *Faults
	Logger *zap.Logger
}

// Server is the local Tasks API.
type Server struct {
	cfg          Config
	store        *store
	artifactsDir string
	mux          *http.ServeMux
	handler      http.Handler
}

const (
	maxBodyBytes = 64 << 20
	defaultLimit = 50
	maxLimit     = 100
)

var originProducts = map[string]bool{
	"error_tracking": true, "eval_clusters": true, "user_created": true, "support_queue": true, "session_summaries": true,
}

var artifactTypes = map[string]bool{
	tasksapi.ArtifactPlan: true, tasksapi.ArtifactContext: true, tasksapi.ArtifactReference: true,
	tasksapi.ArtifactOutput: true, tasksapi.ArtifactGeneric: true,
}

// New opens (or creates) the store and builds the server.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.APIKey == "" || cfg.ProjectID == "" {
		return nil, errors.New("local Tasks API needs an API key and a project ID")
	}
	dbPath, artifactsDir := "", ""
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", cfg.DataDir, err)
		}
		dbPath = filepath.Join(cfg.DataDir, "tasks.db")
		artifactsDir = filepath.Join(cfg.DataDir, "artifacts")
	} else {
		dir, err := os.MkdirTemp("", "localapi-artifacts-")
		if err != nil {
			return nil, err
		}
		artifactsDir = dir
	}
	st, err := openStore(dbPath)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: st, artifactsDir: artifactsDir, mux: http.NewServeMux()}
	s.routes()
	s.handler = s.mux
	if cfg.Faults != nil {
		s.handler = cfg.Faults.wrap(s.mux)
	}
	return s, nil
}

// Close closes the store.
func (s *Server) Close() error { return s.store.close() }

// ArtifactPath is where an artifact of a run is stored on disk.
func (s *Server) ArtifactPath(runID, name string) string {
	return filepath.Join(s.artifactsDir, runID, filepath.Base(name))
}

// ServeHTTP implements http.Handler.
// Every path of the contract ends in a slash; like PostHog for a POST, the
// local API answers a path without one with 404 rather than a redirect.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/") {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
		return
	}
	s.handler.ServeHTTP(w, r)
}

func (s *Server) routes() {
	const p = "/api/projects/{project}"
	handle := func(pattern string, h handler) {
		s.mux.HandleFunc(pattern, s.authorized(s.serve(h)))
	}
	handle("GET "+p+"/tasks/{$}", s.listTasks)
	handle("POST "+p+"/tasks/{$}", s.createTask)
	handle("GET "+p+"/tasks/{task}/{$}", s.getTask)
	handle("PATCH "+p+"/tasks/{task}/{$}", s.updateTask)
	handle("DELETE "+p+"/tasks/{task}/{$}", s.deleteTask)
	handle("POST "+p+"/tasks/{task}/run/{$}", s.runTask)
	handle("GET "+p+"/tasks/{task}/runs/{$}", s.listRuns)
	handle("POST "+p+"/tasks/{task}/runs/{$}", s.createRun)
	handle("GET "+p+"/tasks/{task}/runs/{run}/{$}", s.getRun)
	handle("PATCH "+p+"/tasks/{task}/runs/{run}/{$}", s.patchRun)
	handle("POST "+p+"/tasks/{task}/runs/{run}/append_log/{$}", s.appendLog)
	handle("POST "+p+"/tasks/{task}/runs/{run}/artifacts/{$}", s.uploadArtifacts)
	handle("GET "+p+"/tasks/{task}/runs/{run}/logs/{$}", s.logs)
	// Not part of PostHog's API: a run's status history, for whoever watches the local stack.
	handle("GET "+p+"/tasks/{task}/runs/{run}/status_history/{$}", s.statusHistory)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
	})
}

func (s *Server) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if auth == "" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"type": "authentication_error", "code": "not_authenticated", "detail": "Authentication credentials were not provided."})
			return
		}
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(s.cfg.APIKey)) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"type": "authentication_error", "code": "authentication_failed", "detail": "Invalid personal API key."})
			return
		}
		if r.PathValue("project") != s.cfg.ProjectID {
			writeJSON(w, http.StatusForbidden, map[string]string{"type": "authentication_error", "code": "permission_denied", "detail": "You don't have access to the project."})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// apiError is a DRF-style error answer.
type apiError struct {
	status int
	code   string
	detail string
	attr   string
}

func (e *apiError) Error() string { return e.detail }

func invalid(attr, code, detail string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, detail: detail, attr: attr}
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		body := map[string]any{"type": "validation_error", "code": ae.code, "detail": ae.detail, "attr": nil}
		if ae.status != http.StatusBadRequest {
			body = map[string]any{"detail": ae.detail}
		}
		if ae.attr != "" {
			body["attr"] = ae.attr
		}
		writeJSON(w, ae.status, body)
	case errors.Is(err, errNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
	default:
		s.cfg.Logger.Error("local Tasks API failed", zap.Error(err))
		writeJSON(w, http.StatusInternalServerError, map[string]string{"detail": "A server error occurred."})
	}
}

// readObject reads a JSON object body: the right content type, valid JSON, an object.
func readObject(r *http.Request) (map[string]json.RawMessage, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
			detail: fmt.Sprintf("Unsupported media type %q in request.", r.Header.Get("Content-Type"))}
	}
	var body map[string]json.RawMessage
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&body); err != nil || body == nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", detail: "Request body too large."}
		}
		return nil, invalid("", "parse_error", "JSON parse error: the body must be a JSON object.")
	}
	return body, nil
}

// field kinds of a JSON value
func kind(raw json.RawMessage) string {
	t := strings.TrimSpace(string(raw))
	switch {
	case t == "null":
		return "null"
	case strings.HasPrefix(t, "{"):
		return "object"
	case strings.HasPrefix(t, "["):
		return "list"
	case strings.HasPrefix(t, `"`):
		return "string"
	case t == "true" || t == "false":
		return "bool"
	default:
		return "number"
	}
}

// stringField reads a CharField: strings and numbers are accepted (as DRF
// does), objects, lists and booleans are not; null only when nullable.
func stringField(body map[string]json.RawMessage, name string, nullable bool) (*string, bool, error) {
	raw, ok := body[name]
	if !ok {
		return nil, false, nil
	}
	switch kind(raw) {
	case "null":
		if !nullable {
			return nil, true, invalid(name, "null", "This field may not be null.")
		}
		return nil, true, nil
	case "string":
		var s string
		_ = json.Unmarshal(raw, &s)
		return &s, true, nil
	case "number":
		s := strings.TrimSpace(string(raw))
		return &s, true, nil
	}
	return nil, true, invalid(name, "invalid", "Not a valid string.")
}

var repositoryRe = regexp.MustCompile(`^[^/\s]+/[^/\s]+$`)

func (s *Server) taskFields(body map[string]json.RawMessage, creating bool) (taskFields, error) {
	var f taskFields
	title, has, err := stringField(body, "title", false)
	if err != nil {
		return f, err
	}
	if creating && !has {
		return f, invalid("title", "required", "This field is required.")
	}
	if has {
		if strings.TrimSpace(*title) == "" {
			return f, invalid("title", "blank", "This field may not be blank.")
		}
		f.Title = title
	}
	if f.Description, _, err = stringField(body, "description", false); err != nil {
		return f, err
	}
	if origin, has, err := stringField(body, "origin_product", false); err != nil {
		return f, err
	} else if has {
		if !originProducts[*origin] {
			return f, invalid("origin_product", "invalid_choice", fmt.Sprintf("%q is not a valid choice.", *origin))
		}
		f.OriginProduct = origin
	}
	if repo, has, err := stringField(body, "repository", true); err != nil {
		return f, err
	} else if has {
		if repo != nil {
			if *repo == "" {
				repo = nil
			} else if !repositoryRe.MatchString(*repo) {
				return f, invalid("repository", "invalid", "Repository must be in the format organization/repository.")
			} else {
				lower := strings.ToLower(*repo)
				repo = &lower
			}
		}
		f.Repository = &repo
	}
	if assignee, has, err := stringField(body, "assignee", true); err != nil {
		return f, err
	} else if has && creating {
		f.Assignee = &assignee
	}
	if raw, ok := body["github_integration"]; ok {
		var n *int
		switch kind(raw) {
		case "null":
		case "number":
			v, err := strconv.Atoi(strings.TrimSpace(string(raw)))
			if err != nil {
				return f, invalid("github_integration", "invalid", "A valid integer is required.")
			}
			n = &v
		default:
			return f, invalid("github_integration", "invalid", "A valid integer is required.")
		}
		f.GithubIntegration = &n
	}
	if raw, ok := body["json_schema"]; ok {
		if k := kind(raw); k != "null" && k != "object" {
			return f, invalid("json_schema", "invalid", "json_schema must be a JSON object or null.")
		}
		f.JSONSchema = &raw
	}
	return f, nil
}

func pagination(r *http.Request) (limit, offset int, err error) {
	limit, offset = defaultLimit, 0
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, convErr := strconv.Atoi(v)
		if convErr != nil || n < 1 {
			return 0, 0, invalid("limit", "invalid", "limit must be a positive integer.")
		}
		limit = min(n, maxLimit)
	}
	if v := q.Get("offset"); v != "" {
		n, convErr := strconv.Atoi(v)
		if convErr != nil || n < 0 {
			return 0, 0, invalid("offset", "invalid", "offset must be a non-negative integer.")
		}
		offset = n
	}
	return limit, offset, nil
}

func pageLinks(r *http.Request, count, limit, offset int) (next, prev *string) {
	link := func(off int) *string {
		u := *r.URL
		u.Scheme, u.Host = "http", r.Host
		q := u.Query()
		q.Set("limit", strconv.Itoa(limit))
		q.Set("offset", strconv.Itoa(off))
		u.RawQuery = q.Encode()
		s := u.String()
		return &s
	}
	if offset+limit < count {
		next = link(offset + limit)
	}
	if offset > 0 {
		prev = link(max(0, offset-limit))
	}
	return next, prev
}

func (s *Server) decorateTask(r *http.Request, t tasksapi.Task) tasksapi.Task {
	if t.LatestRun != nil {
		run := s.decorateRun(r, *t.LatestRun)
		t.LatestRun = &run
	}
	return t
}

func (s *Server) decorateRun(r *http.Request, run tasksapi.TaskRun) tasksapi.TaskRun {
	run.LogURL = (&url.URL{Scheme: "http", Host: r.Host,
		Path: fmt.Sprintf("/api/projects/%s/tasks/%s/runs/%s/logs/", s.cfg.ProjectID, run.Task, run.ID)}).String()
	return run
}

func parseRunPatch(body map[string]json.RawMessage) (runPatch, error) {
	var p runPatch
	if raw, ok := body["status"]; ok {
		var st string
		if kind(raw) != "string" || json.Unmarshal(raw, &st) != nil || !tasksapi.Status(st).Valid() {
			return p, invalid("status", "invalid_choice", fmt.Sprintf("%s is not a valid choice.", strings.TrimSpace(string(raw))))
		}
		status := tasksapi.Status(st)
		p.Status = &status
	}
	for name, dst := range map[string]***string{"branch": &p.Branch, "stage": &p.Stage, "error_message": &p.ErrorMessage} {
		v, has, err := stringField(body, name, true)
		if err != nil {
			return p, err
		}
		if has {
			*dst = &v
		}
	}
	if raw, ok := body["state"]; ok {
		switch kind(raw) {
		case "null":
			return p, invalid("state", "null", "This field may not be null.")
		case "object":
			_ = json.Unmarshal(raw, &p.State)
		default:
			return p, invalid("state", "invalid", "state must be a JSON object.")
		}
	}
	if raw, ok := body["output"]; ok {
		switch kind(raw) {
		case "null":
			var none map[string]any
			p.Output = &none
		case "object":
			out := map[string]any{}
			_ = json.Unmarshal(raw, &out)
			p.Output = &out
		default:
			return p, invalid("output", "invalid", "output must be a JSON object or null.")
		}
	}
	return p, nil
}

func parseArtifact(item map[string]json.RawMessage, i int) (tasksapi.ArtifactRecord, []byte, error) {
	attr := func(f string) string { return fmt.Sprintf("artifacts__%d__%s", i, f) }
	str := func(f string, required bool) (string, error) {
		v, has, err := stringField(item, f, !required)
		if err != nil {
			return "", invalid(attr(f), "invalid", "Not a valid string.")
		}
		if !has || v == nil {
			if required {
				return "", invalid(attr(f), "required", "This field is required.")
			}
			return "", nil
		}
		return *v, nil
	}
	name, err := str("name", true)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	base := filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	if name == "" || len(name) > 255 || base == "." || base == ".." || base == "/" {
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("name"), "invalid", "name must be 1 to 255 characters and name a file.")
	}
	typ, err := str("type", true)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	if !artifactTypes[typ] {
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("type"), "invalid_choice", fmt.Sprintf("%q is not a valid choice.", typ))
	}
	content, err := str("content", true)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	encoding, err := str("content_encoding", false)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	var data []byte
	switch encoding {
	case "", tasksapi.EncodingUTF8:
		data = []byte(content)
	case tasksapi.EncodingBase64:
		if data, err = base64.StdEncoding.DecodeString(content); err != nil {
			return tasksapi.ArtifactRecord{}, nil, invalid(attr("content"), "invalid", "content is not valid base64.")
		}
	default:
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("content_encoding"), "invalid_choice", fmt.Sprintf("%q is not a valid choice.", encoding))
	}
	if len(data) > tasksapi.MaxArtifactBytes {
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("content"), "too_large", fmt.Sprintf("artifact %s is over the 30 MiB limit.", base))
	}
	contentType, err := str("content_type", false)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	source, err := str("source", false)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	return tasksapi.ArtifactRecord{
		ID: uuid.NewString(), Name: base, Type: typ, Source: source,
		Size: int64(len(data)), ContentType: contentType,
	}, data, nil
}

// StatusHistory is every status a run was set to, in order: what the tests
// and the demo read to see that a run never went back or ended twice.
func (s *Server) StatusHistory(ctx context.Context, runID string) ([]tasksapi.Status, error) {
	changes, err := s.store.history(ctx, runID)
	if err != nil {
		return nil, err
	}
	out := make([]tasksapi.Status, len(changes))
	for i, c := range changes {
		out[i] = c.Status
	}
	return out, nil
}
