package activities

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// logAPI is a Tasks API for the log's tests: append_log answers appendStatus
// (or stores the entries when it is 0), the first failPatches PATCHes of the
// run's status answer 503, and the run reads as in_progress.
type logAPI struct {
	mu           sync.Mutex
	appendStatus int
	failPatches  int
	stored       []acp.Entry
	patches      []tasksapi.RunUpdate
}

func (l *logAPI) serve(t *testing.T) *tasksapi.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/append_log/"):
			if l.appendStatus != 0 {
				w.WriteHeader(l.appendStatus)
				_, _ = w.Write([]byte(`{"detail":"busy"}`))
				return
			}
			var body struct {
				Entries []acp.Entry `json:"entries"`
			}
			require.NoError(t, json.NewDecoder(r.Body).Decode(&body))
			l.stored = append(l.stored, body.Entries...)
		case r.Method == http.MethodPatch:
			var u tasksapi.RunUpdate
			require.NoError(t, json.NewDecoder(r.Body).Decode(&u))
			if u.Status != "" && l.failPatches > 0 {
				l.failPatches--
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"detail":"busy"}`))
				return
			}
			l.patches = append(l.patches, u)
		}
		_, _ = w.Write([]byte(`{"status":"in_progress"}`))
	}))
	t.Cleanup(srv.Close)
	// As the worker's API steps call it: once, their policy retries.
	return tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: tasksapi.NoRetries})
}

func (l *logAPI) entries() []acp.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]acp.Entry(nil), l.stored...)
}

func logActivities(t *testing.T, api *tasksapi.Client, flushTimeout time.Duration) *Activities {
	return &Activities{
		API: api, Redactor: redact.New(), Logger: zap.NewNop(),
		Config: Config{WorkspaceDir: t.TempDir(), FlushTimeout: flushTimeout,
			Log: logstream.Config{RetryWait: 10 * time.Millisecond, RetryMaxWait: 50 * time.Millisecond}},
	}
}

// returnsWithin runs fn and fails the test unless it returns within limit.
func returnsWithin(t *testing.T, limit time.Duration, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("still running after %s", limit)
		return nil
	}
}

// A step's last flush ends by the step's own deadline, not after
// TASKWORKER_LOG_FLUSH_TIMEOUT: a local activity that ran past its deadline
// would be retried by the SDK while it still wrote, and write its entries
// twice. What it couldn't send is counted.
func TestAStepsFlushEndsByItsDeadline(t *testing.T) {
	api := &logAPI{appendStatus: http.StatusServiceUnavailable}
	a := logActivities(t, api.serve(t), time.Minute)
	ref := RunRef{TaskID: "t", RunID: "r"}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	err := returnsWithin(t, 6*time.Second, func() error {
		return a.Note(ctx, NoteInput{RunRef: ref, Level: acp.LevelInfo, Message: "hello"})
	})
	require.NoError(t, err)
	require.True(t, time.Now().Before(deadline), "Note returned before its deadline")

	// FinishRun's flush leaves its terminal PATCH time to be made.
	ctx, cancel = context.WithTimeout(context.Background(), finishReserve+flushMargin+2*time.Second)
	defer cancel()
	deadline, _ = ctx.Deadline()
	err = returnsWithin(t, finishReserve+flushMargin+4*time.Second, func() error {
		return a.FinishRun(ctx, FinishInput{RunRef: ref, Status: tasksapi.StatusCompleted})
	})
	require.NoError(t, err)
	require.True(t, time.Now().Before(deadline), "FinishRun returned before its deadline")
	api.mu.Lock()
	defer api.mu.Unlock()
	require.Len(t, api.patches, 1)
	require.Equal(t, tasksapi.StatusCompleted, api.patches[0].Status)
	require.EqualValues(t, 1, api.patches[0].Output["log_entries_dropped"], "the entry it could not send is counted")
}

// A retried FinishRun writes its entry again under the same event_id, so a
// reader keeps one copy; another step's entries have IDs of their own, and
// so has each attempt of a step that does its work again.
func TestARetriedStepWritesItsEntriesUnderTheSameIDs(t *testing.T) {
	api := &logAPI{failPatches: 1} // one FinishRun attempt
	a := logActivities(t, api.serve(t), time.Minute)
	ref := RunRef{TaskID: "t", RunID: "r"}
	hostAttempts := 0
	hostStep := func(ctx context.Context) error {
		hostAttempts++
		_, err := a.runStep(ctx, ref, StepArtifacts, "", 0, func(log *logstream.Stream) (string, error) {
			log.Console(acp.LevelInfo, "uploading")
			if hostAttempts == 1 {
				return "", temporal.NewApplicationError("upload failed", "test")
			}
			return "done", nil
		})
		return err
	}
	var workflowRun string
	wf := func(ctx workflow.Context) error {
		workflowRun = workflow.GetInfo(ctx).WorkflowExecution.RunID
		local := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			StartToCloseTimeout: time.Minute,
			RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Millisecond, MaximumAttempts: 3},
		})
		host := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Millisecond, MaximumAttempts: 2},
		})
		for _, key := range []string{"one", "two"} {
			if err := workflow.ExecuteLocalActivity(local, a.Note, NoteInput{RunRef: ref, Level: acp.LevelInfo, Message: "same", Key: key}).Get(ctx, nil); err != nil {
				return err
			}
		}
		if err := workflow.ExecuteActivity(host, hostStep).Get(ctx, nil); err != nil {
			return err
		}
		return workflow.ExecuteLocalActivity(local, a.FinishRun, FinishInput{RunRef: ref, Status: tasksapi.StatusCompleted}).Get(ctx, nil)
	}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflow(wf)
	env.RegisterActivity(hostStep)
	env.ExecuteWorkflow(wf)
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())

	var ids []string
	byMethod := map[string][]string{}
	for _, e := range api.entries() {
		ids = append(ids, e.EventID)
		byMethod[e.Notification.Method] = append(byMethod[e.Notification.Method], e.EventID)
	}
	complete := byMethod[acp.MethodTaskComplete]
	require.Len(t, complete, 2, "FinishRun ran twice and wrote its entry twice")
	require.Equal(t, complete[0], complete[1], "under one event_id")
	require.Equal(t, acp.EventID(ref.RunID+"/"+workflowRun+"/"+FinishRunName, 0), complete[0],
		"derived from the run, the workflow, the step and the entry's place in it")

	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	// Two notes, two attempts of the host step (started, a line, an end
	// each), one terminal entry: nine entries, none of them mistaken for another.
	require.Len(t, ids, 10)
	require.Len(t, distinct, 9)
}
