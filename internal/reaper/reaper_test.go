package reaper_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/localapi"
	"github.com/taskworker/taskworker/internal/reaper"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/stacktest"
)

// The tests share a real embedded Temporal server, on whose queue no worker
// polls (a workflow stays running until it is terminated or times out), and
// the local Tasks API, which starts no workflow of its own.
var (
	temporal client.Client
	local    *localapi.Server
	api      *tasksapi.Client
)

func TestMain(m *testing.M) {
	suite, stop, err := stacktest.Start(context.Background(), "reaper", stacktest.Options{
		Stack: devstack.Options{NoWorker: true, NoKickoff: true},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "reaper:", err)
		os.Exit(1)
	}
	temporal, local, api = suite.Stack.Client, suite.Stack.API, suite.API
	code := m.Run()
	stop()
	os.Exit(code)
}

func newReaper(cfg reaper.Config) *reaper.Reaper {
	cfg.Namespace = "default"
	return &reaper.Reaper{API: api, Temporal: temporal, Config: cfg, Logger: zap.NewNop()}
}

// aRun is a run in status whose process-task workflow has been started
// (with timeout, when not zero) on a queue nobody serves.
func aRun(t *testing.T, status tasksapi.Status, timeout time.Duration) (taskID, runID string) {
	ctx := context.Background()
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: t.Name(), Repository: "acme/app"})
	require.NoError(t, err)
	run, err := api.CreateRun(ctx, task.ID)
	require.NoError(t, err)
	_, err = api.UpdateRun(ctx, task.ID, run.ID, tasksapi.RunUpdate{Status: status})
	require.NoError(t, err)
	_, err = temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: kickoff.WorkflowID(task.ID, run.ID), TaskQueue: "nobody-serves-this", WorkflowExecutionTimeout: timeout,
	}, kickoff.WorkflowType, map[string]any{"run_id": run.ID, "create_pr": true})
	require.NoError(t, err)
	return task.ID, run.ID
}

func terminate(t *testing.T, taskID, runID, reason string) {
	require.NoError(t, temporal.TerminateWorkflow(context.Background(), kickoff.WorkflowID(taskID, runID), "", reason))
}

// visible waits until Temporal's visibility lists the workflows of runs as closed.
func visible(t *testing.T, runs ...[2]string) {
	require.Eventually(t, func() bool {
		for _, r := range runs {
			resp, err := temporal.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{
				Namespace: "default",
				Query:     fmt.Sprintf("WorkflowId = '%s' AND ExecutionStatus != 'Running'", kickoff.WorkflowID(r[0], r[1])),
			})
			require.NoError(t, err)
			if len(resp.Executions) == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "the closed workflows never reached visibility")
}

func read(t *testing.T, taskID, runID string) (tasksapi.TaskRun, []json.RawMessage) {
	run, err := api.GetRun(context.Background(), taskID, runID)
	require.NoError(t, err)
	log, err := api.Logs(context.Background(), taskID, runID)
	require.NoError(t, err)
	return run, log
}

// eventIDs are the distinct event_ids of a log: what a reader keeps.
func eventIDs(t *testing.T, log []json.RawMessage) []string {
	var ids []string
	for _, raw := range log {
		var e struct {
			EventID string `json:"event_id"`
		}
		require.NoError(t, json.Unmarshal(raw, &e))
		if !slices.Contains(ids, e.EventID) {
			ids = append(ids, e.EventID)
		}
	}
	return ids
}

// Two reapers at once end every run whose workflow was terminated or timed
// out, once each, with a message that says what happened; a run whose
// workflow still runs and a run that already ended are not touched.
func TestTwoReapersEndTheRunsTheirWorkflowsLeftOnceAndTouchNothingElse(t *testing.T) {
	terminatedTask, terminatedRun := aRun(t, tasksapi.StatusInProgress, 0)
	queuedTask, queuedRun := aRun(t, tasksapi.StatusQueued, 0)
	timedOutTask, timedOutRun := aRun(t, tasksapi.StatusInProgress, 2*time.Second)
	runningTask, runningRun := aRun(t, tasksapi.StatusInProgress, 0)
	endedTask, endedRun := aRun(t, tasksapi.StatusInProgress, 0)
	_, err := api.UpdateRun(context.Background(), endedTask, endedRun, tasksapi.RunUpdate{Status: tasksapi.StatusCompleted})
	require.NoError(t, err)
	terminate(t, terminatedTask, terminatedRun, "stuck on a host that was replaced")
	terminate(t, queuedTask, queuedRun, "by hand")
	terminate(t, endedTask, endedRun, "after it finished")
	visible(t, [2]string{terminatedTask, terminatedRun}, [2]string{queuedTask, queuedRun},
		[2]string{timedOutTask, timedOutRun}, [2]string{endedTask, endedRun})

	reapers := []*reaper.Reaper{newReaper(reaper.Config{}), newReaper(reaper.Config{})}
	var wg sync.WaitGroup
	stats := make([]reaper.Stats, len(reapers))
	for i, r := range reapers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			stats[i], err = r.Cycle(context.Background())
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Zero(t, stats[0].Failed+stats[1].Failed, "%+v", stats)

	for _, c := range []struct {
		taskID, runID string
		says          []string
	}{
		{terminatedTask, terminatedRun, []string{`the run's workflow was terminated in Temporal (reason "stuck on a host that was replaced", by `}},
		{queuedTask, queuedRun, []string{`was terminated in Temporal (reason "by hand"`}},
		{timedOutTask, timedOutRun, []string{"the run's workflow timed out in Temporal (its timeout of 2s passed, at "}},
	} {
		run, log := read(t, c.taskID, c.runID)
		require.Equal(t, tasksapi.StatusFailed, run.Status, c.runID)
		require.NotNil(t, run.ErrorMessage)
		for _, s := range append(c.says, "; ended by taskworker's reaper. Start a new run of the task to try again.") {
			require.Contains(t, *run.ErrorMessage, s)
		}
		require.Len(t, eventIDs(t, log), 1, "one entry, however many reapers wrote it")
		require.Contains(t, string(log[0]), "_posthog/error")
		history, err := local.StatusHistory(context.Background(), c.runID)
		require.NoError(t, err)
		require.Equal(t, tasksapi.StatusFailed, history[len(history)-1])
	}
	for _, c := range []struct {
		taskID, runID string
		status        tasksapi.Status
	}{{runningTask, runningRun, tasksapi.StatusInProgress}, {endedTask, endedRun, tasksapi.StatusCompleted}} {
		run, log := read(t, c.taskID, c.runID)
		require.Equal(t, c.status, run.Status, "untouched")
		require.Nil(t, run.ErrorMessage, "untouched")
		require.Empty(t, log, "untouched")
	}

	// A later look at the same workflows changes nothing.
	_, before := read(t, terminatedTask, terminatedRun)
	again, err := reapers[0].Cycle(context.Background())
	require.NoError(t, err)
	require.Zero(t, again.Ended)
	require.Positive(t, again.Examined, "it looked at them again")
	_, after := read(t, terminatedTask, terminatedRun)
	require.Equal(t, before, after)
}

// A cycle examines at most MaxPerCycle workflows; the next goes on where it
// stopped, until every run is ended.
func TestACycleDoesAtMostItsShareAndTheNextGoesOn(t *testing.T) {
	var runs [][2]string
	for range 3 {
		taskID, runID := aRun(t, tasksapi.StatusInProgress, 0)
		terminate(t, taskID, runID, "one of three")
		runs = append(runs, [2]string{taskID, runID})
	}
	visible(t, runs...)
	r := newReaper(reaper.Config{MaxPerCycle: 1})
	cycles := 0
	for more := true; more; cycles++ {
		require.Less(t, cycles, 100, "the look never ended")
		stats, err := r.Cycle(context.Background())
		require.NoError(t, err)
		require.LessOrEqual(t, stats.Examined, 1)
		more = stats.More
	}
	require.GreaterOrEqual(t, cycles, len(runs), "one workflow a cycle")
	for _, run := range runs {
		got, _ := read(t, run[0], run[1])
		require.Equal(t, tasksapi.StatusFailed, got.Status)
	}
}

// A run whose workflow Temporal has never heard of is left alone, unless the
// caller knows it was started there (the dispatcher, for the runs it
// dispatched): then its workflow is lost, and the run is ended saying so.
func TestARunWithoutAWorkflowIsEndedOnlyWhenItsWorkflowWasStartedHere(t *testing.T) {
	ctx := context.Background()
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: t.Name(), Repository: "acme/app"})
	require.NoError(t, err)
	run, err := api.CreateRun(ctx, task.ID)
	require.NoError(t, err)
	_, err = api.UpdateRun(ctx, task.ID, run.ID, tasksapi.RunUpdate{Status: tasksapi.StatusInProgress})
	require.NoError(t, err)
	r := newReaper(reaper.Config{By: "dispatcher"})

	res, err := r.Check(ctx, task.ID, run.ID, false)
	require.NoError(t, err)
	require.Equal(t, reaper.NoWorkflow, res.Outcome)
	got, log := read(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusInProgress, got.Status)
	require.Empty(t, log)

	res, err = r.Check(ctx, task.ID, run.ID, true)
	require.NoError(t, err)
	require.Equal(t, reaper.Ended, res.Outcome)
	got, _ = read(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusFailed, got.Status)
	require.Contains(t, *got.ErrorMessage, "the run's workflow "+kickoff.WorkflowID(task.ID, run.ID)+" does not exist in Temporal (namespace default)")
	require.Contains(t, *got.ErrorMessage, "ended by taskworker's dispatcher")

	res, err = r.Check(ctx, task.ID, run.ID, true)
	require.NoError(t, err)
	require.Equal(t, reaper.Terminal, res.Outcome, "an ended run is never touched again")
}
