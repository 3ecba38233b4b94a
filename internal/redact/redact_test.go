package redact

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestString(t *testing.T) {
	r := New("my-api-key-value", "short", "my-api-key-value-longer", "")
	cases := map[string]string{
		"key=my-api-key-value":               "key=[REDACTED]",
		"key=my-api-key-value-longer!":       "key=[REDACTED]!",
		"short stays":                        "short stays",
		"phx_abcdefghijklmnopqrstuv":         "[REDACTED]",
		"ghp_0123456789abcdefghij and more":  "[REDACTED] and more",
		"github_pat_11ABCDEFG0123456789_xyz": "[REDACTED]",
		"Bearer sk-ant-api03-abcdefghijkl":   "Bearer [REDACTED]",
		"sk-proj-abcdefghijklmnop":           "[REDACTED]",
		"ghs_shortx":                         "ghs_shortx",
		"task-processing-ok":                 "task-processing-ok",
	}
	for in, want := range cases {
		require.Equal(t, want, r.String(in), in)
	}
}

func TestValueAndChain(t *testing.T) {
	r := New("secret-one").Chain(New("secret-two"))
	got := r.Value(map[string]any{"a": []any{"x secret-one", 3, map[string]any{"b": "secret-two"}}})
	require.Equal(t, map[string]any{"a": []any{"x [REDACTED]", 3, map[string]any{"b": "[REDACTED]"}}}, got)
	var nilRedactor *Redactor
	require.Equal(t, "[REDACTED]", nilRedactor.String("ghp_0123456789abcdef"))
}

func TestCanariesInEveryPosition(t *testing.T) {
	canary := `pa"ss<wo>rd&1\x`
	r := New(canary, "plain-canary-123456")
	cases := map[string]string{
		"plain plain-canary-123456 end":                     "plain [REDACTED] end",
		`{"message":"pa\"ss\u003cwo\u003erd\u00261\\x"}`:    `{"message":"[REDACTED]"}`,
		`{"message":"pa\"ss<wo>rd&1\\x"}`:                   `{"message":"[REDACTED]"}`,
		"clone https://x-access-token:abc123def@github.com": "clone https://[REDACTED]@github.com",
		"AKIAABCDEFGHIJKLMNOP in config":                    "[REDACTED] in config",
		`url "https://user:hunter2@host/path"`:              `url "https://[REDACTED]@host/path"`,
	}
	for in, want := range cases {
		require.Equal(t, want, r.String(in), in)
	}
}

func TestFromEnvironment(t *testing.T) {
	got := FromEnvironment([]string{
		"ANTHROPIC_API_KEY=sk-ant-123456", "GH_TOKEN=ghs_abcdef", "DB_PASSWORD=hunter22", "MY_SECRET=s3cr3t!",
		"SHORT_TOKEN=abc", "PATH=/usr/bin", "KEYBOARD=us-layout", "broken",
	})
	require.Equal(t, []string{"sk-ant-123456", "ghs_abcdef", "hunter22", "s3cr3t!"}, got)
}
