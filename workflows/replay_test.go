package workflows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/kickoff"
)

// recordedHistories are the histories in testdata, recorded from real runs
// on the embedded server by internal/e2e (TASKWORKER_RECORD_HISTORIES=1, see
// the README).
var recordedHistories = []string{
	"completed",                  // TestRunThatChangesFilesCompletesWithBranchLogAndArtifacts (its checks watched)
	"cancelled-by-complete-task", // TestACancelFromTheAPIStopsTheAgentAndKeepsTheAPIsOneTerminalStatus
	"ci-fixed",                   // TestARunWhoseChecksFailGetsARoundThatSeesTheirLogAndFixesThem
	"interactive-two-turns",      // TestClaudeCodeRunsEndToEnd: a follow-up answered, then complete_task
	"failed",                     // TestAgentExitingNonZeroFailsTheRunWithItsExitCodeAndStderr
	"cancelled",                  // TestCancelledRunEndsCancelledAndItsAgentIsGone
	"cancelled-while-publishing", // TestACancelDuringThePushWaitsForPublishToStop
	"lost-host",                  // TestAWorkerCutOffFromTemporalStopsItsAgent
	// A run cancelled while publishing, recorded by the build before Publish
	// waited for its cancellation: it stands for the runs in flight when
	// that change is deployed, and replays only behind its GetVersion. It
	// is kept, not recorded again.
	"cancelled-while-publishing-before-it-waited",
	// A completed run recorded by the build before interactive runs and the
	// CI loop: the runs in flight when they are deployed.
	"completed-before-interactive-runs",
}

// replay replays the history recorded as name, testdata/name/{workflow
// ID}.json, under its own workflow ID, with workflowFunc as process-task.
func replay(t *testing.T, name string, workflowFunc any) error {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", name, "*.json"))
	require.NoError(t, err)
	require.Len(t, files, 1, "one recorded history of %s", name)
	f, err := os.Open(files[0])
	require.NoError(t, err)
	defer f.Close()
	history, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	require.NoError(t, err)
	replayer := worker.NewWorkflowReplayer()
	replayer.RegisterWorkflowWithOptions(workflowFunc, workflow.RegisterOptions{Name: kickoff.WorkflowType})
	started := history.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes()
	return replayer.ReplayWorkflowHistoryWithOptions(nil, history, worker.ReplayWorkflowHistoryOptions{
		OriginalExecution: workflow.Execution{
			ID:    strings.TrimSuffix(filepath.Base(files[0]), ".json"),
			RunID: started.GetFirstExecutionRunId(),
		},
	})
}

// The workflow's code replays every recorded history: a change that would
// break the runs in flight when it is deployed fails here. A change of the
// workflow's shape goes behind a workflow.GetVersion, after which the
// histories are recorded again.
func TestReplayRecordedHistories(t *testing.T) {
	for _, name := range recordedHistories {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, replay(t, name, ProcessTask))
		})
	}
}

// The replay notices a change of shape: process-task as a change that
// dropped the workspace steps would make it does not replay a run that had
// them.
func TestReplayCatchesAChangedShape(t *testing.T) {
	withoutWorkspaceSteps := func(ctx workflow.Context, in Input) (Result, error) {
		taskID, runID, err := resolveRun(in, workflow.GetInfo(ctx).WorkflowExecution.ID)
		if err != nil {
			return Result{}, err
		}
		ref := activities.RunRef{TaskID: taskID, RunID: runID}
		var run activities.RunContext
		if err := workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, localOptions()), activities.StartRunName, ref).Get(ctx, &run); err != nil {
			return Result{}, err
		}
		return finish(ctx, ref, Result{}, nil)
	}
	for _, name := range []string{"completed", "cancelled-while-publishing"} {
		err := replay(t, name, withoutWorkspaceSteps)
		require.Error(t, err, name)
		require.Contains(t, err.Error(), "TMPRL1100", name, "the SDK's error for a history the code does not match")
	}
}
