package runstate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestModeAndInactivity(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  map[string]any
		origin string
		mode   string
		wait   time.Duration
		note   string
	}{
		{name: "no state", state: nil, mode: Background},
		{name: "background", state: map[string]any{"mode": "background"}, mode: Background},
		{name: "interactive", state: map[string]any{"mode": "interactive"}, mode: Interactive, wait: 30 * time.Minute},
		{name: "started by a user", state: map[string]any{"mode": "interactive"}, origin: "user_created", mode: Interactive, wait: time.Hour},
		{name: "started by hand", state: map[string]any{"mode": "interactive", "run_source": "manual"}, origin: "error_tracking", mode: Interactive, wait: time.Hour},
		{name: "override", state: map[string]any{"mode": "interactive", "inactivity_timeout_seconds": 90.0}, mode: Interactive, wait: 90 * time.Second},
		{name: "override capped", state: map[string]any{"mode": "interactive", "inactivity_timeout_seconds": 86400.0}, mode: Interactive, wait: 2 * time.Hour,
			note: "state.inactivity_timeout_seconds is 86400; an interactive run waits at most 2h0m0s"},
		{name: "override not positive", state: map[string]any{"mode": "interactive", "inactivity_timeout_seconds": -1.0}, mode: Interactive, wait: 30 * time.Minute,
			note: "state.inactivity_timeout_seconds is -1, not a positive number of seconds; the run waits 30m0s"},
		{name: "override not a number", state: map[string]any{"mode": "interactive", "inactivity_timeout_seconds": "soon"}, mode: Interactive, wait: 30 * time.Minute,
			note: "state.inactivity_timeout_seconds is soon, not a number of seconds; the run waits 30m0s"},
		{name: "unknown mode", state: map[string]any{"mode": "chatty"}, mode: Background,
			note: `state.mode "chatty" is neither "background" nor "interactive"; the run is a background run`},
		{name: "mode not text", state: map[string]any{"mode": 3.0}, mode: Background, note: "state.mode is 3, not text; ignored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, notes := Read(tc.state, tc.origin)
			require.Equal(t, tc.mode, s.Mode)
			require.Equal(t, tc.wait, s.Inactivity)
			if tc.note == "" {
				require.Empty(t, notes)
			} else {
				require.Equal(t, []string{tc.note}, notes)
			}
		})
	}
}

func TestRunSettingsAreReadAndUnknownKeysIgnored(t *testing.T) {
	s, notes := Read(map[string]any{
		"runtime_adapter": "claude", "model": " claude-sonnet-4-5 ", "reasoning_effort": "high",
		"auto_publish": false, "keep_draft": true, "pr_base_branch": "develop", "something_new": map[string]any{"x": 1},
	}, "")
	require.Empty(t, notes)
	require.Equal(t, "claude", s.RuntimeAdapter)
	require.Equal(t, "claude-sonnet-4-5", s.Model)
	require.Equal(t, "high", s.Effort)
	require.False(t, s.Publishes())
	require.True(t, *s.KeepDraft)

	s, notes = Read(map[string]any{"reasoning_effort": "ultra"}, "")
	require.Empty(t, s.Effort)
	require.Equal(t, []string{`state.reasoning_effort "ultra" is not one of low, medium, high, xhigh, max; the agent's own effort is used`}, notes)

	s, notes = Read(map[string]any{"auto_publish": "yes"}, "")
	require.True(t, s.Publishes(), "publishing is the default")
	require.Equal(t, []string{"state.auto_publish is yes, not true or false; ignored"}, notes)
}

func TestAnotherAdaptersSettingsGiveWayToTheWorkersAgent(t *testing.T) {
	s, _ := Read(map[string]any{"runtime_adapter": "codex", "model": "gpt-5-codex", "reasoning_effort": "high"}, "")
	got, note := s.ForAgent("claude")
	require.Equal(t, `the run asks for runtime_adapter "codex"; this worker runs claude (TASKWORKER_AGENT), so the run goes on with claude and its configured model (state.model "gpt-5-codex" and reasoning_effort "high" are for codex)`, note)
	require.Empty(t, got.Model)
	require.Empty(t, got.Effort)

	same, note := s.ForAgent("codex")
	require.Empty(t, note)
	require.Equal(t, "gpt-5-codex", same.Model)
}

func TestTheTasksOriginDecidesPublishingWhenTheRunDoesNot(t *testing.T) {
	s, _ := Read(nil, "error_tracking")
	require.True(t, s.ForOrigin(nil, "error_tracking").Publishes(), "no list: every origin publishes")
	require.True(t, s.ForOrigin([]string{"user_created", "error_tracking"}, "error_tracking").Publishes())
	kept := s.ForOrigin([]string{"user_created"}, "error_tracking")
	require.False(t, kept.Publishes())
	require.Equal(t, "runs of error_tracking tasks are not published (TASKWORKER_PUBLISH_ORIGINS is user_created)", kept.NotPublished)

	yes, _ := Read(map[string]any{"auto_publish": true}, "error_tracking")
	require.True(t, yes.ForOrigin([]string{"user_created"}, "error_tracking").Publishes(), "the run's own choice wins")
	no, _ := Read(map[string]any{"auto_publish": false}, "user_created")
	require.Equal(t, "the run's state.auto_publish is false", no.ForOrigin([]string{"user_created"}, "user_created").NotPublished)
}
