package githubtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Check is one check of a commit: a check run (an Actions job, whose log the
// stand-in serves) or a commit status.
type Check struct {
	Name string
	// Kind is "check_run" (the default) or "status".
	Kind string
	// Status is queued, in_progress or completed (the default); a status is
	// pending unless completed.
	Status string
	// Conclusion of a completed check run (success, failure, neutral,
	// cancelled, skipped, timed_out, action_required, stale), or the state of
	// a completed status (success, failure, error).
	Conclusion string
	// Summary is a check run's output.summary, or a status's description.
	Summary string
	// Log is served as the job's log.
	Log string
	// LogBytes, when > 0, makes the log this many bytes, generated as it is
	// served and ending with Log.
	LogBytes int
	// Attempt tells re-runs of one name apart (0 is the first); a later
	// attempt has a higher id, as a re-run on GitHub does.
	Attempt int
	// Suite is the check suite of a check run (GitHub's: one per app and
	// workflow run): two workflows may each have a job of one name.
	Suite int
}

const (
	rateLimitTotal = 5000
	rateLimitDoc   = "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
	checksDoc      = "https://docs.github.com/rest/checks/runs#list-check-runs-for-a-git-reference"
	statusDoc      = "https://docs.github.com/rest/commits/statuses#get-the-combined-status-for-a-specific-reference"
	jobLogsDoc     = "https://docs.github.com/rest/actions/workflow-jobs#download-job-logs-for-a-workflow-run"
)

type job struct {
	owner, repo string
	check       Check
}

type rateLimit struct {
	remaining int
	reset     time.Time
}

// SetRateLimit makes the stand-in count calls against a primary rate limit:
// remaining calls until reset, each call served taking one; at 0 every API
// call is refused as GitHub does until reset passes, then the full limit is
// back.
func (s *Server) SetRateLimit(remaining int, reset time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = &rateLimit{remaining: remaining, reset: reset}
}

// DownloadAuthSeen reports whether any request to the log download server
// carried an Authorization header: a client must not send GitHub's token to
// the other origin its redirect leads to.
func (s *Server) DownloadAuthSeen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloadAuth
}

// rateLimited sets the rate limit headers GitHub sends on every answer, and
// answers 403 when the limit is spent; it reports whether to go on.
func (s *Server) rateLimited(w http.ResponseWriter) bool {
	s.mu.Lock()
	s.calls++
	remaining, reset := rateLimitTotal-1, time.Now().Add(time.Hour).Truncate(time.Second)
	spent := false
	if l := s.limit; l != nil {
		if !time.Now().Before(l.reset) {
			l.remaining, l.reset = rateLimitTotal, time.Now().Add(time.Hour)
		}
		if l.remaining <= 0 {
			spent = true
		} else {
			l.remaining--
		}
		remaining, reset = l.remaining, l.reset
	}
	s.mu.Unlock()
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(rateLimitTotal))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(max(remaining, 0)))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
	h.Set("X-RateLimit-Used", strconv.Itoa(rateLimitTotal-max(remaining, 0)))
	h.Set("X-RateLimit-Resource", "core")
	if spent {
		failDoc(w, http.StatusForbidden, "API rate limit exceeded for installation ID 1.", rateLimitDoc)
		return false
	}
	return true
}

// commitChecks gives the checks of a commit, or answers as GitHub does for
// an unknown repository or commit.
func (s *Server) commitChecks(w http.ResponseWriter, r *http.Request, doc string) ([]Check, bool) {
	owner, repo, ref := r.PathValue("owner"), r.PathValue("repo"), r.PathValue("ref")
	if s.RepoExists != nil && !s.RepoExists(owner, repo) {
		failDoc(w, http.StatusNotFound, "Not Found", doc)
		return nil, false
	}
	if s.CI == nil {
		return nil, true
	}
	checks, ok := s.CI(owner, repo, ref)
	if !ok {
		failDoc(w, http.StatusUnprocessableEntity, "No commit found for SHA: "+ref, doc)
		return nil, false
	}
	return checks, true
}

// id is stable per commit, name and attempt, and grows with the attempt.
func id(sha string, c Check) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(c.Kind + "\x00" + sha + "\x00" + strconv.Itoa(c.Suite) + "\x00" + c.Name))
	return int64(h.Sum32())*1000 + int64(c.Attempt) + 1
}

func kind(c Check) string {
	if c.Kind == "" {
		return "check_run"
	}
	return c.Kind
}

// conclusion defaults to success: GitHub has one for every completed check.
func conclusion(c Check) string {
	if c.Conclusion == "" {
		return "success"
	}
	return c.Conclusion
}

func status(c Check) string {
	if c.Status == "" {
		return "completed"
	}
	return c.Status
}

// pageParams reads per_page (default 30, at most 100) and page (default 1).
func pageParams(w http.ResponseWriter, r *http.Request, doc string) (perPage, page int, ok bool) {
	perPage, page = 30, 1
	q := r.URL.Query()
	for name, into := range map[string]*int{"per_page": &perPage, "page": &page} {
		v := q.Get(name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || (name == "per_page" && n > 100) {
			failDoc(w, http.StatusUnprocessableEntity, "Validation Failed", doc, map[string]string{"resource": "Search", "field": name, "code": "invalid"})
			return 0, 0, false
		}
		*into = n
	}
	return perPage, page, true
}

func (s *Server) checkRuns(w http.ResponseWriter, r *http.Request) {
	perPage, page, ok := pageParams(w, r, checksDoc)
	if !ok {
		return
	}
	filter := r.URL.Query().Get("filter")
	if filter != "" && filter != "latest" && filter != "all" {
		failDoc(w, http.StatusUnprocessableEntity, "Validation Failed", checksDoc, map[string]string{"resource": "CheckRun", "field": "filter", "code": "invalid"})
		return
	}
	checks, ok := s.commitChecks(w, r, checksDoc)
	if !ok {
		return
	}
	owner, repo, sha := r.PathValue("owner"), r.PathValue("repo"), r.PathValue("ref")
	var runs []Check
	latest := map[string]int{}
	for _, c := range checks {
		if kind(c) != "check_run" {
			continue
		}
		// The stand-in's reading of filter=latest (GitHub's default): one
		// run per name, the latest attempt.
		key := strconv.Itoa(c.Suite) + "\x00" + c.Name
		if i, seen := latest[key]; seen && filter != "all" {
			if c.Attempt > runs[i].Attempt {
				runs[i] = c
			}
			continue
		}
		latest[key] = len(runs)
		runs = append(runs, c)
	}
	s.mu.Lock()
	for _, c := range runs {
		s.jobs[id(sha, c)] = job{owner: owner, repo: repo, check: c}
	}
	s.mu.Unlock()

	lastPage := max((len(runs)+perPage-1)/perPage, 1)
	from, to := min((page-1)*perPage, len(runs)), min(page*perPage, len(runs))
	out := []map[string]any{}
	for _, c := range runs[from:to] {
		run := map[string]any{
			"id":           id(sha, c),
			"name":         c.Name,
			"head_sha":     sha,
			"check_suite":  map[string]any{"id": c.Suite + 1},
			"status":       status(c),
			"conclusion":   nil,
			"details_url":  fmt.Sprintf("https://github.example/%s/%s/actions/runs/1/job/%d", owner, repo, id(sha, c)),
			"html_url":     fmt.Sprintf("https://github.example/%s/%s/runs/%d", owner, repo, id(sha, c)),
			"started_at":   "2026-01-01T00:00:00Z",
			"completed_at": nil,
			"output": map[string]any{
				"title":   nil,
				"summary": nil,
				"text":    nil,
			},
		}
		if c.Summary != "" {
			run["output"] = map[string]any{"title": c.Name, "summary": c.Summary, "text": nil}
		}
		if status(c) == "completed" {
			run["conclusion"], run["completed_at"] = conclusion(c), "2026-01-01T00:01:00Z"
		}
		out = append(out, run)
	}
	var links []string
	link := func(p int, rel string) {
		u := *r.URL
		q := u.Query()
		q.Set("page", strconv.Itoa(p))
		q.Set("per_page", strconv.Itoa(perPage))
		u.RawQuery = q.Encode()
		links = append(links, fmt.Sprintf(`<%s%s>; rel="%s"`, s.URL, u.RequestURI(), rel))
	}
	if page < lastPage {
		link(page+1, "next")
		link(lastPage, "last")
	}
	if page > 1 {
		link(1, "first")
		link(min(page-1, lastPage), "prev")
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"total_count": len(runs), "check_runs": out})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	perPage, page, ok := pageParams(w, r, statusDoc)
	if !ok {
		return
	}
	checks, ok := s.commitChecks(w, r, statusDoc)
	if !ok {
		return
	}
	owner, repo, sha := r.PathValue("owner"), r.PathValue("repo"), r.PathValue("ref")
	// The combined status holds the latest status of each context.
	var latest []Check
	at := map[string]int{}
	for _, c := range checks {
		if kind(c) != "status" {
			continue
		}
		if i, seen := at[c.Name]; seen {
			if c.Attempt > latest[i].Attempt {
				latest[i] = c
			}
			continue
		}
		at[c.Name] = len(latest)
		latest = append(latest, c)
	}
	state := "success"
	if len(latest) == 0 {
		state = "pending"
	}
	statuses := []map[string]any{}
	for i, c := range latest {
		st := conclusion(c)
		if status(c) != "completed" {
			st = "pending"
		}
		switch {
		case st == "failure" || st == "error":
			state = "failure"
		case st == "pending" && state != "failure":
			state = "pending"
		}
		if i < (page-1)*perPage || i >= page*perPage {
			continue
		}
		statuses = append(statuses, map[string]any{
			"id":          id(sha, c),
			"context":     c.Name,
			"state":       st,
			"description": c.Summary,
			"target_url":  fmt.Sprintf("https://ci.example/%s/%s/%s", owner, repo, c.Name),
			"created_at":  "2026-01-01T00:00:00Z",
		})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"state": state, "sha": sha, "total_count": len(latest), "statuses": statuses})
}

func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request) {
	jobID, err := strconv.ParseInt(r.PathValue("job_id"), 10, 64)
	s.mu.Lock()
	j, ok := s.jobs[jobID]
	ok = ok && err == nil && j.owner == r.PathValue("owner") && j.repo == r.PathValue("repo")
	var sig string
	if ok {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		sig = hex.EncodeToString(b)
		s.signatures[sig] = jobID
	}
	s.mu.Unlock()
	if !ok {
		failDoc(w, http.StatusNotFound, "Not Found", jobLogsDoc)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("%s/logs/%d?sig=%s", s.download.URL, jobID, sig), http.StatusFound)
}

// serveLog is the download server: a signed URL needs no token.
func (s *Server) serveLog(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if r.Header.Get("Authorization") != "" {
		s.downloadAuth = true
	}
	jobID, signed := s.signatures[r.URL.Query().Get("sig")]
	j := s.jobs[jobID]
	s.mu.Unlock()
	if !signed || r.URL.Path != fmt.Sprintf("/logs/%d", jobID) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "<Error><Code>AuthenticationFailed</Code></Error>")
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fill := max(j.check.LogBytes-len(j.check.Log), 0)
	w.Header().Set("Content-Length", strconv.Itoa(fill+len(j.check.Log)))
	line := []byte(strings.Repeat("x", 79) + "\n")
	chunk := make([]byte, 0, 64<<10)
	for fill > 0 {
		chunk = chunk[:0]
		for len(chunk)+len(line) <= cap(chunk) && fill > 0 {
			n := min(len(line), fill)
			chunk = append(chunk, line[len(line)-n:]...)
			fill -= n
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
	_, _ = io.WriteString(w, j.check.Log)
}

// Calls returns how many API calls the stand-in answered (downloads apart).
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}
