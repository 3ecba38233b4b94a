package localapi

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

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
