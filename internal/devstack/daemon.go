package devstack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildDaemon builds the taskworker daemon from the source of the module the
// working directory is in, into dir, for running it as its own process
// against a stack (the bench, the end-to-end and reliability tests).
func BuildDaemon(dir string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(gomod))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run this inside the taskworker repository: it builds the daemon from source")
	}
	bin := filepath.Join(dir, "taskworker")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(filepath.Dir(mod), "cmd", "taskworker")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build taskworker: %w: %s", err, out)
	}
	return bin, nil
}

// DaemonEnv is the environment of a taskworker process that serves this
// stack: the caller's, the stack's Tasks API and Temporal, then extra.
func (s *Stack) DaemonEnv(extra ...string) []string {
	cfg := s.WorkerConfig
	env := append(os.Environ(),
		"POSTHOG_API_URL="+s.APIURL, "POSTHOG_PERSONAL_API_KEY="+cfg.APIKey, "POSTHOG_PROJECT_ID="+cfg.ProjectID,
		"TEMPORAL_ADDRESS="+s.Temporal.HostPort(), "TASKWORKER_SANDBOX="+cfg.Sandbox)
	return append(env, extra...)
}
