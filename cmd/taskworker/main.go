// Command taskworker executes PostHog task runs: it serves the process-task
// workflow on a Temporal cluster. Configuration comes from the environment.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/taskworker/taskworker/worker"
)

const usage = `taskworker executes PostHog task runs (the process-task Temporal workflow).

Usage:
  taskworker [run]    serve runs until SIGINT or SIGTERM
  taskworker config   list every environment variable with its default and meaning
  taskworker version  print the version
`

func main() {
	cmd := "run"
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	switch cmd {
	case "run":
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, "taskworker:", err)
			os.Exit(1)
		}
	case "config":
		if err := worker.PrintUsage(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "taskworker:", err)
			os.Exit(1)
		}
	case "version":
		fmt.Println("taskworker", worker.Version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "taskworker: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}

func run() error {
	cfg, err := worker.Load()
	if err != nil {
		return err
	}
	logger, err := worker.NewLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return worker.Run(ctx, cfg, logger)
}
