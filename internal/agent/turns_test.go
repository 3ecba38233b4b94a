package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/standin/anthropictest"
	"github.com/taskworker/taskworker/internal/testkit/standin/openaitest"
)

// twoTurns runs the task's turn, keeping the conversation, then the
// follow-up's, resuming it; it returns the follow-up's result.
func twoTurns(t *testing.T, a Agent, req Request, followUp string) Result {
	t.Helper()
	req.Turn = Turn{Number: 1, Keep: true}
	var s sink
	first, err := a.Run(context.Background(), req, &s)
	require.NoError(t, err, consoleText(&s))
	require.NotEmpty(t, first.Session)
	req.Turn = Turn{Number: 2, Message: followUp, Session: first.Session, Keep: true}
	var s2 sink
	second, err := a.Run(context.Background(), req, &s2)
	require.NoError(t, err, consoleText(&s2))
	return second
}

// requireResumed checks that a follow-up's request carried the first turn.
func requireResumed(t *testing.T, said []string) {
	t.Helper()
	joined := strings.Join(said, "\n")
	require.Contains(t, joined, "user: Fix the bug\n\nIt crashes.", "the first turn's prompt is in the follow-up's request")
	require.Contains(t, joined, "assistant: I read the task; nothing to change yet.", "and the first turn's answer")
}

func TestClaudeCodeResumesItsConversationForAFollowUp(t *testing.T) {
	claude := agenttest.Binary(t, "claude", "TASKWORKER_CLAUDE_PATH")
	const followUp = "Now write NOTES.md saying done."
	var resumed []anthropictest.Conversation
	api := anthropictest.Start("sk-ant-test-key-123456", func(c anthropictest.Conversation) anthropictest.Reply {
		switch {
		case len(c.Tools) == 0:
			return anthropictest.Reply{Text: "ok"}
		case !strings.Contains(strings.Join(c.Said, "\n"), followUp):
			return anthropictest.Reply{Text: "I read the task; nothing to change yet."}
		}
		resumed = append(resumed, c)
		if len(c.Results) == 0 {
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Write", Input: map[string]any{
				"file_path": filepath.Join(c.WorkDir, "NOTES.md"), "content": "done\n"}}}}
		}
		return anthropictest.Reply{Text: "Wrote NOTES.md."}
	})
	defer api.Close()
	c := &Claude{Path: claude, AllowedTools: DefaultClaudeAllowedTools, MaxTurns: 10,
		Env: []string{"ANTHROPIC_API_KEY=" + api.APIKey, "ANTHROPIC_BASE_URL=" + api.URL}}

	req := request(t)
	req.Dir, req.HomeDir, req.WorkerDir = gitClone(t), filepath.Join(t.TempDir(), "home"), t.TempDir()
	second := twoTurns(t, c, req, followUp)
	require.Empty(t, api.Violations())
	require.Equal(t, "Wrote NOTES.md.", second.Summary)
	require.NotEmpty(t, resumed, "the follow-up reached the model")
	requireResumed(t, resumed[0].Said)
	require.Equal(t, followUp, resumed[0].Latest)
	data, err := os.ReadFile(filepath.Join(req.Dir, "NOTES.md"))
	require.NoError(t, err)
	require.Equal(t, "done\n", string(data))
}

func TestCodexResumesItsConversationForAFollowUp(t *testing.T) {
	const followUp = "Now say the word done."
	var resumed []openaitest.Conversation
	c, api := codexAgainst(t, "sk-openai-test-key-123456", func(conv openaitest.Conversation) openaitest.Reply {
		if conv.Prompt != followUp {
			return openaitest.Reply{Text: "I read the task; nothing to change yet."}
		}
		resumed = append(resumed, conv)
		return openaitest.Reply{Text: "done"}
	})
	req := cloneRequest(t)
	second := twoTurns(t, c, req, followUp)
	require.Empty(t, api.Violations())
	require.Equal(t, "done", second.Summary)
	require.Len(t, resumed, 1)
	requireResumed(t, resumed[0].Said)
}

func TestClaudeCommandLineOfEachTurn(t *testing.T) {
	c := &Claude{Model: "claude-test"}
	require.Contains(t, c.args(Request{}), "--no-session-persistence", "a background run keeps no session")
	kept := c.args(Request{Turn: Turn{Number: 1, Keep: true}, ModelName: "claude-run", Effort: "high"})
	require.NotContains(t, kept, "--no-session-persistence")
	require.Equal(t, "--model claude-run --effort high", strings.Join(kept[len(kept)-4:], " "), "the run's model and effort win")
	resume := strings.Join(c.args(Request{Turn: Turn{Number: 2, Session: "sess-1", Keep: true}}), " ")
	require.Contains(t, resume, "--resume sess-1")
	require.NotContains(t, resume, "--no-session-persistence")
}

func TestCodexCommandLineOfEachTurn(t *testing.T) {
	c := &Codex{}
	require.Contains(t, c.args("http://x", Request{}), "--ephemeral", "a background run records no session")
	kept := c.args("http://x", Request{Turn: Turn{Number: 1, Keep: true}, ModelName: "gpt-run", Effort: "low"})
	require.NotContains(t, kept, "--ephemeral")
	require.Contains(t, strings.Join(kept, " "), `--model gpt-run -c model_reasoning_effort="low"`)
	resume := c.args("http://x", Request{Turn: Turn{Number: 2, Session: "thread-1", Keep: true}})
	require.Equal(t, []string{"resume", "thread-1", "-"}, resume[len(resume)-3:], "resume is exec's subcommand, the prompt on stdin")
}

func TestTheCommandAgentIsToldEachTurn(t *testing.T) {
	var s sink
	cmd := &Command{Command: `echo "turn=$TASK_TURN session=$TASK_SESSION prompt=$TASK_PROMPT"; cat`}
	req := request(t)
	req.Turn = Turn{Number: 2, Message: "and the docs", Session: "s-1"}
	_, err := cmd.Run(context.Background(), req, &s)
	require.NoError(t, err)
	require.Equal(t, []string{"info: turn=2 session=s-1 prompt=and the docs", "info: and the docs"}, s.lines())

	req.Turn = Turn{Number: 1, Message: "keep it short"}
	var s1 sink
	_, err = cmd.Run(context.Background(), req, &s1)
	require.NoError(t, err)
	require.Contains(t, s1.lines()[0], "info: turn=1 session= prompt=Fix the bug")
	require.Contains(t, strings.Join(s1.lines(), "\n"), "info: It crashes.\ninfo: \ninfo: keep it short", "a message that came with the run follows the task")
}

func TestTheAgentHasOneHOMEItsRuns(t *testing.T) {
	t.Setenv("HOME", "/root")
	req := request(t)
	req.HomeDir = "/w/run/home"
	var homes []string
	for _, kv := range Environment(req, nil) {
		if strings.HasPrefix(kv, "HOME=") {
			homes = append(homes, kv)
		}
	}
	require.Equal(t, []string{"HOME=/w/run/home"}, homes, "not the worker's as well: some programs read the first of two")
}

func TestOnlyASessionIDIsResumed(t *testing.T) {
	for _, ok := range []string{"bdc71eb8-7d9f-43b7-8c14-ec062420445a", "thread_1"} {
		require.True(t, ValidSession(ok), ok)
	}
	for _, bad := range []string{"", "--dangerously-skip-permissions", "-c", "a b", "x;rm -rf /", strings.Repeat("a", 129), "../x"} {
		require.False(t, ValidSession(bad), bad)
	}
}
