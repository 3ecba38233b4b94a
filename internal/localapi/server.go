// Package localapi is a local Tasks API: every endpoint of the contract, as
// strict as the contract says, backed by SQLite with artifacts on disk. It
// stands in for PostHog in the local stack and the end-to-end tests.
package localapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Starter kicks off a run's workflow, as PostHog does on POST /tasks/{id}/run/;
// run carries what the request adds to the workflow's input.
type Starter interface {
	StartRun(ctx context.Context, taskID, runID string, run kickoff.RunOptions) error
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
	// Signaller may be nil: runs' workflows are then never signalled.
	Signaller Signaller
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
	beats        heartbeats
}

const (
	maxBodyBytes = 64 << 20
	defaultLimit = 50
	maxLimit     = 100
)

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
	handle("POST "+p+"/tasks/{task}/runs/{run}/cancel/{$}", s.cancelRun)
	handle("POST "+p+"/tasks/{task}/runs/{run}/command/{$}", s.command)
	// Not part of PostHog's API: a run's status history, for whoever watches the local stack.
	handle("GET "+p+"/tasks/{task}/runs/{run}/status_history/{$}", s.statusHistory)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
	})
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
