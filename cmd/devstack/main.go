// Command devstack runs the local stack: an embedded Temporal server, a local
// Tasks API and a taskworker in one process, and a demo that drives a run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/taskworker/taskworker/examples"
	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/worker"
)

const usage = `devstack runs taskworker's local stack: an embedded Temporal server (SQLite),
a local Tasks API and an in-process worker.

Usage:
  devstack demo [-data-dir DIR] [-interactive]
                                  make a local git repository, create a task, run it with the
                                  bundled example agent and print its log live; -interactive
                                  runs it in interactive mode: a first turn, a follow-up message,
                                  a second turn, then a PATCH that ends the run
  devstack up [-data-dir DIR] [-no-seed]
                                  serve the stack until Ctrl-C; state survives restarts; makes the
                                  demo repository demo/hello (as demo does) unless -no-seed
  devstack bench                  measure what the worker adds to a run (see docs/benchmarks.md)

The worker reads the same TASKWORKER_* variables as the daemon (see taskworker config);
TASKWORKER_AGENT_COMMAND defaults to the bundled example agent.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "demo":
		err = demo(ctx, os.Args[2:])
	case "up":
		err = up(ctx, os.Args[2:])
	case "bench":
		err = runBench(ctx, os.Args[2:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "devstack: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// workerConfig reads the worker's configuration from the environment; the
// stack itself provides the PostHog and Temporal connection.
func workerConfig(dataDir string) (worker.Config, error) {
	agentPath := filepath.Join(dataDir, "demo-agent.sh")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return worker.Config{}, err
	}
	if err := os.WriteFile(agentPath, examples.DemoAgent, 0o755); err != nil {
		return worker.Config{}, fmt.Errorf("write the example agent: %w", err)
	}
	defaults := map[string]string{
		"POSTHOG_API_URL":              "http://provided-by-the-stack",
		"POSTHOG_PERSONAL_API_KEY":     "provided-by-the-stack",
		"POSTHOG_PROJECT_ID":           devstack.DefaultProjectID,
		"TASKWORKER_AGENT_COMMAND":     "sh " + agentPath,
		"TASKWORKER_REPO_URL_TEMPLATE": devstack.RepoURLTemplate(filepath.Join(dataDir, "git")),
		"TASKWORKER_WORKSPACE_DIR":     filepath.Join(dataDir, "workspaces"),
		"TASKWORKER_CACHE_DIR":         filepath.Join(dataDir, "cache"),
		"TASKWORKER_LOG_FORMAT":        "console",
		"TASKWORKER_SANDBOX":           "auto",
		"TASKWORKER_LOG_LEVEL":         "warn",
	}
	// Only for the Load: a second stack in this process (the tests') must
	// not find the first one's folders as if they were the user's settings.
	for name, value := range defaults {
		old, set := os.LookupEnv(name)
		if set && name != "POSTHOG_API_URL" && name != "POSTHOG_PERSONAL_API_KEY" {
			continue
		}
		os.Setenv(name, value)
		defer func() {
			if set {
				os.Setenv(name, old)
			} else {
				os.Unsetenv(name)
			}
		}()
	}
	return worker.Load()
}

func startStack(ctx context.Context, dataDir, temporalAddr, apiAddr string) (*devstack.Stack, error) {
	cfg, err := workerConfig(dataDir)
	if err != nil {
		return nil, err
	}
	logger, err := worker.NewLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	return devstack.Start(ctx, devstack.Options{
		DataDir: dataDir, TemporalAddress: temporalAddr, APIAddress: apiAddr,
		Worker: cfg, Logger: logger,
	})
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dataDir := fs.String("data-dir", ".devstack", "folder for the stack's state")
	temporalAddr := fs.String("temporal", devstack.DefaultTemporalAddress, "address of the embedded Temporal frontend")
	apiAddr := fs.String("api", devstack.DefaultAPIAddress, "address of the local Tasks API")
	noSeed := fs.Bool("no-seed", false, "make no repository (by default the demo repository "+demoRepo+" is made, for the example commands)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if !*noSeed {
		if _, err := seedDemo(ctx, abs); err != nil {
			return err
		}
	}
	stack, err := startStack(ctx, abs, *temporalAddr, *apiAddr)
	if err != nil {
		return err
	}
	defer stack.Stop()
	cfg := stack.WorkerConfig
	fmt.Printf(`Local stack running (state in %s)
  Temporal       %s  (namespace default, queue %s)
  Dashboard      %s/
  Tasks API      %s/api/projects/%s/
  API key        %s
  Repositories   %s
  Agent          %s

Create and run a task:
  curl -s -X POST -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"title":"Add a greeting","description":"Say hello in the README","repository":"demo/hello"}' \
    %s/api/projects/%s/tasks/
  curl -s -X POST -H 'Authorization: Bearer %s' %s/api/projects/%s/tasks/<task id>/run/
(Repositories live in %s/git: demo/hello is made there unless -no-seed; for another, git init --bare <org>/<repo>.git there and push to it.)
Ctrl-C stops the stack.
`, abs, cfg.TemporalAddress, cfg.TaskQueue, stack.APIURL, stack.APIURL, cfg.ProjectID, cfg.APIKey, cfg.RepoURLTemplate, cfg.AgentCommand,
		cfg.APIKey, stack.APIURL, cfg.ProjectID, cfg.APIKey, stack.APIURL, cfg.ProjectID, abs)
	fmt.Printf("Agents run in the sandbox: %s\n", stack.Sandbox.Describe())
	<-ctx.Done()
	fmt.Println("\nstopping")
	return nil
}
