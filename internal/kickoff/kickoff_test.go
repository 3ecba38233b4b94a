package kickoff_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/kickoff"
)

func TestTheWorkflowIDNamesItsTask(t *testing.T) {
	task, run := "EF8B859D-0000-4000-8000-000000000001", "32862572-0000-4000-8000-000000000002"
	id := kickoff.WorkflowID(task, run)
	require.Equal(t, "task-processing-"+task+"-"+run, id)
	require.Equal(t, "ef8b859d-0000-4000-8000-000000000001", kickoff.TaskOf(id))
	require.Empty(t, kickoff.TaskOf("task-processing-nope"))
	require.Empty(t, kickoff.TaskOf("other-"+task+"-"+run))
	require.Equal(t, map[string]any{"run_id": run, "create_pr": true}, kickoff.Input(run))
}

func TestRunOfReadsTheTaskAndRunOfPostHogsWorkflowIDs(t *testing.T) {
	taskID, runID := "ef8b859d-0000-4000-8000-000000000001", "32862572-0000-4000-8000-000000000002"
	task, run, ok := kickoff.RunOf(kickoff.WorkflowID(taskID, strings.ToUpper(runID)))
	require.True(t, ok)
	require.Equal(t, taskID, task)
	require.Equal(t, runID, run)
	for _, id := range []string{"task-processing-" + taskID, "task-processing-" + taskID + "-" + runID + "-x", "other-" + taskID + "-" + runID} {
		_, _, ok := kickoff.RunOf(id)
		require.False(t, ok, id)
	}
}
