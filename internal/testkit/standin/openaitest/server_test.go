package openaitest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/testkit/standin"
)

func post(t *testing.T, s *Server, key, body string) (int, string) {
	t.Helper()
	return standin.Post(t, s.URL+"/responses", http.Header{"Authorization": {"Bearer " + key}}, body)
}

func TestTheStandInRefusesWhatTheAPIRefuses(t *testing.T) {
	s := Start("key", func(Conversation) Reply { return Reply{Text: "hi"} })
	defer s.Close()
	const ok = `{"model":"m","stream":true,"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hello"}]}]}`
	for _, c := range []struct {
		key, body string
		status    int
		says      string
	}{
		{"wrong", ok, 401, "Incorrect API key"},
		{"key", `{"stream":true,"input":[{"type":"message","role":"user","content":"x"}]}`, 400, "'model'"},
		{"key", `{"model":"m","stream":true,"input":[]}`, 400, "'input'"},
		{"key", `{"model":"m","stream":true,"input":[{"type":"custom_tool_call","call_id":"c1","name":"exec","input":"x"}]}`, 400, "No tool output found"},
		{"key", `{"model":"m","stream":true,"input":[{"type":"function_call_output","call_id":"c9","output":"x"}]}`, 400, "No tool call found"},
	} {
		status, body := post(t, s, c.key, c.body)
		require.Equal(t, c.status, status, body)
		require.Contains(t, body, c.says)
	}
	require.Len(t, s.Violations(), 5)

	status, body := post(t, s, "key", ok)
	require.Equal(t, 200, status, body)
	require.Contains(t, body, "event: response.completed")
	require.Contains(t, body, `"text":"hi"`)
}

func TestTheStandInReadsTheConversation(t *testing.T) {
	var seen Conversation
	s := Start("key", func(c Conversation) Reply { seen = c; return Reply{Exec: "text(1)"} })
	defer s.Close()
	status, body := post(t, s, "key", `{"model":"m","stream":true,"input":[
		{"type":"message","role":"user","content":[{"type":"input_text","text":"<environment_context><cwd>/w/repo</cwd></environment_context>"}]},
		{"type":"message","role":"user","content":[{"type":"input_text","text":"Fix it"}]},
		{"type":"custom_tool_call","call_id":"c1","name":"exec","input":"x"},
		{"type":"custom_tool_call_output","call_id":"c1","output":"done"}]}`)
	require.Equal(t, 200, status)
	require.Equal(t, Conversation{Prompt: "Fix it", Turn: 1, WorkDir: "/w/repo", Outputs: []string{"done"}, Model: "m", Said: []string{"user: Fix it"}}, seen)
	require.Contains(t, body, `"type":"custom_tool_call"`)
	require.Contains(t, body, `"name":"exec"`)
}

func TestTheStandInRefusesASchemaStrictModeCannotTake(t *testing.T) {
	s := Start("key", func(Conversation) Reply { return Reply{Text: "{}"} })
	defer s.Close()
	input := `"input":[{"type":"message","role":"user","content":"x"}]`
	for schema, says := range map[string]string{
		`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`:                              "'additionalProperties' is required",
		`{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}`:                  "Missing 'a'",
		`{"type":"array","items":{"type":"string"}}`:                                                           `type: \"object\"`,
		`{"type":"object","properties":{"a":{"type":"object"}},"required":["a"],"additionalProperties":false}`: "In context=('properties', 'a', )",
	} {
		status, body := post(t, s, "key", `{"model":"m","stream":true,`+input+`,"text":{"format":{"type":"json_schema","name":"out","strict":true,"schema":`+schema+`}}}`)
		require.Equal(t, 400, status, schema)
		require.Contains(t, body, says, schema)
	}
	status, body := post(t, s, "key", `{"model":"m","stream":true,`+input+`,"text":{"format":{"type":"json_schema","name":"out","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}}}}`)
	require.Equal(t, 200, status, body)
}
