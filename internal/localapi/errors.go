package localapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"
)

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
