package activities

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// PrepareWorkspace clones the repository into a fresh folder for the run and
// records the base branch and commit.
func (a *Activities) PrepareWorkspace(ctx context.Context, run RunContext) (Workspace, error) {
	var ws Workspace
	dropped, err := a.runStep(ctx, run.RunRef, StepClone, run.Repository, func(*logstream.Stream) (string, error) {
		var err error
		ws, err = a.prepareWorkspace(ctx, run)
		return fmt.Sprintf("%s@%s (%s)", run.Repository, ws.BaseBranch, short(ws.BaseSHA)), err
	})
	ws.LogDropped = dropped
	return ws, err
}

// runStep frames a workspace step: it records the run's stage (StartRun has
// already set the first one), heartbeats, and wraps fn, which returns the
// detail of its completion, in progress entries on the step's own log stream.
// It returns how many of the step's log entries were lost; a log the API
// refused for good fails the step.
func (a *Activities) runStep(ctx context.Context, ref RunRef, step, startDetail string, fn func(log *logstream.Stream) (string, error)) (int, error) {
	if step != StepClone {
		if err := a.setStage(ctx, ref, step); err != nil {
			return 0, a.classify(err)
		}
	}
	log := a.stream(ref)
	stop := keepAlive(ctx)
	progress(log, step, acp.StepStarted, startDetail)
	detail, err := fn(log)
	if err != nil {
		progress(log, step, acp.StepFailed, a.redactError(err))
	} else {
		progress(log, step, acp.StepCompleted, detail)
	}
	stop()
	dropped, logErr := a.closeStream(ref, log)
	if err == nil && logErr != nil {
		err = logErr
	}
	return dropped, a.classifyReporting(err, dropped)
}

func (a *Activities) prepareWorkspace(ctx context.Context, run RunContext) (Workspace, error) {
	ws := a.workspaceFor(run.RunRef)
	// A retried attempt starts from scratch.
	if err := os.RemoveAll(ws.Root); err != nil {
		return ws, fmt.Errorf("clear workspace %s: %w", ws.Root, err)
	}
	if err := os.MkdirAll(ws.ArtifactsDir, 0o755); err != nil {
		return ws, fmt.Errorf("create workspace %s: %w", ws.Root, err)
	}
	url := gitrepo.RemoteURL(a.Config.RepoURLTemplate, run.Repository)
	repo, err := a.Git.Clone(ctx, url, ws.RepoDir, run.BaseBranch)
	if err != nil {
		var gitErr *gitrepo.Error
		if errors.As(err, &gitErr) && gitErr.NotFound() {
			return ws, fmt.Errorf("clone %s: the repository does not exist or this worker can't read it (check the task's repository and TASKWORKER_GITHUB_TOKEN): %w", run.Repository, err)
		}
		return ws, fmt.Errorf("clone %s: %w", run.Repository, err)
	}
	if ws.BaseSHA, err = repo.Head(ctx); err != nil {
		return ws, invalidInput("clone %s: %v", run.Repository, err)
	}
	if ws.BaseBranch, err = repo.CurrentBranch(ctx); err != nil {
		return ws, fmt.Errorf("clone %s: %w", run.Repository, err)
	}
	return ws, nil
}

// AgentInput is what RunAgent works on.
type AgentInput struct {
	Run       RunContext `json:"run"`
	Workspace Workspace  `json:"workspace"`
}

// AgentOutput is what the agent produced besides its changes.
type AgentOutput struct {
	Summary    string `json:"summary,omitempty"`
	LogDropped int    `json:"log_dropped,omitempty"`
}

// RunAgent runs the coding agent in the clone and streams what it says to the
// run's log. Cancelling the activity stops the agent's whole process group.
func (a *Activities) RunAgent(ctx context.Context, in AgentInput) (AgentOutput, error) {
	ref := in.Run.RunRef
	var out AgentOutput
	var err error
	out.LogDropped, err = a.runStep(ctx, ref, StepAgent, a.Agent.Name(), func(log *logstream.Stream) (string, error) {
		agentCtx, cancel := context.WithTimeout(ctx, in.Run.AgentTimeout)
		defer cancel()
		res, err := a.Agent.Run(agentCtx, agent.Request{
			Task: agent.Task{
				ID: ref.TaskID, RunID: ref.RunID, Title: in.Run.Title,
				Description: in.Run.Description, Repository: in.Run.Repository,
			},
			Dir:          in.Workspace.RepoDir,
			ArtifactsDir: in.Workspace.ArtifactsDir,
			ScratchDir:   in.Workspace.Root,
		}, log)
		switch {
		case err == nil:
			out.Summary = a.Redactor.String(res.Summary)
		case ctx.Err() != nil:
			log.Console(acp.LevelWarn, "agent stopped: the run was cancelled")
			err = ctx.Err()
		case agentCtx.Err() != nil:
			err = &agentTimeoutError{after: in.Run.AgentTimeout.String()}
		}
		return "", err
	})
	return out, err
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
	LogDropped   int    `json:"log_dropped,omitempty"`
}

// Publish commits what the agent changed on the run's branch, pushes it, and
// records branch and output on the run.
func (a *Activities) Publish(ctx context.Context, in PublishInput) (PublishOutput, error) {
	var out PublishOutput
	dropped, err := a.runStep(ctx, in.Run.RunRef, StepPublish, "", func(log *logstream.Stream) (string, error) {
		var err error
		if out, err = a.publish(ctx, in, log); err != nil || !out.Changed {
			return "no changes", err
		}
		return fmt.Sprintf("%s at %s: %d files, +%d -%d", out.Branch, short(out.CommitSHA), out.FilesChanged, out.Insertions, out.Deletions), nil
	})
	out.LogDropped = dropped
	return out, err
}

func (a *Activities) publish(ctx context.Context, in PublishInput, log *logstream.Stream) (PublishOutput, error) {
	ref, ws := in.Run.RunRef, in.Workspace
	repo := a.Git.Open(ws.RepoDir)
	out := PublishOutput{BaseSHA: ws.BaseSHA}
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
		_, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Output: output})
		return out, err
	}

	branch := BranchName(a.Config.BranchTemplate, in.Run)
	if !a.Git.ValidBranchName(ctx, branch) {
		return out, invalidInput("branch name %q (from TASKWORKER_BRANCH_TEMPLATE %q) is not a valid git branch name", branch, a.Config.BranchTemplate)
	}
	if err := repo.SwitchBranch(ctx, branch); err != nil {
		return out, fmt.Errorf("create branch %s: %w", branch, err)
	}
	url := gitrepo.RemoteURL(a.Config.RepoURLTemplate, in.Run.Repository)
	remoteSHA, err := repo.RemoteBranch(ctx, url, branch)
	if err != nil {
		return out, fmt.Errorf("look up %s on the remote: %w", branch, err)
	}
	if remoteSHA != "" {
		log.Console(acp.LevelInfo, fmt.Sprintf("branch %s exists on the remote at %s; this run replaces it", branch, short(remoteSHA)))
	}
	if err := repo.Push(ctx, url, branch, remoteSHA); err != nil {
		return out, fmt.Errorf("push %s: %w", branch, err)
	}
	stat, err := repo.DiffStat(ctx, ws.BaseSHA, head)
	if err != nil {
		return out, err
	}
	out = PublishOutput{Changed: true, Branch: branch, CommitSHA: head, BaseSHA: ws.BaseSHA,
		FilesChanged: len(stat.Files), Insertions: stat.Insertions, Deletions: stat.Deletions}
	log.Emit(acp.BranchCreated(branch))
	if in.Run.CreatePR {
		log.Console(acp.LevelInfo, "create_pr was requested, but this worker does not open pull requests yet; the branch is pushed")
	}
	output["changed"] = true
	output["head_branch"] = branch
	output["commit_sha"] = head
	output["files_changed"] = out.FilesChanged
	output["insertions"] = out.Insertions
	output["deletions"] = out.Deletions
	if _, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Branch: &branch, Output: output}); err != nil {
		return out, fmt.Errorf("record branch %s on the run: %w", branch, err)
	}
	return out, nil
}

func commitMessage(run RunContext) string {
	title := strings.TrimSpace(strings.SplitN(run.Title, "\n", 2)[0])
	if title == "" {
		title = "Changes for task " + run.TaskID
	}
	return fmt.Sprintf("%s\n\nTask-Id: %s\nRun-Id: %s\n", title, run.TaskID, run.RunID)
}

var unsafeBranchChars = regexp.MustCompile(`[^A-Za-z0-9._/-]+`)

// BranchName fills {slug}, {task_id} and {run_id} in the branch template.
func BranchName(template string, run RunContext) string {
	slug := strings.ToLower(unsafeBranchChars.ReplaceAllString(run.Slug, "-"))
	if slug == "" {
		slug = run.TaskID
	}
	return strings.NewReplacer("{slug}", slug, "{task_id}", run.TaskID, "{run_id}", run.RunID).Replace(template)
}

// ArtifactsInput is what UploadArtifacts works on.
type ArtifactsInput struct {
	Run       RunContext    `json:"run"`
	Workspace Workspace     `json:"workspace"`
	Publish   PublishOutput `json:"publish"`
}

// ArtifactsOutput names what was uploaded.
type ArtifactsOutput struct {
	Names      []string `json:"names"`
	LogDropped int      `json:"log_dropped,omitempty"`
}

// UploadArtifacts uploads every regular file the agent left in its artifacts
// folder, and the run's diff as changes.patch.
func (a *Activities) UploadArtifacts(ctx context.Context, in ArtifactsInput) (ArtifactsOutput, error) {
	var out ArtifactsOutput
	dropped, err := a.runStep(ctx, in.Run.RunRef, StepArtifacts, "", func(log *logstream.Stream) (string, error) {
		var err error
		out, err = a.uploadArtifacts(ctx, in, log)
		return fmt.Sprintf("%d uploaded", len(out.Names)), err
	})
	out.LogDropped = dropped
	return out, err
}

func (a *Activities) uploadArtifacts(ctx context.Context, in ArtifactsInput, log *logstream.Stream) (ArtifactsOutput, error) {
	ref := in.Run.RunRef
	artifacts, err := collectArtifacts(in.Workspace.ArtifactsDir, log)
	if err != nil {
		return ArtifactsOutput{}, err
	}
	if in.Publish.Changed {
		patch, err := a.Git.Open(in.Workspace.RepoDir).Patch(ctx, in.Publish.BaseSHA, in.Publish.CommitSHA)
		if err != nil {
			return ArtifactsOutput{}, err
		}
		if len(patch) > tasksapi.MaxArtifactBytes {
			log.Console(acp.LevelWarn, fmt.Sprintf("changes.patch is %d bytes, over the %d byte artifact limit; not uploaded", len(patch), tasksapi.MaxArtifactBytes))
		} else {
			artifacts = append(artifacts, encodeArtifact("changes.patch", tasksapi.ArtifactOutput, "text/x-diff", patch))
		}
	}
	var out ArtifactsOutput
	// One request per artifact keeps each body under the API's size limit.
	for _, art := range artifacts {
		art.Source = "agent"
		if art.ContentEncoding == tasksapi.EncodingUTF8 {
			art.Content = a.Redactor.String(art.Content)
		}
		if _, err := a.API.UploadArtifacts(ctx, ref.TaskID, ref.RunID, []tasksapi.Artifact{art}); err != nil {
			return out, fmt.Errorf("upload artifact %s: %w", art.Name, err)
		}
		out.Names = append(out.Names, art.Name)
	}
	return out, nil
}

// collectArtifacts reads the regular files under dir. Symlinks and files over
// the API's limit are skipped with a warning, never followed or cut.
func collectArtifacts(dir string, log *logstream.Stream) ([]tasksapi.Artifact, error) {
	var artifacts []tasksapi.Artifact
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case !info.Mode().IsRegular():
			log.Console(acp.LevelWarn, fmt.Sprintf("artifact %s is not a regular file (symlink or device); skipped", rel))
			return nil
		case info.Size() > tasksapi.MaxArtifactBytes:
			log.Console(acp.LevelWarn, fmt.Sprintf("artifact %s is %d bytes, over the %d byte limit; skipped", rel, info.Size(), tasksapi.MaxArtifactBytes))
			return nil
		case seen[d.Name()]:
			log.Console(acp.LevelWarn, fmt.Sprintf("artifact %s has the same name as another one; skipped", rel))
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read artifact %s: %w", rel, err)
		}
		seen[d.Name()] = true
		artifacts = append(artifacts, encodeArtifact(d.Name(), artifactType(d.Name()), "", data))
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("collect artifacts in %s: %w", dir, err)
	}
	return artifacts, nil
}

func artifactType(name string) string {
	switch strings.ToLower(name) {
	case "plan.md":
		return tasksapi.ArtifactPlan
	case "context.md":
		return tasksapi.ArtifactContext
	}
	return tasksapi.ArtifactGeneric
}

func encodeArtifact(name, typ, contentType string, data []byte) tasksapi.Artifact {
	if contentType == "" {
		contentType = mime.TypeByExtension(filepath.Ext(name))
	}
	if utf8.Valid(data) {
		if contentType == "" {
			contentType = "text/plain"
		}
		return tasksapi.Artifact{Name: name, Type: typ, Content: string(data), ContentType: contentType, ContentEncoding: tasksapi.EncodingUTF8}
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	return tasksapi.Artifact{Name: name, Type: typ, Content: base64.StdEncoding.EncodeToString(data), ContentType: contentType, ContentEncoding: tasksapi.EncodingBase64}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
