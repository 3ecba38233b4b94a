// Package metrics holds the worker's Prometheus metrics: its own, and the
// Temporal SDK's, on one registry served at /metrics.
package metrics

import (
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"
)

// Metrics are the worker's own metrics. A nil *Metrics records nothing, so
// code under test needs none.
type Metrics struct {
	Registry *prometheus.Registry

	runsStarted    prometheus.Counter
	runsFinished   *prometheus.CounterVec
	runDuration    *prometheus.HistogramVec
	stepDuration   *prometheus.HistogramVec
	agentExits     *prometheus.CounterVec
	agentCost      *prometheus.CounterVec
	agentTokens    *prometheus.CounterVec
	logEntries     *prometheus.CounterVec
	logSpillBytes  prometheus.Counter
	apiRequests    *prometheus.CounterVec
	apiLatency     *prometheus.HistogramVec
	cloneCache     *prometheus.CounterVec
	dispatchCycle  prometheus.Gauge
	dispatchedRuns *prometheus.CounterVec
	dispatchFailed *prometheus.CounterVec
	egressDenied   *prometheus.CounterVec
	reapedRuns     *prometheus.CounterVec
	unknownTypes   *prometheus.CounterVec

	unknownMu    sync.Mutex
	unknownNames map[string]bool
}

// New registers every metric, Go's runtime collectors and build info.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "taskworker_build_info", Help: "The running build: version and Go version (always 1)."}, []string{"version", "go"})
	reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	steps := []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	return &Metrics{
		Registry:     reg,
		runsStarted:  f(prometheus.NewCounter(prometheus.CounterOpts{Name: "taskworker_runs_started_total", Help: "Runs this worker started."})).(prometheus.Counter),
		runsFinished: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_runs_finished_total", Help: "Runs this worker ended, by terminal status."}, []string{"status"})).(*prometheus.CounterVec),
		runDuration: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "taskworker_run_duration_seconds", Help: "Run time from the run's creation to its terminal status.",
			Buckets: steps}, []string{"status"})).(*prometheus.HistogramVec),
		stepDuration: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "taskworker_step_duration_seconds", Help: "Time of each step of a run (clone, agent, publish, artifacts).",
			Buckets: steps}, []string{"step", "outcome"})).(*prometheus.HistogramVec),
		agentExits:    f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_agent_exits_total", Help: "Agent processes that ended, by exit code (\"signal\" when killed)."}, []string{"code"})).(*prometheus.CounterVec),
		agentCost:     f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_agent_cost_usd_total", Help: "What the agents reported their runs cost, in US dollars, by agent."}, []string{"agent"})).(*prometheus.CounterVec),
		agentTokens:   f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_agent_tokens_total", Help: "Model tokens the agents reported, by agent and kind (input, output, cached_input)."}, []string{"agent", "kind"})).(*prometheus.CounterVec),
		logEntries:    f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_log_entries_total", Help: "Log entries by outcome: sent, rejected, dropped, cut; and redacted, the entries that had a secret masked."}, []string{"outcome"})).(*prometheus.CounterVec),
		logSpillBytes: f(prometheus.NewCounter(prometheus.CounterOpts{Name: "taskworker_log_spill_bytes_total", Help: "Bytes of log entries that waited on disk for the API."})).(prometheus.Counter),
		apiRequests:   f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_api_requests_total", Help: "Tasks API requests (retries included), by endpoint and status code."}, []string{"endpoint", "code"})).(*prometheus.CounterVec),
		apiLatency: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "taskworker_api_request_duration_seconds", Help: "Tasks API request latency by endpoint.",
			Buckets: prometheus.DefBuckets}, []string{"endpoint"})).(*prometheus.HistogramVec),
		cloneCache:     f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_clone_cache_total", Help: "Workspace checkouts by cache result: hit, miss, rebuilt."}, []string{"result"})).(*prometheus.CounterVec),
		dispatchCycle:  f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "taskworker_dispatch_cycle_api_requests", Help: "Tasks API requests the last dispatch cycle made."})).(prometheus.Gauge),
		dispatchedRuns: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_dispatch_runs_total", Help: "Queued runs the dispatcher handled: started, already_started, orphaned."}, []string{"result"})).(*prometheus.CounterVec),
		dispatchFailed: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_dispatch_failures_total", Help: "What the dispatcher could not do, by step: list_tasks, list_runs, start, describe, read_run, fail_orphan; each is tried again next cycle."}, []string{"step"})).(*prometheus.CounterVec),
		egressDenied:   f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_egress_denied_total", Help: "Connections the egress proxy refused an isolated run, by reason: not_allowed, special_address (private, loopback, metadata)."}, []string{"reason"})).(*prometheus.CounterVec),
		reapedRuns:     f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_reaped_runs_total", Help: "Runs the reaper ended failed because their workflow will never finish them, by what became of the workflow: terminated, timed_out, absent, ..."}, []string{"workflow"})).(*prometheus.CounterVec),
		unknownTypes:   f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskworker_unknown_task_types_total", Help: "Workflow and activity tasks of types this worker does not serve, by kind (workflow, activity) and type: another worker shares its task queue (see the README's \"Beside a self-hosted PostHog\")."}, []string{"kind", "type"})).(*prometheus.CounterVec),
		unknownNames:   map[string]bool{},
	}
}

// TemporalHandler reports the Temporal SDK's metrics into the same registry.
func (m *Metrics) TemporalHandler() client.MetricsHandler {
	if m == nil {
		return nil
	}
	reporter := tallyprom.NewReporter(tallyprom.Options{Registerer: m.Registry})
	scope, _ := tally.NewRootScope(tally.ScopeOptions{
		Prefix: "temporal", CachedReporter: reporter, Separator: tallyprom.DefaultSeparator,
		SanitizeOptions: &sdktally.PrometheusSanitizeOptions,
	}, time.Second)
	return sdktally.NewMetricsHandler(sdktally.NewPrometheusNamingScope(scope))
}

// RunStarted counts a run this worker started.
func (m *Metrics) RunStarted() {
	if m != nil {
		m.runsStarted.Inc()
	}
}

// RunFinished counts a run's terminal status and, when known, its duration.
func (m *Metrics) RunFinished(status string, took time.Duration) {
	if m == nil {
		return
	}
	m.runsFinished.WithLabelValues(status).Inc()
	if took > 0 {
		m.runDuration.WithLabelValues(status).Observe(took.Seconds())
	}
}

// Step records a step's duration and whether it succeeded.
func (m *Metrics) Step(step string, took time.Duration, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.stepDuration.WithLabelValues(step, outcome).Observe(took.Seconds())
}

// AgentExit counts an agent process's end.
func (m *Metrics) AgentExit(code int, signaled bool) {
	if m == nil {
		return
	}
	label := strconv.Itoa(code)
	if signaled {
		label = "signal"
	}
	m.agentExits.WithLabelValues(label).Inc()
}

// AgentUsage adds what an agent reported a run cost: cost_usd and token
// counts of the usage map an adapter fills.
func (m *Metrics) AgentUsage(usage map[string]any) {
	if m == nil || len(usage) == 0 {
		return
	}
	agent, _ := usage["agent"].(string)
	if cost, ok := usage["cost_usd"].(float64); ok && cost > 0 {
		m.agentCost.WithLabelValues(agent).Add(cost)
	}
	for kind, keys := range map[string][]string{
		"input":        {"input_tokens"},
		"output":       {"output_tokens"},
		"cached_input": {"cache_read_input_tokens", "cached_input_tokens"},
	} {
		for _, k := range keys {
			if n, ok := number(usage[k]); ok && n > 0 {
				m.agentTokens.WithLabelValues(agent, kind).Add(n)
			}
		}
	}
}

// number reads a count that came through JSON (float64) or Go (int).
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}

// Log adds a step's log figures.
func (m *Metrics) Log(sent, rejected, dropped, cut, redacted int, spilled int64) {
	if m == nil {
		return
	}
	for outcome, n := range map[string]int{"sent": sent, "rejected": rejected, "dropped": dropped, "cut": cut, "redacted": redacted} {
		m.logEntries.WithLabelValues(outcome).Add(float64(n))
	}
	m.logSpillBytes.Add(float64(spilled))
}

var ids = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|/projects/[^/]+`)

// Endpoint turns a request path into a label: IDs become {id}, so the label
// has a handful of values.
func Endpoint(method, path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return method + " " + ids.ReplaceAllStringFunc(path, func(s string) string {
		if len(s) > 10 && s[:10] == "/projects/" {
			return "/projects/{project}"
		}
		return "{id}"
	})
}

// APIRequest records one HTTP attempt to the Tasks API.
func (m *Metrics) APIRequest(endpoint string, code int, took time.Duration) {
	if m == nil {
		return
	}
	label := strconv.Itoa(code)
	if code == 0 {
		label = "error"
	}
	m.apiRequests.WithLabelValues(endpoint, label).Inc()
	m.apiLatency.WithLabelValues(endpoint).Observe(took.Seconds())
}

// CloneCache counts a checkout by cache result.
func (m *Metrics) CloneCache(result string) {
	if m != nil {
		m.cloneCache.WithLabelValues(result).Inc()
	}
}

// DispatchCycle records what a dispatch cycle did.
func (m *Metrics) DispatchCycle(requests, started, alreadyStarted, orphaned int) {
	if m == nil {
		return
	}
	m.dispatchCycle.Set(float64(requests))
	m.dispatchedRuns.WithLabelValues("started").Add(float64(started))
	m.dispatchedRuns.WithLabelValues("already_started").Add(float64(alreadyStarted))
	m.dispatchedRuns.WithLabelValues("orphaned").Add(float64(orphaned))
}

// DispatchFailure counts a task or run the dispatcher could not handle, by
// the step that failed.
func (m *Metrics) DispatchFailure(step string) {
	if m != nil {
		m.dispatchFailed.WithLabelValues(step).Inc()
	}
}

// EgressDenied counts a connection the egress proxy refused.
func (m *Metrics) EgressDenied(reason string) {
	if m != nil {
		m.egressDenied.WithLabelValues(reason).Inc()
	}
}

// RunReaped counts a run the reaper ended, by what became of its workflow.
func (m *Metrics) RunReaped(workflow string) {
	if m != nil {
		m.reapedRuns.WithLabelValues(workflow).Inc()
	}
}

// maxUnknownTypes bounds the type label: the names come from whoever starts
// workflows on the queue.
const maxUnknownTypes = 100

// UnknownTaskType counts a task of a type this worker does not serve; kind is
// workflow or activity. Past maxUnknownTypes names, the type is "other".
func (m *Metrics) UnknownTaskType(kind, typ string) {
	if m == nil {
		return
	}
	m.unknownMu.Lock()
	if !m.unknownNames[kind+"/"+typ] {
		if len(m.unknownNames) >= maxUnknownTypes {
			typ = "other"
		} else {
			m.unknownNames[kind+"/"+typ] = true
		}
	}
	m.unknownMu.Unlock()
	m.unknownTypes.WithLabelValues(kind, typ).Inc()
}
