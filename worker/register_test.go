package worker

import (
	"context"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	tworker "go.temporal.io/sdk/worker"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// recordingRegistry notes the activities registered on it. One that is
// another worker's (the host queue's) registers them under their names alone:
// the worker that runs the workflow doesn't know that worker's functions, so
// the SDK can't map a function the workflow names to the name registered.
type recordingRegistry struct {
	tworker.Registry
	names   *[]string
	another bool
}

func (r recordingRegistry) RegisterActivityWithOptions(a any, o activity.RegisterOptions) {
	*r.names = append(*r.names, o.Name)
	if r.another {
		fn := reflect.ValueOf(a)
		a = reflect.MakeFunc(fn.Type(), fn.Call).Interface()
	}
	r.Registry.RegisterActivityWithOptions(a, o)
}

// The workflow finds every step under the name the worker registered it by,
// on the queue it must run on: the API steps and the claim with the workflow,
// the workspace steps on the host's own queue. A path through every step a
// background run that watches its checks takes (RunTurn, an interactive
// run's, is on the host's queue as RunAgent is).
func TestTheWorkflowFindsEveryStepTheWorkerRegisters(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	const taskID, runID = "0b6f3c1e-8a3f-4a51-9d7e-2f4b1c9a7e10", "5d2e9f80-1c4b-4e7a-a3b2-6c8d9e0f1a2b"
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: kickoff.WorkflowID(taskID, runID)})
	var shared, host []string
	register(recordingRegistry{env, &shared, false}, recordingRegistry{env, &host, true}, &activities.Activities{})
	sort.Strings(shared)
	sort.Strings(host)
	require.Equal(t, []string{activities.CheckCIName, activities.ClaimHostName, activities.FinishRunName, activities.NoteName, activities.StartRunName}, shared)
	require.Equal(t, []string{activities.CleanupWorkspaceName, activities.PublishName, activities.RunAgentName, activities.RunTurnName}, host)

	run := activities.RunContext{RunRef: activities.RunRef{TaskID: taskID, RunID: runID}, Repository: "acme/app",
		AgentTimeout: time.Minute, RunTimeout: time.Hour, HostAttempts: 2,
		WatchCI: true, CIMaxRounds: 1, CIPollEvery: time.Second, CITimeout: time.Minute}
	claims, agents := 0, 0
	called := map[string]bool{}
	on := func(name string, fn any) {
		env.OnActivity(name, mock.Anything, mock.Anything).Return(fn)
	}
	on(activities.StartRunName, func(context.Context, activities.RunRef) (activities.RunContext, error) {
		called[activities.StartRunName] = true
		return run, nil
	})
	on(activities.ClaimHostName, func(context.Context, activities.RunContext) (string, error) {
		called[activities.ClaimHostName] = true
		if claims++; claims%2 == 1 { // the local claim declines, the shared one is taken
			return "", temporal.NewApplicationError("full", activities.ErrWorkerBusy)
		}
		return "host-queue", nil
	})
	on(activities.RunAgentName, func(context.Context, activities.AgentInput) (activities.AgentOutput, error) {
		called[activities.RunAgentName] = true
		if agents++; agents == 1 {
			return activities.AgentOutput{}, temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil)
		}
		return activities.AgentOutput{}, nil
	})
	on(activities.NoteName, func(context.Context, activities.NoteInput) error {
		called[activities.NoteName] = true
		return nil
	})
	on(activities.PublishName, func(context.Context, activities.PublishInput) (activities.PublishOutput, error) {
		called[activities.PublishName] = true
		return activities.PublishOutput{Changed: true, CommitSHA: "abc", PullRequest: "https://github.example/acme/app/pull/1"}, nil
	})
	on(activities.CheckCIName, func(context.Context, activities.CIInput) (activities.CIStatus, error) {
		called[activities.CheckCIName] = true
		return activities.CIStatus{State: "success", Done: true}, nil
	})
	on(activities.CleanupWorkspaceName, func(context.Context, activities.RunRef) error {
		called[activities.CleanupWorkspaceName] = true
		return nil
	})
	var finished tasksapi.Status
	on(activities.FinishRunName, func(_ context.Context, in activities.FinishInput) error {
		called[activities.FinishRunName] = true
		finished = in.Status
		return nil
	})

	env.ExecuteWorkflow(kickoff.WorkflowType, map[string]any{"run_id": runID, "create_pr": true})
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, tasksapi.StatusCompleted, finished)
	require.Len(t, called, 8, "every step ran: %v", called)
}
