package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/runstate"
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
	interactive := fs.Bool("interactive", false, "run the task in interactive mode: a first turn, a follow-up message, a second turn, then end the run")
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
	var kicked tasksapi.Task
	if *interactive {
		kicked, err = api.RunTaskWith(ctx, task.ID, tasksapi.RunTaskRequest{Mode: runstate.Interactive})
	} else {
		kicked, err = api.RunTask(ctx, task.ID)
	}
	if err != nil {
		return fmt.Errorf("run the task: %w", err)
	}
	run := *kicked.LatestRun
	fmt.Printf("Run %s kicked off (workflow %s)\n\n", run.ID, kickoff.WorkflowID(task.ID, run.ID))

	f := &follower{api: api, taskID: task.ID, runID: run.ID}
	if *interactive {
		run, err = converse(ctx, stack, f)
	} else {
		run, err = f.until(ctx, "the run to end", nil)
	}
	if err != nil {
		return err
	}
	printSummary(stack, run, bare, dir)
	if run.Status != tasksapi.StatusCompleted {
		return fmt.Errorf("run ended %s", run.Status)
	}
	return nil
}

// demoFollowUp is the message the interactive demo sends after the first turn.
const demoFollowUp = "Also say goodbye at the end of the README"

// waitingNote is in the console entry an interactive run writes when its
// agent's turn is over and it waits for the next message.
const waitingNote = "waiting for a follow-up"

// followTimeout bounds each wait of the demo for the run.
const followTimeout = 10 * time.Minute

// follower prints a run's log as it streams.
type follower struct {
	api           *tasksapi.Client
	taskID, runID string
	printed       int
}

// until prints the run's new log entries until done says so; a nil done
// waits for the run's end, and a run that ends before done is an error.
func (f *follower) until(ctx context.Context, what string, done func(tasksapi.TaskRun, []json.RawMessage) bool) (tasksapi.TaskRun, error) {
	deadline := time.Now().Add(followTimeout)
	for {
		run, err := f.api.GetRun(ctx, f.taskID, f.runID)
		if err != nil {
			return run, fmt.Errorf("read the run: %w", err)
		}
		entries, err := f.api.Logs(ctx, f.taskID, f.runID)
		if err != nil {
			return run, fmt.Errorf("read the run's log: %w", err)
		}
		for _, e := range entries[min(f.printed, len(entries)):] {
			fmt.Println("  " + devstack.RenderEntry(e))
		}
		f.printed = max(f.printed, len(entries))
		switch {
		case done != nil && done(run, entries):
			return run, nil
		case run.Status.Terminal() && done == nil:
			return run, nil
		case run.Status.Terminal():
			return run, fmt.Errorf("the run ended %s before %s", run.Status, what)
		case time.Now().After(deadline):
			return run, fmt.Errorf("waited %s for %s", followTimeout, what)
		}
		select {
		case <-ctx.Done():
			return run, ctx.Err()
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// turnsWaiting is how many times the run has said its agent's turn is over
// and it waits for a message.
func turnsWaiting(entries []json.RawMessage) int {
	n := 0
	for _, raw := range entries {
		var e struct {
			Notification struct {
				Method string `json:"method"`
				Params struct {
					Message string `json:"message"`
				} `json:"params"`
			} `json:"notification"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Notification.Method == "_posthog/console" && strings.Contains(e.Notification.Params.Message, waitingNote) {
			n++
		}
	}
	return n
}

// converse drives an interactive run through two turns: the task, then a
// follow-up; then it ends the run as a user would, with a PATCH to
// completed, and waits for the workflow to close.
func converse(ctx context.Context, stack *devstack.Stack, f *follower) (tasksapi.TaskRun, error) {
	waited := func(n int) func(tasksapi.TaskRun, []json.RawMessage) bool {
		return func(_ tasksapi.TaskRun, entries []json.RawMessage) bool { return turnsWaiting(entries) >= n }
	}
	run, err := f.until(ctx, "the first turn to end", waited(1))
	switch {
	case err != nil && run.Status == tasksapi.StatusCompleted:
		return run, fmt.Errorf("%w: its workflow ran it as a background run, one turn and done; this build's process-task does not keep interactive runs open", err)
	case err != nil && run.ErrorMessage != nil:
		return run, fmt.Errorf("%w: %s", err, *run.ErrorMessage)
	}
	if err != nil {
		return run, err
	}
	fmt.Printf("\nThe first turn is over and the run waits (%s). Sending a follow-up:\n  > %s\n\n", run.Status, demoFollowUp)
	if err := f.api.SendUserMessage(ctx, f.taskID, f.runID, demoFollowUp, uuid.NewString()); err != nil {
		return run, fmt.Errorf("send the follow-up: %w", err)
	}
	if run, err = f.until(ctx, "the second turn to end", waited(2)); err != nil {
		return run, err
	}
	fmt.Printf("\nThe second turn is over. Ending the run: PATCH status completed\n\n")
	if _, err := f.api.UpdateRun(ctx, f.taskID, f.runID, tasksapi.RunUpdate{Status: tasksapi.StatusCompleted}); err != nil {
		return run, fmt.Errorf("end the run: %w", err)
	}
	// The PATCH makes the run completed at once; the workflow ends on the
	// complete_task it brings, and its last log entries come after.
	wctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	id := kickoff.WorkflowID(f.taskID, f.runID)
	if err := stack.Client.GetWorkflow(wctx, id, "").Get(wctx, nil); err != nil {
		return run, fmt.Errorf("workflow %s after the run was ended: %w", id, err)
	}
	return f.until(ctx, "the run to end", nil)
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
