package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

const demoRepo = "demo/hello"

// seedDemo makes the demo repository under the stack's folder, unless it is
// there already, and returns its path.
func seedDemo(ctx context.Context, dir string) (string, error) {
	bare, err := devstack.SeedRepository(ctx, filepath.Join(dir, "git"), demoRepo, map[string]string{
		"README.md": "# hello\n\nA tiny project for the taskworker demo.\n",
		"hello.sh":  "#!/bin/sh\necho hello\n",
	})
	if err != nil {
		return "", fmt.Errorf("make the demo repository: %w", err)
	}
	return bare, nil
}

// demo runs one task end to end on a fresh stack and prints its log as it streams.
func demo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "folder for the demo's state (default: a new temporary folder)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir := *dataDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "taskworker-demo-"); err != nil {
			return err
		}
	}
	dir, _ = filepath.Abs(dir)

	fmt.Printf("Starting the local stack in %s …\n", dir)
	started := time.Now()
	bare, err := seedDemo(ctx, dir)
	if err != nil {
		return err
	}
	// Ephemeral ports: the demo runs beside a `devstack up` without clashing.
	stack, err := startStack(ctx, dir, "127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer stack.Stop()
	fmt.Printf("Stack up in %s: Temporal %s, Tasks API %s\n", time.Since(started).Round(time.Millisecond), stack.Temporal.HostPort(), stack.APIURL)
	fmt.Printf("Sandbox: %s\n\n", stack.Sandbox.Describe())

	cfg := stack.WorkerConfig
	api := tasksapi.New(tasksapi.Config{BaseURL: stack.APIURL, APIKey: cfg.APIKey, ProjectID: cfg.ProjectID})
	task, err := api.CreateTask(ctx, tasksapi.CreateTaskRequest{
		Title:       "Add a greeting section to the README",
		Description: "The README should greet its readers. Add a short section, and note the change in CHANGES.md.",
		Repository:  demoRepo,
	})
	if err != nil {
		return fmt.Errorf("create the task: %w", err)
	}
	fmt.Printf("Task %s (%s): %s\n", task.Slug, task.ID, task.Title)
	kicked, err := api.RunTask(ctx, task.ID)
	if err != nil {
		return fmt.Errorf("run the task: %w", err)
	}
	run := *kicked.LatestRun
	fmt.Printf("Run %s kicked off (workflow %s)\n\n", run.ID, kickoff.WorkflowID(task.ID, run.ID))

	run, err = follow(ctx, api, task.ID, run.ID)
	if err != nil {
		return err
	}
	printSummary(stack, run, bare, dir)
	if run.Status != tasksapi.StatusCompleted {
		return fmt.Errorf("run ended %s", run.Status)
	}
	return nil
}

// follow prints the run's new log entries until the run has ended and its log is complete.
func follow(ctx context.Context, api *tasksapi.Client, taskID, runID string) (tasksapi.TaskRun, error) {
	printed := 0
	deadline := time.Now().Add(10 * time.Minute)
	for {
		run, err := api.GetRun(ctx, taskID, runID)
		if err != nil {
			return run, err
		}
		entries, err := api.Logs(ctx, taskID, runID)
		if err != nil {
			return run, err
		}
		for _, e := range entries[printed:] {
			fmt.Println("  " + devstack.RenderEntry(e))
		}
		printed = len(entries)
		if run.Status.Terminal() {
			return run, nil
		}
		if time.Now().After(deadline) {
			return run, errors.New("the run did not end within 10 minutes")
		}
		select {
		case <-ctx.Done():
			return run, ctx.Err()
		case <-time.After(150 * time.Millisecond):
		}
	}
}

func printSummary(stack *devstack.Stack, run tasksapi.TaskRun, bare, dir string) {
	fmt.Printf("\nRun %s\n", strings.ToUpper(string(run.Status)))
	if run.ErrorMessage != nil && *run.ErrorMessage != "" {
		fmt.Printf("  error      %s\n", *run.ErrorMessage)
	}
	if run.Branch != nil {
		fmt.Printf("  branch     %s\n", *run.Branch)
	}
	out := run.Output
	if sha, ok := out["commit_sha"].(string); ok {
		fmt.Printf("  commit     %s (base %v)\n", sha, out["base_sha"])
	}
	if n, ok := out["files_changed"]; ok {
		fmt.Printf("  changes    %v files, +%v -%v\n", n, out["insertions"], out["deletions"])
	}
	for _, a := range run.Artifacts {
		fmt.Printf("  artifact   %-16s %-8s %6d bytes  %s\n", a.Name, a.Type, a.Size, stack.API.ArtifactPath(run.ID, a.Name))
	}
	if run.CompletedAt != nil {
		fmt.Printf("  took       %s\n", run.CompletedAt.Sub(run.CreatedAt).Round(time.Millisecond))
	}
	fmt.Println("\nWhere to look:")
	if run.Branch != nil {
		fmt.Printf("  git -C %s log --stat -1 %s\n", bare, *run.Branch)
	}
	fmt.Printf("  state of this demo: %s (run `devstack up -data-dir %s` to serve it again)\n", dir, dir)
	raw, _ := json.Marshal(map[string]any{"status": run.Status, "branch": run.Branch, "output": run.Output})
	fmt.Printf("  run record: %s\n", raw)
}
