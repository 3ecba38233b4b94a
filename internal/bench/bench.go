// Package bench measures what the worker adds to a run: kick-off latency,
// overhead, throughput and memory, on the local stack with the taskworker
// daemon as a separate process. `devstack bench` runs it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/worker"
)

// Options sizes the measurements.
type Options struct {
	LatencyRuns int   // runs for the kick-off and overhead figures
	Concurrency []int // levels for throughput
	Throughput  int   // runs per throughput level
	ScaleRuns   int   // concurrent sleeping runs
	ScaleSleep  time.Duration
	Dir         string
}

// agentScript writes its start and end times (ns) to the file the task's
// description names, and makes one change, so publish pushes a branch.
const agentScript = `printf 'start %s\n' "$(date +%s%N)" >> "$TASK_DESCRIPTION"
sleep SLEEP_SECONDS
printf 'bench %s\n' "$RUN_ID" >> CHANGES.md
printf 'end %s\n' "$(date +%s%N)" >> "$TASK_DESCRIPTION"`

func writeAgent(path string, sleep time.Duration) error {
	script := strings.Replace(agentScript, "SLEEP_SECONDS", strconv.FormatFloat(sleep.Seconds(), 'f', 3, 64), 1)
	return os.WriteFile(path, []byte(script), 0o755)
}

type env struct {
	stack *devstack.Stack
	api   *tasksapi.Client
	dir   string
	// timings is where the bench agent leaves when it started and ended.
	timings string
	worker  *exec.Cmd
}

// Run measures and writes the table to out.
func Run(ctx context.Context, out io.Writer, opts Options) error {
	dir := opts.Dir
	gitRoot := filepath.Join(dir, "git")
	if _, err := devstack.SeedRepository(ctx, gitRoot, "bench/app", map[string]string{"README.md": "# bench\n", "CHANGES.md": ""}); err != nil {
		return err
	}
	// TASKWORKER_SANDBOX picks the sandbox to measure; unset, the strongest the host offers.
	stack, err := devstack.Start(ctx, devstack.Options{NoWorker: true, Worker: worker.Config{Sandbox: os.Getenv("TASKWORKER_SANDBOX")}})
	if err != nil {
		return err
	}
	defer stack.Stop()
	cfg := stack.WorkerConfig
	e := &env{stack: stack, dir: dir,
		api: tasksapi.New(tasksapi.Config{BaseURL: stack.APIURL, APIKey: cfg.APIKey, ProjectID: cfg.ProjectID})}

	bin, err := devstack.BuildDaemon(dir)
	if err != nil {
		return err
	}
	script := filepath.Join(dir, "agent.sh")
	if err := writeAgent(script, 0); err != nil {
		return err
	}
	maxRuns := max(opts.ScaleRuns, slices.Max(opts.Concurrency)) + 10
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	// The agent leaves its timings in a folder of the bench's, which a run
	// (its own uid, in its own root) may write and reach.
	timings := filepath.Join(dir, "timings")
	if err := os.Mkdir(timings, 0o777); err != nil {
		return err
	}
	if err := errors.Join(os.Chmod(timings, 0o777), os.Chmod(dir, 0o711)); err != nil {
		return err
	}
	e.timings = timings
	e.worker = exec.Command(bin)
	e.worker.Env = stack.DaemonEnv("TASKWORKER_SANDBOX_SHARED="+timings,
		"TASKWORKER_AGENT_COMMAND=sh "+script,
		"TASKWORKER_REPO_URL_TEMPLATE="+devstack.RepoURLTemplate(gitRoot),
		"TASKWORKER_WORKSPACE_DIR="+filepath.Join(dir, "ws"), "TASKWORKER_CACHE_DIR="+filepath.Join(dir, "cache"),
		"TASKWORKER_MAX_CONCURRENT_RUNS="+strconv.Itoa(maxRuns), "TASKWORKER_LOG_LEVEL=warn",
		"TASKWORKER_HTTP_ADDR="+httpAddr)
	e.worker.Stdout, e.worker.Stderr = os.Stderr, os.Stderr
	if err := e.worker.Start(); err != nil {
		return err
	}
	defer func() { e.worker.Process.Signal(os.Interrupt); e.worker.Wait() }()

	if err := waitReady(ctx, "http://"+httpAddr+"/readyz"); err != nil {
		return err
	}
	// Warm up: the first run makes the mirror and the JIT-free paths hot.
	if _, err := e.runOnce(ctx); err != nil {
		return fmt.Errorf("warm-up run: %w", err)
	}
	idleRSS := rss(e.worker.Process.Pid, "VmRSS")

	fmt.Fprintf(out, "machine: %d cores, %s RAM, %s\n\n", runtime.NumCPU(), memTotal(), runtime.Version())
	fmt.Fprintf(out, "| figure | value | method |\n|---|---|---|\n")

	var kick, overhead []time.Duration
	for range opts.LatencyRuns {
		r, err := e.runOnce(ctx)
		if err != nil {
			return err
		}
		kick = append(kick, r.kickToAgent)
		overhead = append(overhead, r.overhead)
	}
	fmt.Fprintf(out, "| kick-off → agent started | p50 %s, p95 %s, p99 %s | %d sequential runs, warm cache: POST /tasks/{id}/run/ answered → the agent's first instruction |\n",
		pct(kick, 50), pct(kick, 95), pct(kick, 99), opts.LatencyRuns)
	fmt.Fprintf(out, "| worker overhead per run | p50 %s, p99 %s | run wall time (kick-off answered → run completed) − agent time − git time (clone and publish steps) |\n",
		pct(overhead, 50), pct(overhead, 99))

	for _, c := range opts.Concurrency {
		perMin, err := e.throughput(ctx, c, opts.Throughput)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "| throughput at %d concurrent | %.0f runs/min | %d runs of an agent that exits at once, %d in flight |\n", c, perMin, opts.Throughput, c)
	}

	peak, took, err := e.scale(ctx, opts.ScaleRuns, opts.ScaleSleep)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "| %d concurrent sleeping runs | all completed in %s; worker peak RSS %s | agent sleeps %s; peak is the daemon's VmHWM |\n",
		opts.ScaleRuns, took.Round(time.Millisecond), mib(peak), opts.ScaleSleep)
	fmt.Fprintf(out, "| worker RSS when idle | %s | VmRSS of the daemon after one warm-up run |\n", mib(idleRSS))

	completed, err := scrape("http://"+httpAddr+"/metrics", `taskworker_runs_finished_total{status="completed"}`)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "| runs completed, per the worker's /metrics | %d | taskworker_runs_finished_total{status=\"completed\"} |\n", completed)
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitReady polls the daemon's /readyz until it answers 200.
func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the daemon never became ready at %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape reads one sample of a Prometheus text page.
func scrape(url, series string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(v), err
		}
	}
	return 0, fmt.Errorf("%s has no %s", url, series)
}

type runFigures struct {
	kickToAgent time.Duration
	overhead    time.Duration
}

func (e *env) runOnce(ctx context.Context) (runFigures, error) {
	timing := filepath.Join(e.timings, fmt.Sprintf("timing-%d", time.Now().UnixNano()))
	task, err := e.api.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "bench", Description: timing, Repository: "bench/app"})
	if err != nil {
		return runFigures{}, err
	}
	kicked, err := e.api.RunTask(ctx, task.ID)
	answered := time.Now()
	if err != nil {
		return runFigures{}, err
	}
	run, err := e.wait(ctx, task.ID, kicked.LatestRun.ID)
	finished := time.Now()
	if err != nil {
		return runFigures{}, err
	}
	start, end, err := agentTimes(timing)
	if err != nil {
		return runFigures{}, err
	}
	git, err := e.gitTime(ctx, task.ID, run.ID)
	if err != nil {
		return runFigures{}, err
	}
	return runFigures{
		kickToAgent: start.Sub(answered),
		overhead:    finished.Sub(answered) - end.Sub(start) - git,
	}, nil
}

// wait polls the run until it is terminal; it must complete.
func (e *env) wait(ctx context.Context, taskID, runID string) (tasksapi.TaskRun, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		run, err := e.api.GetRun(ctx, taskID, runID)
		if err != nil {
			return run, err
		}
		if run.Status.Terminal() {
			if run.Status != tasksapi.StatusCompleted {
				return run, fmt.Errorf("run %s ended %s: %v", runID, run.Status, deref(run.ErrorMessage))
			}
			return run, nil
		}
		if time.Now().After(deadline) {
			return run, fmt.Errorf("run %s did not end in 5 minutes", runID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// gitTime adds up the clone and publish steps, from their progress entries.
func (e *env) gitTime(ctx context.Context, taskID, runID string) (time.Duration, error) {
	entries, err := e.api.Logs(ctx, taskID, runID)
	if err != nil {
		return 0, err
	}
	started := map[string]time.Time{}
	var total time.Duration
	for _, raw := range entries {
		s := string(raw)
		if !strings.Contains(s, `"_posthog/progress"`) {
			continue
		}
		for _, step := range []string{"clone", "publish"} {
			if !strings.Contains(s, `"step":"`+step+`"`) {
				continue
			}
			ts := timestamp(s)
			switch {
			case strings.Contains(s, `"status":"started"`):
				started[step] = ts
			case strings.Contains(s, `"status":"completed"`):
				total += ts.Sub(started[step])
			}
		}
	}
	return total, nil
}

func timestamp(entry string) time.Time {
	i := strings.Index(entry, `"timestamp":"`)
	if i < 0 {
		return time.Time{}
	}
	rest := entry[i+len(`"timestamp":"`):]
	t, _ := time.Parse(time.RFC3339Nano, rest[:strings.IndexByte(rest, '"')])
	return t
}

func agentTimes(path string) (start, end time.Time, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return start, end, fmt.Errorf("the agent left no timing: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		kind, ns, _ := strings.Cut(line, " ")
		n, _ := strconv.ParseInt(ns, 10, 64)
		switch kind {
		case "start":
			start = time.Unix(0, n)
		case "end":
			end = time.Unix(0, n)
		}
	}
	return start, end, nil
}

// throughput completes n runs keeping c in flight and returns runs/minute.
func (e *env) throughput(ctx context.Context, c, n int) (float64, error) {
	began := time.Now()
	if err := e.many(ctx, c, n); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(began).Minutes(), nil
}

func (e *env) many(ctx context.Context, c, n int) error {
	sem := make(chan struct{}, c)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := e.runOnce(ctx); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// scale runs n sleeping runs at once and returns the daemon's peak RSS.
func (e *env) scale(ctx context.Context, n int, sleep time.Duration) (int64, time.Duration, error) {
	script := filepath.Join(e.dir, "agent.sh")
	if err := writeAgent(script, sleep); err != nil {
		return 0, 0, err
	}
	defer writeAgent(script, 0)
	began := time.Now()
	err := e.many(ctx, n, n)
	return rss(e.worker.Process.Pid, "VmHWM"), time.Since(began), err
}

// rss reads a memory figure of a process from /proc, in bytes.
func rss(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	return "?"
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return s[i].Round(time.Millisecond)
}
