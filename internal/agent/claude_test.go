package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
	"github.com/taskworker/taskworker/internal/testkit/standin/anthropictest"
)

func gitClone(t testing.TB) string {
	dir := t.TempDir()
	out, err := exec.Command("git", "init", "-q", dir).CombinedOutput()
	require.NoError(t, err, string(out))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("# app\n"), 0o644))
	return dir
}

func updates(s *sink, kind string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, e := range s.entries {
		if e.Notification.Method != acp.MethodSessionUpdate {
			continue
		}
		u := e.Notification.Params["update"].(map[string]any)
		if u["sessionUpdate"] == kind {
			out = append(out, u)
		}
	}
	return out
}

// messages are the texts of the agent_message entries.
func messages(s *sink) []string {
	var texts []string
	for _, u := range updates(s, "agent_message") {
		texts = append(texts, u["content"].(map[string]any)["text"].(string))
	}
	return texts
}

func consoleText(s *sink) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, e := range s.entries {
		if e.Notification.Method == acp.MethodConsole {
			b.WriteString(e.Notification.Params["level"].(string) + ": " + e.Notification.Params["message"].(string) + "\n")
		}
	}
	return b.String()
}

func TestClaudeCodeEditsTheCloneAndItsStreamBecomesEntries(t *testing.T) {
	claude := agenttest.Binary(t, "claude", "TASKWORKER_CLAUDE_PATH")
	var prompts []string
	api := anthropictest.Start("sk-ant-test-key-123456", func(c anthropictest.Conversation) anthropictest.Reply {
		if len(c.Tools) == 0 {
			return anthropictest.Reply{Text: "ok"}
		}
		prompts = append(prompts, c.Prompt)
		switch c.Turn {
		case 0:
			return anthropictest.Reply{Thinking: "Look first.", Text: "Let me look at the repository.",
				Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{"command": "ls", "description": "List files"}}}}
		case 1:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Write", Input: map[string]any{
				"file_path": filepath.Join(c.WorkDir, "hello.txt"), "content": "hello from claude\n"}}}}
		case 2:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{"command": "cat missing.txt"}}}}
		}
		return anthropictest.Reply{Text: "Added hello.txt."}
	})
	defer api.Close()

	req := request(t)
	req.Dir = gitClone(t)
	req.HomeDir = filepath.Join(t.TempDir(), "home")
	var s sink
	c := &Claude{Path: claude, AllowedTools: DefaultClaudeAllowedTools, MaxTurns: 10,
		Env: []string{"ANTHROPIC_API_KEY=" + api.APIKey, "ANTHROPIC_BASE_URL=" + api.URL}}
	res, err := c.Run(context.Background(), req, &s)
	require.NoError(t, err, consoleText(&s))
	require.Empty(t, api.Violations())

	data, err := os.ReadFile(filepath.Join(req.Dir, "hello.txt"))
	require.NoError(t, err)
	require.Equal(t, "hello from claude\n", string(data))
	require.Contains(t, prompts[0], "Fix the bug\n\nIt crashes.")

	require.Equal(t, "Added hello.txt.", res.Summary)
	require.NotEmpty(t, res.Session)
	require.EqualValues(t, 4, res.Usage["num_turns"])
	require.Equal(t, "claude", res.Usage["agent"])
	require.Contains(t, res.Usage, "cost_usd")
	require.Contains(t, consoleText(&s), "Claude Code ")

	require.Equal(t, []string{"Let me look at the repository.", "Added hello.txt."}, messages(&s))
	require.Len(t, updates(&s, "agent_thought_chunk"), 1)

	calls := updates(&s, "tool_call")
	require.Len(t, calls, 3)
	require.Equal(t, "`ls`", calls[0]["title"])
	require.Equal(t, acp.KindExecute, calls[0]["kind"])
	require.Equal(t, "ls", calls[0]["rawInput"].(map[string]any)["command"])
	require.Equal(t, "Write hello.txt", calls[1]["title"])
	require.Equal(t, acp.KindEdit, calls[1]["kind"])
	results := updates(&s, "tool_call_update")
	require.Len(t, results, 3)
	for i, r := range results {
		require.Equal(t, calls[i]["toolCallId"], r["toolCallId"])
	}
	require.Equal(t, acp.ToolCompleted, results[0]["status"])
	require.Contains(t, results[0]["rawOutput"], "README.md")
	require.Equal(t, acp.ToolCompleted, results[1]["status"])
	require.Equal(t, acp.ToolFailed, results[2]["status"], "cat of a missing file fails")
}

func TestClaudeCodeErrorResultFailsTheRun(t *testing.T) {
	claude := agenttest.Binary(t, "claude", "TASKWORKER_CLAUDE_PATH")
	api := anthropictest.Start("sk-ant-test-key-123456", func(c anthropictest.Conversation) anthropictest.Reply {
		return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{"command": "true"}}}}
	})
	defer api.Close()
	req := cloneRequest(t)
	var s sink
	c := &Claude{Path: claude, AllowedTools: DefaultClaudeAllowedTools, MaxTurns: 2,
		Env: []string{"ANTHROPIC_API_KEY=" + api.APIKey, "ANTHROPIC_BASE_URL=" + api.URL}}
	_, err := c.Run(context.Background(), req, &s)
	var resErr *ResultError
	require.ErrorAs(t, err, &resErr, consoleText(&s))
	require.Equal(t, "error_max_turns", resErr.Kind)
	require.Contains(t, err.Error(), "agent claude reported an error (error_max_turns) after ")
}

func TestClaudeCodeRejectedKeyFailsTheRun(t *testing.T) {
	claude := agenttest.Binary(t, "claude", "TASKWORKER_CLAUDE_PATH")
	api := anthropictest.Start("sk-ant-the-right-key", func(anthropictest.Conversation) anthropictest.Reply {
		return anthropictest.Reply{Text: "never"}
	})
	defer api.Close()
	req := cloneRequest(t)
	var s sink
	c := &Claude{Path: claude, Env: []string{"ANTHROPIC_API_KEY=sk-ant-a-wrong-key", "ANTHROPIC_BASE_URL=" + api.URL}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.Run(ctx, req, &s)
	require.ErrorContains(t, err, "the Anthropic API refused Claude Code's credentials (HTTP 401")
	require.NotContains(t, err.Error(), "sk-ant-a-wrong-key")
	require.Zero(t, api.Requests(), "no request got past authentication")
	require.LessOrEqual(t, len(api.Violations()), 2, "stopped at the first refusal, not after Claude Code's ten retries")
}

// fakeAgent is a script that prints the lines of a file, then runs tail.
func fakeAgent(t *testing.T, lines []string, tail string) string {
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	require.NoError(t, os.WriteFile(events, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	script := filepath.Join(dir, "agent")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\ncat >/dev/null\ncat "+events+"\n"+tail+"\n"), 0o755))
	return script
}

const (
	claudeInit    = `{"type":"system","subtype":"init","cwd":"/w","session_id":"s-1","model":"claude-test","permissionMode":"acceptEdits","claude_code_version":"9.9.9"}`
	claudeSuccess = `{"type":"result","subtype":"success","is_error":false,"result":"Done.","num_turns":2,"duration_ms":1500,"total_cost_usd":0.25,"session_id":"s-1","usage":{"input_tokens":10,"output_tokens":5}}`
)

func TestClaudeThatDiesWithoutAResultFailsEvenWithExitCodeZero(t *testing.T) {
	script := fakeAgent(t, []string{claudeInit, `{"type":"assistant","message":{"content":[{"type":"text","text":"Working on it"}]}}`}, "exit 0")
	var s sink
	_, err := (&Claude{Path: script}).Run(context.Background(), request(t), &s)
	require.EqualError(t, err, "agent claude exited with code 0 before reporting a result")

	script = fakeAgent(t, []string{claudeInit}, "echo 'out of memory' >&2; kill -9 $$")
	_, err = (&Claude{Path: script}).Run(context.Background(), request(t), &s)
	require.ErrorContains(t, err, "agent claude was killed by signal killed before reporting a result; last stderr lines: out of memory")
}

func TestClaudeStragglersAfterTheResultAreKilled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The agent reports its result, then it and a child (an MCP server, say) linger.
	script := fakeAgent(t, []string{claudeInit, claudeSuccess}, "sleep 300 & echo $! > "+pidFile+"; sleep 300")
	var s sink
	res, err := (&Claude{Path: script, Options: Options{ExitGrace: 200 * time.Millisecond, StopGrace: 200 * time.Millisecond}}).Run(context.Background(), request(t), &s)
	require.NoError(t, err)
	require.Equal(t, "Done.", res.Summary)
	require.Equal(t, 0.25, res.Usage["cost_usd"])
	require.EqualValues(t, 10, res.Usage["input_tokens"])
	require.Contains(t, consoleText(&s), "claude reported its result but was still running")
	data, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	require.False(t, proctest.Alive(pid), "the lingering child is gone")
}

func TestClaudeStreamSurvivesOddAndHugeEvents(t *testing.T) {
	huge := `{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"` +
		strings.Repeat("x", 30<<20) + `"}]}}`
	script := fakeAgent(t, []string{
		claudeInit,
		`not json at all`,
		`{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Read","input":{"file_path":"/w/big.log"}}]}}`,
		huge,
		`{"type":"rate_limit_event","detail":"slow down"}`,
		`{"type":"system","subtype":"compact_boundary"}`,
		`{"type":"assistant","message":"a plain string message"}`,
		`{"type":"assistant"`,
		claudeSuccess,
	}, "exit 0")
	var s sink
	res, err := (&Claude{Path: script}).Run(context.Background(), request(t), &s)
	require.NoError(t, err)
	require.Equal(t, "Done.", res.Summary)
	results := updates(&s, "tool_call_update")
	require.Len(t, results, 1)
	out := results[0]["rawOutput"].(string)
	require.Less(t, len(out), 100<<10, "a 30 MB tool result is cut for the log")
	require.Contains(t, out, "[cut: ")
	console := consoleText(&s)
	require.Contains(t, console, "info: not json at all")
	require.Contains(t, console, `claude rate_limit_event event: {"type":"rate_limit_event","detail":"slow down"}`)
	require.Contains(t, console, "debug: claude system/compact_boundary")
	require.Contains(t, console, "warn: claude: unreadable event")
	require.Len(t, updates(&s, "agent_message"), 1)
}

func TestClaudeGetsTheSchemaToEnforceAndTheRequestAlone(t *testing.T) {
	out := filepath.Join(t.TempDir(), "seen")
	script := fakeAgent(t, []string{claudeInit,
		`{"type":"result","subtype":"success","is_error":false,"result":"{\"a\":1}","structured_output":{"a":1},"num_turns":1}`},
		"echo \"$@\" > "+out)
	req := request(t)
	req.Task.JSONSchema = []byte("{\n  \"type\": \"object\"\n}")
	var s sink
	res, err := (&Claude{Path: script}).Run(context.Background(), req, &s)
	require.NoError(t, err)
	require.JSONEq(t, `{"a":1}`, string(res.Structured))
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Contains(t, string(data), `--json-schema {"type":"object"}`)

	req.Task.JSONSchema = []byte(`{"type":"object","description":"` + strings.Repeat("x", maxArgSchemaBytes) + `"}`)
	_, ok := nativeSchema(req.Task)
	require.False(t, ok, "a schema too large for an argument goes in the prompt")
}

func TestClaudeGetsItsKeysAndNoOtherSecrets(t *testing.T) {
	t.Setenv("POSTHOG_PERSONAL_API_KEY", "phx_must_not_leak_123")
	t.Setenv("TASKWORKER_GITHUB_TOKEN", "ghs_must_not_leak_456")
	out := filepath.Join(t.TempDir(), "env")
	script := fakeAgent(t, []string{claudeInit, claudeSuccess}, "env > "+out+"; echo \"$@\" >> "+out)
	req := request(t)
	req.HomeDir = filepath.Join(t.TempDir(), "home")
	var s sink
	_, err := (&Claude{Path: script, Model: "opus", MaxTurns: 7, Env: []string{"ANTHROPIC_API_KEY=sk-ant-agent-key"}}).Run(context.Background(), req, &s)
	require.NoError(t, err)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	env := string(data)
	require.Contains(t, env, "ANTHROPIC_API_KEY=sk-ant-agent-key")
	require.Contains(t, env, "HOME="+req.HomeDir)
	require.Contains(t, env, "-p --output-format stream-json --verbose --permission-mode acceptEdits --no-session-persistence --model opus --max-turns 7")
	require.NotContains(t, env, "phx_must_not_leak_123")
	require.NotContains(t, env, "ghs_must_not_leak_456")
	require.NotContains(t, env, "sk-ant-agent-key\n-p", "the key is not an argument")
}
