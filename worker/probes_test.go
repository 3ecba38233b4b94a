package worker

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/metrics"
)

func TestProbesAndMetrics(t *testing.T) {
	// A client of a Temporal that isn't there: the process is alive, not ready.
	c, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1"})
	require.NoError(t, err)
	defer c.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := metrics.New("v-test")
	m.RunFinished("completed", 3*time.Second)
	m.AgentUsage(map[string]any{"agent": "claude", "cost_usd": 0.25, "input_tokens": float64(1200), "output_tokens": 300, "cache_read_input_tokens": float64(50)})
	m.AgentUsage(map[string]any{"agent": "claude", "cost_usd": 0.5})
	p := serveProbes(ctx, addr, c, m, zap.NewNop())

	get := func(path string) (int, string) {
		var resp *http.Response
		require.Eventually(t, func() bool {
			resp, err = http.Get("http://" + addr + path)
			return err == nil
		}, 5*time.Second, 10*time.Millisecond)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	code, body := get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "starting or draining")
	p.setReady(true)
	code, body = get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "Temporal does not answer")
	code, body = get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `taskworker_build_info{go="go`)
	require.Contains(t, body, `version="v-test"} 1`)
	require.Contains(t, body, `taskworker_runs_finished_total{status="completed"} 1`)
	require.Contains(t, body, `taskworker_agent_cost_usd_total{agent="claude"} 0.75`)
	require.Contains(t, body, `taskworker_agent_tokens_total{agent="claude",kind="input"} 1200`)
	require.Contains(t, body, `taskworker_agent_tokens_total{agent="claude",kind="output"} 300`)
	require.Contains(t, body, `taskworker_agent_tokens_total{agent="claude",kind="cached_input"} 50`)
}

func TestEndpointLabelsHideIDs(t *testing.T) {
	require.Equal(t, "PATCH /api/projects/{project}/tasks/{id}/runs/{id}/",
		metrics.Endpoint("PATCH", "/api/projects/42/tasks/0b6f3c1e-8a3f-4a51-9d7e-2f4b1c9a7e10/runs/5d2e9f80-1c4b-4e7a-a3b2-6c8d9e0f1a2b/"))
	require.Equal(t, "GET /api/projects/{project}/tasks/", metrics.Endpoint("GET", "/api/projects/1/tasks/?limit=100&offset=0"))
}
