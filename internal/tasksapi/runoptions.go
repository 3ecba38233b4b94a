package tasksapi

// A run's mode, state.mode: PostHog's TaskRun.Mode.
const (
	// ModeBackground runs end with the agent's one turn.
	ModeBackground = "background"
	// ModeInteractive runs stay open after each turn for follow-up messages.
	ModeInteractive = "interactive"
)

// RuntimeAdapters are the agents PostHog's cloud runtime may be asked for
// (state.runtime_adapter).
var RuntimeAdapters = []string{"claude", "codex"}

// ReasoningEfforts are the values PostHog accepts for state.reasoning_effort.
var ReasoningEfforts = []string{"low", "medium", "high", "xhigh", "max"}
