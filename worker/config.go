// Package worker configures and runs the taskworker daemon: configuration from
// the environment, the Temporal workers of one process, and their lifecycle.
package worker

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/egress"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/sandbox"
)

// Config is the daemon's whole configuration, read from the environment once at start-up.
type Config struct {
	APIURL    string `envconfig:"POSTHOG_API_URL" required:"true" desc:"Base URL of PostHog (or the local Tasks API), e.g. https://us.posthog.com"`
	APIKey    string `envconfig:"POSTHOG_PERSONAL_API_KEY" required:"true" desc:"Personal API key with the task:read and task:write scopes (secret)"`
	ProjectID string `envconfig:"POSTHOG_PROJECT_ID" required:"true" desc:"ID of the PostHog project whose task runs this worker executes"`

	TemporalAddress   string `envconfig:"TEMPORAL_ADDRESS" default:"127.0.0.1:7233" desc:"host:port of the Temporal frontend"`
	TemporalNamespace string `envconfig:"TEMPORAL_NAMESPACE" default:"default" desc:"Temporal namespace"`
	TaskQueue         string `envconfig:"TEMPORAL_TASK_QUEUE" default:"tasks-task-queue" desc:"Task queue PostHog starts process-task on"`
	// The connection's security, by the Temporal CLI's names (see temporal.go).
	TemporalTLS           bool   `envconfig:"TEMPORAL_TLS" desc:"Connect to Temporal over TLS, trusting the system's root CAs (implied by every TEMPORAL_TLS_* variable and by TEMPORAL_API_KEY)"`
	TemporalTLSCert       string `envconfig:"TEMPORAL_TLS_CERT" desc:"Client certificate file (PEM) for mTLS, e.g. Temporal Cloud's; needs TEMPORAL_TLS_KEY"`
	TemporalTLSKey        string `envconfig:"TEMPORAL_TLS_KEY" desc:"Private key file (PEM) of TEMPORAL_TLS_CERT"`
	TemporalTLSCA         string `envconfig:"TEMPORAL_TLS_CA" desc:"CA certificate file (PEM) Temporal's server certificate must chain to (default: the system's root CAs)"`
	TemporalTLSServerName string `envconfig:"TEMPORAL_TLS_SERVER_NAME" desc:"Name Temporal's server certificate must be for (default: the host of TEMPORAL_ADDRESS)"`
	TemporalAPIKey        string `envconfig:"TEMPORAL_API_KEY" desc:"Temporal Cloud API key, sent with every request (secret; implies TLS)"`

	Agent            string        `envconfig:"TASKWORKER_AGENT" default:"command" desc:"Agent adapter: claude (Claude Code), codex (OpenAI Codex) or command (any program)"`
	AgentCommand     string        `envconfig:"TASKWORKER_AGENT_COMMAND" desc:"Shell command the command agent runs in the clone; the prompt is on stdin and in TASK_PROMPT"`
	AgentEnv         []string      `envconfig:"TASKWORKER_AGENT_ENV" desc:"Comma-separated names of worker environment variables the agent may see (besides PATH, HOME, locale and proxies)"`
	AgentTimeout     time.Duration `envconfig:"TASKWORKER_AGENT_TIMEOUT" default:"1h" desc:"Longest an agent may run before it is stopped and the run fails"`
	RunTimeout       time.Duration `envconfig:"TASKWORKER_RUN_TIMEOUT" default:"2h" desc:"Longest a whole run may take (waiting for a free worker included); it then ends failed"`
	HeartbeatTimeout time.Duration `envconfig:"TASKWORKER_HEARTBEAT_TIMEOUT" default:"60s" desc:"How soon a worker that died holding a run is noticed (the run then starts over on another worker), and how long one cut off from Temporal lets its agent go on"`
	HostAttempts     int           `envconfig:"TASKWORKER_HOST_ATTEMPTS" default:"3" desc:"How many workers a run's workspace steps may be tried on before the run fails"`
	StatusCheckEvery time.Duration `envconfig:"TASKWORKER_STATUS_CHECK_INTERVAL" default:"10s" desc:"How often (give or take a fifth) a running agent's run is read, to stop the agent if the run was ended elsewhere (cancelled from the UI) or the Tasks API refuses it (401, 403, 404)"`
	DrainTimeout     time.Duration `envconfig:"TASKWORKER_DRAIN_TIMEOUT" default:"10m" desc:"On SIGTERM, how long the worker may take to exit (taking no new runs); agents still running are stopped with their grace and their logs flushed before it; keep terminationGracePeriodSeconds above it"`
	StopGrace        time.Duration `envconfig:"TASKWORKER_AGENT_STOP_GRACE" default:"10s" desc:"Time an agent gets between SIGTERM and SIGKILL when its run is cancelled"`
	ExitGrace        time.Duration `envconfig:"TASKWORKER_AGENT_EXIT_GRACE" default:"5s" desc:"Time claude or codex may take to exit after reporting its result before its process group is stopped"`
	MaxEventBytes    int           `envconfig:"TASKWORKER_AGENT_MAX_EVENT_BYTES" default:"67108864" desc:"Longest JSON event line of claude or codex read whole (64 MiB); a longer one is reported and skipped"`

	ClaudePath           string   `envconfig:"TASKWORKER_CLAUDE_PATH" default:"claude" desc:"Claude Code binary (npm @anthropic-ai/claude-code)"`
	ClaudeModel          string   `envconfig:"TASKWORKER_CLAUDE_MODEL" desc:"Model Claude Code uses (--model; default: its own)"`
	ClaudeMaxTurns       int      `envconfig:"TASKWORKER_CLAUDE_MAX_TURNS" default:"200" desc:"Most turns Claude Code may take (--max-turns); 0 for no limit"`
	ClaudePermissionMode string   `envconfig:"TASKWORKER_CLAUDE_PERMISSION_MODE" default:"acceptEdits" desc:"Claude Code --permission-mode (bypassPermissions is refused when the worker runs as root)"`
	ClaudeAllowedTools   []string `envconfig:"TASKWORKER_CLAUDE_ALLOWED_TOOLS" default:"Bash,Edit,MultiEdit,Write,NotebookEdit,Read,Glob,Grep,TodoWrite,Task" desc:"Comma-separated tools Claude Code may use without asking (--allowedTools), e.g. Bash(npm test:*)"`
	ClaudeArgs           string   `envconfig:"TASKWORKER_CLAUDE_ARGS" desc:"More space-separated arguments for Claude Code, e.g. --mcp-config /etc/taskworker/mcp.json"`
	AnthropicAPIKey      string   `envconfig:"ANTHROPIC_API_KEY" desc:"API key Claude Code uses (secret; given to the agent only)"`
	AnthropicAuthToken   string   `envconfig:"ANTHROPIC_AUTH_TOKEN" desc:"Bearer token Claude Code sends instead of an API key, e.g. for a gateway (secret; given to the agent only)"`
	AnthropicBaseURL     string   `envconfig:"ANTHROPIC_BASE_URL" desc:"Anthropic API Claude Code talks to (default: Anthropic's), e.g. a gateway"`

	CodexPath     string `envconfig:"TASKWORKER_CODEX_PATH" default:"codex" desc:"Codex CLI binary (npm @openai/codex)"`
	CodexModel    string `envconfig:"TASKWORKER_CODEX_MODEL" desc:"Model Codex uses (--model; default: its own)"`
	CodexSandbox  string `envconfig:"TASKWORKER_CODEX_SANDBOX" default:"workspace-write" desc:"Codex --sandbox: workspace-write, or danger-full-access where its sandbox can't run (the pod is the sandbox)"`
	CodexArgs     string `envconfig:"TASKWORKER_CODEX_ARGS" desc:"More space-separated arguments for codex exec, e.g. -c model_reasoning_effort=high"`
	OpenAIAPIKey  string `envconfig:"OPENAI_API_KEY" desc:"API key Codex uses (secret; given to the agent only)"`
	OpenAIBaseURL string `envconfig:"OPENAI_BASE_URL" desc:"Responses API Codex talks to (default https://api.openai.com/v1)"`

	Broker     string `envconfig:"TASKWORKER_BROKER" default:"on" desc:"on: claude and codex reach their model API through the worker, with a token of their run's, and the provider's key never enters the sandbox; off: the agent gets the key"`
	BrokerAddr string `envconfig:"TASKWORKER_BROKER_ADDR" default:"127.0.0.1:0" desc:"Address the model broker listens on (loopback: the agents' sandboxes share the worker's network)"`

	RunMaxCostUSD float64 `envconfig:"TASKWORKER_RUN_MAX_COST_USD" desc:"Dollars a run's model requests may cost, counted by the broker at list prices (0: no limit; a run's state.max_cost_usd overrides it)"`
	RunMaxTokens  int64   `envconfig:"TASKWORKER_RUN_MAX_TOKENS" desc:"Tokens a run's model requests may use, counted by the broker (0: no limit; a run's state.max_tokens overrides it)"`

	Sandbox             string   `envconfig:"TASKWORKER_SANDBOX" default:"namespaces" desc:"How agents are isolated: namespaces (own uid and namespaces; root on a VM), uid (own uid, no namespaces; a Kubernetes pod), userns (namespaces, the worker's uid; local use) or off (trusted agents only); see docs/security.md"`
	SandboxUIDs         string   `envconfig:"TASKWORKER_SANDBOX_UIDS" default:"200000-200999" desc:"Host uids (and gids) runs get, one each, FIRST-LAST; shared by the workers of one host and never the worker's own"`
	SandboxNetwork      string   `envconfig:"TASKWORKER_SANDBOX_NETWORK" desc:"Network of a namespaced run: isolated (its own, the default: loopback and the worker's gateway — the model broker and the egress proxy — only) or host (the worker's: no egress policy)"`
	EgressAllow         string   `envconfig:"TASKWORKER_EGRESS_ALLOW" default:"defaults" desc:"Hosts an isolated run may reach through the egress proxy, comma-separated: defaults (package registries, GitHub for reading; the repository's host is always added), host, *.domain, host:port, address or CIDR; * for every public address. Private, loopback and metadata addresses only when named"`
	SandboxMaxProcesses int      `envconfig:"TASKWORKER_SANDBOX_MAX_PROCESSES" default:"2048" desc:"Processes a run may have at once (0: no limit)"`
	SandboxMaxFileBytes int64    `envconfig:"TASKWORKER_SANDBOX_MAX_FILE_BYTES" default:"4294967296" desc:"Largest file a run may write (4 GiB; 0: no limit)"`
	SandboxMaxMemory    int64    `envconfig:"TASKWORKER_SANDBOX_MAX_MEMORY_BYTES" desc:"Address space a run's process may take (RLIMIT_AS; 0: no limit — Node and Bun reserve far more than they use, so set it generously)"`
	SandboxTmpBytes     int64    `envconfig:"TASKWORKER_SANDBOX_TMP_BYTES" default:"1073741824" desc:"Size of a namespaced run's private /tmp (1 GiB)"`
	SandboxShared       []string `envconfig:"TASKWORKER_SANDBOX_SHARED" desc:"Comma-separated host folders every namespaced run may write (a package cache): what one run leaves there, later runs read — never put anything of the worker's there"`
	SandboxReadOnly     []string `envconfig:"TASKWORKER_SANDBOX_READONLY" desc:"Comma-separated host paths a namespaced run may read besides the system's (/usr, /etc, /opt, ...), e.g. a toolchain in /srv"`

	RepoURLTemplate string        `envconfig:"TASKWORKER_REPO_URL_TEMPLATE" default:"https://github.com/{repo}.git" desc:"Clone URL; {repo} is the task's org/repo"`
	GitHubToken     string        `envconfig:"TASKWORKER_GITHUB_TOKEN" desc:"Token for cloning and pushing over HTTPS (secret; passed to git in its environment only)"`
	BranchTemplate  string        `envconfig:"TASKWORKER_BRANCH_TEMPLATE" default:"posthog/task-{slug}" desc:"Branch the run pushes; {slug}, {task_id} and {run_id} are filled in"`
	BaseBranch      string        `envconfig:"TASKWORKER_BASE_BRANCH" desc:"Branch runs start from when the run's state.pr_base_branch names none (default: the repository's default branch)"`
	CacheDir        string        `envconfig:"TASKWORKER_CACHE_DIR" desc:"Folder of the repository mirrors (default: <temp dir>/taskworker/cache); a volume in production"`
	CacheMaxBytes   int           `envconfig:"TASKWORKER_CACHE_MAX_BYTES" default:"21474836480" desc:"Size the mirrors may take together (20 GiB); the least recently used are removed first"`
	AgentGitPush    bool          `envconfig:"TASKWORKER_AGENT_GIT_PUSH" desc:"Give the agent the GitHub token in git's environment (off: the worker pushes, the agent never sees the token)"`
	GitHubAPIURL    string        `envconfig:"TASKWORKER_GITHUB_API_URL" default:"https://api.github.com" desc:"GitHub REST API for pull requests (GitHub Enterprise: https://HOST/api/v3)"`
	PRStrict        bool          `envconfig:"TASKWORKER_PR_STRICT" desc:"Fail a run whose pull request can't be opened (off: it completes with output.pr_error and the branch pushed)"`
	PRDraft         bool          `envconfig:"TASKWORKER_PR_DRAFT" desc:"Open pull requests as drafts (a run's state.keep_draft decides over it)"`
	PublishOrigins  []string      `envconfig:"TASKWORKER_PUBLISH_ORIGINS" desc:"Comma-separated task origin products (e.g. user_created) whose runs push and open pull requests; the others keep their changes as changes.patch, unless their state.auto_publish says otherwise (empty: every origin)"`
	CIMaxRounds     int           `envconfig:"TASKWORKER_CI_MAX_ROUNDS" default:"3" desc:"Times a background run waits for its pull request's checks, starting a round that fixes them after each failure; it ends failed naming the checks still failing after the last (0: don't watch CI)"`
	CIPollInterval  time.Duration `envconfig:"TASKWORKER_CI_POLL_INTERVAL" default:"30s" desc:"How often a run reads its pull request's checks while they run (later when GitHub's rate limit is low)"`
	CITimeout       time.Duration `envconfig:"TASKWORKER_CI_TIMEOUT" default:"1h" desc:"Longest a run waits for one round of checks; it then ends failed naming those still running"`
	RunURLTemplate  string        `envconfig:"TASKWORKER_RUN_URL_TEMPLATE" desc:"Link to a run for pull request bodies; {task_id} and {run_id} are filled in (default: POSTHOG_API_URL/project/POSTHOG_PROJECT_ID/tasks/{task_id})"`
	GitAuthorName   string        `envconfig:"TASKWORKER_GIT_AUTHOR_NAME" default:"PostHog Tasks" desc:"Author name of the run's commit"`
	GitAuthorEmail  string        `envconfig:"TASKWORKER_GIT_AUTHOR_EMAIL" default:"tasks@taskworker.invalid" desc:"Author email of the run's commit"`

	WorkspaceDir      string `envconfig:"TASKWORKER_WORKSPACE_DIR" desc:"Folder for the runs' clones and artifacts (default: <temp dir>/taskworker/workspaces)"`
	MaxConcurrentRuns int    `envconfig:"TASKWORKER_MAX_CONCURRENT_RUNS" default:"10" desc:"Runs this worker executes at once; more wait for a free worker"`
	DeploymentName    string `envconfig:"TASKWORKER_DEPLOYMENT_NAME" desc:"Temporal worker deployment of this worker; set it to turn on worker versioning (see the README's upgrade procedure)"`
	BuildID           string `envconfig:"TASKWORKER_BUILD_ID" desc:"Build ID of this worker within its deployment (default: the version)"`
	WorkerID          string `envconfig:"TASKWORKER_WORKER_ID" desc:"Name of this worker in Temporal and its own task queue (default: hostname-pid)"`

	Dispatch              bool          `envconfig:"TASKWORKER_DISPATCH" desc:"Also run the dispatcher in the worker process (see taskworker dispatch)"`
	DispatchInterval      time.Duration `envconfig:"TASKWORKER_DISPATCH_INTERVAL" default:"10s" desc:"How often the dispatcher looks for queued runs"`
	DispatchPageSize      int           `envconfig:"TASKWORKER_DISPATCH_PAGE_SIZE" default:"100" desc:"Tasks per page the dispatcher reads (the API allows 100)"`
	DispatchMaxPages      int           `envconfig:"TASKWORKER_DISPATCH_MAX_PAGES" default:"10" desc:"Task pages one dispatch cycle reads at most, bounding its API requests"`
	DispatchRepository    string        `envconfig:"TASKWORKER_DISPATCH_REPOSITORY" desc:"Dispatch only runs of tasks on this org/repo"`
	DispatchOrganization  string        `envconfig:"TASKWORKER_DISPATCH_ORGANIZATION" desc:"Dispatch only runs of tasks on this organization's repositories"`
	DispatchOriginProduct string        `envconfig:"TASKWORKER_DISPATCH_ORIGIN_PRODUCT" desc:"Dispatch only runs of tasks from this origin product (e.g. user_created)"`
	DispatchPool          string        `envconfig:"TASKWORKER_DISPATCH_POOL" desc:"Name of this worker pool in the entry each dispatched run gets (default: the task queue)"`

	ReapInterval time.Duration `envconfig:"TASKWORKER_REAP_INTERVAL" default:"1m" desc:"How often the worker (and the dispatcher) looks for runs left unfinished by a workflow that was terminated, timed out or lost, and ends them failed saying so"`

	LogMaxBytes     int           `envconfig:"TASKWORKER_LOG_MAX_BYTES" default:"104857600" desc:"Cap of the log one run step sends (100 MiB); past it entries are counted, not sent"`
	LogMemoryBytes  int           `envconfig:"TASKWORKER_LOG_MEMORY_BYTES" default:"8388608" desc:"Log bytes a step keeps in memory while the API is slow; the rest waits in a file beside the workspace"`
	LogFlushDelay   time.Duration `envconfig:"TASKWORKER_LOG_FLUSH_DELAY" default:"200ms" desc:"Longest a log entry waits to be batched before it is sent"`
	LogFlushTimeout time.Duration `envconfig:"TASKWORKER_LOG_FLUSH_TIMEOUT" default:"5m" desc:"How long a step's final log flush may wait for the Tasks API (an outage), and never past the step's own deadline; entries unsent by then count in output.log_entries_dropped"`
	LogMaxLineBytes int           `envconfig:"TASKWORKER_LOG_MAX_LINE_BYTES" default:"1048576" desc:"Longest line of agent output kept whole; longer lines are cut with a marker"`

	HTTPAddr string `envconfig:"TASKWORKER_HTTP_ADDR" default:":8080" desc:"Address of /healthz, /readyz and /metrics (Prometheus); empty turns them off"`

	LogFormat string `envconfig:"TASKWORKER_LOG_FORMAT" default:"json" desc:"Log format: json or console"`
	LogLevel  string `envconfig:"TASKWORKER_LOG_LEVEL" default:"info" desc:"Log level: debug, info, warn or error"`
}

// Load reads the worker's configuration from the environment and checks it.
func Load() (Config, error) {
	cfg, err := load()
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// LoadDispatch reads the configuration for `taskworker dispatch`, which needs
// no agent.
func LoadDispatch() (Config, error) {
	cfg, err := load()
	if err != nil {
		return cfg, err
	}
	return cfg, errors.Join(cfg.validateConnections()...)
}

func load() (Config, error) {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return cfg, explainEnvError(err)
	}
	// envconfig accepts a required variable that is set but empty.
	t := reflect.TypeOf(cfg)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("required") == "true" && reflect.ValueOf(cfg).Field(i).IsZero() {
			return cfg, fmt.Errorf("%s is not set: set it in the environment (see `taskworker config`)", f.Tag.Get("envconfig"))
		}
	}
	cfg.fillComputed()
	return cfg, nil
}

func explainEnvError(err error) error {
	msg := err.Error()
	if strings.HasPrefix(msg, "required key ") {
		name := strings.TrimSuffix(strings.TrimPrefix(msg, "required key "), " missing value")
		return fmt.Errorf("%s is not set: set it in the environment (see `taskworker config`)", name)
	}
	return fmt.Errorf("configuration: %w (see `taskworker config`)", err)
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	c.applyDefaults()
	return c
}

// applyDefaults fills every zero field that has a default tag, so a Config
// built in code (the local stack, tests) gets the same defaults as the environment.
func (c *Config) applyDefaults() {
	v := reflect.ValueOf(c).Elem()
	for i := 0; i < v.NumField(); i++ {
		def, ok := v.Type().Field(i).Tag.Lookup("default")
		field := v.Field(i)
		if !ok || !field.IsZero() {
			continue
		}
		switch field.Interface().(type) {
		case time.Duration:
			d, err := time.ParseDuration(def)
			if err != nil {
				panic(fmt.Sprintf("bad default %q for %s", def, v.Type().Field(i).Name))
			}
			field.SetInt(int64(d))
		case int:
			n, err := strconv.Atoi(def)
			if err != nil {
				panic(fmt.Sprintf("bad default %q for %s", def, v.Type().Field(i).Name))
			}
			field.SetInt(int64(n))
		case string:
			field.SetString(def)
		case []string:
			field.Set(reflect.ValueOf(strings.Split(def, ",")))
		case int64:
			n, err := strconv.ParseInt(def, 10, 64)
			if err != nil {
				panic(fmt.Sprintf("bad default %q for %s", def, v.Type().Field(i).Name))
			}
			field.SetInt(n)
		}
	}
	c.fillComputed()
}

// fillComputed sets the defaults that depend on the machine.
func (c *Config) fillComputed() {
	if c.WorkspaceDir == "" {
		c.WorkspaceDir = filepath.Join(os.TempDir(), "taskworker", "workspaces")
	}
	if c.CacheDir == "" {
		c.CacheDir = filepath.Join(os.TempDir(), "taskworker", "cache")
	}
	if c.RunURLTemplate == "" && c.APIURL != "" {
		c.RunURLTemplate = strings.TrimRight(c.APIURL, "/") + "/project/" + c.ProjectID + "/tasks/{task_id}"
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		c.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.TaskQueue == "" {
		c.TaskQueue = kickoff.DefaultTaskQueue
	}
	if c.DispatchPool == "" {
		c.DispatchPool = c.TaskQueue
	}
	if c.BuildID == "" {
		c.BuildID = Version
	}
}

func (c Config) validateConnections() []error {
	var errs []error
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("POSTHOG_API_URL %q is not an http(s) URL", c.APIURL))
	}
	if _, err := c.temporalTLS(); err != nil {
		errs = append(errs, err)
	}
	if c.TemporalAPIKey != strings.TrimSpace(c.TemporalAPIKey) {
		errs = append(errs, errors.New("TEMPORAL_API_KEY starts or ends with white space (a newline of the file it came from?): set it to the key alone"))
	}
	if c.DispatchPageSize < 1 || c.DispatchPageSize > 100 || c.DispatchMaxPages < 1 || c.DispatchInterval <= 0 {
		errs = append(errs, errors.New("TASKWORKER_DISPATCH_PAGE_SIZE must be 1 to 100, TASKWORKER_DISPATCH_MAX_PAGES at least 1 and TASKWORKER_DISPATCH_INTERVAL positive"))
	}
	if c.ReapInterval <= 0 {
		errs = append(errs, fmt.Errorf("TASKWORKER_REAP_INTERVAL must be positive, not %s: set it to how often to look for runs whose workflow will never finish them, e.g. 1m", c.ReapInterval))
	}
	return errs
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	errs := c.validateConnections()
	switch c.Agent {
	case "command":
		if strings.TrimSpace(c.AgentCommand) == "" {
			errs = append(errs, errors.New("TASKWORKER_AGENT_COMMAND is not set: the command agent needs the command to run"))
		}
	case "claude":
		errs = append(errs, checkBinary("TASKWORKER_CLAUDE_PATH", c.ClaudePath, "@anthropic-ai/claude-code")...)
		if c.AnthropicAPIKey == "" && c.AnthropicAuthToken == "" && !agent.ClaudeOnCloud(c.AgentEnv) {
			errs = append(errs, errors.New("claude needs ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN (or CLAUDE_CODE_USE_BEDROCK / CLAUDE_CODE_USE_VERTEX in TASKWORKER_AGENT_ENV)"))
		}
		if c.ClaudeMaxTurns < 0 {
			errs = append(errs, fmt.Errorf("TASKWORKER_CLAUDE_MAX_TURNS must be 0 (no limit) or more, not %d", c.ClaudeMaxTurns))
		}
	case "codex":
		errs = append(errs, checkBinary("TASKWORKER_CODEX_PATH", c.CodexPath, "@openai/codex")...)
		if c.OpenAIAPIKey == "" {
			errs = append(errs, errors.New("codex needs OPENAI_API_KEY"))
		}
	default:
		errs = append(errs, fmt.Errorf("TASKWORKER_AGENT %q is not one of command, claude, codex", c.Agent))
	}
	for _, u := range []struct{ name, value string }{{"ANTHROPIC_BASE_URL", c.AnthropicBaseURL}, {"OPENAI_BASE_URL", c.OpenAIBaseURL}} {
		if p, err := url.Parse(u.value); u.value != "" && (err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "") {
			errs = append(errs, fmt.Errorf("%s %q is not an http(s) URL", u.name, u.value))
		}
	}
	if u, err := url.Parse(c.OpenAIBaseURL); err == nil && u.User != nil {
		errs = append(errs, errors.New("OPENAI_BASE_URL must not carry credentials (it is on codex's command line): put the key in OPENAI_API_KEY"))
	}
	if c.RunMaxCostUSD < 0 || c.RunMaxTokens < 0 {
		errs = append(errs, errors.New("TASKWORKER_RUN_MAX_COST_USD and TASKWORKER_RUN_MAX_TOKENS must be 0 (no limit) or more"))
	}
	if c.Broker != "on" && c.Broker != "off" {
		errs = append(errs, fmt.Errorf("TASKWORKER_BROKER %q is not on or off", c.Broker))
	}
	if c.MaxEventBytes < 1<<20 {
		errs = append(errs, errors.New("TASKWORKER_AGENT_MAX_EVENT_BYTES must be at least 1048576"))
	}
	if !strings.Contains(c.RepoURLTemplate, "{repo}") {
		errs = append(errs, fmt.Errorf("TASKWORKER_REPO_URL_TEMPLATE %q has no {repo} placeholder", c.RepoURLTemplate))
	}
	if c.MaxConcurrentRuns < 1 {
		errs = append(errs, fmt.Errorf("TASKWORKER_MAX_CONCURRENT_RUNS must be at least 1, not %d", c.MaxConcurrentRuns))
	}
	if c.CIMaxRounds < 0 {
		errs = append(errs, fmt.Errorf("TASKWORKER_CI_MAX_ROUNDS must be 0 (don't watch CI) or more, not %d", c.CIMaxRounds))
	} else if c.CIMaxRounds > 0 && (c.CIPollInterval <= 0 || c.CITimeout <= 0) {
		errs = append(errs, errors.New("TASKWORKER_CI_POLL_INTERVAL and TASKWORKER_CI_TIMEOUT must be positive (or TASKWORKER_CI_MAX_ROUNDS 0)"))
	}
	if c.AgentTimeout <= 0 || c.RunTimeout <= 0 {
		errs = append(errs, errors.New("TASKWORKER_AGENT_TIMEOUT and TASKWORKER_RUN_TIMEOUT must be positive"))
	} else if c.RunTimeout <= c.AgentTimeout {
		errs = append(errs, fmt.Errorf("TASKWORKER_RUN_TIMEOUT (%s) must be longer than TASKWORKER_AGENT_TIMEOUT (%s)", c.RunTimeout, c.AgentTimeout))
	}
	if c.LogMaxBytes < 1<<10 || c.LogMemoryBytes < 1<<10 || c.LogMaxLineBytes < 1<<10 {
		errs = append(errs, errors.New("TASKWORKER_LOG_MAX_BYTES, TASKWORKER_LOG_MEMORY_BYTES and TASKWORKER_LOG_MAX_LINE_BYTES must be at least 1024"))
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		errs = append(errs, fmt.Errorf("TASKWORKER_LOG_FORMAT %q is not json or console", c.LogFormat))
	}
	return errors.Join(errs...)
}

// SandboxConfig is the sandbox's part of the configuration.
func (c Config) SandboxConfig() (sandbox.Config, error) {
	first, count, err := sandbox.ParseUIDRange(c.SandboxUIDs)
	if err != nil {
		return sandbox.Config{}, err
	}
	if c.SandboxMaxProcesses < 0 || c.SandboxMaxFileBytes < 0 || c.SandboxMaxMemory < 0 || c.SandboxTmpBytes < 0 {
		return sandbox.Config{}, errors.New("TASKWORKER_SANDBOX_MAX_PROCESSES, _MAX_FILE_BYTES, _MAX_MEMORY_BYTES and _TMP_BYTES must be 0 or more")
	}
	if count < c.MaxConcurrentRuns {
		return sandbox.Config{}, fmt.Errorf("TASKWORKER_SANDBOX_UIDS %s has %d uids for TASKWORKER_MAX_CONCURRENT_RUNS=%d runs: give each run one", c.SandboxUIDs, count, c.MaxConcurrentRuns)
	}
	return sandbox.Config{
		Mode: sandbox.Mode(c.Sandbox), FirstUID: first, UIDCount: count, Network: sandbox.Network(c.SandboxNetwork),
		Limits: sandbox.Limits{Processes: c.SandboxMaxProcesses, FileBytes: c.SandboxMaxFileBytes,
			MemoryBytes: c.SandboxMaxMemory, TmpBytes: c.SandboxTmpBytes},
		ReadOnly: c.SandboxReadOnly, Shared: c.SandboxShared,
	}, nil
}

// Secrets are the values that must never appear in output: the configured
// credentials, and every environment variable whose name says it is a secret.
func (c Config) Secrets() []string {
	return append([]string{c.APIKey, c.GitHubToken, c.AnthropicAPIKey, c.AnthropicAuthToken, c.OpenAIAPIKey, c.TemporalAPIKey},
		redact.FromEnvironment(os.Environ())...)
}

// checkBinary reports an agent binary that can't be found, naming the
// variable that sets it and the package that provides it.
func checkBinary(variable, path, npmPackage string) []error {
	if _, err := exec.LookPath(path); err != nil {
		return []error{fmt.Errorf("%s: %s is not an executable on this machine: install %s from npm (npm install -g %s) or set the path",
			variable, path, npmPackage, npmPackage)}
	}
	return nil
}

// PrintUsage writes every variable with its default and meaning.
func PrintUsage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	format := "VARIABLE\tDEFAULT\tREQUIRED\tMEANING\n" +
		"{{range .}}{{usage_key .}}\t{{usage_default .}}\t{{if usage_required .}}yes{{end}}\t{{usage_description .}}\n{{end}}"
	if err := envconfig.Usagef("", &Config{}, tw, format); err != nil {
		return err
	}
	return tw.Flush()
}

// EgressPolicy is what an isolated run may reach: the allow list, and the
// host the repositories are cloned from.
func (c Config) EgressPolicy() (*egress.Policy, error) {
	p, err := egress.Parse(c.EgressAllow)
	if err != nil {
		return nil, err
	}
	if u, err := url.Parse(gitrepo.RemoteURL(c.RepoURLTemplate, "org/repo")); err == nil && (u.Scheme == "https" || u.Scheme == "http") {
		p = p.AllowHost(u.Host)
	}
	return p, nil
}
