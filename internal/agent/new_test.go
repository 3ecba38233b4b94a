package agent

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEachAdapterGetsOnlyItsOwnProvidersCredentials(t *testing.T) {
	keys := Keys{AnthropicAPIKey: "sk-ant-a", AnthropicBaseURL: "https://gw.example", OpenAIAPIKey: "sk-openai-b", OpenAIBaseURL: "https://oai.example/v1"}
	opts := Options{StopGrace: 7}

	claude := New(Settings{Kind: "claude", Claude: Claude{Path: "/bin/claude"}, Keys: keys, Options: opts}).(*Claude)
	require.Equal(t, []string{"ANTHROPIC_API_KEY=sk-ant-a", "ANTHROPIC_BASE_URL=https://gw.example"}, claude.Env)
	require.Equal(t, "/bin/claude", claude.Path)
	require.Equal(t, opts, claude.Options)

	codex := New(Settings{Kind: "codex", Codex: Codex{Path: "/bin/codex"}, Keys: keys, Options: opts}).(*Codex)
	require.Equal(t, []string{"OPENAI_API_KEY=sk-openai-b"}, codex.Env)
	require.Equal(t, "https://oai.example/v1", codex.BaseURL)

	command := New(Settings{Kind: "command", Command: "make fix", Keys: keys, Options: opts}).(*Command)
	require.Equal(t, "make fix", command.Command)
	require.Empty(t, command.ExtraEnv, "a command agent gets no model key")

	require.True(t, ClaudeOnCloud([]string{"AWS_PROFILE", "CLAUDE_CODE_USE_BEDROCK"}))
	require.False(t, ClaudeOnCloud([]string{"ANTHROPIC_API_KEY"}))
}
