// Package checks is what a run says about its pull request's CI: the
// follow-up that asks the agent to fix failing checks, and the end of a run
// whose checks still fail. The GitHub calls are package github's; the
// waiting is the workflow's.
package checks

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// States of a pull request's checks, as one poll sees them.
const (
	Pending = "pending"
	Success = "success"
	Failure = "failure"
	// None is a commit no check or status reported on.
	None = "none"
)

// Limits of what a follow-up carries of the failing checks' logs: the end
// of each (where the error is), and of all together, so that a run with
// many failing checks still sends the model one readable message.
const (
	MaxLogBytes   = 6 << 10
	MaxTotalBytes = 24 << 10
	MaxChecks     = 8
)

// Check is one check of the pull request's head commit.
type Check struct {
	Name       string `json:"name"`
	Status     string `json:"status,omitempty"`
	Conclusion string `json:"conclusion,omitempty"`
	URL        string `json:"url,omitempty"`
	// Log is the end of the check's log (or its summary), redacted; only
	// for the failing checks of a poll.
	Log string `json:"log,omitempty"`
}

// Names lists the checks' names, for a log line or an error message.
func Names(checks []Check) string {
	names := make([]string, len(checks))
	for i, c := range checks {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// FollowUp is the message of the turn that fixes round's failing checks:
// which failed, and the end of their logs.
func FollowUp(round, maxRounds int, failing []Check) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The pull request's CI failed on your last push (round %d of %d). Failing checks: %s.\n", round, maxRounds, Names(failing))
	b.WriteString("Find the cause in the logs below, fix it in this branch, and keep the rest of the change. Run the failing checks locally where you can.\n")
	budget := MaxTotalBytes
	for i, c := range failing {
		if i == MaxChecks {
			fmt.Fprintf(&b, "\n(%d more failing checks not shown)\n", len(failing)-i)
			break
		}
		fmt.Fprintf(&b, "\n## %s (%s)\n", c.Name, c.Conclusion)
		if c.URL != "" {
			fmt.Fprintf(&b, "%s\n", c.URL)
		}
		log := Tail(c.Log, min(MaxLogBytes, budget))
		budget -= len(log)
		if log == "" {
			b.WriteString("(no log)\n")
			continue
		}
		fmt.Fprintf(&b, "```\n%s\n```\n", strings.TrimRight(log, "\n"))
	}
	return b.String()
}

// StillFailing is the error of a run whose checks failed in its last round.
func StillFailing(rounds int, failing []Check) string {
	return fmt.Sprintf("the pull request's checks still fail after %d rounds of fixes (TASKWORKER_CI_MAX_ROUNDS): %s", rounds, Names(failing))
}

// Tail is the last max bytes of s, cut at a rune and then at a line start
// when one is near, marked when cut.
func Tail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	if max <= 0 {
		return ""
	}
	cut := len(s) - max
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	if nl := strings.IndexByte(s[cut:], '\n'); nl >= 0 && nl < 200 {
		cut += nl + 1
	}
	return "[…]\n" + s[cut:]
}
