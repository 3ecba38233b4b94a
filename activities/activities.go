// Package activities are the steps of the process-task workflow: thin methods
// over internal/ that map its errors to Temporal's retryable or final ones.
package activities

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/broker"
	"github.com/taskworker/taskworker/internal/egress"
	"github.com/taskworker/taskworker/internal/github"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/publish"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/runstate"
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

	// CIMaxRounds is how many times a run waits for its pull request's
	// checks (0: never); CIPollEvery how often it reads them, and CITimeout
	// how long one wait may last.
	CIMaxRounds int
	CIPollEvery time.Duration
	CITimeout   time.Duration
	// PRDraft opens pull requests as drafts (a run's state.keep_draft decides over it).
	PRDraft bool
	// PublishOrigins are the task origins whose runs push and open pull
	// requests unless their state says otherwise; empty is every origin.
	PublishOrigins []string

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

// published is what the run's branch, commit and pull request are named from.
func (r RunContext) published() publish.Run {
	return publish.Run{TaskID: r.TaskID, RunID: r.RunID, Title: r.Title, Description: r.Description, Slug: r.Slug}
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
	// Settings are the run's own, from its state: its mode, its inactivity
	// timeout, its choice of model and of publishing.
	Settings runstate.Settings `json:"settings,omitempty"`
	// WatchCI makes the run wait for its pull request's checks and fix
	// them, up to CIMaxRounds times; CIRound is the round a host phase
	// works in (0 and 1: the first).
	WatchCI     bool          `json:"watch_ci,omitempty"`
	CIMaxRounds int           `json:"ci_max_rounds,omitempty"`
	CIPollEvery time.Duration `json:"ci_poll_every,omitempty"`
	CITimeout   time.Duration `json:"ci_timeout,omitempty"`
	CIRound     int           `json:"ci_round,omitempty"`
}

// Interactive reports a run that waits for its user's next message after each turn.
func (r RunContext) Interactive() bool { return r.Settings.Interactive() }

// Budget is what the run may spend: its own limits, else the worker's.
func (r RunContext) Budget(c Config) broker.Budget {
	return broker.Budget{MaxCostUSD: cmp.Or(r.MaxCostUSD, c.MaxCostUSD), MaxTokens: cmp.Or(r.MaxTokens, c.MaxTokens)}
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
	RunTurnName          = "RunTurn"
	PublishName          = "Publish"
	CheckCIName          = "CheckCI"
	CleanupWorkspaceName = "CleanupWorkspace"
)

// SharedActivities are the steps of the shared queue, by name: the API steps
// the workflow runs as local activities, and the claim. (Functions, not
// methods: every method of Activities is a step.)
func SharedActivities(a *Activities) map[string]any {
	return map[string]any{StartRunName: a.StartRun, ClaimHostName: a.ClaimHost, NoteName: a.Note, FinishRunName: a.FinishRun, CheckCIName: a.CheckCI}
}

// HostActivities are the steps of a worker's own queue, by name: those that
// use the run's workspace on its disk.
func HostActivities(a *Activities) map[string]any {
	return map[string]any{RunAgentName: a.RunAgent, RunTurnName: a.RunTurn, PublishName: a.Publish, CleanupWorkspaceName: a.CleanupWorkspace}
}

// Step names: the run's stage while they run, and their progress entries.
const (
	StepClone     = "clone"
	StepAgent     = "agent"
	StepPublish   = "publish"
	StepArtifacts = "artifacts"
	StepChecks    = "checks"
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
