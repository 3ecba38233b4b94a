package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/artifacts"
	"github.com/taskworker/taskworker/internal/fence"
	"github.com/taskworker/taskworker/internal/github"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/structured"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// runStep frames a workspace step: it records the run's stage (StartRun has
// already set the first one) and wraps fn, which returns the detail of its
// completion, in progress entries on the step's own log stream. The activity
// around it heartbeats (holdAttempt), through the final flush too: a flush
// that waits out an API outage must not look like a lost worker.
// It returns how many of the step's log entries were lost; a log the API
// refused for good fails the step.
// prior is what the activity's earlier steps lost: a failure reports the sum.
func (a *Activities) runStep(ctx context.Context, ref RunRef, step, startDetail string, prior int, fn func(log *logstream.Stream) (string, error)) (int, error) {
	if step != StepClone {
		// The stage only informs; a Tasks API that is down for a while must
		// not cost the run a step (the agent above all, which never retries).
		// One that refuses the run for good still ends it.
		if err := a.setStage(ctx, ref, step); err != nil {
			if !tasksapi.IsRetryable(err) {
				return prior, a.temporalError(err, prior)
			}
			a.logger(ref).Warn("stage not recorded", zap.String("stage", step), zap.String("error", a.redactError(err)))
		}
	}
	log := a.stream(ctx, ref, step, false)
	progress(log, step, acp.StepStarted, startDetail)
	began := time.Now()
	detail, err := fn(log)
	if cause := fence.Cause(ctx); err != nil && cause != nil {
		// Stopped because its attempt was fenced, whatever stopping broke.
		err = cause
	}
	a.Metrics.Step(step, time.Since(began), err)
	if err != nil {
		progress(log, step, acp.StepFailed, a.redactError(err))
	} else {
		progress(log, step, acp.StepCompleted, detail)
	}
	dropped, logErr := a.closeStream(ctx, ref, log, 0)
	if err == nil && logErr != nil {
		err = logErr
	}
	return prior + dropped, a.temporalError(err, prior+dropped)
}

func (a *Activities) prepareWorkspace(ctx context.Context, run RunContext, log *logstream.Stream) (Workspace, error) {
	ws := a.workspaceFor(run.RunRef)
	// A retried attempt starts from scratch.
	if err := os.RemoveAll(ws.Root); err != nil {
		return ws, fmt.Errorf("clear workspace %s: %w", ws.Root, err)
	}
	// The root lets the run's uid pass to its own folders, and no further.
	if err := os.MkdirAll(ws.Root, 0o711); err != nil {
		return ws, fmt.Errorf("create workspace %s: %w", ws.Root, err)
	}
	for _, dir := range []string{ws.ArtifactsDir, ws.HomeDir, ws.OutDir} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return ws, fmt.Errorf("create workspace %s: %w", ws.Root, err)
		}
	}
	if err := os.Mkdir(ws.WorkerDir, 0o700); err != nil {
		return ws, fmt.Errorf("create workspace %s: %w", ws.Root, err)
	}
	base := run.BaseBranch
	if base == "" {
		base = a.Config.BaseBranch
	}
	url := gitrepo.RemoteURL(a.Config.RepoURLTemplate, run.Repository)
	co, err := a.Cache.Checkout(ctx, run.Repository, url, ws.RepoDir, ws.GitDir, base)
	if err != nil {
		var gitErr *gitrepo.Error
		var unborn *gitrepo.UnbornHeadError
		switch {
		case errors.As(err, &unborn) && unborn.NoBranches:
			return ws, permanent("clone %s: %v: push a commit to it and run the task again", run.Repository, err)
		case errors.As(err, &unborn):
			return ws, permanent("clone %s: %v: push a commit to it, make a branch that has commits the default, or name the base branch (the run's state.pr_base_branch or TASKWORKER_BASE_BRANCH), and run the task again", run.Repository, err)
		case errors.As(err, &gitErr) && gitErr.NotFound():
			return ws, fmt.Errorf("clone %s: the repository does not exist or this worker can't read it (check the task's repository and TASKWORKER_GITHUB_TOKEN): %w", run.Repository, err)
		case errors.As(err, &gitErr) && gitErr.RemoteBranchMissing():
			return ws, permanent("clone %s: base branch %q does not exist (it comes from the run's state.pr_base_branch or TASKWORKER_BASE_BRANCH)", run.Repository, base)
		}
		return ws, fmt.Errorf("clone %s: %w", run.Repository, err)
	}
	ws.CacheHit = co.Hit
	switch {
	case co.Rebuilt:
		a.Metrics.CloneCache("rebuilt")
	case co.Hit:
		a.Metrics.CloneCache("hit")
	default:
		a.Metrics.CloneCache("miss")
	}
	if co.Rebuilt {
		log.Console(acp.LevelWarn, "the repository cache was damaged; it was rebuilt from the remote")
	}
	if base == "" {
		log.Console(acp.LevelInfo, fmt.Sprintf("starting from %s, the repository's default branch", co.Branch))
	}
	repo := co.Repo
	if ws.BaseBranch, err = repo.CurrentBranch(ctx); err != nil {
		return ws, fmt.Errorf("clone %s: %w", run.Repository, err)
	}
	// A branch an earlier run of this task pushed is where this run goes on,
	// so its pull request keeps its history and nothing needs a force push.
	// One pushed under the old lower-case name counts when it is the only one.
	ws.Branch = run.Branch
	for _, branch := range []string{run.Branch, run.LegacyBranch} {
		if branch == "" {
			continue
		}
		if ws.BranchSHA, err = a.Cache.RemoteBranch(ctx, run.Repository, branch); err != nil {
			return ws, err
		}
		if ws.BranchSHA != "" {
			ws.Branch = branch
			break
		}
	}
	if ws.BranchSHA != "" {
		if err := repo.CheckoutBranch(ctx, ws.Branch, ws.BranchSHA); err != nil {
			return ws, fmt.Errorf("check out %s: %w", ws.Branch, err)
		}
		log.Console(acp.LevelInfo, fmt.Sprintf("branch %s exists from an earlier run (at %s); this run continues on it", ws.Branch, short(ws.BranchSHA)))
	}
	if ws.BaseSHA, err = repo.Head(ctx); err != nil {
		return ws, permanent("clone %s: %v", run.Repository, err)
	}
	return ws, nil
}

// AgentInput is what RunAgent works on.
type AgentInput struct {
	Run RunContext `json:"run"`
}

// AgentOutput is the workspace the agent worked in and what it said.
type AgentOutput struct {
	Workspace  Workspace `json:"workspace"`
	Summary    string    `json:"summary,omitempty"`
	LogDropped int       `json:"log_dropped,omitempty"`
	// Result is the agent's JSON result, valid against the task's json_schema.
	Result json.RawMessage `json:"result,omitempty"`
}

// cloneAttempts bounds the retries of a clone that could not reach the
// remote: RunAgent as a whole is never retried, as its agent must not run twice.
// This is the one level of retries of git's network in RunAgent. Worst case:
// 3 clones, 2 s and 4 s apart, within the step's own deadline.
const cloneAttempts = 3

// RunAgent clones the repository into a fresh workspace and runs the coding
// agent in it, streaming what it says to the run's log. One step, not two:
// each step costs a trip through the server, and this one is on the path
// from kick-off to agent. Cancelling it stops the agent's process group, and
// so does its attempt being fenced (holdAttempt, watchRun).
func (a *Activities) RunAgent(ctx context.Context, in AgentInput) (AgentOutput, error) {
	ctx, release := a.holdAttempt(ctx, in.Run.RunRef)
	defer release()
	ctx, worker := a.watchWorkerStop(ctx)
	defer worker.release()
	ref := in.Run.RunRef
	var out AgentOutput
	dropped, err := a.runStep(ctx, ref, StepClone, in.Run.Repository, 0, func(log *logstream.Stream) (string, error) {
		if err := a.recordAttempt(ctx, in.Run, log); err != nil {
			return "", err
		}
		ws, err := a.prepareWorkspace(ctx, in.Run, log)
		for attempt := 1; attempt < cloneAttempts && retryableClone(err) && ctx.Err() == nil; attempt++ {
			log.Console(acp.LevelWarn, fmt.Sprintf("clone failed, trying again: %s", a.redactError(err)))
			select {
			case <-time.After(time.Duration(attempt) * 2 * time.Second):
			case <-ctx.Done():
			}
			ws, err = a.prepareWorkspace(ctx, in.Run, log)
		}
		out.Workspace = ws
		source := "cloned"
		if ws.CacheHit {
			source = "from cache"
		}
		return fmt.Sprintf("%s@%s (%s), %s", in.Run.Repository, ws.BaseBranch, short(ws.BaseSHA), source), err
	})
	out.LogDropped = dropped
	if err != nil {
		return out, err
	}
	out.LogDropped, err = a.runStep(ctx, ref, StepAgent, a.Agent.Name(), dropped, func(log *logstream.Stream) (string, error) {
		if worker.stopped() {
			return "", worker.err()
		}
		agentCtx, cancel := context.WithTimeout(ctx, in.Run.AgentTimeout)
		defer cancel()
		defer worker.onStop(cancel)()
		watch := a.watchRun(agentCtx, ref, in.Run.HostAttempt, cancel)
		box, err := a.startSandbox(out.Workspace, log)
		if err != nil {
			return "", err
		}
		defer box.close()
		model := a.modelAccess(ref, in.Run.Budget(a.Config), box)
		defer model.revoke()
		stopAtBudget := model.stopAtBudget(agentCtx, cancel)
		outputFile := filepath.Join(out.Workspace.OutDir, "output.json")
		res, err := a.Agent.Run(agentCtx, agent.Request{
			Task: agent.Task{
				ID: ref.TaskID, RunID: ref.RunID, Title: in.Run.Title,
				Description: in.Run.Description, Repository: in.Run.Repository,
				JSONSchema: in.Run.JSONSchema,
			},
			Dir:          out.Workspace.RepoDir,
			ArtifactsDir: out.Workspace.ArtifactsDir,
			HomeDir:      out.Workspace.HomeDir,
			WorkerDir:    out.Workspace.WorkerDir,
			OutputFile:   outputFile,
			Isolation:    box.isolation(),
			Model:        model.access,
			Proxy:        box.proxyURL(),
		}, log)
		res.Usage = model.counted(res.Usage)
		if fence.Cause(ctx) == nil && watch.superseded() == nil {
			a.recordUsage(ctx, ref, res, log)
		}
		var exitErr *agent.ExitError
		switch {
		case err == nil:
			a.Metrics.AgentExit(0, false)
		case errors.As(err, &exitErr):
			a.Metrics.AgentExit(exitErr.Result.ExitCode, exitErr.Result.Signal != "")
		}
		switch {
		case err == nil:
			out.Summary = a.Redactor.String(res.Summary)
			if len(in.Run.JSONSchema) > 0 {
				var output artifacts.Path
				if output, err = a.agentWrote(outputFile); err == nil {
					out.Result, err = a.agentResult(in.Run.JSONSchema, res, output, log)
				}
			}
		case fence.Cause(ctx) != nil:
			err = fence.Cause(ctx)
			log.Console(acp.LevelWarn, "agent stopped: "+err.Error())
		case ctx.Err() != nil:
			log.Console(acp.LevelWarn, "agent stopped: the run was cancelled")
			err = ctx.Err()
		case worker.stopped():
			log.Console(acp.LevelWarn, "agent stopped: this worker is shutting down and its drain timeout ran out")
			err = worker.err()
		case stopAtBudget() != "":
			log.Console(acp.LevelWarn, "agent stopped: the run's "+stopAtBudget())
			err = permanent("%s", stopAtBudget())
		case watch.ended() != "":
			log.Console(acp.LevelWarn, fmt.Sprintf("agent stopped: the run was ended elsewhere (%s)", watch.ended()))
			err = alreadyEnded(tasksapi.Status(watch.ended()))
		case watch.superseded() != nil:
			err = watch.superseded()
			log.Console(acp.LevelWarn, "agent stopped: "+err.Error())
		case watch.refused() != nil:
			log.Console(acp.LevelError, "agent stopped: the Tasks API refused to show the run: "+a.redactError(watch.refused()))
			err = fmt.Errorf("the agent was stopped: the Tasks API refused to show the run while it worked: %w", watch.refused())
		case agentCtx.Err() != nil:
			err = &agentTimeoutError{after: in.Run.AgentTimeout.String()}
		}
		return "", err
	})
	if err != nil && worker.stopped() {
		// The workflow sends no cleanup to a worker on its way out.
		_ = a.CleanupWorkspace(context.WithoutCancel(ctx), ref)
	}
	return out, err
}

// recordUsage writes what the agent reported it cost into the run's output
// (usage) and state (agent_session), failed runs included.
func (a *Activities) recordUsage(ctx context.Context, ref RunRef, res agent.Result, log *logstream.Stream) {
	if len(res.Usage) == 0 && res.Session == "" {
		return
	}
	a.Metrics.AgentUsage(res.Usage)
	update := tasksapi.RunUpdate{}
	if len(res.Usage) > 0 {
		update.Output = map[string]any{"usage": res.Usage}
	}
	if res.Session != "" {
		update.State = map[string]any{"agent_session": res.Session}
	}
	if _, err := a.API.UpdateRun(context.WithoutCancel(ctx), ref.TaskID, ref.RunID, update); err != nil {
		log.Console(acp.LevelWarn, "could not record the agent's usage on the run: "+a.redactError(err))
	}
}

// agentResult finds the agent's JSON result and checks it against the
// task's schema; a missing or invalid one fails the run, naming why.
func (a *Activities) agentResult(schema json.RawMessage, res agent.Result, outputFile artifacts.Path, log *logstream.Stream) (json.RawMessage, error) {
	compiled, err := structured.Compile(schema)
	if err != nil {
		return nil, permanent("%v", err)
	}
	result, source, err := structured.Find(res.Structured, outputFile, res.Summary)
	if err != nil {
		return nil, permanent("%s", a.Redactor.String(err.Error()))
	}
	if err := compiled.Validate(result); err != nil {
		return nil, permanent("%s (from %s)", a.Redactor.String(err.Error()), source)
	}
	log.Console(acp.LevelInfo, fmt.Sprintf("the agent's result (from %s) matches the task's json_schema", source))
	return json.RawMessage(a.Redactor.String(string(result))), nil
}

// withResult puts a schema-checked result into the run's output (see
// structured.Merge: the worker's own keys always win) and says in the log
// which of the result's keys are kept under output.result for that.
func withResult(output map[string]any, result json.RawMessage, log *logstream.Stream) map[string]any {
	output, moved := structured.Merge(output, result)
	if len(moved) > 0 {
		log.Console(acp.LevelWarn, fmt.Sprintf("the agent's result has keys the worker writes itself (%s); they are kept under output.%s",
			strings.Join(moved, ", "), structured.ResultKey))
	}
	return output
}

// agentWrote is path, a file or folder of a run's workspace, as one read
// back safely: the workspace dir is the worker's, all below it the agent's.
func (a *Activities) agentWrote(path string) (artifacts.Path, error) {
	return artifacts.Beneath(a.Config.WorkspaceDir, path)
}

// retryableClone reports a clone that failed for a reason a retry may fix.
func retryableClone(err error) bool {
	var gitErr *gitrepo.Error
	return errors.As(err, &gitErr) && gitErr.Unreachable()
}

// PublishInput is what Publish works on.
type PublishInput struct {
	Run       RunContext  `json:"run"`
	Workspace Workspace   `json:"workspace"`
	Agent     AgentOutput `json:"agent"`
}

// PublishOutput says what was pushed.
type PublishOutput struct {
	Changed      bool   `json:"changed"`
	Branch       string `json:"branch,omitempty"`
	CommitSHA    string `json:"commit_sha,omitempty"`
	BaseSHA      string `json:"base_sha"`
	FilesChanged int    `json:"files_changed"`
	Insertions   int    `json:"insertions"`
	Deletions    int    `json:"deletions"`
	// Artifacts names what was uploaded.
	Artifacts  []string `json:"artifacts,omitempty"`
	LogDropped int      `json:"log_dropped,omitempty"`
	// Cleaned is true when the step removed the workspace after itself.
	Cleaned bool `json:"cleaned,omitempty"`
}

// Publish commits what the agent changed on the run's branch, pushes it,
// records branch and output on the run, then uploads the artifacts and, the
// run's last step on this host, removes the workspace. A retry is safe: a
// push whose commit is already on the remote counts as done, and artifacts
// replace their namesakes. A step of an attempt that was fenced pushes,
// PATCHes and uploads nothing more (holdsRun).
func (a *Activities) Publish(ctx context.Context, in PublishInput) (PublishOutput, error) {
	ctx, release := a.holdAttempt(ctx, in.Run.RunRef)
	defer release()
	var out PublishOutput
	if err := a.holdsRun(ctx, in.Run); err != nil {
		return out, a.temporalError(err)
	}
	dropped, err := a.runStep(ctx, in.Run.RunRef, StepPublish, "", 0, func(log *logstream.Stream) (string, error) {
		var err error
		if out, err = a.publish(ctx, in, log); err != nil || !out.Changed {
			return "no changes", err
		}
		return fmt.Sprintf("%s at %s: %d files, +%d -%d", out.Branch, short(out.CommitSHA), out.FilesChanged, out.Insertions, out.Deletions), nil
	})
	out.LogDropped = dropped
	if err != nil {
		return out, err
	}
	out.LogDropped, err = a.runStep(ctx, in.Run.RunRef, StepArtifacts, "", dropped, func(log *logstream.Stream) (string, error) {
		var err error
		out.Artifacts, err = a.uploadArtifacts(ctx, in, out, log)
		return fmt.Sprintf("%d uploaded", len(out.Artifacts)), err
	})
	if err == nil {
		out.Cleaned = a.CleanupWorkspace(ctx, in.Run.RunRef) == nil
	}
	return out, err
}

func (a *Activities) publish(ctx context.Context, in PublishInput, log *logstream.Stream) (PublishOutput, error) {
	ref, ws := in.Run.RunRef, in.Workspace
	branch := ws.Branch
	if branch == "" {
		branch = in.Run.Branch
	}
	out := PublishOutput{BaseSHA: ws.BaseSHA, Branch: branch}
	if ws.GitDir == "" {
		return out, permanent("the workspace has no git dir of the worker's (it was made by an older worker); run the task again")
	}
	repo := a.Git.Open(ws.RepoDir, ws.GitDir)
	a.keepAgentCommits(ctx, repo, ws, log)
	if _, err := repo.CommitAll(ctx, commitMessage(in.Run), a.Config.Author); err != nil {
		return out, err
	}
	head, err := repo.Head(ctx)
	if err != nil {
		return out, err
	}
	output := map[string]any{"base_sha": ws.BaseSHA, "changed": false}
	if in.Agent.Summary != "" {
		output["summary"] = in.Agent.Summary
	}
	if head == ws.BaseSHA {
		log.Console(acp.LevelInfo, "the agent changed nothing; no branch pushed")
		if err := a.holdsRun(ctx, in.Run); err != nil {
			return out, err
		}
		_, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Output: withResult(output, in.Agent.Result, log)})
		return out, err
	}

	if err := repo.SwitchBranch(ctx, branch); err != nil {
		return out, fmt.Errorf("create branch %s: %w", branch, err)
	}
	url := gitrepo.RemoteURL(a.Config.RepoURLTemplate, in.Run.Repository)
	if err := a.holdsRun(ctx, in.Run); err != nil {
		return out, err
	}
	if err := a.Cache.Push(ctx, in.Run.Repository, url, repo, branch, ws.BranchSHA); err != nil {
		var gitErr *gitrepo.Error
		if errors.As(err, &gitErr) && strings.Contains(gitErr.Stderr, "stale info") {
			return out, permanent("push %s: the branch changed on the remote while this run worked; nothing was overwritten, run the task again to build on it", branch)
		}
		return out, fmt.Errorf("push %s: %w", branch, err)
	}
	stat, err := repo.DiffStat(ctx, ws.BaseSHA, head)
	if err != nil {
		return out, err
	}
	out = PublishOutput{Changed: true, Branch: branch, CommitSHA: head, BaseSHA: ws.BaseSHA,
		FilesChanged: len(stat.Files), Insertions: stat.Insertions, Deletions: stat.Deletions}
	log.Emit(acp.BranchCreated(branch))
	output["changed"] = true
	output["head_branch"] = branch
	output["base_branch"] = ws.BaseBranch
	output["commit_sha"] = head
	output["files_changed"] = out.FilesChanged
	output["insertions"] = out.Insertions
	output["deletions"] = out.Deletions
	if err := a.holdsRun(ctx, in.Run); err != nil {
		return out, err
	}
	if in.Run.CreatePR {
		if err := a.pullRequest(ctx, in, out, output, log); err != nil {
			return out, err
		}
	}
	if _, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Branch: &branch, Output: withResult(output, in.Agent.Result, log)}); err != nil {
		return out, fmt.Errorf("record branch %s on the run: %w", branch, err)
	}
	return out, nil
}

// keepAgentCommits puts the commits the agent made itself under the
// worker's: exported from its clone by ExportCommits, checked, and kept if
// they descend from the base. Commits that can't be kept cost only their
// history: the agent's files are committed all the same.
func (a *Activities) keepAgentCommits(ctx context.Context, repo *gitrepo.Repo, ws Workspace, log *logstream.Stream) {
	export := a.ExportCommits
	if export == nil {
		export = a.sandboxedExport(ws)
	}
	n, err := repo.KeepCommits(ctx, export, ws.BaseSHA, filepath.Join(ws.OutDir, "commits.bundle"))
	switch {
	case err != nil:
		log.Console(acp.LevelWarn, fmt.Sprintf("the agent's own commits can't be kept (%s); its changes are committed as one commit on %s", a.redactError(err), short(ws.BaseSHA)))
	case n > 0:
		log.Console(acp.LevelInfo, fmt.Sprintf("kept %d commits the agent made itself", n))
	}
}

// pullRequest opens (or finds) the run's pull request and records it in
// output. A failure keeps the pushed branch: it is recorded as
// output.pr_error, and fails the run only when configured strict.
func (a *Activities) pullRequest(ctx context.Context, in PublishInput, pub PublishOutput, output map[string]any, log *logstream.Stream) error {
	if a.GitHub == nil {
		output["pr_error"] = "no pull request: TASKWORKER_GITHUB_TOKEN is not set"
		log.Console(acp.LevelWarn, "create_pr was requested, but no GitHub token is configured; the branch is pushed")
		return nil
	}
	owner, repo, _ := strings.Cut(in.Run.Repository, "/")
	pr, created, err := a.GitHub.OpenOrFind(ctx, owner, repo, github.NewPullRequest{
		Title: prTitle(in.Run), Head: pub.Branch, Base: in.Workspace.BaseBranch, Body: a.prBody(in, pub),
	})
	if err != nil {
		msg := a.Redactor.String(err.Error())
		if a.Config.PRStrict {
			return &pullRequestError{err: err, branch: pub.Branch} // temporalError redacts it
		}
		output["pr_error"] = msg
		log.Console(acp.LevelWarn, "no pull request: "+msg+"; the branch is pushed")
		return nil
	}
	output["pr_url"] = pr.HTMLURL
	verb := "opened"
	if !created {
		verb = "updated"
	}
	log.Console(acp.LevelInfo, fmt.Sprintf("pull request %s: %s", verb, pr.HTMLURL))
	return nil
}

func prTitle(run RunContext) string {
	title := strings.TrimSpace(strings.SplitN(run.Title, "\n", 2)[0])
	if title == "" {
		return "Changes for task " + run.TaskID
	}
	return title
}

func (a *Activities) prBody(in PublishInput, pub PublishOutput) string {
	var b strings.Builder
	if d := strings.TrimSpace(in.Run.Description); d != "" {
		b.WriteString(d + "\n\n")
	}
	if in.Agent.Summary != "" {
		b.WriteString("## What the agent did\n\n" + in.Agent.Summary + "\n\n")
	}
	fmt.Fprintf(&b, "%d files changed, %d insertions(+), %d deletions(-)\n\n", pub.FilesChanged, pub.Insertions, pub.Deletions)
	if url := a.runURL(in.Run.RunRef); url != "" {
		fmt.Fprintf(&b, "Made by a PostHog task run: %s\n", url)
	}
	return a.Redactor.String(b.String())
}

func (a *Activities) runURL(ref RunRef) string {
	if a.Config.RunURLTemplate == "" {
		return ""
	}
	return strings.NewReplacer("{task_id}", ref.TaskID, "{run_id}", ref.RunID).Replace(a.Config.RunURLTemplate)
}

func commitMessage(run RunContext) string {
	return fmt.Sprintf("%s\n\nTask-Id: %s\nRun-Id: %s\n", prTitle(run), run.TaskID, run.RunID)
}

var unsafeBranchChars = regexp.MustCompile(`[^A-Za-z0-9._/-]+`)

// BranchName fills {slug}, {task_id} and {run_id} in the branch template.
// The slug keeps its case, as in the names PostHog's own runner gives a
// task's branch (posthog/task-ABC-12): a task either of them started is
// continued on the same branch.
func BranchName(template string, run RunContext) string {
	return branchName(template, run, func(slug string) string { return slug })
}

// legacyBranchName is the name BranchName gave before it kept the slug's
// case; branches pushed then are still continued.
func legacyBranchName(template string, run RunContext) string {
	return branchName(template, run, strings.ToLower)
}

func branchName(template string, run RunContext, slugCase func(string) string) string {
	slug := slugCase(unsafeBranchChars.ReplaceAllString(run.Slug, "-"))
	if slug == "" {
		slug = run.TaskID
	}
	return strings.NewReplacer("{slug}", slug, "{task_id}", run.TaskID, "{run_id}", run.RunID).Replace(template)
}

// uploadArtifacts uploads every regular file the agent left in its
// artifacts folder, read back safely (see package artifacts) and one at a
// time, then the run's diff as changes.patch.
func (a *Activities) uploadArtifacts(ctx context.Context, in PublishInput, pub PublishOutput, log *logstream.Stream) ([]string, error) {
	ref := in.Run.RunRef
	var names []string
	// One request per artifact keeps each body under the API's size limit.
	upload := func(art tasksapi.Artifact) error {
		art.Source = "agent"
		if art.ContentEncoding == tasksapi.EncodingUTF8 {
			art.Content = a.Redactor.String(art.Content)
		}
		if _, err := a.API.UploadArtifacts(ctx, ref.TaskID, ref.RunID, []tasksapi.Artifact{art}); err != nil {
			return fmt.Errorf("upload artifact %s: %w", art.Name, err)
		}
		names = append(names, art.Name)
		return nil
	}
	dir, err := a.agentWrote(in.Workspace.ArtifactsDir)
	if err != nil {
		return nil, err
	}
	if err := a.holdsRun(ctx, in.Run); err != nil {
		return nil, err
	}
	warn := func(msg string) { log.Console(acp.LevelWarn, msg) }
	if err := artifacts.Walk(dir, warn, upload); err != nil {
		return names, err
	}
	if pub.Changed {
		patch, err := a.Git.Open(in.Workspace.RepoDir, in.Workspace.GitDir).Patch(ctx, pub.BaseSHA, pub.CommitSHA)
		if err != nil {
			return names, err
		}
		if len(patch) > tasksapi.MaxArtifactBytes {
			log.Console(acp.LevelWarn, fmt.Sprintf("changes.patch is %d bytes, over the %d byte artifact limit; not uploaded", len(patch), tasksapi.MaxArtifactBytes))
		} else if err := upload(artifacts.Encode("changes.patch", tasksapi.ArtifactOutput, "text/x-diff", patch)); err != nil {
			return names, err
		}
	}
	return names, nil
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
