package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// fakeAPI is a Tasks API of tasks and their runs that fails where told.
type fakeAPI struct {
	mu        sync.Mutex
	tasks     []tasksapi.Task
	runs      map[string][]tasksapi.TaskRun // by task ID
	listFails map[string]bool               // task IDs whose runs can't be listed
	patchFail map[string]bool               // run IDs whose PATCH fails
	patched   map[string]tasksapi.Status
}

var errAPI = errors.New("HTTP 500")

func (f *fakeAPI) ListTasks(context.Context, tasksapi.TaskFilter, int, int) (tasksapi.Page[tasksapi.Task], error) {
	return tasksapi.Page[tasksapi.Task]{Count: len(f.tasks), Results: f.tasks}, nil
}

func (f *fakeAPI) ListRuns(_ context.Context, taskID string, _, _ int) (tasksapi.Page[tasksapi.TaskRun], error) {
	if f.listFails[taskID] {
		return tasksapi.Page[tasksapi.TaskRun]{}, errAPI
	}
	return tasksapi.Page[tasksapi.TaskRun]{Count: len(f.runs[taskID]), Results: f.runs[taskID]}, nil
}

func (f *fakeAPI) GetRun(_ context.Context, taskID, runID string) (tasksapi.TaskRun, error) {
	for _, r := range f.runs[taskID] {
		if r.ID == runID {
			return r, nil
		}
	}
	return tasksapi.TaskRun{}, &tasksapi.APIError{StatusCode: 404}
}

func (f *fakeAPI) UpdateRun(_ context.Context, _, runID string, u tasksapi.RunUpdate) (tasksapi.TaskRun, error) {
	if f.patchFail[runID] {
		return tasksapi.TaskRun{}, errAPI
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.patched[runID] = u.Status
	return tasksapi.TaskRun{ID: runID, Status: u.Status}, nil
}

func (f *fakeAPI) AppendLog(context.Context, string, string, []json.RawMessage) error { return nil }

// fakeTemporal starts workflows, except those of runs told to fail, and
// has the workflows of ended runs already closed.
type fakeTemporal struct {
	startFails map[string]bool // workflow IDs
	ended      map[string]bool // workflow IDs whose workflow already completed
	started    []string
}

func (f *fakeTemporal) ExecuteWorkflow(_ context.Context, o client.StartWorkflowOptions, _ any, _ ...any) (client.WorkflowRun, error) {
	switch {
	case f.startFails[o.ID]:
		return nil, errors.New("temporal unavailable")
	case f.ended[o.ID]:
		return nil, serviceerror.NewWorkflowExecutionAlreadyStarted("already started", "", "")
	}
	f.started = append(f.started, o.ID)
	return nil, nil
}

func (f *fakeTemporal) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Status: enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED}}, nil
}

func queued(id string) tasksapi.TaskRun {
	return tasksapi.TaskRun{ID: id, Status: tasksapi.StatusQueued, Environment: "local"}
}

func task(id string, runs ...tasksapi.TaskRun) tasksapi.Task {
	return tasksapi.Task{ID: id, LatestRun: &runs[0]}
}

// One task whose runs can't be listed, one run whose workflow can't be
// started and one whose PATCH fails stop no other run from being dispatched;
// each is counted and logged.
func TestEachTaskAndRunIsDispatchedOnItsOwn(t *testing.T) {
	api := &fakeAPI{
		runs: map[string][]tasksapi.TaskRun{
			"a": {queued("a1")},
			"b": {queued("b1"), queued("b2"), queued("b3")},
			"c": {queued("c1")},
		},
		listFails: map[string]bool{"a": true},
		patchFail: map[string]bool{"b2": true},
		patched:   map[string]tasksapi.Status{},
	}
	for _, id := range []string{"a", "b", "c"} {
		api.tasks = append(api.tasks, task(id, api.runs[id]...))
	}
	temporal := &fakeTemporal{
		startFails: map[string]bool{kickoff.WorkflowID("b", "b1"): true},
		ended:      map[string]bool{kickoff.WorkflowID("b", "b2"): true},
	}
	m := metrics.New("test")
	d := &Dispatcher{API: api, Temporal: temporal, Logger: zap.NewNop(), Metrics: m,
		Config: Config{PageSize: 100, MaxPages: 1, TaskQueue: "q", Pool: "p"}}

	stats, err := d.Cycle(context.Background())
	require.NoError(t, err, "a failed task or run does not fail the cycle")
	sort.Strings(temporal.started)
	require.Equal(t, []string{kickoff.WorkflowID("b", "b3"), kickoff.WorkflowID("c", "c1")}, temporal.started)
	require.Equal(t, 2, stats.Started)
	require.Equal(t, 3, stats.Failed)
	require.Zero(t, stats.Orphaned, "the orphan whose PATCH failed is tried again next cycle")
	for step, n := range map[string]float64{"list_runs": 1, "start": 1, "fail_orphan": 1, "list_tasks": 0} {
		require.Equal(t, n, failures(t, m, step), step)
	}
}

// failures reads taskworker_dispatch_failures_total{step}.
func failures(t *testing.T, m *metrics.Metrics, step string) float64 {
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != "taskworker_dispatch_failures_total" {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "step" && l.GetValue() == step {
					return metric.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Only local runs are this pool's: a cloud run (what POST /tasks/{id}/run/
// makes, and PostHog's own runner executes) or one of an environment the
// worker doesn't know is never started, whether it is the task's latest run
// or an older one.
func TestOnlyLocalRunsAreDispatched(t *testing.T) {
	cloud := func(id string) tasksapi.TaskRun {
		return tasksapi.TaskRun{ID: id, Status: tasksapi.StatusQueued, Environment: "cloud"}
	}
	api := &fakeAPI{
		runs: map[string][]tasksapi.TaskRun{
			"cloud":   {cloud("c1")},
			"unknown": {{ID: "u1", Status: tasksapi.StatusQueued}},
			"mixed":   {queued("m2"), cloud("m1")},
		},
		patched: map[string]tasksapi.Status{},
	}
	for _, id := range []string{"cloud", "unknown", "mixed"} {
		api.tasks = append(api.tasks, task(id, api.runs[id]...))
	}
	temporal := &fakeTemporal{}
	d := &Dispatcher{API: api, Temporal: temporal, Logger: zap.NewNop(),
		Config: Config{PageSize: 100, MaxPages: 1, TaskQueue: "q", Pool: "p"}}
	stats, err := d.Cycle(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{kickoff.WorkflowID("mixed", "m2")}, temporal.started)
	require.Equal(t, 3, stats.NotLocal)
	require.Equal(t, 1, stats.Queued)
	require.Equal(t, 4, stats.Requests, "no run listing for a task whose latest run isn't ours: one page, one listing, one mark, one note")
}
