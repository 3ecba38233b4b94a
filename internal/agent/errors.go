package agent

import (
	"fmt"
	"strings"

	"github.com/taskworker/taskworker/internal/process"
)

// ExitError is an agent process that did not succeed.
type ExitError struct {
	Agent  string
	Result process.Result
	// Detail says more of when it ended, e.g. "before reporting a result".
	Detail string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("agent %s %s", e.Agent, e.Result.Describe())
	if e.Detail != "" {
		msg += " " + e.Detail
	}
	if len(e.Result.StderrTail) > 0 {
		tail := e.Result.StderrTail
		if len(tail) > 5 {
			tail = tail[len(tail)-5:]
		}
		msg += "; last stderr lines: " + strings.Join(tail, " | ")
	}
	return msg
}

// ResultError is an agent that reported it failed.
type ResultError struct {
	Agent   string
	Kind    string
	Turns   int
	Message string
}

func (e *ResultError) Error() string {
	msg := fmt.Sprintf("agent %s reported an error", e.Agent)
	if e.Kind != "" {
		msg += " (" + e.Kind + ")"
	}
	switch {
	case e.Turns == 1:
		msg += " after 1 turn"
	case e.Turns > 1:
		msg += fmt.Sprintf(" after %d turns", e.Turns)
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}
