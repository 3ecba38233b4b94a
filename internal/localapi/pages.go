package localapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

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
