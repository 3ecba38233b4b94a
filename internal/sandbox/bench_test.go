package sandbox_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/sandbox"
)

// benchModes are the sandboxes measured against none at all.
func benchModes(b *testing.B) map[string]*sandbox.Sandbox {
	out := map[string]*sandbox.Sandbox{}
	for _, m := range []sandbox.Mode{sandbox.Off, sandbox.Namespaces, sandbox.UID} {
		sb, err := sandbox.New(sandbox.Config{Mode: m, Network: sandbox.NetworkHost})
		if err != nil {
			b.Logf("%s: %v", m, err)
			continue
		}
		out[string(m)] = sb
	}
	return out
}

func benchWorkspace(b *testing.B) string {
	root := b.TempDir()
	_ = os.Chmod(root, 0o711)
	_ = os.Chmod(filepath.Dir(root), 0o711)
	ws := filepath.Join(root, "repo")
	if err := os.Mkdir(ws, 0o755); err != nil {
		b.Fatal(err)
	}
	return ws
}

// BenchmarkStart is what a run pays from "start the agent" to the agent's
// first instruction and back: a run's uid and folders, its namespaces and
// root, and its end. The agent is /bin/true.
func BenchmarkStart(b *testing.B) {
	for name, sb := range benchModes(b) {
		b.Run(name, func(b *testing.B) {
			ws := benchWorkspace(b)
			took := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				began := time.Now()
				run, err := sb.Start(sandbox.Dirs{Writable: []string{ws}})
				if err != nil {
					b.Fatal(err)
				}
				res, err := process.Run(context.Background(), process.Spec{Path: "/bin/true", Dir: ws,
					Env: []string{"PATH=/usr/bin:/bin"}, Isolation: run.Isolation()}, func(process.Stream, string) {})
				run.Close()
				if err != nil || !res.Success() {
					b.Fatalf("%v %v", err, res)
				}
				took = append(took, time.Since(began))
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkFlood is an agent printing 1,000,000 lines, read by the worker.
func BenchmarkFlood(b *testing.B) {
	for name, sb := range benchModes(b) {
		b.Run(name, func(b *testing.B) {
			ws := benchWorkspace(b)
			for i := 0; i < b.N; i++ {
				run, err := sb.Start(sandbox.Dirs{Writable: []string{ws}})
				if err != nil {
					b.Fatal(err)
				}
				lines := 0
				res, err := process.Run(context.Background(), process.Spec{Path: "/usr/bin/seq", Args: []string{"1000000"}, Dir: ws,
					Env: []string{"PATH=/usr/bin:/bin"}, Isolation: run.Isolation()}, func(process.Stream, string) { lines++ })
				run.Close()
				if err != nil || !res.Success() || lines != 1000000 {
					b.Fatalf("%v %v %d lines", err, res, lines)
				}
			}
		})
	}
}
