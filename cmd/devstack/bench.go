package main

import (
	"context"
	"flag"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/taskworker/taskworker/internal/bench"
)

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	runs := fs.Int("runs", 200, "sequential runs for the kick-off and overhead figures")
	levels := fs.String("concurrency", "1,10,50", "concurrency levels for throughput")
	throughput := fs.Int("throughput-runs", 100, "runs per throughput level")
	scale := fs.Int("scale", 200, "concurrent sleeping runs")
	sleep := fs.Duration("scale-sleep", 10*time.Second, "how long each of those sleeps")
	keep := fs.Bool("keep", false, "keep the bench's folder (repositories, workspaces) for a look afterwards")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var conc []int
	for _, f := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		conc = append(conc, n)
	}
	dir, err := os.MkdirTemp("", "taskworker-bench-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	return bench.Run(ctx, os.Stdout, bench.Options{
		LatencyRuns: *runs, Concurrency: conc, Throughput: *throughput,
		ScaleRuns: *scale, ScaleSleep: *sleep, Dir: dir,
	})
}
