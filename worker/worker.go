package worker

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	tworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/broker"
	"github.com/taskworker/taskworker/internal/dispatch"
	"github.com/taskworker/taskworker/internal/drain"
	"github.com/taskworker/taskworker/internal/github"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/reaper"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/sandbox"
	"github.com/taskworker/taskworker/internal/slots"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/workflows"
)

// Version is the daemon's version, set at build time with -ldflags.
var Version = "dev"

// heartbeatThrottle bounds how long a cancelled run's agent keeps running:
// the SDK would otherwise batch heartbeats for up to 80% of the heartbeat timeout.
const heartbeatThrottle = 2 * time.Second

// Worker is the set of Temporal workers of one process: the shared queue
// (the workflow and the API steps) and this process's own queue (the steps
// that use a run's workspace on this machine).
type Worker struct {
	shared tworker.Worker
	host   tworker.Worker
	acts   *activities.Activities
	// drain is how a drain spends its time; Drain sets its timeout.
	drain drain.Budget
	// reaper ends the runs whose workflow will never finish them, while the
	// worker runs (see package reaper).
	reaper     *reaper.Reaper
	stopReaper context.CancelFunc
	reaperDone chan struct{}
}

// New builds the workers on an existing Temporal client. m may be nil.
func New(c client.Client, cfg Config, logger *zap.Logger, m *metrics.Metrics) (*Worker, error) {
	cfg.applyDefaults()
	if err := os.MkdirAll(cfg.WorkspaceDir, 0o711); err != nil {
		return nil, fmt.Errorf("create workspace dir %s (TASKWORKER_WORKSPACE_DIR): %w", cfg.WorkspaceDir, err)
	}
	// The mirrors are the worker's alone: no run may read or write them.
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("create cache dir %s (TASKWORKER_CACHE_DIR): %w", cfg.CacheDir, err)
	}
	sbCfg, err := cfg.SandboxConfig()
	if err != nil {
		return nil, err
	}
	box, err := sandbox.New(sbCfg)
	if err != nil {
		return nil, err
	}
	if err := sandbox.ProtectWorker(); err != nil {
		return nil, err
	}
	if w := box.Warning(); w != "" {
		logger.Warn(w)
	}
	logger.Info("agents run in a sandbox", zap.String("sandbox", box.Describe()))
	modelBroker, provider, err := newBroker(cfg, logger)
	if err != nil {
		return nil, err
	}
	egressPolicy, err := cfg.EgressPolicy()
	if err != nil {
		return nil, err
	}
	if egressPolicy.Open() && box.IsolatesNetwork() {
		logger.Warn("TASKWORKER_EGRESS_ALLOW=*: isolated runs may reach every public address through the egress proxy")
	}
	redactor := redact.New(cfg.Secrets()...)
	git := &gitrepo.Git{Token: cfg.GitHubToken, Redactor: redactor}
	agentEnv := []string(nil)
	if cfg.AgentGitPush {
		agentEnv = git.CredentialEnv()
	}
	var gh *github.Client
	if cfg.GitHubToken != "" {
		gh = github.New(cfg.GitHubAPIURL, cfg.GitHubToken)
	}
	hostQueue := cfg.TaskQueue + "@" + cfg.WorkerID
	budget := drain.Budget{AgentGrace: cfg.StopGrace, FlushTimeout: cfg.LogFlushTimeout}
	acts := &activities.Activities{
		API:      newAPI(cfg, "taskworker/"+Version, m),
		Metrics:  m,
		Git:      git,
		Cache:    &gitrepo.Cache{Dir: cfg.CacheDir, MaxBytes: int64(cfg.CacheMaxBytes), Git: git},
		GitHub:   gh,
		Agent:    newAgent(cfg, agentEnv),
		Sandbox:  box,
		Egress:   egressPolicy,
		Broker:   modelBroker,
		Provider: provider,
		Slots:    slots.New(cfg.MaxConcurrentRuns),
		Redactor: redactor,
		Logger:   logger,
		Config: activities.Config{
			WorkspaceDir:     cfg.WorkspaceDir,
			RepoURLTemplate:  cfg.RepoURLTemplate,
			BranchTemplate:   cfg.BranchTemplate,
			BaseBranch:       cfg.BaseBranch,
			PRStrict:         cfg.PRStrict,
			PRDraft:          cfg.PRDraft,
			PublishOrigins:   cfg.PublishOrigins,
			CIMaxRounds:      cfg.CIMaxRounds,
			CIPollEvery:      cfg.CIPollInterval,
			CITimeout:        cfg.CITimeout,
			RunURLTemplate:   cfg.RunURLTemplate,
			Author:           gitrepo.Author{Name: cfg.GitAuthorName, Email: cfg.GitAuthorEmail},
			AgentTimeout:     cfg.AgentTimeout,
			RunTimeout:       cfg.RunTimeout,
			HeartbeatTimeout: cfg.HeartbeatTimeout,
			HostAttempts:     cfg.HostAttempts,
			StatusCheckEvery: cfg.StatusCheckEvery,
			HostQueue:        hostQueue,
			Version:          "taskworker/" + Version,
			FlushTimeout:     cfg.LogFlushTimeout,
			MaxCostUSD:       cfg.RunMaxCostUSD,
			MaxTokens:        cfg.RunMaxTokens,
			Project:          strings.TrimRight(cfg.APIURL, "/") + "/api/projects/" + cfg.ProjectID,
			StopWindow:       budget.StopWindow(),
			Log: logstream.Config{
				FlushDelay: cfg.LogFlushDelay, MemoryBytes: cfg.LogMemoryBytes, MaxBytes: int64(cfg.LogMaxBytes),
			},
		},
	}

	sharedOpts := tworker.Options{
		Identity:                     cfg.WorkerID,
		MaxHeartbeatThrottleInterval: heartbeatThrottle,
		Interceptors:                 []interceptor.WorkerInterceptor{&stepRetries{}},
	}
	if cfg.DeploymentName != "" {
		// A run stays on the build that started it (pinned), so a rolling
		// deploy never replays a run's history on code it wasn't written by.
		sharedOpts.DeploymentOptions = tworker.DeploymentOptions{
			UseVersioning:             true,
			Version:                   tworker.WorkerDeploymentVersion{DeploymentName: cfg.DeploymentName, BuildID: cfg.BuildID},
			DefaultVersioningBehavior: workflow.VersioningBehaviorPinned,
		}
	}
	shared := tworker.New(c, cfg.TaskQueue, sharedOpts)

	host := tworker.New(c, hostQueue, tworker.Options{
		Identity: cfg.WorkerID,
		// Slots bound the runs; this only has to leave room for each run's cleanup.
		MaxConcurrentActivityExecutionSize: 2*cfg.MaxConcurrentRuns + 2,
		MaxHeartbeatThrottleInterval:       heartbeatThrottle,
		// Once stopped, its steps stop their agents, flush and report
		// within this (see RunAgent); past it the SDK cancels them.
		WorkerStopTimeout: budget.StopWindow(),
		Interceptors:      []interceptor.WorkerInterceptor{&stepRetries{}},
	})
	register(shared, host, acts)
	unknown := newUnknownTypes(logger, m)
	unknown.register(shared, true)
	// No workflow runs on the host queue: a dynamic workflow there would
	// only add a poller.
	unknown.register(host, false)
	// Before any run is taken: the workspaces a crashed worker left.
	if removed := acts.SweepWorkspaces(context.Background()); len(removed) > 0 {
		logger.Info("removed leftover workspaces", zap.Int("count", len(removed)))
	}
	return &Worker{shared: shared, host: host, acts: acts, drain: budget,
		reaper: newReaper(c, cfg, redactor, logger, m, "reaper")}, nil
}

// newBroker serves the configured agent's model API through the worker, nil
// for agents it doesn't serve (command) or when turned off.
func newBroker(cfg Config, logger *zap.Logger) (*broker.Broker, broker.Provider, error) {
	if cfg.Broker == "off" {
		logger.Warn("the model broker is off (TASKWORKER_BROKER=off): the agent gets the provider's key in its environment")
		return nil, "", nil
	}
	var p broker.Provider
	var up broker.Upstream
	switch cfg.Agent {
	case "claude":
		if agent.ClaudeOnCloud(cfg.AgentEnv) {
			logger.Warn("Claude Code on Bedrock or Vertex talks to the cloud with the credentials TASKWORKER_AGENT_ENV gives it; the model broker does not serve it")
			return nil, "", nil
		}
		p, up = broker.Anthropic, broker.Upstream{BaseURL: cmp.Or(cfg.AnthropicBaseURL, broker.DefaultAnthropicURL), Header: "x-api-key", Value: cfg.AnthropicAPIKey}
		if cfg.AnthropicAPIKey == "" {
			up.Header, up.Value = "Authorization", "Bearer "+cfg.AnthropicAuthToken
		}
	case "codex":
		p, up = broker.OpenAI, broker.Upstream{BaseURL: cmp.Or(cfg.OpenAIBaseURL, broker.DefaultOpenAIURL), Header: "Authorization", Value: "Bearer " + cfg.OpenAIAPIKey}
	default:
		return nil, "", nil
	}
	b, err := broker.New(cfg.BrokerAddr, map[broker.Provider]broker.Upstream{p: up})
	if err != nil {
		return nil, "", err
	}
	return b, p, nil
}

// register puts the workflow and the API steps on the shared queue's worker,
// and the steps that use a run's workspace on the worker of this process's
// own queue.
func register(shared, host tworker.Registry, acts *activities.Activities) {
	shared.RegisterWorkflowWithOptions(workflows.ProcessTask, workflow.RegisterOptions{Name: kickoff.WorkflowType})
	for name, fn := range activities.SharedActivities(acts) {
		shared.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	for name, fn := range activities.HostActivities(acts) {
		host.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
}

// Start begins polling both queues, and the reaper.
func (w *Worker) Start() error {
	if err := w.host.Start(); err != nil {
		return fmt.Errorf("start worker on its own queue: %w", err)
	}
	if err := w.shared.Start(); err != nil {
		w.host.Stop()
		return fmt.Errorf("start worker on the shared queue: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stopReaper, w.reaperDone = cancel, make(chan struct{})
	go func() { defer close(w.reaperDone); w.reaper.Run(ctx) }()
	return nil
}

// Stop stops polling and waits for running steps. The host queue's go
// first: their failures still reach this worker's workflow tasks.
func (w *Worker) Stop() {
	if w.stopReaper != nil {
		w.stopReaper()
		<-w.reaperDone
	}
	w.host.Stop()
	w.shared.Stop()
	if w.acts.Broker != nil {
		_ = w.acts.Broker.Close()
	}
}

// Drain stops taking new runs — every claim is declined, so other workers
// take them — and lets the runs this worker holds go on, still serving their
// workflow tasks and their steps on its own queue, until they finish or only
// the stop window is left of timeout (see package drain). Then the steps
// still running are told to stop (the host worker's stop channel): each stops
// its agent with its grace, flushes its log and reports that its worker
// stopped, and the run goes on on another worker. Drain returns by timeout, or
// after the stop window when timeout is shorter.
func (w *Worker) Drain(timeout time.Duration) {
	w.acts.Slots.Close()
	budget := w.drain
	budget.Timeout = timeout
	began := time.Now()
	deadline, stopAt := began.Add(max(timeout, budget.StopWindow())), began.Add(budget.StopAfter())
	for w.acts.Slots.InUse() > 0 && time.Now().Before(stopAt) {
		time.Sleep(200 * time.Millisecond)
	}
	w.host.Stop()
	// A run leaves this host before its last workflow task (the terminal
	// PATCH, or the move to another worker) runs; give that a moment here
	// rather than hand it to another worker, or leave it waiting when there
	// is none.
	time.Sleep(min(drainTail, time.Until(deadline)))
	w.Stop()
}

// drainTail is the moment Drain gives the last workflow tasks of its runs.
const drainTail = 3 * time.Second

// Dial connects to Temporal with the worker's logger, over TLS and with an
// API key when configured (see clientOptions); the SDK's metrics go to m
// (which may be nil).
func Dial(cfg Config, logger *zap.Logger, m *metrics.Metrics) (client.Client, error) {
	opts, err := clientOptions(cfg, logger, m)
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s (TEMPORAL_ADDRESS), namespace %s, over %s: %w",
			cfg.TemporalAddress, cfg.TemporalNamespace, cfg.temporalSecurity(), err)
	}
	return c, nil
}

// newAgent is the configured agent, with extraEnv added to its environment.
func newAgent(cfg Config, extraEnv []string) agent.Agent {
	return agent.New(agent.Settings{
		Kind:    cfg.Agent,
		Command: cfg.AgentCommand,
		Claude: agent.Claude{Path: cfg.ClaudePath, Model: cfg.ClaudeModel, MaxTurns: cfg.ClaudeMaxTurns,
			PermissionMode: cfg.ClaudePermissionMode, AllowedTools: cfg.ClaudeAllowedTools, ExtraArgs: strings.Fields(cfg.ClaudeArgs)},
		Codex: agent.Codex{Path: cfg.CodexPath, Model: cfg.CodexModel, Sandbox: cfg.CodexSandbox, ExtraArgs: strings.Fields(cfg.CodexArgs)},
		Keys: agent.Keys{AnthropicAPIKey: cfg.AnthropicAPIKey, AnthropicAuthToken: cfg.AnthropicAuthToken,
			AnthropicBaseURL: cfg.AnthropicBaseURL, OpenAIAPIKey: cfg.OpenAIAPIKey, OpenAIBaseURL: cfg.OpenAIBaseURL},
		Options: agent.Options{Passthrough: cfg.AgentEnv, ExtraEnv: extraEnv, StopGrace: cfg.StopGrace,
			ExitGrace: cfg.ExitGrace, MaxLineBytes: cfg.LogMaxLineBytes, MaxEventBytes: cfg.MaxEventBytes},
	})
}

// newAPI is the Tasks API client, its requests counted in m (which may be
// nil). It sends each call once but where a context asks for retries (see
// hostCallRetries): its callers retry (see stepRetries).
func newAPI(cfg Config, userAgent string, m *metrics.Metrics) *tasksapi.Client {
	apiCfg := tasksapi.Config{BaseURL: cfg.APIURL, APIKey: cfg.APIKey, ProjectID: cfg.ProjectID, UserAgent: userAgent,
		Retries: tasksapi.NoRetries, RetryWait: apiRetryWait, RetryMaxWait: apiRetryMaxWait}
	if m != nil {
		apiCfg.Observe = func(method, path string, code int, took time.Duration) {
			m.APIRequest(metrics.Endpoint(method, path), code, took)
		}
	}
	return tasksapi.New(apiCfg)
}

// NewDispatcher builds the dispatcher of queued runs (see package dispatch). m may be nil.
func NewDispatcher(c client.Client, cfg Config, logger *zap.Logger, m *metrics.Metrics) *dispatch.Dispatcher {
	cfg.applyDefaults()
	return &dispatch.Dispatcher{
		Reaper:   newReaper(c, cfg, redact.New(cfg.Secrets()...), logger, m, "dispatcher"),
		API:      newAPI(cfg, "taskworker-dispatch/"+Version, m),
		Metrics:  m,
		Temporal: c,
		Logger:   logger.With(zap.String("component", "dispatch")),
		Config: dispatch.Config{
			Filter: tasksapi.TaskFilter{
				Repository: cfg.DispatchRepository, Organization: cfg.DispatchOrganization, OriginProduct: cfg.DispatchOriginProduct,
			},
			PageSize: cfg.DispatchPageSize, MaxPages: cfg.DispatchMaxPages, PollInterval: cfg.DispatchInterval,
			TaskQueue: cfg.TaskQueue, Pool: cfg.DispatchPool, ReapInterval: cfg.ReapInterval,
			// Past the run's own deadline, with room for its terminal PATCH.
			ExecutionTimeout: cfg.RunTimeout + time.Hour,
		},
	}
}

// newReaper builds the reaper of the runs whose workflow will never finish
// them; by names it in their message.
func newReaper(c client.Client, cfg Config, redactor *redact.Redactor, logger *zap.Logger, m *metrics.Metrics, by string) *reaper.Reaper {
	return &reaper.Reaper{
		API:      newAPI(cfg, "taskworker-"+by+"/"+Version, m),
		Temporal: c,
		Redactor: redactor,
		Logger:   logger.With(zap.String("component", by)),
		Metrics:  m,
		Config:   reaper.Config{Namespace: cfg.TemporalNamespace, Interval: cfg.ReapInterval, By: by},
	}
}

// connect dials Temporal with metrics and serves the probes, not ready yet.
func connect(ctx context.Context, cfg Config, logger *zap.Logger) (client.Client, *metrics.Metrics, *probes, error) {
	m := metrics.New(Version)
	c, err := Dial(cfg, logger, m)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, m, serveProbes(ctx, cfg.HTTPAddr, c, m, logger), nil
}

// RunDispatcher dispatches queued runs until ctx ends.
func RunDispatcher(ctx context.Context, cfg Config, logger *zap.Logger) error {
	c, m, probes, err := connect(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	probes.setReady(true)
	logger.Info("taskworker dispatching", zap.String("api", cfg.APIURL), zap.String("temporal", cfg.TemporalAddress),
		zap.String("temporal_security", cfg.temporalSecurity()), zap.String("task_queue", cfg.TaskQueue),
		zap.Duration("interval", cfg.DispatchInterval))
	return NewDispatcher(c, cfg, logger, m).Run(ctx)
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, logger *zap.Logger) error {
	c, m, probes, err := connect(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	w, err := New(c, cfg, logger, m)
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	probes.setReady(true)
	if cfg.Dispatch {
		go func() { _ = NewDispatcher(c, cfg, logger, m).Run(ctx) }()
	}
	logger.Info("taskworker serving",
		zap.String("temporal", cfg.TemporalAddress), zap.String("namespace", cfg.TemporalNamespace),
		zap.String("temporal_security", cfg.temporalSecurity()),
		zap.String("task_queue", cfg.TaskQueue), zap.String("agent", cfg.Agent),
		zap.Int("max_concurrent_runs", cfg.MaxConcurrentRuns), zap.String("version", Version))
	<-ctx.Done()
	probes.setReady(false)
	logger.Info("taskworker draining: no new runs; running ones may finish", zap.Duration("drain_timeout", cfg.DrainTimeout))
	w.Drain(cfg.DrainTimeout)
	logger.Info("taskworker stopped")
	return nil
}
