// Package dockerfile checks the Dockerfile where no Docker engine runs: its
// base images are pinned, it runs as a non-root user, and its build command
// really builds a static daemon.
package dockerfile

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func dockerfile(t *testing.T) (string, string) {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	// Join continued lines, as Docker reads them.
	return root, strings.ReplaceAll(string(data), "\\\n", " ")
}

func TestBaseImagesArePinned(t *testing.T) {
	_, text := dockerfile(t)
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(text, -1)
	require.Len(t, from, 2, "a build stage and a runtime stage")
	pinned := regexp.MustCompile(`^[a-z0-9./-]+(:\d+\.\d+(\.\d+)?[\w.-]*|@sha256:[0-9a-f]{64})$`)
	for _, m := range from {
		require.Regexp(t, pinned, m[1], "base image %s must name an exact version or digest", m[1])
	}
}

func TestRuntimeSandboxesEveryAgentWithTheDaemonAsEntrypoint(t *testing.T) {
	_, text := dockerfile(t)
	// Root in the container only to give each run a uid of its own: the
	// image's default is the uid sandbox, with a range that misses root.
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindStringSubmatch(text)
	require.NotNil(t, user)
	require.Equal(t, "0:0", user[1])
	require.Regexp(t, `TASKWORKER_SANDBOX=uid\b`, text)
	uids := regexp.MustCompile(`TASKWORKER_SANDBOX_UIDS=(\d+)-(\d+)`).FindStringSubmatch(text)
	require.NotNil(t, uids)
	first, _ := strconv.Atoi(uids[1])
	last, _ := strconv.Atoi(uids[2])
	require.True(t, first > 0 && last < 65536 && first <= last, "a range a pod's user namespace maps, without root: %s", uids[0])
	require.Regexp(t, `(?m)^ENTRYPOINT \["/usr/local/bin/taskworker"\]$`, text)
	require.Contains(t, text, "COPY --from=build /out/taskworker /usr/local/bin/taskworker")
	for _, pkg := range []string{"git", "ca-certificates"} {
		require.Regexp(t, `apt-get install[^&]*\b`+pkg+`\b`, text)
	}
	require.Contains(t, text, `if [ "$INSTALL_AGENTS" = "true" ]`)
	require.Contains(t, text, "@anthropic-ai/claude-code@")
	require.Contains(t, text, "@openai/codex@")
}

// The build command of the Dockerfile, run as it is, makes a static binary.
func TestTheBuildCommandMakesAStaticDaemon(t *testing.T) {
	root, text := dockerfile(t)
	cmd := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 .*go build .*)$`).FindStringSubmatch(text)
	require.NotNil(t, cmd, "the build stage runs go build with CGO_ENABLED=0")
	out := filepath.Join(t.TempDir(), "taskworker")
	script := strings.ReplaceAll(strings.ReplaceAll(cmd[1], "${VERSION}", "test-1.2.3"), "/out/taskworker", out)
	build := exec.Command("sh", "-c", script)
	build.Dir = root
	output, err := build.CombinedOutput()
	require.NoError(t, err, string(output))

	bin, err := elf.Open(out)
	require.NoError(t, err)
	defer bin.Close()
	for _, prog := range bin.Progs {
		require.NotEqual(t, elf.PT_INTERP, prog.Type, "the daemon must be static: no dynamic loader")
	}
	version, err := exec.Command(out, "version").Output()
	require.NoError(t, err)
	require.Equal(t, "taskworker test-1.2.3\n", string(version), "the version is stamped in")
}
