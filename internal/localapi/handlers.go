package localapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// handler answers a request with a status and a body to encode as JSON, or an error.
type handler func(r *http.Request) (int, any, error)

// jsonLines is a body written as one JSON document per line.
type jsonLines []string

func (s *Server) serve(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status, body, err := h(r)
		switch {
		case err != nil:
			s.fail(w, err)
		case status == http.StatusNoContent:
			w.WriteHeader(status)
		default:
			contentType := "application/json"
			var data []byte
			if lines, ok := body.(jsonLines); ok {
				contentType = "application/jsonl"
				for _, l := range lines {
					data = append(append(data, l...), '\n')
				}
			} else {
				data, _ = json.Marshal(body)
				data = append(data, '\n')
			}
			w.Header().Set("Content-Type", contentType)
			// An ETag lets a poller (the dashboard) ask "changed?" for the
			// price of a 304.
			if r.Method == http.MethodGet && status == http.StatusOK {
				sum := sha256.Sum256(data)
				etag := `"` + hex.EncodeToString(sum[:12]) + `"`
				w.Header().Set("ETag", etag)
				if r.Header.Get("If-None-Match") == etag {
					w.WriteHeader(http.StatusNotModified)
					return
				}
			}
			w.WriteHeader(status)
			_, _ = w.Write(data)
		}
	}
}

func (s *Server) createTask(r *http.Request) (int, any, error) {
	f, err := s.readTaskFields(r, true)
	if err != nil {
		return 0, nil, err
	}
	t, err := s.store.createTask(r.Context(), f)
	return http.StatusCreated, s.decorateTask(r, t), err
}

func (s *Server) updateTask(r *http.Request) (int, any, error) {
	f, err := s.readTaskFields(r, false)
	if err != nil {
		return 0, nil, err
	}
	t, err := s.store.updateTask(r.Context(), r.PathValue("task"), f)
	return http.StatusOK, s.decorateTask(r, t), err
}

func (s *Server) readTaskFields(r *http.Request, creating bool) (taskFields, error) {
	body, err := readObject(r)
	if err != nil {
		return taskFields{}, err
	}
	return s.taskFields(body, creating)
}

func (s *Server) getTask(r *http.Request) (int, any, error) {
	t, err := s.store.getTask(r.Context(), r.PathValue("task"))
	return http.StatusOK, s.decorateTask(r, t), err
}

func (s *Server) deleteTask(r *http.Request) (int, any, error) {
	return http.StatusNoContent, nil, s.store.deleteTask(r.Context(), r.PathValue("task"))
}

func (s *Server) listTasks(r *http.Request) (int, any, error) {
	limit, offset, err := pagination(r)
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	tasks, count, err := s.store.listTasks(r.Context(), taskFilter{
		OriginProduct: q.Get("origin_product"), Stage: q.Get("stage"),
		Organization: q.Get("organization"), Repository: q.Get("repository"),
	}, limit, offset)
	for i := range tasks {
		tasks[i] = s.decorateTask(r, tasks[i])
	}
	next, prev := pageLinks(r, count, limit, offset)
	return http.StatusOK, tasksapi.Page[tasksapi.Task]{Count: count, Next: next, Previous: prev, Results: tasks}, err
}

func (s *Server) runTask(r *http.Request) (int, any, error) {
	taskID := r.PathValue("task")
	// As PostHog's view: the task is looked up before the body is read.
	if _, err := s.store.getTask(r.Context(), taskID); err != nil {
		return 0, nil, err
	}
	req, err := readRunRequest(r)
	if err != nil {
		return 0, nil, err
	}
	// The run PostHog kicks off is its cloud runner's.
	run, err := s.store.createRun(r.Context(), taskID, tasksapi.StatusQueued, tasksapi.EnvironmentCloud, req.state)
	if err != nil {
		return 0, nil, err
	}
	if s.cfg.Starter != nil {
		if err := s.cfg.Starter.StartRun(r.Context(), taskID, run.ID, kickoff.RunOptions{InitialMessage: req.initial}); err != nil {
			msg := "Failed to start the task workflow: " + err.Error()
			failed, errMsg := tasksapi.StatusFailed, &msg
			_, _ = s.store.patchRun(r.Context(), taskID, run.ID, runPatch{Status: &failed, ErrorMessage: &errMsg})
			s.cfg.Logger.Error("kick-off failed", zap.String("run_id", run.ID), zap.Error(err))
		}
	}
	t, err := s.store.getTask(r.Context(), taskID)
	return http.StatusOK, s.decorateTask(r, t), err
}

func (s *Server) listRuns(r *http.Request) (int, any, error) {
	limit, offset, err := pagination(r)
	if err != nil {
		return 0, nil, err
	}
	runs, count, err := s.store.listRuns(r.Context(), r.PathValue("task"), limit, offset)
	for i := range runs {
		runs[i] = s.decorateRun(r, runs[i])
	}
	next, prev := pageLinks(r, count, limit, offset)
	return http.StatusOK, tasksapi.Page[tasksapi.TaskRun]{Count: count, Next: next, Previous: prev, Results: runs}, err
}

func (s *Server) createRun(r *http.Request) (int, any, error) {
	// A run created without being started is for a client outside
	// PostHog's cloud to drive.
	run, err := s.store.createRun(r.Context(), r.PathValue("task"), tasksapi.StatusNotStarted, tasksapi.EnvironmentLocal, map[string]any{})
	return http.StatusCreated, s.decorateRun(r, run), err
}

func (s *Server) getRun(r *http.Request) (int, any, error) {
	run, err := s.store.getRun(r.Context(), r.PathValue("task"), r.PathValue("run"))
	return http.StatusOK, s.decorateRun(r, run), err
}

func (s *Server) patchRun(r *http.Request) (int, any, error) {
	body, err := readObject(r)
	if err != nil {
		return 0, nil, err
	}
	p, err := parseRunPatch(body)
	if err != nil {
		return 0, nil, err
	}
	run, err := s.store.patchRun(r.Context(), r.PathValue("task"), r.PathValue("run"), p)
	if err != nil {
		return 0, nil, err
	}
	s.signalPatched(r.Context(), run, p)
	return http.StatusOK, s.decorateRun(r, run), nil
}

func (s *Server) appendLog(r *http.Request) (int, any, error) {
	taskID, runID, body, err := s.runObject(r)
	if err != nil {
		return 0, nil, err
	}
	entries, err := parseEntries(body)
	if err != nil {
		return 0, nil, err
	}
	if err := s.store.appendLog(r.Context(), runID, entries); err != nil {
		return 0, nil, err
	}
	s.heartbeat(r.Context(), taskID, runID)
	run, err := s.store.getRun(r.Context(), taskID, runID)
	return http.StatusOK, s.decorateRun(r, run), err
}

// runObject is a request to a run that exists: the IDs in its path and its
// JSON object body.
func (s *Server) runObject(r *http.Request) (taskID, runID string, body map[string]json.RawMessage, err error) {
	taskID, runID = r.PathValue("task"), r.PathValue("run")
	if _, err := s.store.getRun(r.Context(), taskID, runID); err != nil {
		return "", "", nil, err
	}
	body, err = readObject(r)
	return taskID, runID, body, err
}

func parseEntries(body map[string]json.RawMessage) ([]json.RawMessage, error) {
	raw, ok := body["entries"]
	if !ok {
		return nil, invalid("entries", "required", "This field is required.")
	}
	var entries []json.RawMessage
	if kind(raw) != "list" || json.Unmarshal(raw, &entries) != nil {
		return nil, invalid("entries", "not_a_list", "Expected a list of items.")
	}
	if len(entries) == 0 {
		return nil, invalid("entries", "empty", "This list may not be empty.")
	}
	for i, e := range entries {
		if kind(e) != "object" {
			return nil, invalid(fmt.Sprintf("entries__%d", i), "invalid", "Each entry must be a JSON object.")
		}
	}
	return entries, nil
}

func (s *Server) logs(r *http.Request) (int, any, error) {
	runID := r.PathValue("run")
	if _, err := s.store.getRun(r.Context(), r.PathValue("task"), runID); err != nil {
		return 0, nil, err
	}
	lines, err := s.store.logs(r.Context(), runID)
	return http.StatusOK, jsonLines(lines), err
}

func (s *Server) statusHistory(r *http.Request) (int, any, error) {
	runID := r.PathValue("run")
	if _, err := s.store.getRun(r.Context(), r.PathValue("task"), runID); err != nil {
		return 0, nil, err
	}
	h, err := s.store.history(r.Context(), runID)
	return http.StatusOK, h, err
}

func (s *Server) uploadArtifacts(r *http.Request) (int, any, error) {
	taskID, runID := r.PathValue("task"), r.PathValue("run")
	run, err := s.store.getRun(r.Context(), taskID, runID)
	if err != nil {
		return 0, nil, err
	}
	body, err := readObject(r)
	if err != nil {
		return 0, nil, err
	}
	var items []map[string]json.RawMessage
	if raw, ok := body["artifacts"]; !ok || kind(raw) != "list" || json.Unmarshal(raw, &items) != nil || len(items) == 0 {
		return 0, nil, invalid("artifacts", "invalid", "artifacts must be a non-empty list of objects.")
	}
	type upload struct {
		record tasksapi.ArtifactRecord
		data   []byte
	}
	// Every artifact is checked before any is stored: a bad one fails the request whole.
	var uploads []upload
	for i, item := range items {
		rec, data, err := parseArtifact(item, i)
		if err != nil {
			return 0, nil, err
		}
		rec.StoragePath = fmt.Sprintf("tasks/artifacts/%s/%s/%s/%s", s.cfg.ProjectID, taskID, runID, rec.Name)
		uploads = append(uploads, upload{rec, data})
	}
	manifest := run.Artifacts
	for _, u := range uploads {
		path := s.ArtifactPath(runID, u.record.Name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return 0, nil, err
		}
		if err := os.WriteFile(path, u.data, 0o644); err != nil {
			return 0, nil, err
		}
		u.record.UploadedAt = s.store.now()
		// A new upload of the same name replaces the stored file, so it replaces its entry too.
		kept := manifest[:0]
		for _, m := range manifest {
			if m.Name != u.record.Name {
				kept = append(kept, m)
			}
		}
		manifest = append(kept, u.record)
	}
	if err := s.store.setArtifacts(r.Context(), runID, manifest); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"artifacts": manifest}, nil
}
