package localapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/runstate"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

type sentSignal struct {
	taskID, runID, name string
	args                []any
}

// signalRecorder takes the API's signals in place of Temporal; ended makes
// every workflow closed.
type signalRecorder struct {
	mu    sync.Mutex
	sent  []sentSignal
	ended bool
}

func (r *signalRecorder) SignalRun(_ context.Context, taskID, runID, name string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return fmt.Errorf("signal %s: %w", name, kickoff.ErrWorkflowEnded)
	}
	r.sent = append(r.sent, sentSignal{taskID, runID, name, args})
	return nil
}

func (r *signalRecorder) signals() []sentSignal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sentSignal(nil), r.sent...)
}

func newSignallingServer(t *testing.T) (*Server, *apiClient, *signalRecorder) {
	rec := &signalRecorder{}
	s, err := New(Config{DataDir: t.TempDir(), APIKey: key, ProjectID: "1", Signaller: rec})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	return s, &apiClient{t: t, base: srv.URL + "/api/projects/1"}, rec
}

func TestCancelSetsCancelledAndSignalsCompleteTask(t *testing.T) {
	s, c, rec := newSignallingServer(t)
	taskID, runID := c.task()
	path := "/tasks/" + taskID + "/runs/" + runID

	code, run := c.do("POST", path+"/cancel/", `{"reason":"not needed any more"}`)
	require.Equal(t, 200, code, run)
	require.Equal(t, "cancelled", run["status"])
	require.NotNil(t, run["completed_at"])
	require.Equal(t, []sentSignal{{taskID, runID, "complete_task", []any{"cancelled", "not needed any more"}}}, rec.signals())
	history, err := s.StatusHistory(context.Background(), runID)
	require.NoError(t, err)
	require.Equal(t, "cancelled", string(history[len(history)-1]))

	code, body := c.do("POST", path+"/cancel/", "")
	require.Equal(t, 409, code, "a run ended already: %v", body)

	_, runID2 := c.task()
	code, _ = c.do("POST", "/tasks/"+taskID+"/runs/"+runID2+"/cancel/", "")
	require.Equal(t, 404, code, "the run is not the task's")
	code, _ = c.do("POST", path+"/cancel/", `{"reason":3}`)
	require.Equal(t, 400, code)
}

func TestACancelWithoutAReasonSaysTheUserCancelled(t *testing.T) {
	_, c, rec := newSignallingServer(t)
	taskID, runID := c.task()
	code, _ := c.do("POST", "/tasks/"+taskID+"/runs/"+runID+"/cancel/", "")
	require.Equal(t, 200, code)
	require.Equal(t, []any{"cancelled", defaultCancelReason}, rec.signals()[0].args)
}

func TestATerminalPatchSignalsCompleteTask(t *testing.T) {
	_, c, rec := newSignallingServer(t)
	taskID, runID := c.task()
	path := "/tasks/" + taskID + "/runs/" + runID + "/"
	code, _ := c.do("PATCH", path, `{"status":"in_progress","stage":"agent"}`)
	require.Equal(t, 200, code)
	require.Empty(t, rec.signals(), "only a terminal status is signalled")
	code, _ = c.do("PATCH", path, `{"status":"failed","error_message":"boom"}`)
	require.Equal(t, 200, code)
	code, _ = c.do("PATCH", path, `{"status":"completed"}`)
	require.Equal(t, 200, code)
	require.Equal(t, []sentSignal{
		{taskID, runID, "complete_task", []any{"failed", "boom"}},
		// error_message stays what it was; PostHog sends the run's.
		{taskID, runID, "complete_task", []any{"completed", "boom"}},
	}, rec.signals())

	rec.ended = true
	code, _ = c.do("PATCH", path, `{"status":"cancelled"}`)
	require.Equal(t, 200, code, "a closed workflow does not fail the PATCH")
}

func TestAppendLogSignalsAHeartbeatAtMostOnceAMinute(t *testing.T) {
	s, c, rec := newSignallingServer(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.store.now = func() time.Time { return now }
	taskID, runID := c.task()
	appendLog := func(run string) {
		code, body := c.do("POST", "/tasks/"+taskID+"/runs/"+run+"/append_log/", `{"entries":[{"a":1}]}`)
		require.Equal(t, 200, code, body)
	}
	appendLog(runID)
	appendLog(runID)
	now = now.Add(59 * time.Second)
	appendLog(runID)
	require.Len(t, rec.signals(), 1)
	now = now.Add(time.Second)
	appendLog(runID)
	require.Equal(t, []sentSignal{{taskID, runID, "heartbeat", []any{true}}, {taskID, runID, "heartbeat", []any{true}}}, rec.signals())
}

func TestCommandSendsAFollowUpOr409WhenTheWorkflowEnded(t *testing.T) {
	_, c, rec := newSignallingServer(t)
	taskID, runID := c.task()
	path := "/tasks/" + taskID + "/runs/" + runID + "/command/"
	code, body := c.do("POST", path, `{"jsonrpc":"2.0","method":"user_message","params":{"content":"also the docs","message_id":"m-1","artifact_ids":["a"],"message_context":{"k":1}},"id":7}`)
	require.Equal(t, 200, code, body)
	require.Equal(t, map[string]any{"jsonrpc": "2.0", "result": map[string]any{"queued": true}, "id": float64(7)}, body)
	sent := rec.signals()
	require.Len(t, sent, 1)
	require.Equal(t, "send_followup_message", sent[0].name)
	require.Equal(t, []any{"also the docs", []string{"a"}, "m-1", nil}, sent[0].args[:4])
	require.JSONEq(t, `{"k":1}`, string(sent[0].args[4].(json.RawMessage)))

	code, _ = c.do("POST", path, `{"jsonrpc":"2.0","method":"user_message","params":{"content":"no id"},"id":"x"}`)
	require.Equal(t, 200, code)
	sent = rec.signals()
	require.NotEmpty(t, sent[1].args[2], "a message without an ID gets one")
	require.Nil(t, sent[1].args[4])

	for _, bad := range []string{
		`{"method":"user_message","params":{"content":"x"},"id":1}`,
		`{"jsonrpc":"2.0","method":"shout","params":{"content":"x"},"id":1}`,
		`{"jsonrpc":"2.0","method":"user_message","params":"x","id":1}`,
		`{"jsonrpc":"2.0","method":"user_message","params":{},"id":1}`,
	} {
		code, _ := c.do("POST", path, bad)
		require.Equal(t, 400, code, bad)
	}

	rec.ended = true
	code, body = c.do("POST", path, `{"jsonrpc":"2.0","method":"user_message","params":{"content":"late"},"id":8}`)
	require.Equal(t, 409, code)
	require.Equal(t, "Task run workflow has ended", body["detail"])
}

func TestWithoutASignallerNothingIsSignalled(t *testing.T) {
	_, c := newServer(t)
	taskID, runID := c.task()
	code, _ := c.do("POST", "/tasks/"+taskID+"/runs/"+runID+"/append_log/", `{"entries":[{"a":1}]}`)
	require.Equal(t, 200, code)
	code, _ = c.do("POST", "/tasks/"+taskID+"/runs/"+runID+"/command/", `{"jsonrpc":"2.0","method":"user_message","params":{"content":"x"},"id":1}`)
	require.Equal(t, 503, code)
	code, run := c.do("POST", "/tasks/"+taskID+"/runs/"+runID+"/cancel/", "")
	require.Equal(t, 200, code)
	require.Equal(t, "cancelled", run["status"])
}

// The client the demo uses speaks this API: an interactive run, then a
// follow-up that reaches the workflow with the message ID the client chose.
func TestTheClientStartsAnInteractiveRunAndSendsItAMessage(t *testing.T) {
	starts, signalled := &starterRecorder{}, &signalRecorder{}
	s, err := New(Config{DataDir: t.TempDir(), APIKey: key, ProjectID: "1", Starter: starts, Signaller: signalled})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	api := tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: key, ProjectID: "1"})
	ctx := context.Background()

	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "t", Description: "d", Repository: "a/b"})
	require.NoError(t, err)
	task, err = api.RunTaskWith(ctx, task.ID, tasksapi.RunTaskRequest{Mode: runstate.Interactive})
	require.NoError(t, err)
	run := task.LatestRun
	require.NotNil(t, run)
	require.Equal(t, runstate.Interactive, run.State["mode"])

	require.NoError(t, api.SendUserMessage(ctx, task.ID, run.ID, "and the tests", "msg-1"))
	sent := signalled.signals()
	require.Len(t, sent, 1)
	require.Equal(t, "send_followup_message", sent[0].name)
	require.Equal(t, []any{"and the tests", []string{}, "msg-1", nil, nil}, sent[0].args)
}
