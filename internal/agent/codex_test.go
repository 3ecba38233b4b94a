package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/standin/openaitest"
)

func codexAgainst(t *testing.T, key string, script openaitest.Script) (*Codex, *openaitest.Server) {
	codex := agenttest.Binary(t, "codex", "TASKWORKER_CODEX_PATH")
	api := openaitest.Start("sk-openai-test-key-123456", script)
	t.Cleanup(api.Close)
	return &Codex{Path: codex, BaseURL: api.URL, Env: []string{"OPENAI_API_KEY=" + key}}, api
}

// cloneRequest is a run's request in a fresh git clone with its own scratch folder.
func cloneRequest(t *testing.T) Request {
	req := request(t)
	req.Dir, req.HomeDir, req.WorkerDir = gitClone(t), filepath.Join(t.TempDir(), "home"), t.TempDir()
	return req
}

func TestCodexEditsTheCloneAndItsEventsBecomeEntries(t *testing.T) {
	var prompts []string
	c, api := codexAgainst(t, "sk-openai-test-key-123456", func(conv openaitest.Conversation) openaitest.Reply {
		prompts = append(prompts, conv.Prompt)
		switch conv.Turn {
		case 0:
			return openaitest.Reply{Reasoning: "Write it, then check.", Text: "Writing hello.txt.",
				Exec: `const r = await tools.exec_command({cmd: "printf 'hello from codex\\n' > hello.txt && ls"}); text(r.output);`}
		case 1:
			return openaitest.Reply{Exec: `const r = await tools.exec_command({cmd: "cat missing.txt"}); text(r.output);`}
		}
		return openaitest.Reply{Text: "Wrote hello.txt."}
	})
	req := cloneRequest(t)
	var s sink
	res, err := c.Run(context.Background(), req, &s)
	require.NoError(t, err, consoleText(&s))
	require.Empty(t, api.Violations())

	data, err := os.ReadFile(filepath.Join(req.Dir, "hello.txt"))
	require.NoError(t, err)
	require.Equal(t, "hello from codex\n", string(data))
	require.Equal(t, "Fix the bug\n\nIt crashes.", strings.TrimSpace(prompts[0]))

	require.Equal(t, "Wrote hello.txt.", res.Summary)
	require.NotEmpty(t, res.Session)
	require.Equal(t, "codex", res.Usage["agent"])
	require.EqualValues(t, 300, res.Usage["input_tokens"], "three responses of 100 input tokens")
	require.Contains(t, consoleText(&s), "info: Codex started: thread "+res.Session)

	require.Equal(t, []string{"Writing hello.txt.", "Wrote hello.txt."}, messages(&s))
	require.Len(t, updates(&s, "agent_thought_chunk"), 1)
	calls := updates(&s, "tool_call")
	require.Len(t, calls, 2)
	require.Contains(t, calls[0]["title"], "hello.txt")
	require.Equal(t, acp.KindExecute, calls[0]["kind"])
	results := updates(&s, "tool_call_update")
	require.Len(t, results, 2)
	require.Equal(t, calls[0]["toolCallId"], results[0]["toolCallId"])
	require.Equal(t, acp.ToolCompleted, results[0]["status"])
	require.Contains(t, results[0]["rawOutput"], "hello.txt")
	require.Equal(t, acp.ToolFailed, results[1]["status"], "cat of a missing file fails")
}

func TestCodexAPIErrorFailsTheRun(t *testing.T) {
	c, _ := codexAgainst(t, "sk-openai-test-key-123456", func(openaitest.Conversation) openaitest.Reply {
		return openaitest.Reply{Status: 400, ErrType: "invalid_request_error", Message: "this request can never succeed"}
	})
	req := cloneRequest(t)
	var s sink
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.Run(ctx, req, &s)
	var resErr *ResultError
	require.ErrorAs(t, err, &resErr, consoleText(&s))
	require.Contains(t, err.Error(), "agent codex reported an error (turn.failed)")
	require.Contains(t, err.Error(), "this request can never succeed")
}

func TestCodexRejectedKeyFailsTheRun(t *testing.T) {
	c, api := codexAgainst(t, "sk-openai-a-wrong-key", func(openaitest.Conversation) openaitest.Reply {
		return openaitest.Reply{Text: "never"}
	})
	req := cloneRequest(t)
	var s sink
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.Run(ctx, req, &s)
	require.ErrorContains(t, err, "401 Unauthorized")
	require.ErrorContains(t, err, "check OPENAI_API_KEY")
	require.NotContains(t, err.Error(), "sk-openai-a-wrong-key")
	require.Zero(t, api.Requests())
}

const (
	codexThread    = `{"type":"thread.started","thread_id":"th-1"}`
	codexCompleted = `{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":2,"output_tokens":5}}`
)

func TestCodexStreamTranslatesEveryItemKind(t *testing.T) {
	script := fakeAgent(t, []string{
		codexThread,
		`{"type":"turn.started"}`,
		`{"type":"item.completed","item":{"id":"i1","type":"file_change","changes":[{"path":"a.go","kind":"update"},{"path":"b.go","kind":"add"}],"status":"completed"}}`,
		`{"type":"item.started","item":{"id":"i2","type":"mcp_tool_call","server":"docs","tool":"search","arguments":{"q":"x"},"status":"in_progress"}}`,
		`{"type":"item.completed","item":{"id":"i2","type":"mcp_tool_call","server":"docs","tool":"search","arguments":{"q":"x"},"error":{"message":"server gone"},"status":"failed"}}`,
		`{"type":"item.updated","item":{"id":"i3","type":"todo_list","items":[{"text":"read","completed":true},{"text":"fix","completed":false}]}}`,
		`{"type":"item.completed","item":{"id":"i4","type":"error","message":"a recoverable problem"}}`,
		`{"type":"item.completed","item":{"id":"i5","type":"collab_tool_call","status":"completed"}}`,
		`{"type":"error","message":"Reconnecting... 1/5"}`,
		`{"type":"something.new","x":1}`,
		`{"type":"item.completed","item":{"id":"i6","type":"agent_message","text":"All done."}}`,
		codexCompleted,
	}, "exit 0")
	var s sink
	res, err := (&Codex{Path: script}).Run(context.Background(), request(t), &s)
	require.NoError(t, err)
	require.Equal(t, "All done.", res.Summary)
	require.Equal(t, "th-1", res.Session)
	require.EqualValues(t, 2, res.Usage["cached_input_tokens"])

	calls := updates(&s, "tool_call")
	require.Len(t, calls, 2)
	require.Equal(t, "Edit update a.go, add b.go", calls[0]["title"])
	require.Equal(t, acp.KindEdit, calls[0]["kind"])
	require.Equal(t, "docs/search", calls[1]["title"])
	results := updates(&s, "tool_call_update")
	require.Len(t, results, 2)
	require.Equal(t, acp.ToolCompleted, results[0]["status"])
	require.Equal(t, acp.ToolFailed, results[1]["status"])
	require.Equal(t, "server gone", results[1]["rawOutput"])
	plans := updates(&s, "plan")
	require.Len(t, plans, 1)
	require.Len(t, plans[0]["entries"], 2)
	console := consoleText(&s)
	require.Contains(t, console, "warn: codex: a recoverable problem")
	require.Contains(t, console, "warn: codex: Reconnecting... 1/5")
	require.Contains(t, console, `info: codex something.new event: {"type":"something.new","x":1}`)
	require.Contains(t, console, "info: codex collab_tool_call item: ")
}

func TestCodexThatDiesMidTurnFails(t *testing.T) {
	script := fakeAgent(t, []string{codexThread, `{"type":"turn.started"}`}, "exit 0")
	var s sink
	_, err := (&Codex{Path: script}).Run(context.Background(), request(t), &s)
	require.EqualError(t, err, "agent codex exited with code 0 before finishing its turn")
}

func TestCodexCommandLine(t *testing.T) {
	c := &Codex{Model: "gpt-test", Sandbox: "danger-full-access", BaseURL: "http://gateway.internal/v1", ExtraArgs: []string{"-c", "x=1"}}
	args := strings.Join(c.Args(), " ")
	require.Equal(t, `exec --json --skip-git-repo-check --ephemeral --sandbox danger-full-access `+
		`-c model_providers.taskworker={name="taskworker",base_url="http://gateway.internal/v1",env_key="OPENAI_API_KEY",wire_api="responses"} `+
		`-c model_provider="taskworker" --model gpt-test -c x=1 -`, args)
}

func TestCodexHasTheAPIHoldItsAnswerToAStrictSchemaAndIsAskedForOthers(t *testing.T) {
	var seen []openaitest.Conversation
	c, api := codexAgainst(t, "sk-openai-test-key-123456", func(conv openaitest.Conversation) openaitest.Reply {
		seen = append(seen, conv)
		return openaitest.Reply{Text: `{"severity":"low"}`}
	})
	req := cloneRequest(t)
	req.Task.JSONSchema = []byte(`{"type":"object","properties":{"severity":{"enum":["low","high"]}},"required":["severity"],"additionalProperties":false}`)
	var s sink
	res, err := c.Run(context.Background(), req, &s)
	require.NoError(t, err, consoleText(&s))
	require.Empty(t, api.Violations())
	require.Equal(t, `{"severity":"low"}`, res.Summary)
	require.JSONEq(t, string(req.Task.JSONSchema), string(seen[0].Schema), "the schema reached the API as text.format")
	require.NotContains(t, seen[0].Prompt, "JSON Schema")

	seen = nil
	req = cloneRequest(t)
	req.Task.JSONSchema = []byte(`{"type":"object","properties":{"severity":{"type":"string"}}}`)
	_, err = c.Run(context.Background(), req, &s)
	require.NoError(t, err, consoleText(&s))
	require.Empty(t, api.Violations(), "a schema strict mode would refuse never reaches the API")
	require.Nil(t, seen[0].Schema)
	require.Contains(t, seen[0].Prompt, "JSON Schema")
}
