package agent

import "slices"

// Settings are what a worker's configuration says of its agent: which
// adapter, each adapter's own settings, and the model credentials.
type Settings struct {
	// Kind is command, claude or codex.
	Kind string
	// Command is the command agent's shell command.
	Command string
	// Claude and Codex are those adapters' settings, without Env and
	// Options, which New fills.
	Claude Claude
	Codex  Codex
	Keys   Keys
	// Options apply to every adapter.
	Options Options
}

// Keys are the model APIs' credentials and endpoints the worker holds.
type Keys struct {
	AnthropicAPIKey    string
	AnthropicAuthToken string
	AnthropicBaseURL   string
	OpenAIAPIKey       string
	OpenAIBaseURL      string
}

// New is the agent s describes. Each adapter gets only its own provider's
// credentials; a run's broker access replaces them (Request.Model).
func New(s Settings) Agent {
	switch s.Kind {
	case "claude":
		c := s.Claude
		c.Env = nonEmpty("ANTHROPIC_API_KEY", s.Keys.AnthropicAPIKey, "ANTHROPIC_AUTH_TOKEN", s.Keys.AnthropicAuthToken,
			"ANTHROPIC_BASE_URL", s.Keys.AnthropicBaseURL)
		c.Options = s.Options
		return &c
	case "codex":
		c := s.Codex
		c.BaseURL = s.Keys.OpenAIBaseURL
		c.Env = nonEmpty("OPENAI_API_KEY", s.Keys.OpenAIAPIKey)
		c.Options = s.Options
		return &c
	}
	return &Command{Command: s.Command, Options: s.Options}
}

// nonEmpty is NAME=value for each pair whose value is set.
func nonEmpty(pairs ...string) []string {
	var env []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			env = append(env, pairs[i]+"="+pairs[i+1])
		}
	}
	return env
}

// ClaudeOnCloud reports a Claude Code set up for Bedrock or Vertex by
// variables passed through to it: it talks to the cloud with credentials
// of its own, not to Anthropic's API.
func ClaudeOnCloud(passthrough []string) bool {
	return slices.Contains(passthrough, "CLAUDE_CODE_USE_BEDROCK") || slices.Contains(passthrough, "CLAUDE_CODE_USE_VERTEX")
}
