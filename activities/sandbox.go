package activities

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/broker"
	"github.com/taskworker/taskworker/internal/egress"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/sandbox"
)

// runBox is a run's sandbox while its agent works; without a sandbox
// configured, the agent runs as the worker's child.
type runBox struct {
	run   *sandbox.Run
	proxy *egress.Proxy
}

// startSandbox puts the workspace's agent folders in the hands of a new
// sandboxed run, and says in the run's log how the agent is isolated. A run
// with a network of its own gets the gateway: the model broker, and the
// egress proxy of the run's policy.
func (a *Activities) startSandbox(ws Workspace, log *logstream.Stream) (runBox, error) {
	if a.Sandbox == nil {
		return runBox{}, nil
	}
	var readOnly []string
	if p, ok := a.Agent.(agent.ReadOnlyPaths); ok {
		readOnly = p.ReadOnlyPaths()
	}
	run, err := a.Sandbox.Start(sandbox.Dirs{Writable: ws.agentDirs(), ReadOnly: readOnly,
		Refresh: []string{ws.HomeDir, ws.OutDir}})
	if err != nil {
		return runBox{}, fmt.Errorf("start the run's sandbox: %w", err)
	}
	if warning := a.Sandbox.Warning(); warning != "" {
		log.Console(acp.LevelWarn, warning)
	} else if uid := run.UID(); uid >= 0 {
		log.Console(acp.LevelInfo, fmt.Sprintf("the agent runs in the %s sandbox as uid %d", run.Mode(), uid))
	}
	box := runBox{run: run}
	if run.IsolatedNetwork() {
		box.proxy = a.egressProxy(log)
		run.ServeGateway(egress.Gateway(box.proxy, a.modelAPI(), sandbox.GatewayAddr))
		log.Console(acp.LevelInfo, "the agent's network is its own: it reaches the model API through the worker and other hosts through the egress proxy, which lets through what TASKWORKER_EGRESS_ALLOW allows")
	}
	return box, nil
}

// egressProxy is the run's proxy; each host it refuses is a warning in the
// run's log the first time, and counted every time.
func (a *Activities) egressProxy(log *logstream.Stream) *egress.Proxy {
	policy := a.Egress
	if policy == nil {
		policy, _ = egress.Parse("defaults")
	}
	return egress.NewProxy(policy, func(d egress.Denial) {
		a.Metrics.EgressDenied(string(d.Reason))
		if d.First {
			why := "not in TASKWORKER_EGRESS_ALLOW"
			if d.Reason == egress.Special {
				why = "a private, loopback or metadata address that TASKWORKER_EGRESS_ALLOW does not name"
			}
			log.Console(acp.LevelWarn, fmt.Sprintf("network: the agent was refused %s:%d (%s); further refusals of it are not logged", d.Host, d.Port, why))
		}
	})
}

// modelAPI answers the requests a run makes of its gateway for itself: the
// broker's, or a refusal without one.
func (a *Activities) modelAPI() http.Handler {
	if a.Broker != nil {
		return a.Broker
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "taskworker: no model API is served to this run (TASKWORKER_BROKER=off, or an agent the broker does not serve)", http.StatusNotFound)
	})
}

// proxyURL is the proxy the agent's environment names, "" when it has the
// worker's network.
func (b runBox) proxyURL() string {
	if b.run == nil || !b.run.IsolatedNetwork() {
		return ""
	}
	return "http://" + sandbox.GatewayAddr
}

func (b runBox) isolation() process.Isolation {
	if b.run == nil {
		return nil
	}
	return b.run.Isolation()
}

// close ends whatever the agent left running and gives its uid back.
func (b runBox) close() {
	if b.proxy != nil {
		b.proxy.Close()
	}
	if b.run != nil {
		b.run.Close()
	}
}

// exportScript bundles the clone's commits since $BASE into $BUNDLE, and
// nothing when there are none. It runs as the agent, with the agent's own
// git configuration: whatever that does stays in the sandbox, and the
// worker trusts only a bundle that passes its checks.
const exportScript = `set -e
head=$(git rev-parse --verify 'HEAD^{commit}')
[ "$head" = "$BASE" ] && exit 0
range=HEAD
if git rev-parse --verify --quiet "$BASE^{commit}" >/dev/null; then range="$BASE..HEAD"; fi
exec git -c protocol.allow=never bundle create --quiet "$BUNDLE" "$range"`

// sandboxedExport exports the agent's commits from inside a sandbox of the
// run's, so the worker never runs git in the agent's .git; without a
// sandbox, the worker's own hardened export.
func (a *Activities) sandboxedExport(ws Workspace) gitrepo.CommitExporter {
	if a.Sandbox == nil || a.Sandbox.Mode() == sandbox.Off {
		return a.Git.ExportCommits
	}
	return func(ctx context.Context, repoDir, base, bundlePath string) error {
		run, err := a.Sandbox.Start(sandbox.Dirs{Writable: ws.agentDirs()})
		if err != nil {
			return fmt.Errorf("start the sandbox for the export: %w", err)
		}
		defer run.Close()
		var stderr []string
		res, err := process.Run(ctx, process.Spec{
			Path: "/bin/sh", Args: []string{"-c", exportScript}, Dir: repoDir,
			Env:       []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + ws.HomeDir, "BASE=" + base, "BUNDLE=" + bundlePath},
			BufferDir: ws.WorkerDir, Isolation: run.Isolation(),
		}, func(stream process.Stream, line string) {
			if stream == process.Stderr && len(stderr) < 5 {
				stderr = append(stderr, line)
			}
		})
		if err != nil {
			return fmt.Errorf("export the agent's commits: %w", err)
		}
		if !res.Success() {
			return fmt.Errorf("export the agent's commits: git %s: %s", res.Describe(), strings.Join(stderr, " | "))
		}
		return nil
	}
}

// runModel is a run's access to its model API through the broker.
type runModel struct {
	grant  *broker.Grant
	access *agent.ModelAccess
}

// modelAccess grants the run a token of its own for the broker, with its
// budget; none without a broker.
func (a *Activities) modelAccess(ref RunRef, budget broker.Budget, box runBox) runModel {
	if a.Broker == nil {
		return runModel{}
	}
	g := a.Broker.Grant(ref.RunID)
	g.Limit(budget)
	base := a.Broker.URL(a.Provider)
	if box.proxyURL() != "" {
		base = "http://" + sandbox.GatewayAddr + "/" + string(a.Provider)
	}
	return runModel{grant: g, access: &agent.ModelAccess{BaseURL: base, Token: g.Token()}}
}

// stopAtBudget stops the agent (cancel) once the run has used its budget;
// the returned func says which limit it reached, "" while none.
func (m runModel) stopAtBudget(ctx context.Context, cancel context.CancelFunc) func() string {
	if m.grant == nil {
		return func() string { return "" }
	}
	go func() {
		select {
		case <-m.grant.Exceeded():
			cancel()
		case <-ctx.Done():
		}
	}()
	return m.grant.BudgetReached
}

// counted is the agent's usage with what the broker counted in place of
// what the agent says it used: the provider's answers, not the agent's word.
func (m runModel) counted(reported map[string]any) map[string]any {
	if m.grant == nil {
		return reported
	}
	u, models := m.grant.Usage()
	if u.Requests == 0 && len(reported) == 0 {
		return reported
	}
	out := map[string]any{}
	for k, v := range reported {
		out[k] = v
	}
	out["input_tokens"] = u.InputTokens
	out["output_tokens"] = u.OutputTokens
	out["cache_creation_input_tokens"] = u.CacheWriteTokens
	out["cache_read_input_tokens"] = u.CacheReadTokens
	out["cost_usd"] = u.CostUSD
	out["model_requests"] = u.Requests
	out["counted_by"] = "broker"
	if reported["cost_usd"] != nil {
		out["agent_reported_cost_usd"] = reported["cost_usd"]
	}
	if len(models) > 0 {
		out["models"] = models
	}
	return out
}

// revoke ends the run's token: nothing the agent left can use it.
func (m runModel) revoke() {
	if m.grant != nil {
		m.grant.Revoke()
	}
}
