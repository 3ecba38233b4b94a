package tasksapi

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// APIError is an error answer of the Tasks API.
type APIError struct {
	Method     string
	Path       string
	StatusCode int
	Detail     string
	Code       string
	Attr       string
	// RetryAfter is how long the API asked to wait before the call is sent
	// again (its Retry-After, at most a minute); 0 when it didn't say.
	RetryAfter time.Duration
	// Attempts is how many times the client sent the call: more than 1 when
	// it retried it itself.
	Attempts int
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

// RetryAfter is how long the API asked to wait before the call that failed
// with err is sent again; 0 when it didn't say.
func RetryAfter(err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.RetryAfter
	}
	return 0
}

// Attempts is how many times the client sent the call that failed with err;
// 0 when err is no call's answer (a body it couldn't decode, say).
func Attempts(err error) int {
	var apiErr *APIError
	var netErr *NetworkError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Attempts
	case errors.As(err, &netErr):
		return netErr.Attempts
	}
	return 0
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

// NetworkError is a call that got no answer: the API could not be reached,
// the request timed out, or its context ended.
type NetworkError struct {
	Method, Path string
	// Attempts is how many times the client sent the call.
	Attempts int
	Err      error
}

func (e *NetworkError) Error() string { return fmt.Sprintf("%s %s: %v", e.Method, e.Path, e.Err) }

func (e *NetworkError) Unwrap() error { return e.Err }
