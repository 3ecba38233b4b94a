// Package benchtest holds what benchmarks share: timing each operation and
// reporting the spread, where an average would hide the slow ones.
package benchtest

import (
	"slices"
	"testing"
	"time"
)

// Latency runs op b.N times, timing each, and reports the median and the
// 99th percentile in milliseconds, as p50-ms and p99-ms.
func Latency(b *testing.B, op func()) {
	b.Helper()
	took := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		began := time.Now()
		op()
		took = append(took, time.Since(began))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}
