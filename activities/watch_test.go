package activities

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// waitingAgent works until it is stopped.
type waitingAgent struct{ started atomic.Bool }

func (*waitingAgent) Name() string { return "waiting" }

func (w *waitingAgent) Run(ctx context.Context, _ agent.Request, _ agent.Sink) (agent.Result, error) {
	w.started.Store(true)
	<-ctx.Done()
	return agent.Result{}, errors.New("agent waiting was stopped")
}

// A run the Tasks API refuses to show while its agent works (a revoked key,
// a deleted task) stops the agent, and the step fails for good with the
// API's answer; a 503 meanwhile changes nothing.
func TestARunTheAPIRefusesStopsItsAgent(t *testing.T) {
	for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound} {
		var reads atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/runs/") {
				if reads.Add(1) == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
				} else {
					w.WriteHeader(code)
				}
				_, _ = w.Write([]byte(`{"detail":"refused for the test"}`))
				return
			}
			_, _ = w.Write([]byte(`{}`))
		}))
		h := newGitHost(t)
		h.push(t, h.origin(t, "acme/app"), "", "main", "a.txt")
		waiting := &waitingAgent{}
		h.a.Agent = waiting
		h.a.API = tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: 1, RetryWait: time.Millisecond})
		h.a.Config.StatusCheckEvery = 20 * time.Millisecond
		run := RunContext{RunRef: RunRef{TaskID: "t", RunID: "r"}, Repository: "acme/app", Branch: "b", AgentTimeout: time.Hour}

		var suite testsuite.WorkflowTestSuite
		env := suite.NewTestActivityEnvironment() // RunAgent heartbeats
		env.RegisterActivity(h.a.RunAgent)
		err := returnsWithin(t, 20*time.Second, func() error {
			_, err := env.ExecuteActivity(h.a.RunAgent, AgentInput{Run: run})
			return err
		})
		srv.Close()
		require.True(t, waiting.started.Load())
		require.GreaterOrEqual(t, reads.Load(), int32(2), "a 503 did not stop it")
		var appErr *temporal.ApplicationError
		require.ErrorAs(t, err, &appErr, "HTTP %d", code)
		require.Equal(t, ErrTasksAPI, appErr.Type())
		require.True(t, appErr.NonRetryable())
		require.Contains(t, appErr.Message(), "the Tasks API refused to show the run")
		require.Contains(t, appErr.Message(), "refused for the test")
	}
}

// The reads of a run are spread over a fifth either side of the interval,
// so a fleet's runs don't poll the API in step.
func TestTheRunIsReadAtJitteredIntervals(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := jittered(10 * time.Second)
		require.GreaterOrEqual(t, d, 8*time.Second)
		require.LessOrEqual(t, d, 12*time.Second)
		seen[d] = true
	}
	require.Greater(t, len(seen), 100)
}
