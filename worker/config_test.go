package worker

import (
	"bytes"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func setRequired(t *testing.T) {
	t.Setenv("POSTHOG_API_URL", "https://us.posthog.com")
	t.Setenv("POSTHOG_PERSONAL_API_KEY", "phx_key")
	t.Setenv("POSTHOG_PROJECT_ID", "42")
	t.Setenv("TASKWORKER_AGENT_COMMAND", "true")
}

func TestLoadAppliesDefaults(t *testing.T) {
	setRequired(t)
	cfg, err := Load()
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7233", cfg.TemporalAddress)
	require.Equal(t, "default", cfg.TemporalNamespace)
	require.Equal(t, "tasks-task-queue", cfg.TaskQueue)
	require.Equal(t, "https://github.com/{repo}.git", cfg.RepoURLTemplate)
	require.Equal(t, time.Hour, cfg.AgentTimeout)
	require.Equal(t, 10, cfg.MaxConcurrentRuns)
	require.NotEmpty(t, cfg.WorkspaceDir)
	require.NotEmpty(t, cfg.WorkerID)
}

func TestMissingRequiredVariableIsNamed(t *testing.T) {
	setRequired(t)
	t.Setenv("POSTHOG_PERSONAL_API_KEY", "")
	_, err := Load()
	require.EqualError(t, err, "POSTHOG_PERSONAL_API_KEY is not set: set it in the environment (see `taskworker config`)")
}

func TestInvalidValuesAreAllReported(t *testing.T) {
	setRequired(t)
	t.Setenv("POSTHOG_API_URL", "us.posthog.com")
	t.Setenv("TASKWORKER_AGENT", "gpt")
	t.Setenv("TASKWORKER_REPO_URL_TEMPLATE", "https://github.com/x.git")
	t.Setenv("TASKWORKER_MAX_CONCURRENT_RUNS", "0")
	t.Setenv("TASKWORKER_RUN_MAX_COST_USD", "-1")
	t.Setenv("TASKWORKER_BROKER", "maybe")
	_, err := Load()
	require.ErrorContains(t, err, "TASKWORKER_RUN_MAX_COST_USD and TASKWORKER_RUN_MAX_TOKENS must be 0 (no limit) or more")
	require.ErrorContains(t, err, `TASKWORKER_BROKER "maybe" is not on or off`)
	require.ErrorContains(t, err, `POSTHOG_API_URL "us.posthog.com" is not an http(s) URL`)
	require.ErrorContains(t, err, `TASKWORKER_AGENT "gpt" is not one of command, claude, codex`)
	require.ErrorContains(t, err, "has no {repo} placeholder")
	require.ErrorContains(t, err, "TASKWORKER_MAX_CONCURRENT_RUNS must be at least 1")

	t.Setenv("TASKWORKER_MAX_CONCURRENT_RUNS", "ten")
	_, err = Load()
	require.ErrorContains(t, err, "TASKWORKER_MAX_CONCURRENT_RUNS")
}

func TestCommandAgentNeedsACommand(t *testing.T) {
	setRequired(t)
	t.Setenv("TASKWORKER_AGENT_COMMAND", "")
	_, err := Load()
	require.ErrorContains(t, err, "TASKWORKER_AGENT_COMMAND is not set")
}

func TestUsageListsEveryVariable(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, PrintUsage(&buf))
	for _, name := range []string{"POSTHOG_API_URL", "POSTHOG_PERSONAL_API_KEY", "POSTHOG_PROJECT_ID", "TEMPORAL_ADDRESS",
		"TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE", "TASKWORKER_AGENT", "TASKWORKER_AGENT_COMMAND",
		"TASKWORKER_REPO_URL_TEMPLATE", "TASKWORKER_WORKSPACE_DIR", "TASKWORKER_MAX_CONCURRENT_RUNS",
		"TASKWORKER_AGENT_TIMEOUT", "TASKWORKER_GITHUB_TOKEN"} {
		require.Contains(t, buf.String(), name)
	}
	require.Contains(t, buf.String(), "https://github.com/{repo}.git")
}

func TestSecretsAreTheKeyTokenAndSecretLookingEnvironment(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-canary-1")
	t.Setenv("PLAIN_SETTING", "visible-value")
	cfg := Config{APIKey: "phx_k", GitHubToken: "ghs_t"}
	secrets := cfg.Secrets()
	require.Subset(t, secrets, []string{"phx_k", "ghs_t", "sk-ant-canary-1"})
	require.NotContains(t, secrets, "visible-value")
}

func TestClaudeAndCodexNeedTheirBinaryAndKey(t *testing.T) {
	setRequired(t)
	t.Setenv("TASKWORKER_AGENT", "claude")
	t.Setenv("TASKWORKER_CLAUDE_PATH", "/nonexistent/claude")
	_, err := Load()
	require.ErrorContains(t, err, "TASKWORKER_CLAUDE_PATH: /nonexistent/claude is not an executable on this machine: install @anthropic-ai/claude-code from npm")
	require.ErrorContains(t, err, "claude needs ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN")

	t.Setenv("TASKWORKER_CLAUDE_PATH", "true") // any executable will do for the check
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-key")
	t.Setenv("ANTHROPIC_BASE_URL", "gateway:8080")
	_, err = Load()
	require.EqualError(t, err, `ANTHROPIC_BASE_URL "gateway:8080" is not an http(s) URL`)
	t.Setenv("ANTHROPIC_BASE_URL", "http://gateway:8080")
	cfg, err := Load()
	require.NoError(t, err)
	require.Equal(t, []string{"Bash", "Edit", "MultiEdit", "Write", "NotebookEdit", "Read", "Glob", "Grep", "TodoWrite", "Task"}, cfg.ClaudeAllowedTools)
	require.Equal(t, "acceptEdits", cfg.ClaudePermissionMode)
	require.Contains(t, cfg.Secrets(), "sk-ant-key")

	t.Setenv("TASKWORKER_AGENT", "codex")
	t.Setenv("TASKWORKER_CODEX_PATH", "true")
	_, err = Load()
	require.EqualError(t, err, "codex needs OPENAI_API_KEY")
	t.Setenv("OPENAI_API_KEY", "sk-openai-key")
	t.Setenv("OPENAI_BASE_URL", "https://user:sk-secret@gateway.internal/v1")
	_, err = Load()
	require.EqualError(t, err, "OPENAI_BASE_URL must not carry credentials (it is on codex's command line): put the key in OPENAI_API_KEY")
}

func TestDefaultsOfListsApplyToAConfigBuiltInCode(t *testing.T) {
	cfg := Config{Agent: "claude"}.WithDefaults()
	require.Equal(t, []string{"Bash", "Edit", "MultiEdit", "Write", "NotebookEdit", "Read", "Glob", "Grep", "TodoWrite", "Task"}, cfg.ClaudeAllowedTools)
	require.Equal(t, 200, cfg.ClaudeMaxTurns)
}

// The README's configuration table is the operators' reference: every
// variable is in it.
func TestTheREADMEListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	typ := reflect.TypeOf(Config{})
	for i := 0; i < typ.NumField(); i++ {
		name := typ.Field(i).Tag.Get("envconfig")
		require.Contains(t, string(readme), "| `"+name+"` |", "README's configuration table lacks %s", name)
	}
}
