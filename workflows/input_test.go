package workflows

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRunOfReadsTheTaskAndRunOfPostHogsWorkflowIDs(t *testing.T) {
	task, run, ok := RunOf(WorkflowID(taskID, strings.ToUpper(runID)))
	require.True(t, ok)
	require.Equal(t, taskID, task)
	require.Equal(t, runID, run)
	for _, id := range []string{"task-processing-" + taskID, "task-processing-" + taskID + "-" + runID + "-x", "other-" + taskID + "-" + runID} {
		_, _, ok := RunOf(id)
		require.False(t, ok, id)
	}
}
