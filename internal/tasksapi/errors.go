package tasksapi

import (
	"errors"
	"fmt"
	"net/http"
)

// APIError is an error answer of the Tasks API.
type APIError struct {
	Method     string
	Path       string
	StatusCode int
	Detail     string
	Code       string
	Attr       string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.Path, e.StatusCode)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Attr != "" {
		msg += " (field " + e.Attr + ")"
	}
	if hint := e.hint(); hint != "" {
		msg += "; " + hint
	}
	return msg
}

func (e *APIError) hint() string {
	switch e.StatusCode {
	case http.StatusUnauthorized:
		return "check POSTHOG_PERSONAL_API_KEY"
	case http.StatusForbidden:
		return "the personal API key needs the task:read and task:write scopes on this project"
	}
	return ""
}

// Retryable reports whether sending the same request again may succeed.
func (e *APIError) Retryable() bool {
	return e.StatusCode == http.StatusTooManyRequests ||
		e.StatusCode == http.StatusRequestTimeout ||
		e.StatusCode >= 500
}

// IsNotFound reports whether err is a 404 of the Tasks API.
func IsNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }

// IsRetryable reports whether err may go away on retry: transport errors and
// 408/429/5xx answers are; other 4xx answers and malformed bodies are not.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Retryable()
	}
	var decodeErr *DecodeError
	return !errors.As(err, &decodeErr)
}

func statusOf(err error) int {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode
	}
	return 0
}

// DecodeError is an answer whose body is not what the contract says.
type DecodeError struct {
	Method, Path string
	Err          error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s %s: the Tasks API answered a body that is not valid JSON for this endpoint: %v", e.Method, e.Path, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }
