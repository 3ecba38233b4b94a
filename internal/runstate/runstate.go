// Package runstate reads the settings PostHog keeps in a run's state: its
// mode (background or interactive), how long an interactive run waits for
// its user, and the run's own choice of agent, model and publishing. Keys it
// doesn't know are left alone: the state is the API's, and merged, never
// replaced.
package runstate

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Modes of a run.
const (
	// Background runs end when the agent's turn ends.
	Background = "background"
	// Interactive runs wait for the user's next message after each turn.
	Interactive = "interactive"
)

// RuntimeAdapters are the agents a run may ask for (state.runtime_adapter),
// and ReasoningEfforts the efforts (state.reasoning_effort), as PostHog
// accepts them.
var (
	RuntimeAdapters  = []string{"claude", "codex"}
	ReasoningEfforts = []string{"low", "medium", "high", "xhigh", "max"}
)

// Inactivity timeouts of an interactive run, as PostHog's.
const (
	DefaultInactivity     = 30 * time.Minute
	UserStartedInactivity = time.Hour
	MaxInactivity         = 2 * time.Hour
)

// Keys of the state the worker reads, and of those it writes.
const (
	KeyMode              = "mode"
	KeyInactivitySeconds = "inactivity_timeout_seconds"
	KeyRunSource         = "run_source"
	KeyRuntimeAdapter    = "runtime_adapter"
	KeyModel             = "model"
	KeyReasoningEffort   = "reasoning_effort"
	KeyAutoPublish       = "auto_publish"
	KeyKeepDraft         = "keep_draft"
	// KeyTimedOutInactivity marks a run its inactivity timeout ended, as PostHog's does.
	KeyTimedOutInactivity = "timed_out_inactivity"
)

// originUserCreated is the origin_product of a task a person made.
const originUserCreated = "user_created"

// Settings are what the worker honours of a run's state.
type Settings struct {
	Mode string `json:"mode,omitempty"`
	// Inactivity is how long an interactive run waits after a turn for a
	// message or a heartbeat before it ends.
	Inactivity     time.Duration `json:"inactivity,omitempty"`
	RuntimeAdapter string        `json:"runtime_adapter,omitempty"`
	Model          string        `json:"model,omitempty"`
	Effort         string        `json:"reasoning_effort,omitempty"`
	// AutoPublish false keeps the run's changes as a patch artifact: no
	// push, no pull request. nil is the worker's default (publish).
	AutoPublish *bool `json:"auto_publish,omitempty"`
	KeepDraft   *bool `json:"keep_draft,omitempty"`
	// NotPublished says why a run that does not publish doesn't.
	NotPublished string `json:"not_published,omitempty"`
}

// Interactive reports a run that waits for follow-ups.
func (s Settings) Interactive() bool { return s.Mode == Interactive }

// Publishes reports whether the run pushes its changes.
func (s Settings) Publishes() bool { return s.AutoPublish == nil || *s.AutoPublish }

// Read reads the settings of a run's state; originProduct is its task's.
// What it can't honour as given comes back as a note for the run's log,
// never as an error: a setting the worker doesn't understand must not cost
// the user the run.
func Read(state map[string]any, originProduct string) (Settings, []string) {
	var s Settings
	var notes []string
	text := func(key string) string {
		switch v := state[key].(type) {
		case string:
			return strings.TrimSpace(v)
		case nil:
		default:
			notes = append(notes, fmt.Sprintf("state.%s is %v, not text; ignored", key, v))
		}
		return ""
	}
	flag := func(key string) *bool {
		switch v := state[key].(type) {
		case bool:
			return &v
		case nil:
		default:
			notes = append(notes, fmt.Sprintf("state.%s is %v, not true or false; ignored", key, v))
		}
		return nil
	}
	switch mode := text(KeyMode); mode {
	case "", Background:
		s.Mode = Background
	case Interactive:
		s.Mode = Interactive
	default:
		s.Mode = Background
		notes = append(notes, fmt.Sprintf("state.mode %q is neither %q nor %q; the run is a background run", mode, Background, Interactive))
	}
	if s.Interactive() {
		s.Inactivity = DefaultInactivity
		if originProduct == originUserCreated || text(KeyRunSource) == "manual" {
			s.Inactivity = UserStartedInactivity
		}
		switch v := state[KeyInactivitySeconds].(type) {
		case float64:
			switch {
			case v <= 0 || math.IsNaN(v):
				notes = append(notes, fmt.Sprintf("state.%s is %v, not a positive number of seconds; the run waits %s", KeyInactivitySeconds, v, s.Inactivity))
			case v > MaxInactivity.Seconds():
				s.Inactivity = MaxInactivity
				notes = append(notes, fmt.Sprintf("state.%s is %v; an interactive run waits at most %s", KeyInactivitySeconds, v, MaxInactivity))
			default:
				s.Inactivity = time.Duration(v * float64(time.Second))
			}
		case nil:
		default:
			notes = append(notes, fmt.Sprintf("state.%s is %v, not a number of seconds; the run waits %s", KeyInactivitySeconds, v, s.Inactivity))
		}
	}
	s.RuntimeAdapter = text(KeyRuntimeAdapter)
	s.Model = text(KeyModel)
	s.Effort = text(KeyReasoningEffort)
	if s.Effort != "" && !slices.Contains(ReasoningEfforts, s.Effort) {
		notes = append(notes, fmt.Sprintf("state.reasoning_effort %q is not one of %s; the agent's own effort is used", s.Effort, strings.Join(ReasoningEfforts, ", ")))
		s.Effort = ""
	}
	s.AutoPublish = flag(KeyAutoPublish)
	if !s.Publishes() {
		s.NotPublished = "the run's state.auto_publish is false"
	}
	s.KeepDraft = flag(KeyKeepDraft)
	return s, notes
}

// ForOrigin applies the worker's list of the task origins whose runs
// publish (empty: all) to a run whose state does not decide.
func (s Settings) ForOrigin(publishOrigins []string, origin string) Settings {
	if s.AutoPublish != nil || len(publishOrigins) == 0 || slices.Contains(publishOrigins, origin) {
		return s
	}
	no := false
	s.AutoPublish = &no
	s.NotPublished = fmt.Sprintf("runs of %s tasks are not published (TASKWORKER_PUBLISH_ORIGINS is %s)", cmp.Or(origin, "origin-less"), strings.Join(publishOrigins, ","))
	return s
}

// ForAgent checks the run's runtime_adapter against the agent this worker
// runs: a run can't change it, so a run that asks for another gets the
// worker's, and its model and effort (chosen for the other) are dropped.
func (s Settings) ForAgent(agent string) (Settings, string) {
	if s.RuntimeAdapter == "" || s.RuntimeAdapter == agent {
		return s, ""
	}
	note := fmt.Sprintf("the run asks for runtime_adapter %q; this worker runs %s (TASKWORKER_AGENT), so the run goes on with %s", s.RuntimeAdapter, agent, agent)
	if s.Model != "" || s.Effort != "" {
		note += fmt.Sprintf(" and its configured model (state.model %q and reasoning_effort %q are for %s)", s.Model, s.Effort, s.RuntimeAdapter)
		s.Model, s.Effort = "", ""
	}
	return s, note
}
