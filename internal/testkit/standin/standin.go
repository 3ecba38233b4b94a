// Package standin is what the stand-ins for third-party APIs share: the
// record of what they served and of what they refused, as the real API
// would, and the request path of the model APIs.
package standin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Server is a stand-in's HTTP server and its record.
type Server struct {
	// URL is where the stand-in serves.
	URL string
	srv *httptest.Server
	Record
}

// Serve starts serving h on a local port.
func (s *Server) Serve(h http.Handler) {
	s.srv = httptest.NewServer(h)
	s.URL = s.srv.URL
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Record counts the requests a stand-in served and keeps the ones it refused.
type Record struct {
	mu         sync.Mutex
	served     int
	violations []string
}

// Served counts one request answered.
func (r *Record) Served() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served++
}

// Requests counts the requests answered.
func (r *Record) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served
}

// Violations lists the requests the real API would have refused, and why.
func (r *Record) Violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.violations...)
}

// Refuse records a refused request and answers it with status and body.
func (r *Record) Refuse(w http.ResponseWriter, status int, typ, message string, body any) {
	r.mu.Lock()
	r.violations = append(r.violations, fmt.Sprintf("%d %s: %s", status, typ, message))
	r.mu.Unlock()
	WriteJSON(w, status, body)
}

// WriteJSON answers with status and body as JSON.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// Post sends body to url with header, as a test's client of a stand-in, and
// returns the status and the answer.
func Post(t testing.TB, url string, header http.Header, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}
