// Package dashboard serves the local stack's web page: tasks, a form to
// create and run them, and each run's status and log as they change. The
// page is static (no build step) and renders every value as text.
package dashboard

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
)

//go:embed static
var static embed.FS

// Config is what the page needs to call the local Tasks API.
type Config struct {
	APIKey    string
	ProjectID string
	// ArtifactPath locates a stored artifact, for downloads.
	ArtifactPath func(runID, name string) string
}

// Handler serves the page under /dashboard/.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dashboard/config.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		// The local stack's key: this page is for the machine it runs on.
		_ = json.NewEncoder(w).Encode(map[string]string{"apiKey": cfg.APIKey, "projectId": cfg.ProjectID})
	})
	mux.HandleFunc("GET /dashboard/artifacts/{run}/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := filepath.Base(r.PathValue("name"))
		path := cfg.ArtifactPath(filepath.Base(r.PathValue("run")), name)
		if _, err := os.Stat(path); err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Disposition", "attachment; filename=\""+sanitize(name)+"\"")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeFile(w, r, path)
	})
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded folder is part of the binary
	}
	files := http.StripPrefix("/dashboard/", http.FileServerFS(sub))
	mux.Handle("GET /dashboard/", withHeaders(files))
	return mux
}

// withHeaders forbids inline scripts and framing: the page renders text
// from agents, so a slip in escaping must still not run code.
func withHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

func sanitize(name string) string {
	out := make([]rune, 0, len(name))
	for _, r := range name {
		if r == '"' || r == '\\' || r < 0x20 {
			r = '_'
		}
		out = append(out, r)
	}
	return string(out)
}
