package kickoff_test

import (
	"encoding/json"
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
	require.Equal(t, map[string]any{"run_id": run, "create_pr": true}, kickoff.Input(run, kickoff.RunOptions{}))
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

// The initial message is encoded as PostHog's PendingFollowup: a list of
// artifact IDs even when there are none, and no actor_user_id it doesn't know.
func TestInputCarriesTheInitialMessageAsPostHogsPendingFollowup(t *testing.T) {
	in := kickoff.Input("r1", kickoff.RunOptions{InitialMessage: &kickoff.InitialMessage{Message: "also fix the tests", MessageID: "m1"}})
	data, err := json.Marshal(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"run_id":"r1","create_pr":true,"initial_message":{"message":"also fix the tests","artifact_ids":[],"message_id":"m1"}}`, string(data))

	user := int64(7)
	in = kickoff.Input("r1", kickoff.RunOptions{InitialMessage: &kickoff.InitialMessage{Message: "m", ArtifactIDs: []string{"a"}, MessageID: "m2", ActorUserID: &user}})
	data, err = json.Marshal(in["initial_message"])
	require.NoError(t, err)
	require.JSONEq(t, `{"message":"m","artifact_ids":["a"],"message_id":"m2","actor_user_id":7}`, string(data))
}
