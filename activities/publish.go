package activities

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/artifacts"
	"github.com/taskworker/taskworker/internal/github"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/publish"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// PublishInput is what Publish works on.
type PublishInput struct {
	Run       RunContext  `json:"run"`
	Workspace Workspace   `json:"workspace"`
	Agent     AgentOutput `json:"agent"`
	// Turn is the turn whose changes are published (1, or 0 from a workflow
	// before interactive runs: the task's own).
	Turn int `json:"turn,omitempty"`
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
	Artifacts []string `json:"artifacts,omitempty"`
	LogLoss
	// Cleaned is true when the step removed the workspace after itself.
	Cleaned bool `json:"cleaned,omitempty"`
	// PullRequest is the URL of the pull request opened or found.
	PullRequest string `json:"pull_request,omitempty"`
}

// Publish commits what the agent changed on the run's branch, pushes it,
// records branch and output on the run, then uploads the artifacts and, the
// run's last step on this host, removes the workspace. A retry is safe: a
// push whose commit is already on the remote counts as done, and artifacts
// replace their namesakes. A step of an attempt that was fenced pushes,
// PATCHes and uploads nothing more (holdsRun).
func (a *Activities) Publish(ctx context.Context, in PublishInput) (PublishOutput, error) {
	ctx, release := a.holdAttempt(inRound(ctx, in.Run.CIRound), in.Run.RunRef)
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
	if err == nil && !in.Run.Interactive() {
		// An interactive run keeps its workspace for the next turn.
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
	if in.Turn <= 1 {
		// A follow-up's own commits sit on the agent's clone, which never
		// had the worker's commit of the turn before: they can't go on top
		// of it, and the turn's tree is committed as one commit.
		a.keepAgentCommits(ctx, repo, ws, log)
	}
	if _, err := repo.CommitAll(ctx, publish.CommitMessage(in.Run.published()), a.Config.Author); err != nil {
		return out, err
	}
	head, err := repo.Head(ctx)
	if err != nil {
		return out, err
	}
	output := map[string]any{"base_sha": ws.BaseSHA, "changed": false}
	if ws.PublishedSHA != "" {
		// What an earlier turn published stays the run's output.
		output = map[string]any{}
		out.Changed, out.CommitSHA = true, ws.PublishedSHA
	}
	if in.Agent.Summary != "" {
		output["summary"] = in.Agent.Summary
	}
	if head == ws.turnBase() {
		if in.Turn > 1 {
			log.Console(acp.LevelInfo, "the agent changed nothing"+turnSuffix(in.Turn)+"; nothing pushed")
		} else {
			log.Console(acp.LevelInfo, "the agent changed nothing; no branch pushed")
		}
		if err := a.holdsRun(ctx, in.Run); err != nil {
			return out, err
		}
		_, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Output: withResult(output, in.Agent.Result, log)})
		return out, err
	}
	if !in.Run.Settings.Publishes() {
		return a.keepAsPatch(ctx, in, repo, head, output, log)
	}

	if err := repo.SwitchBranch(ctx, branch); err != nil {
		return out, fmt.Errorf("create branch %s: %w", branch, err)
	}
	url := gitrepo.RemoteURL(a.Config.RepoURLTemplate, in.Run.Repository)
	if err := a.holdsRun(ctx, in.Run); err != nil {
		return out, err
	}
	if err := a.Cache.Push(ctx, in.Run.Repository, url, repo, branch, ws.remoteBranchSHA()); err != nil {
		var gitErr *gitrepo.Error
		if errors.As(err, &gitErr) && gitErr.RemoteMoved() {
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
	if ws.PublishedSHA == "" {
		log.Emit(acp.BranchCreated(branch))
	} else {
		log.Console(acp.LevelInfo, fmt.Sprintf("pushed%s to %s", turnSuffix(in.Turn), branch))
	}
	output["base_sha"] = ws.BaseSHA
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
		url, err := a.pullRequest(ctx, in, out, output, log)
		if err != nil {
			return out, err
		}
		out.PullRequest = url
	}
	if _, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Branch: &branch, Output: withResult(output, in.Agent.Result, log)}); err != nil {
		return out, fmt.Errorf("record branch %s on the run: %w", branch, err)
	}
	return out, nil
}

// keepAsPatch is the publishing of a run that does not publish (its
// state.auto_publish, or its task's origin, see runstate.ForOrigin):
// its changes are committed in the worker's git only, and reach the user as
// changes.patch (uploadArtifacts); no branch is pushed, no pull request opened.
func (a *Activities) keepAsPatch(ctx context.Context, in PublishInput, repo *gitrepo.Repo, head string, output map[string]any, log *logstream.Stream) (PublishOutput, error) {
	ws := in.Workspace
	stat, err := repo.DiffStat(ctx, ws.BaseSHA, head)
	if err != nil {
		return PublishOutput{}, err
	}
	out := PublishOutput{Changed: true, CommitSHA: head, BaseSHA: ws.BaseSHA,
		FilesChanged: len(stat.Files), Insertions: stat.Insertions, Deletions: stat.Deletions}
	log.Console(acp.LevelInfo, in.Run.Settings.NotPublished+": nothing is pushed; its changes are uploaded as changes.patch")
	output["base_sha"] = ws.BaseSHA
	output["changed"] = true
	output["published"] = false
	output["base_branch"] = ws.BaseBranch
	output["files_changed"] = out.FilesChanged
	output["insertions"] = out.Insertions
	output["deletions"] = out.Deletions
	if err := a.holdsRun(ctx, in.Run); err != nil {
		return out, err
	}
	_, err = a.API.UpdateRun(ctx, in.Run.TaskID, in.Run.RunID, tasksapi.RunUpdate{Output: withResult(output, in.Agent.Result, log)})
	return out, err
}

// turnSuffix names a follow-up turn in a log line.
func turnSuffix(turn int) string {
	if turn <= 1 {
		return ""
	}
	return fmt.Sprintf(" in turn %d", turn)
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
func (a *Activities) pullRequest(ctx context.Context, in PublishInput, pub PublishOutput, output map[string]any, log *logstream.Stream) (string, error) {
	if a.GitHub == nil {
		output["pr_error"] = "no pull request: TASKWORKER_GITHUB_TOKEN is not set"
		log.Console(acp.LevelWarn, "create_pr was requested, but no GitHub token is configured; the branch is pushed")
		return "", nil
	}
	owner, repo, _ := strings.Cut(in.Run.Repository, "/")
	draft := a.Config.PRDraft
	if keep := in.Run.Settings.KeepDraft; keep != nil {
		draft = *keep
	}
	pr, created, err := a.GitHub.OpenOrFind(ctx, owner, repo, github.NewPullRequest{
		Title: publish.Title(in.Run.published()), Head: pub.Branch, Base: in.Workspace.BaseBranch, Body: a.prBody(in, pub), Draft: draft,
	})
	if err != nil {
		msg := a.Redactor.String(err.Error())
		if a.Config.PRStrict {
			return "", &pullRequestError{err: err, branch: pub.Branch} // temporalError redacts it
		}
		output["pr_error"] = msg
		log.Console(acp.LevelWarn, "no pull request: "+msg+"; the branch is pushed")
		return "", nil
	}
	output["pr_url"] = pr.HTMLURL
	verb := "opened"
	if !created {
		verb = "updated"
		// Its body says what the whole change is now; the push is done.
		if err := a.GitHub.UpdateBody(ctx, owner, repo, pr.Number, a.prBody(in, pub)); err != nil {
			log.Console(acp.LevelWarn, "the pull request's description was not updated: "+a.redactError(err))
		}
	}
	log.Console(acp.LevelInfo, fmt.Sprintf("pull request %s: %s", verb, pr.HTMLURL))
	return pr.HTMLURL, nil
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

// prBody is the pull request's body, redacted: the agent's summary is its own text.
func (a *Activities) prBody(in PublishInput, pub PublishOutput) string {
	run := in.Run.published()
	return a.Redactor.String(publish.Body(run, publish.Change{
		Summary: in.Agent.Summary, FilesChanged: pub.FilesChanged, Insertions: pub.Insertions, Deletions: pub.Deletions,
		RunURL: publish.RunURL(a.Config.RunURLTemplate, run),
	}))
}
