// Package githubtest is a stand-in for GitHub's pull request and CI (check
// runs, commit statuses, Actions job logs) API, as strict as GitHub's
// documentation: it refuses what GitHub would refuse.
package githubtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
)

// PullRequest is one the stand-in holds.
type PullRequest struct {
	Number int
	Owner  string
	Repo   string
	Title  string
	Head   string
	Base   string
	Body   string
	Draft  bool
}

// Server serves POST and GET /repos/{owner}/{repo}/pulls, GET
// /repos/{owner}/{repo}/pulls/{number}, GET
// /repos/{owner}/{repo}/commits/{ref}/check-runs and .../status, and GET
// /repos/{owner}/{repo}/actions/jobs/{job_id}/logs, whose 302 leads to a
// separate download server (another origin, as GitHub's is).
type Server struct {
	*httptest.Server
	token string
	// BranchExists says whether a branch is on the repository; GitHub refuses
	// a pull request whose head or base is not.
	BranchExists func(owner, repo, branch string) bool
	// RepoExists says whether the repository exists (nil: every one does);
	// GitHub answers 404 for the CI of one that does not.
	RepoExists func(owner, repo string) bool
	// CI gives the checks of a commit, false for a commit the repository
	// does not have (nil: every commit exists and has none).
	CI func(owner, repo, sha string) ([]Check, bool)
	// HeadSHA gives the commit a branch points at, shown as a pull request's
	// head.sha (nil or "": left out).
	HeadSHA func(owner, repo, branch string) string

	download *httptest.Server

	mu           sync.Mutex
	pulls        []PullRequest
	calls        int
	jobs         map[int64]job
	signatures   map[string]int64
	downloadAuth bool
	limit        *rateLimit
}

// NewServer starts a stand-in that accepts only token.
func NewServer(token string) *Server {
	s := &Server{token: token, jobs: map[int64]job{}, signatures: map[string]int64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /repos/{owner}/{repo}/pulls", s.create)
	mux.HandleFunc("GET /repos/{owner}/{repo}/pulls", s.list)
	mux.HandleFunc("GET /repos/{owner}/{repo}/pulls/{number}", s.pull)
	mux.HandleFunc("PATCH /repos/{owner}/{repo}/pulls/{number}", s.update)
	mux.HandleFunc("GET /repos/{owner}/{repo}/commits/{ref}/check-runs", s.checkRuns)
	mux.HandleFunc("GET /repos/{owner}/{repo}/commits/{ref}/status", s.status)
	mux.HandleFunc("GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs", s.jobLogs)
	s.Server = httptest.NewServer(s.checked(mux))
	s.download = httptest.NewServer(http.HandlerFunc(s.serveLog))
	return s
}

// Close stops the API and the download server.
func (s *Server) Close() {
	s.Server.Close()
	s.download.Close()
}

// Pulls returns the pull requests opened so far.
func (s *Server) Pulls() []PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PullRequest(nil), s.pulls...)
}

func fail(w http.ResponseWriter, status int, message string, errs ...map[string]string) {
	failDoc(w, status, message, "https://docs.github.com/rest/pulls/pulls#create-a-pull-request", errs...)
}

func failDoc(w http.ResponseWriter, status int, message, doc string, errs ...map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{"message": message, "documentation_url": doc}
	if len(errs) > 0 {
		body["errors"] = errs
	}
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) checked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.rateLimited(w) {
			return
		}
		auth := r.Header.Get("Authorization")
		if auth != "Bearer "+s.token && auth != "token "+s.token {
			fail(w, http.StatusUnauthorized, "Bad credentials")
			return
		}
		if accept := r.Header.Get("Accept"); accept != "application/vnd.github+json" {
			fail(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Unsupported 'Accept' header: %q", accept))
			return
		}
		if v := r.Header.Get("X-GitHub-Api-Version"); v != "" && v != "2022-11-28" {
			fail(w, http.StatusBadRequest, "Unsupported API version "+v)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// jsonBody reads a request's JSON object as GitHub does, answering 415 or
// 400 itself when it can't.
func jsonBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		fail(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return nil, false
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "Problems parsing JSON")
		return nil, false
	}
	return body, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	owner, repo := r.PathValue("owner"), r.PathValue("repo")
	body, ok := jsonBody(w, r)
	if !ok {
		return
	}
	str := func(k string) (string, bool) { v, ok := body[k].(string); return v, ok }
	for _, field := range []string{"head", "base"} {
		if v, ok := str(field); !ok || v == "" {
			fail(w, http.StatusUnprocessableEntity, "Validation Failed", map[string]string{"resource": "PullRequest", "field": field, "code": "missing_field"})
			return
		}
	}
	title, ok := str("title")
	if !ok || title == "" {
		fail(w, http.StatusUnprocessableEntity, "Validation Failed", map[string]string{"resource": "PullRequest", "field": "title", "code": "missing_field"})
		return
	}
	draft := false
	if v, present := body["draft"]; present {
		if draft, ok = v.(bool); !ok {
			fail(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'properties/draft', "+fmt.Sprintf("%v", jsonText(v))+" is not a boolean.")
			return
		}
	}
	if v, present := body["body"]; present {
		if _, ok := v.(string); !ok && v != nil {
			fail(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'properties/body', it is not a string.")
			return
		}
	}
	head, _ := str("head")
	base, _ := str("base")
	branch := strings.TrimPrefix(head, owner+":")
	if s.BranchExists != nil {
		for field, b := range map[string]string{"head": branch, "base": base} {
			if !s.BranchExists(owner, repo, b) {
				fail(w, http.StatusUnprocessableEntity, "Validation Failed", map[string]string{"resource": "PullRequest", "field": field, "code": "invalid"})
				return
			}
		}
	}
	pr := PullRequest{Owner: owner, Repo: repo, Title: title, Head: branch, Base: base, Draft: draft}
	pr.Body, _ = str("body")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pulls {
		if p.Owner == owner && p.Repo == repo && p.Head == branch && p.Base == base {
			fail(w, http.StatusUnprocessableEntity, "Validation Failed", map[string]string{
				"resource": "PullRequest", "code": "custom",
				"message": fmt.Sprintf("A pull request already exists for %s:%s.", owner, branch)})
			return
		}
	}
	pr.Number = len(s.pulls) + 1
	s.pulls = append(s.pulls, pr)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(s.view(r, pr))
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	owner, repo := r.PathValue("owner"), r.PathValue("repo")
	head := r.URL.Query().Get("head")
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, p := range s.pulls {
		if p.Owner == owner && p.Repo == repo && (head == "" || head == p.Owner+":"+p.Head) {
			out = append(out, s.view(r, p))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) pull(w http.ResponseWriter, r *http.Request) {
	owner, repo := r.PathValue("owner"), r.PathValue("repo")
	n, err := strconv.Atoi(r.PathValue("number"))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pulls {
		if err == nil && p.Owner == owner && p.Repo == repo && p.Number == n {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(s.view(r, p))
			return
		}
	}
	failDoc(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/pulls/pulls#get-a-pull-request")
}

// update is PATCH of a pull request: its title or body (strings), as GitHub
// allows; 404 for one it doesn't have.
func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	body, ok := jsonBody(w, r)
	if !ok {
		return
	}
	for _, k := range []string{"title", "body"} {
		if v, present := body[k]; present {
			if _, ok := v.(string); !ok {
				fail(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'properties/"+k+"', "+jsonText(v)+" is not a string.")
				return
			}
		}
	}
	owner, repo := r.PathValue("owner"), r.PathValue("repo")
	n, err := strconv.Atoi(r.PathValue("number"))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.pulls {
		if err == nil && p.Owner == owner && p.Repo == repo && p.Number == n {
			if v, ok := body["title"].(string); ok {
				s.pulls[i].Title = v
			}
			if v, ok := body["body"].(string); ok {
				s.pulls[i].Body = v
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(s.view(r, s.pulls[i]))
			return
		}
	}
	failDoc(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/pulls/pulls#update-a-pull-request")
}

func (s *Server) view(r *http.Request, p PullRequest) map[string]any {
	head := map[string]any{"ref": p.Head}
	if s.HeadSHA != nil {
		if sha := s.HeadSHA(p.Owner, p.Repo, p.Head); sha != "" {
			head["sha"] = sha
		}
	}
	return map[string]any{
		"number":   p.Number,
		"state":    "open",
		"draft":    p.Draft,
		"title":    p.Title,
		"html_url": fmt.Sprintf("https://github.example/%s/%s/pull/%d", p.Owner, p.Repo, p.Number),
		"head":     head,
		"base":     map[string]any{"ref": p.Base},
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
