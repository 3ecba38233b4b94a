package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The daemon stays lean: it must not link the Temporal server.
func TestDaemonDoesNotLinkTheTemporalServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, pkg := range strings.Fields(string(out)) {
		require.False(t, strings.HasPrefix(pkg, "go.temporal.io/server"), "taskworker links %s", pkg)
	}
}

func TestStartupFailsNamingTheMissingVariable(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "taskworker")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))

	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "POSTHOG_API_URL=http://localhost:1"}
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 1, cmd.ProcessState.ExitCode())
	require.Contains(t, string(out), "POSTHOG_PERSONAL_API_KEY is not set")

	out, err = exec.Command(bin, "config").CombinedOutput()
	require.NoError(t, err)
	require.Contains(t, string(out), "TASKWORKER_AGENT_COMMAND")

	cmd = exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "POSTHOG_API_URL=http://127.0.0.1:1",
		"POSTHOG_PERSONAL_API_KEY=phx_canary_secret_value", "POSTHOG_PROJECT_ID=1",
		"TASKWORKER_AGENT_COMMAND=true", "TEMPORAL_ADDRESS=127.0.0.1:1"}
	out, err = cmd.CombinedOutput()
	require.Error(t, err, "no Temporal there")
	require.Contains(t, string(out), "connect to Temporal at 127.0.0.1:1")
	require.NotContains(t, string(out), "phx_canary_secret_value")
}
