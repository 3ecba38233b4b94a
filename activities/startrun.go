package activities

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/publish"
	"github.com/taskworker/taskworker/internal/runstate"
	"github.com/taskworker/taskworker/internal/structured"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// StartRun loads the task and the run, checks they can be worked on, and
// marks the run in_progress.
func (a *Activities) StartRun(ctx context.Context, ref RunRef) (RunContext, error) {
	run, err := a.startRun(ctx, ref)
	return run, a.temporalError(err)
}

func (a *Activities) startRun(ctx context.Context, ref RunRef) (RunContext, error) {
	task, err := a.API.GetTask(ctx, ref.TaskID)
	if err != nil {
		if tasksapi.IsNotFound(err) {
			return RunContext{}, permanent("task %s not found in this project (was it deleted?): %v", ref.TaskID, err)
		}
		return RunContext{}, fmt.Errorf("load task %s: %w", ref.TaskID, err)
	}
	run, err := a.API.GetRun(ctx, ref.TaskID, ref.RunID)
	if err != nil {
		if tasksapi.IsNotFound(err) {
			return RunContext{}, permanent("run %s of task %s not found: %v", ref.RunID, ref.TaskID, err)
		}
		return RunContext{}, fmt.Errorf("load run %s: %w", ref.RunID, err)
	}
	if run.Status.Terminal() {
		return RunContext{}, alreadyEnded(run.Status)
	}
	repo := task.RepositoryName()
	if repo == "" {
		return RunContext{}, permanent("task %s has no repository: set its repository to \"org/repo\" and run it again", ref.TaskID)
	}
	if err := gitrepo.ValidateRepository(repo); err != nil {
		return RunContext{}, permanent("task %s: %v", ref.TaskID, err)
	}
	rc := RunContext{
		RunRef: ref, Title: task.Title, Description: task.Description, Repository: repo,
		Slug: task.Slug, AgentTimeout: a.Config.AgentTimeout, RunTimeout: a.Config.RunTimeout,
		HeartbeatTimeout: a.Config.HeartbeatTimeout, HostAttempts: a.Config.HostAttempts,
	}
	if base, ok := run.State["pr_base_branch"].(string); ok {
		rc.BaseBranch = strings.TrimSpace(base)
	}
	if cost, ok := run.State["max_cost_usd"].(float64); ok && cost > 0 {
		rc.MaxCostUSD = cost
	}
	if tokens, ok := run.State["max_tokens"].(float64); ok && tokens > 0 {
		rc.MaxTokens = int64(tokens)
	}
	settings, notes := runstate.Read(run.State, task.OriginProduct)
	settings = settings.ForOrigin(a.Config.PublishOrigins, task.OriginProduct)
	settings, note := settings.ForAgent(a.Agent.Name())
	if note != "" {
		notes = append(notes, note)
	}
	rc.Settings = settings
	// The CI loop's follow-ups are the agent's own turns: an interactive
	// run has its user for that, and a run that doesn't push has no checks.
	rc.WatchCI = a.GitHub != nil && a.Config.CIMaxRounds > 0 && settings.Publishes() && !settings.Interactive()
	rc.CIMaxRounds, rc.CIPollEvery, rc.CITimeout = a.Config.CIMaxRounds, a.Config.CIPollEvery, a.Config.CITimeout
	if rc.Slug == "" && task.TaskNumber != nil {
		rc.Slug = fmt.Sprint(*task.TaskNumber)
	}
	if schema := bytes.TrimSpace(task.JSONSchema); len(schema) > 0 && string(schema) != "null" {
		if _, err := structured.Compile(schema); err != nil {
			return RunContext{}, permanent("task %s: %v; fix the task's json_schema and run it again", ref.TaskID, err)
		}
		rc.JSONSchema = schema
	}
	rc.Branch = publish.Branch(a.Config.BranchTemplate, rc.published())
	if !a.Git.ValidBranchName(ctx, rc.Branch) {
		return RunContext{}, permanent("branch name %q (from TASKWORKER_BRANCH_TEMPLATE %q) is not a valid git branch name", rc.Branch, a.Config.BranchTemplate)
	}
	if legacy := publish.LegacyBranch(a.Config.BranchTemplate, rc.published()); legacy != rc.Branch {
		rc.LegacyBranch = legacy
	}

	stage := StepClone
	if _, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Status: tasksapi.StatusInProgress, Stage: &stage}); err != nil {
		return RunContext{}, fmt.Errorf("mark run in_progress: %w", err)
	}
	a.Metrics.RunStarted()
	log := a.stream(ctx, ref, StartRunName, true)
	log.Emit(acp.RunStarted(ref.RunID, ref.TaskID, a.Config.Version+" "+a.Agent.Name()))
	for _, note := range notes {
		log.Console(acp.LevelWarn, note)
	}
	if settings.Interactive() {
		log.Console(acp.LevelInfo, fmt.Sprintf("interactive run: after each turn it waits for your next message, and ends when you end it or after %s without one", settings.Inactivity))
	}
	rc.LogDropped, err = a.closeStream(ctx, ref, log, 0)
	return rc, err
}

func alreadyEnded(status tasksapi.Status) error {
	return &runEndedError{status: status}
}

type runEndedError struct{ status tasksapi.Status }

func (e *runEndedError) Error() string {
	return fmt.Sprintf("run is already %s; not starting it again", e.status)
}
