package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/standin/anthropictest"
)

type discard struct{ n int }

func (d *discard) Emit(acp.Entry) { d.n++ }

// claudeEvents is a typical turn of stream-json: a message with a tool call,
// and its result of about 2 KB.
func claudeEvents(n int) []string {
	out := strings.Repeat("line of tool output\n", 100)
	var lines []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("toolu_%d", i)
		lines = append(lines,
			fmt.Sprintf(`{"type":"assistant","message":{"content":[{"type":"text","text":"Step %d: running the tests."},{"type":"tool_use","id":%q,"name":"Bash","input":{"command":"go test ./...","description":"Run the tests"}}]}}`, i, id),
			fmt.Sprintf(`{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":%q,"content":%s,"is_error":false}]}}`, id, mustJSON(out)))
	}
	return lines
}

func mustJSON(v any) string {
	raw, _ := json.Marshal(v)
	return string(raw)
}

// BenchmarkClaudeStream is the translation of Claude Code's stream-json into
// entries, per event line.
func BenchmarkClaudeStream(b *testing.B) {
	lines := claudeEvents(1000)
	var bytes int
	for _, l := range lines {
		bytes += len(l)
	}
	b.SetBytes(int64(bytes / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := &claudeStream{sink: &discard{}, dir: "/w"}
		s.line(lines[i%len(lines)])
	}
}

// BenchmarkClaudeCodeRun is a whole Claude Code run of three turns against
// the local stand-in, through the adapter; BenchmarkClaudeCodeBare is the
// same run of the bare CLI, its output thrown away. The difference is what
// the adapter costs.
func BenchmarkClaudeCodeRun(b *testing.B) { benchmarkClaude(b, false) }

func BenchmarkClaudeCodeBare(b *testing.B) { benchmarkClaude(b, true) }

func benchmarkClaude(b *testing.B, bare bool) {
	claude := agenttest.Binary(b, "claude", "TASKWORKER_CLAUDE_PATH")
	api := anthropictest.Start("sk-ant-bench", func(c anthropictest.Conversation) anthropictest.Reply {
		switch {
		case len(c.Tools) == 0:
			return anthropictest.Reply{Text: "ok"}
		case c.Turn == 0:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Write", Input: map[string]any{
				"file_path": filepath.Join(c.WorkDir, "a.txt"), "content": "a\n"}}}}
		case c.Turn == 1:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{"command": "ls"}}}}
		}
		return anthropictest.Reply{Text: "done"}
	})
	defer api.Close()
	c := &Claude{Path: claude, AllowedTools: DefaultClaudeAllowedTools,
		Env: []string{"ANTHROPIC_API_KEY=" + api.APIKey, "ANTHROPIC_BASE_URL=" + api.URL}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		req := Request{Task: Task{ID: "t", RunID: "r", Title: "bench"}, Dir: gitClone(b), HomeDir: filepath.Join(b.TempDir(), "home"), ArtifactsDir: b.TempDir()}
		if err := os.MkdirAll(req.HomeDir, 0o700); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if bare {
			cmd := exec.Command(claude, c.Args()...)
			cmd.Dir, cmd.Stdin = req.Dir, strings.NewReader(req.Task.Prompt())
			cmd.Env = append(append(Environment(req, nil), c.Env...), "HOME="+req.HomeDir,
				"DISABLE_AUTOUPDATER=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatal(err, string(out))
			}
			continue
		}
		if _, err := c.Run(context.Background(), req, &discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClaudeHugeEvent is one 30 MB tool result (a big file read), as
// Claude Code prints it on one line: what translating it allocates.
func BenchmarkClaudeHugeEvent(b *testing.B) {
	line := `{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":` +
		mustJSON(strings.Repeat("0123456789abcdef\n", 30<<20/17)) + `}]}}`
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s := &claudeStream{sink: &discard{}, dir: "/w"}
		s.line(line)
	}
}
