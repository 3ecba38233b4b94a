package anthropictest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/testkit/standin"
)

func post(t *testing.T, s *Server, key, version, body string) (int, string) {
	t.Helper()
	header := http.Header{}
	if key != "" {
		header.Set("x-api-key", key)
	}
	if version != "" {
		header.Set("anthropic-version", version)
	}
	return standin.Post(t, s.URL+"/v1/messages", header, body)
}

// The stand-in refuses what the real API refuses, so an adapter bug shows up in tests.
func TestTheStandInRefusesWhatTheAPIRefuses(t *testing.T) {
	s := Start("key", func(Conversation) Reply { return Reply{Text: "hi"} })
	defer s.Close()
	const ok = `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello"}]}`
	for _, c := range []struct {
		key, version, body string
		status             int
		says               string
	}{
		{"wrong", "2023-06-01", ok, 401, "authentication_error"},
		{"key", "", ok, 400, "anthropic-version"},
		{"key", "2023-06-01", `{"max_tokens":10,"messages":[{"role":"user","content":"x"}]}`, 400, "model: field required"},
		{"key", "2023-06-01", `{"model":"m","messages":[{"role":"user","content":"x"}]}`, 400, "max_tokens"},
		{"key", "2023-06-01", `{"model":"m","max_tokens":10,"messages":[{"role":"assistant","content":"x"}]}`, 400, "first message must be a user message"},
		{"key", "2023-06-01", `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"x"},
			{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{}}]},
			{"role":"user","content":[{"type":"text","text":"no result"}]}]}`, 400, "without tool_result blocks"},
		{"key", "2023-06-01", `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"nope","content":"x"}]}]}`, 400, "unexpected tool_use_id"},
	} {
		status, body := post(t, s, c.key, c.version, c.body)
		require.Equal(t, c.status, status, body)
		require.Contains(t, body, c.says)
	}
	require.Len(t, s.Violations(), 7)
	require.Zero(t, s.Requests())

	status, body := post(t, s, "key", "2023-06-01", ok)
	require.Equal(t, 200, status, body)
	require.Contains(t, body, `"text":"hi"`)
	require.Equal(t, 1, s.Requests())
}

func TestTheStandInStreamsTheMessageAsServerSentEvents(t *testing.T) {
	var seen Conversation
	s := Start("key", func(c Conversation) Reply {
		seen = c
		return Reply{Text: "Running it.", Tools: []ToolUse{{Name: "Bash", Input: map[string]any{"command": "ls"}}}}
	})
	defer s.Close()
	status, body := post(t, s, "key", "2023-06-01", `{"model":"m","max_tokens":10,"stream":true,
		"system":"x\nPrimary working directory: /w/repo\n",
		"messages":[{"role":"user","content":[{"type":"text","text":"<system-reminder>ctx</system-reminder>"},{"type":"text","text":"Fix it"}]}]}`)
	require.Equal(t, 200, status)
	require.Equal(t, Conversation{Prompt: "Fix it", WorkDir: "/w/repo", Model: "m", Said: []string{"user: Fix it"}, Latest: "Fix it"}, seen)
	var events []string
	for _, line := range strings.Split(body, "\n") {
		if name, ok := strings.CutPrefix(line, "event: "); ok {
			events = append(events, name)
		}
	}
	require.Equal(t, []string{"message_start",
		"content_block_start", "content_block_delta", "content_block_stop",
		"content_block_start", "content_block_delta", "content_block_stop",
		"message_delta", "message_stop"}, events)
	require.Contains(t, body, `"partial_json":"{\"command\":\"ls\"}"`)
	require.Contains(t, body, `"stop_reason":"tool_use"`)
}
