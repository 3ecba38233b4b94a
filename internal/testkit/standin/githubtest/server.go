// Package githubtest is a stand-in for GitHub's pull request API, as strict
// as GitHub's documentation: it refuses what GitHub would refuse.
package githubtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
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
}

// Server serves POST and GET /repos/{owner}/{repo}/pulls.
type Server struct {
	*httptest.Server
	token string
	// BranchExists says whether a branch is on the repository; GitHub refuses
	// a pull request whose head or base is not.
	BranchExists func(owner, repo, branch string) bool

	mu    sync.Mutex
	pulls []PullRequest
	calls int
}

// NewServer starts a stand-in that accepts only token.
func NewServer(token string) *Server {
	s := &Server{token: token}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /repos/{owner}/{repo}/pulls", s.create)
	mux.HandleFunc("GET /repos/{owner}/{repo}/pulls", s.list)
	s.Server = httptest.NewServer(s.checked(mux))
	return s
}

// Pulls returns the pull requests opened so far.
func (s *Server) Pulls() []PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PullRequest(nil), s.pulls...)
}

func fail(w http.ResponseWriter, status int, message string, errs ...map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{"message": message, "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}
	if len(errs) > 0 {
		body["errors"] = errs
	}
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) checked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls++
		s.mu.Unlock()
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

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	owner, repo := r.PathValue("owner"), r.PathValue("repo")
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		fail(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "Problems parsing JSON")
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
	pr := PullRequest{Owner: owner, Repo: repo, Title: title, Head: branch, Base: base}
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

func (s *Server) view(r *http.Request, p PullRequest) map[string]any {
	return map[string]any{
		"number":   p.Number,
		"state":    "open",
		"title":    p.Title,
		"html_url": fmt.Sprintf("https://github.example/%s/%s/pull/%d", p.Owner, p.Repo, p.Number),
		"head":     map[string]any{"ref": p.Head},
		"base":     map[string]any{"ref": p.Base},
	}
}
