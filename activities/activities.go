// Package activities are the steps of the process-task workflow: thin methods
// over internal/ that map its errors to Temporal's retryable or final ones.
package activities

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/broker"
	"github.com/taskworker/taskworker/internal/egress"
	"github.com/taskworker/taskworker/internal/github"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/sandbox"
	"github.com/taskworker/taskworker/internal/slots"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Config is what the steps need to know about this worker.
type Config struct {
	WorkspaceDir    string
	RepoURLTemplate string
	BranchTemplate  string
	// BaseBranch is the branch runs start from when their state names none;
	// empty means the repository's default branch.
	BaseBranch string
	// PRStrict fails a run whose pull request can't be opened.
	PRStrict bool
	// RunURLTemplate links a pull request back to its run.
	RunURLTemplate string
	Author         gitrepo.Author
	AgentTimeout   time.Duration
	RunTimeout     time.Duration
	// HeartbeatTimeout and HostAttempts govern recovery from a lost host.
	HeartbeatTimeout time.Duration
	HostAttempts     int
	// StatusCheckEvery is how often a running agent's run is read, to stop
	// the agent if the run was ended elsewhere (cancelled from the UI).
	StatusCheckEvery time.Duration
	// HostQueue is this worker's own task queue: the steps that use the
	// workspace on its disk are scheduled there.
	HostQueue string
	Log       logstream.Config
	// FlushTimeout bounds the final flush of each step's log.
	FlushTimeout time.Duration
	Version      string
	// MaxCostUSD and MaxTokens bound each run's model use (0: no limit).
	MaxCostUSD float64
	MaxTokens  int64
	// Project names the Tasks API project the worker serves (its URL and
	// ID), in the claim records beside the workspaces.
	Project string

	// StopWindow is what a host step has left once its worker begins to
	// stop: its agent's grace, its final flush and its report (see package
	// drain).
	StopWindow time.Duration
}

// Activities holds the clients the steps use. Register it once per worker.
type Activities struct {
	API   *tasksapi.Client
	Git   *gitrepo.Git
	Cache *gitrepo.Cache
	// GitHub opens pull requests; nil when no token is configured.
	GitHub *github.Client
	Agent  agent.Agent
	// Broker serves the agent's model API with a token of its run's; nil
	// leaves the agent with the key it is configured with.
	Broker   *broker.Broker
	Provider broker.Provider
	// Sandbox isolates each agent run; nil runs agents as plain children.
	Sandbox *sandbox.Sandbox
	// Egress is what a run with a network of its own may reach; nil is
	// egress.DefaultAllow.
	Egress   *egress.Policy
	Slots    *slots.Pool
	Redactor *redact.Redactor
	Logger   *zap.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// ExportCommits writes the agent's own commits to a bundle for Publish
	// to keep; it runs git in the agent's clone. nil is Git.ExportCommits,
	// which runs it as a child of the worker.
	ExportCommits gitrepo.CommitExporter
	Config        Config
}

// RunRef names a run.
type RunRef struct {
	TaskID string `json:"task_id"`
	RunID  string `json:"run_id"`
}

// RunContext is what the workflow knows about a run after StartRun. The
// worker's timeouts travel in it so the workflow reads them from its history.
type RunContext struct {
	RunRef
	Title        string        `json:"title"`
	Description  string        `json:"description"`
	Repository   string        `json:"repository"`
	Slug         string        `json:"slug"`
	Branch       string        `json:"branch"`
	BaseBranch   string        `json:"base_branch,omitempty"`
	CreatePR     bool          `json:"create_pr"`
	AgentTimeout time.Duration `json:"agent_timeout"`
	RunTimeout   time.Duration `json:"run_timeout"`
	// HeartbeatTimeout is how soon a lost host is noticed, and HostAttempts
	// how many hosts the run's workspace steps may be tried on.
	HeartbeatTimeout time.Duration `json:"heartbeat_timeout,omitempty"`
	HostAttempts     int           `json:"host_attempts,omitempty"`
	LogDropped       int           `json:"log_dropped,omitempty"`
	// MaxCostUSD and MaxTokens are the run's own budget (its state's
	// max_cost_usd and max_tokens), over the worker's.
	MaxCostUSD float64 `json:"max_cost_usd,omitempty"`
	MaxTokens  int64   `json:"max_tokens,omitempty"`
	// JSONSchema is the task's json_schema: the agent's result must match it.
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
	// LegacyBranch is the name Branch had before it kept the slug's case,
	// when that differs: an earlier run's branch may have it.
	LegacyBranch string `json:"legacy_branch,omitempty"`
	// HostAttempt is the number of the attempt at the workspace steps this
	// context is given to (1 on the first worker, 2 on the one after it was
	// given up for lost, ...); 0 from a workflow that did not number them,
	// and never fenced.
	HostAttempt int `json:"host_attempt,omitempty"`
}

// Budget is what the run may spend: its own limits, else the worker's.
func (r RunContext) Budget(c Config) broker.Budget {
	return broker.Budget{MaxCostUSD: cmp.Or(r.MaxCostUSD, c.MaxCostUSD), MaxTokens: cmp.Or(r.MaxTokens, c.MaxTokens)}
}

// Workspace is a run's folder on the host that claimed it.
type Workspace struct {
	Root         string `json:"root"`
	RepoDir      string `json:"repo_dir"`
	ArtifactsDir string `json:"artifacts_dir"`
	// HomeDir is the agent's HOME: with the clone, the artifacts and OutDir,
	// the only folders the agent can write.
	HomeDir string `json:"home_dir,omitempty"`
	// WorkerDir is the worker's own part of the workspace (output buffers),
	// out of the agent's reach.
	WorkerDir  string `json:"worker_dir,omitempty"`
	BaseBranch string `json:"base_branch"`
	BaseSHA    string `json:"base_sha"`
	// BranchSHA is where the run's branch was on the remote when the run
	// started ("" when new): the push may only move it from there.
	BranchSHA  string `json:"branch_sha,omitempty"`
	CacheHit   bool   `json:"cache_hit"`
	LogDropped int    `json:"log_dropped,omitempty"`
	// Branch is the branch the run pushes: the run's, or the legacy name of
	// it that an earlier run pushed.
	Branch string `json:"branch,omitempty"`
	// OutDir is where the agent's side of the run leaves files for the
	// worker to read as untrusted data (TASK_OUTPUT_FILE, commits.bundle).
	OutDir string `json:"out_dir,omitempty"`
	// GitDir is the worker's own git dir of the run, in a folder only the
	// worker may read or write: the agent never sees it.
	GitDir string `json:"git_dir,omitempty"`
}

// Activity names. The workflow schedules each step by its name and the
// worker registers it under the same one (SharedActivities, HostActivities),
// so renaming a method can't split them; the names are in every run's history
// and must not change.
const (
	StartRunName         = "StartRun"
	ClaimHostName        = "ClaimHost"
	NoteName             = "Note"
	FinishRunName        = "FinishRun"
	RunAgentName         = "RunAgent"
	PublishName          = "Publish"
	CleanupWorkspaceName = "CleanupWorkspace"
)

// SharedActivities are the steps of the shared queue, by name: the API steps
// the workflow runs as local activities, and the claim. (Functions, not
// methods: every method of Activities is a step.)
func SharedActivities(a *Activities) map[string]any {
	return map[string]any{StartRunName: a.StartRun, ClaimHostName: a.ClaimHost, NoteName: a.Note, FinishRunName: a.FinishRun}
}

// HostActivities are the steps of a worker's own queue, by name: those that
// use the run's workspace on its disk.
func HostActivities(a *Activities) map[string]any {
	return map[string]any{RunAgentName: a.RunAgent, PublishName: a.Publish, CleanupWorkspaceName: a.CleanupWorkspace}
}

// Step names: the run's stage while they run, and their progress entries.
const (
	StepClone     = "clone"
	StepAgent     = "agent"
	StepPublish   = "publish"
	StepArtifacts = "artifacts"
)

const (
	defaultFlushTimeout = 30 * time.Second
	heartbeatEvery      = 2 * time.Second
	// claimMargin lets a claim outlive the run's own deadline long enough for
	// its cleanup, after which it expires even if no cleanup came.
	claimMargin    = 10 * time.Minute
	busyRetryDelay = 2 * time.Second
)

func (a *Activities) logger(ref RunRef) *zap.Logger {
	return a.Logger.With(zap.String("task_id", ref.TaskID), zap.String("run_id", ref.RunID),
		zap.String("workflow_id", kickoff.WorkflowID(ref.TaskID, ref.RunID)))
}

// stream opens the log of one step of a run. Its entries' event_ids are
// derived from the run, the workflow execution, the step and their place in
// the step's stream, so that an entry written again is known as the same
// entry. A step whose entries are a function of its input (StartRun, Note,
// FinishRun: sameOnRetry) writes the same entries again when it is retried,
// so its step names the call alone (the SDK may give a retried local activity
// a new activity ID); a step that does its work again (the host steps) writes
// new entries on each attempt, so its activity and attempt are in their IDs.
func (a *Activities) stream(ctx context.Context, ref RunRef, step string, sameOnRetry bool) *logstream.Stream {
	cfg := a.Config.Log
	cfg.SpillDir = a.spillDir(ref)
	cfg.EventIDScope = eventIDScope(ctx, ref, step, sameOnRetry)
	return logstream.New(a.API, ref.TaskID, ref.RunID, a.Redactor, cfg)
}

// eventIDScope names a step's stream for its event IDs; outside an activity
// (a test calling a step directly) there is none, and IDs are random.
func eventIDScope(ctx context.Context, ref RunRef, step string, sameOnRetry bool) string {
	if !activity.IsActivity(ctx) {
		return ""
	}
	info := activity.GetInfo(ctx)
	if sameOnRetry {
		return fmt.Sprintf("%s/%s/%s", ref.RunID, info.WorkflowExecution.RunID, step)
	}
	return fmt.Sprintf("%s/%s/%s/%s/%d", ref.RunID, info.WorkflowExecution.RunID, step, info.ActivityID, info.Attempt)
}

// spillDir holds a run's log entries that wait for the API on disk. It is
// beside the workspace, not in it, so a retried clone can't remove it.
func (a *Activities) spillDir(ref RunRef) string {
	return filepath.Join(a.Config.WorkspaceDir, ".logspill", ref.RunID)
}

// flushMargin is how long before its step's deadline a flush gives up, so
// the step still returns in time for its result to count.
const flushMargin = 2 * time.Second

// closeStream flushes a step's log on a context of its own, so a cancelled or
// failed step still delivers what it wrote. The flush ends by the step's own
// deadline (less flushMargin, and reserve for what the step does after it):
// a step that outlived it would be retried while it still wrote; and, once
// the worker is stopping, in time for the step to report. It returns
// how many entries were lost, and the API's answer if it refused the log for
// good (401/403/404).
func (a *Activities) closeStream(ctx context.Context, ref RunRef, s *logstream.Stream, reserve time.Duration) (int, error) {
	timeout := a.Config.FlushTimeout
	if timeout <= 0 {
		timeout = defaultFlushTimeout
	}
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline)-flushMargin-reserve)
	}
	if deadline, ok := flushDeadlineOf(ctx); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	fctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stats, err := s.Close(fctx)
	a.Metrics.Log(stats.Sent, stats.Rejected, stats.Dropped, stats.CutEntries, stats.Redacted, stats.SpilledBytes)
	if err != nil || stats.Dropped > 0 {
		a.logger(ref).Warn("log entries not delivered", zap.Int("dropped", stats.Dropped), zap.String("error", a.redactError(err)))
	}
	if stats.SpilledBytes > 0 {
		a.logger(ref).Info("log entries waited on disk", zap.Int64("spilled_bytes", stats.SpilledBytes))
	}
	return stats.Dropped, err
}

func (a *Activities) redactError(err error) string {
	if err == nil {
		return ""
	}
	return a.Redactor.String(err.Error())
}

// setStage records the step a run is in.
func (a *Activities) setStage(ctx context.Context, ref RunRef, stage string) error {
	_, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Stage: &stage})
	if err != nil {
		return fmt.Errorf("set stage %s: %w", stage, err)
	}
	return nil
}

// jittered is d give or take a fifth, at random.
func jittered(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

func (a *Activities) workspaceFor(ref RunRef) Workspace {
	root := filepath.Join(a.Config.WorkspaceDir, ref.RunID)
	return Workspace{Root: root, RepoDir: filepath.Join(root, "repo"), ArtifactsDir: filepath.Join(root, "artifacts"),
		HomeDir: filepath.Join(root, "home"), OutDir: filepath.Join(root, "out"), WorkerDir: filepath.Join(root, "worker"),
		GitDir: filepath.Join(root, "worker", "git")}
}

// agentDirs are the folders of a workspace the agent may write.
func (ws Workspace) agentDirs() []string {
	return []string{ws.RepoDir, ws.ArtifactsDir, ws.HomeDir, ws.OutDir}
}

// CleanupWorkspace removes a run's folder. It runs after success, failure and
// cancel, also when the clone failed half-way.
func (a *Activities) CleanupWorkspace(ctx context.Context, ref RunRef) error {
	defer a.Slots.Release(ref.RunID)
	_ = os.RemoveAll(a.spillDir(ref))
	ws := a.workspaceFor(ref)
	if rel, err := filepath.Rel(a.Config.WorkspaceDir, ws.Root); err != nil || rel == "." || filepath.IsAbs(rel) || rel[0] == '.' {
		return a.temporalError(fmt.Errorf("refusing to remove %s: not inside the workspace dir %s", ws.Root, a.Config.WorkspaceDir))
	}
	if err := os.RemoveAll(ws.Root); err != nil && !errors.Is(err, os.ErrNotExist) {
		return a.temporalError(fmt.Errorf("remove workspace %s: %w", ws.Root, err))
	}
	a.forgetClaim(ref.RunID)
	return nil
}

// NoteInput is a console entry for a run's log.
type NoteInput struct {
	RunRef
	Level   string `json:"level"`
	Message string `json:"message"`
	// Key names the note among the run's notes, so a retried attempt writes
	// it under the same event_id.
	Key string `json:"key,omitempty"`
}

// Note writes one console entry in a run's log.
func (a *Activities) Note(ctx context.Context, in NoteInput) error {
	log := a.stream(ctx, in.RunRef, NoteName+"/"+in.Key, true)
	log.Console(in.Level, in.Message)
	_, err := a.closeStream(ctx, in.RunRef, log, 0)
	return a.temporalError(err)
}

// ClaimHost takes one of this worker's run slots and returns the worker's own
// queue, where the workflow schedules the steps that use the workspace. A
// worker at capacity declines, and the claim is retried (by any worker) soon.
func (a *Activities) ClaimHost(ctx context.Context, run RunContext) (string, error) {
	ttl := run.RunTimeout + claimMargin
	if !a.Slots.Acquire(run.RunID, ttl) {
		return "", temporal.NewApplicationErrorWithOptions(
			fmt.Sprintf("worker %s is running its maximum of runs", a.Config.HostQueue), ErrWorkerBusy,
			temporal.ApplicationErrorOptions{NextRetryDelay: busyRetryDelay})
	}
	// On disk too, so that this worker started again keeps the workspace
	// (see SweepWorkspaces); without it the run only loses that.
	if err := a.recordClaim(run, ttl); err != nil {
		a.logger(run.RunRef).Warn("claim not recorded on disk", zap.Error(err))
	}
	return a.Config.HostQueue, nil
}

// progress emits a step's progress entry.
func progress(s *logstream.Stream, step, status, detail string) {
	labels := map[string]string{
		StepClone: "Cloning repository", StepAgent: "Running agent",
		StepPublish: "Publishing changes", StepArtifacts: "Uploading artifacts",
	}
	s.Emit(acp.Progress(step, status, labels[step], detail))
}
