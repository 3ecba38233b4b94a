package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The bench itself works: a tiny run of every figure, with the daemon as its
// own process. The figures are not checked here (docs/benchmarks.md has them).
func TestBenchProducesEveryFigure(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), &out, Options{
		LatencyRuns: 3, Concurrency: []int{1, 2}, Throughput: 2, ScaleRuns: 3, ScaleSleep: 100 * time.Millisecond, Dir: t.TempDir(),
	})
	require.NoError(t, err)
	for _, row := range []string{"kick-off → agent started | p50", "worker overhead per run | p50", "throughput at 1 concurrent",
		"throughput at 2 concurrent", "3 concurrent sleeping runs | all completed", "worker RSS when idle"} {
		require.Contains(t, out.String(), row)
	}
	// 1 warm-up + 3 + 2 + 2 + 3 runs, every one counted by the daemon's own metrics.
	require.Contains(t, out.String(), "| runs completed, per the worker's /metrics | 11 |")
}
