// Command taskworker executes PostHog task runs: it serves the process-task
// workflow on a Temporal cluster. Configuration comes from the environment.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/worker"
)

const usage = `taskworker executes PostHog task runs (the process-task Temporal workflow).

Usage:
  taskworker [run]    serve runs until SIGINT or SIGTERM
  taskworker dispatch start process-task for queued runs of a Tasks API whose kick-off
                      can't reach this Temporal cluster (PostHog Cloud); see the README
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
		exitOn(serve(worker.Load, worker.Run))
	case "dispatch":
		exitOn(serve(worker.LoadDispatch, worker.RunDispatcher))
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

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "taskworker:", err)
		os.Exit(1)
	}
}

// serve loads the configuration and runs until SIGINT or SIGTERM.
func serve(load func() (worker.Config, error), run func(context.Context, worker.Config, *zap.Logger) error) error {
	cfg, err := load()
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
	return run(ctx, cfg, logger)
}
