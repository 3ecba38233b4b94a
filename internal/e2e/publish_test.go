package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
)

// heldPush is a pre-receive hook that holds every push until the test
// releases it, then refuses it. It leaves the PIDs above it (git's
// receive-pack, the pushing git and so on) in $DIR/pushers first; reading
// the FIFO $DIR/release blocks until the test opens it.
const heldPush = `#!/bin/sh
p=$PPID
for _ in 1 2 3 4; do
	[ "$p" -gt 1 ] || break
	echo "$p"
	p=$(cut -d' ' -f4 "/proc/$p/stat")
done > "$DIR/pushers.tmp"
mv "$DIR/pushers.tmp" "$DIR/pushers"
cat "$DIR/release" > /dev/null
echo "refused by the test" >&2
exit 1
`

// TestACancelDuringThePushWaitsForPublishToStop cancels a run while its
// Publish step is pushing to a remote that holds the push. The push is
// killed, but Publish is still winding down (its git waits for the remote):
// nothing is removed and the run is not marked cancelled until it has
// stopped; then the workspace goes and the run ends cancelled, with nothing
// pushed.
func TestACancelDuringThePushWaitsForPublishToStop(t *testing.T) {
	ctx := context.Background()
	const held = "acme/held"
	bare, err := devstack.SeedRepository(ctx, h.GitRoot, held, map[string]string{"README.md": "# held\n"})
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "release"), 0o600))
	hook := strings.Replace(heldPush, "#!/bin/sh\n", "#!/bin/sh\nDIR="+dir+"\n", 1)
	require.NoError(t, os.WriteFile(filepath.Join(bare, "hooks", "pre-receive"), []byte(hook), 0o755))
	release := func() {
		// No reader (the hook is gone, or never came): nothing to release.
		if f, err := os.OpenFile(filepath.Join(dir, "release"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	}
	t.Cleanup(release)

	task, run := startRun(t, "change the README", "", held)
	workflowID := kickoff.WorkflowID(task.ID, run.ID)
	var pushers []byte
	require.Eventually(t, func() bool {
		pushers, err = os.ReadFile(filepath.Join(dir, "pushers"))
		return err == nil
	}, time.Minute, 20*time.Millisecond, "the push never reached the remote")
	push := 0
	for _, field := range strings.Fields(string(pushers)) {
		pid, err := strconv.Atoi(field)
		require.NoError(t, err)
		if cmdline, err := os.ReadFile("/proc/" + field + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte("\x00push\x00")) {
			push = pid
			break
		}
	}
	require.NotZero(t, push, "the worker's git push is among the hook's ancestors: %s", pushers)

	require.NoError(t, h.Stack.Client.CancelWorkflow(ctx, workflowID, ""))
	require.Eventually(t, func() bool { return !proctest.Alive(push) }, 30*time.Second, 20*time.Millisecond,
		"the cancel reaches Publish, which kills its push")

	// Publish has not returned: its git still waits for the remote's hook.
	events := stepEvents(t, h.Stack.Client, workflowID)
	require.Contains(t, events, "Publish cancel requested")
	require.NotContains(t, events, "Publish canceled", "the hook holds Publish: %q", events)
	require.NotContains(t, events, "CleanupWorkspace scheduled", "the workspace is not removed while Publish runs")
	require.NotContains(t, events, "FinishRun ran", "the run is not finished while Publish runs")
	workspace := filepath.Join(h.Stack.WorkerConfig.WorkspaceDir, run.ID)
	_, err = os.Stat(filepath.Join(workspace, "repo", "README.md"))
	require.NoError(t, err, "the workspace is there while Publish runs")
	now, err := h.API.GetRun(ctx, task.ID, run.ID)
	require.NoError(t, err)
	require.Equal(t, tasksapi.StatusInProgress, now.Status)

	release()
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusCancelled, run.Status, "error: %v", deref(run.ErrorMessage))
	events = stepEvents(t, h.Stack.Client, workflowID)
	requireBefore(t, events, "Publish canceled", "CleanupWorkspace scheduled")
	requireBefore(t, events, "Publish canceled", "FinishRun ran")
	_, err = os.Stat(workspace)
	require.True(t, os.IsNotExist(err), "the workspace is removed once Publish stopped: %v", err)
	require.Nil(t, run.Branch)
	require.Empty(t, gitOut(t, bare, "branch", "--list", "posthog/task-"+task.Slug), "nothing was pushed")
	keepHistory(t, h.Stack.Client, workflowID, "cancelled-while-publishing")
}
