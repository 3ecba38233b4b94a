// Package reliability is the fault-injection suite: a real embedded Temporal
// server, the local Tasks API misbehaving on purpose, and two taskworker
// daemons as processes. Each scenario checks the final status, the status
// history, the log (every line the agent printed, once, in order) and that
// no agent process is left; the summary table is printed at the end.
package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/localapi"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
	"github.com/taskworker/taskworker/internal/testkit/stacktest"
)

const (
	repo = stacktest.Repository
	// heartbeatTimeout is the daemons' TASKWORKER_HEARTBEAT_TIMEOUT.
	heartbeatTimeout = 10 * time.Second
	// Canaries: secrets the worker holds, which must appear nowhere.
	githubTokenCanary = "ghs_canaryGithubToken0123456789"
	agentKeyCanary    = "sk-ant-canaryAgentKey0123456789"
)

type suite struct {
	stack   *devstack.Stack
	faults  *localapi.Faults
	control *tasksapi.Client
	dir     string
	logs    []string // the daemons' own log files

	bin     string
	env     []string
	daemons map[int]*exec.Cmd

	mu      sync.Mutex
	summary []row
	argv    map[string]bool // every child command line seen while runs worked
}

type row struct {
	scenario                       string
	runs, terminal, correct, lost  int
	duplicates, leaks, agentsAlive int
}

var s *suite

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	faults := localapi.NewFaults(42)
	shared, stop, err := stacktest.Start(context.Background(), "reliability", stacktest.Options{
		Files:     map[string]string{"README.md": "# app\n"},
		Agent:     "testdata/agent.sh",
		UserAgent: localapi.ControlUserAgent + "/suite",
		Stack:     devstack.Options{NoWorker: true, Faults: faults},
	})
	if err != nil {
		return 0, err
	}
	defer stop()
	if err := bigRepository(filepath.Join(shared.GitRoot, "acme", "big.git"), 30000); err != nil {
		return 0, err
	}
	s = &suite{stack: shared.Stack, faults: faults, dir: shared.Dir, control: shared.API}

	if s.bin, err = devstack.BuildDaemon(s.dir); err != nil {
		return 0, err
	}
	cfg := s.stack.WorkerConfig
	s.env = s.stack.DaemonEnv(
		"TASKWORKER_AGENT_COMMAND="+cfg.AgentCommand, "TASKWORKER_REPO_URL_TEMPLATE="+cfg.RepoURLTemplate,
		"TASKWORKER_MAX_CONCURRENT_RUNS=20", "TASKWORKER_HEARTBEAT_TIMEOUT="+heartbeatTimeout.String(), "TASKWORKER_HTTP_ADDR=",
		"TASKWORKER_DRAIN_TIMEOUT=2m", "TASKWORKER_AGENT_STOP_GRACE=2s",
		"TASKWORKER_GITHUB_TOKEN="+githubTokenCanary, "ANTHROPIC_API_KEY="+agentKeyCanary,
		"TASKWORKER_LOG_LEVEL=info")
	s.daemons = map[int]*exec.Cmd{}
	defer func() {
		for _, d := range s.daemons {
			_ = d.Process.Kill()
			_ = d.Wait()
		}
	}()
	for _, id := range []string{"worker-a", "worker-b"} {
		if err := s.startDaemon(id); err != nil {
			return 0, err
		}
	}
	s.argv = map[string]bool{}
	stopSampling := make(chan struct{})
	go sampleArgv(stopSampling)
	code := m.Run()
	close(stopSampling)
	s.print()
	return code, nil
}

// startDaemon starts a taskworker process with its own workspace, cache and log.
func (s *suite) startDaemon(id string) error {
	_, err := s.startDaemonWith(id)
	return err
}

// startDaemonWith is startDaemon with more variables, which override the
// suite's.
func (s *suite) startDaemonWith(id string, env ...string) (*exec.Cmd, error) {
	logPath := filepath.Join(s.dir, id+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.bin)
	cmd.Env = append(append(slices.Clone(s.env), "TASKWORKER_WORKER_ID="+id,
		"TASKWORKER_WORKSPACE_DIR="+filepath.Join(s.dir, id, "ws"), "TASKWORKER_CACHE_DIR="+filepath.Join(s.dir, id, "cache")), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.daemons[cmd.Process.Pid] = cmd
	s.logs = append(s.logs, logPath)
	s.mu.Unlock()
	return cmd, nil
}

// holder is the daemon whose agent process pid is.
func (s *suite) holder(t *testing.T, pid int) *exec.Cmd {
	for p, hops := pid, 0; hops < 4; hops++ {
		s.mu.Lock()
		d, ok := s.daemons[p]
		s.mu.Unlock()
		if ok {
			return d
		}
		var err error
		p, err = proctest.Parent(p)
		require.NoError(t, err)
	}
	t.Fatalf("no daemon runs agent %d", pid)
	return nil
}

// retire forgets a daemon that was killed or drained, and starts another in its place.
func (s *suite) retire(t *testing.T, d *exec.Cmd, id string) {
	s.mu.Lock()
	delete(s.daemons, d.Process.Pid)
	s.mu.Unlock()
	require.NoError(t, s.startDaemon(id))
}

// agentPID waits for the agent of a run to write its PID.
func agentPID(t *testing.T, marks, runID string) int {
	var pid int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(filepath.Join(marks, "pid."+runID))
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	}, time.Minute, 20*time.Millisecond, "the agent of run %s never started", runID)
	return pid
}

func (s *suite) record(r row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.summary = append(s.summary, r)
}

func (s *suite) print() {
	fmt.Println("\n| scenario | runs | terminal | correct status | entries lost | duplicates | leaks | agents left |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range s.summary {
		fmt.Printf("| %s | %d | %d | %d | %d | %d | %d | %d |\n", r.scenario, r.runs, r.terminal, r.correct, r.lost, r.duplicates, r.leaks, r.agentsAlive)
	}
}

// kickOff creates a task and runs it; marks is where the agent leaves its PID.
func kickOff(t *testing.T, title string) (tasksapi.Task, string, string) {
	ctx := context.Background()
	marks := agenttest.SharedDir(t)
	task, err := s.control.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Description: marks, Repository: repo})
	require.NoError(t, err)
	kicked, err := s.control.RunTask(ctx, task.ID)
	require.NoError(t, err)
	return task, kicked.LatestRun.ID, marks
}

func waitEnd(t *testing.T, taskID, runID string, within time.Duration) tasksapi.TaskRun {
	var run tasksapi.TaskRun
	require.Eventually(t, func() bool {
		var err error
		run, err = s.control.GetRun(context.Background(), taskID, runID)
		require.NoError(t, err)
		return run.Status.Terminal()
	}, within, 100*time.Millisecond, "run %s did not end", runID)
	return run
}

// outcome checks one run against what its agent printed.
type outcome struct {
	correct, lost, duplicates, agentsAlive, leaks int
}

// leaks counts the canaries in text.
func leaks(text string) int {
	return strings.Count(text, githubTokenCanary) + strings.Count(text, agentKeyCanary) +
		strings.Count(text, s.stack.WorkerConfig.APIKey)
}

func check(t *testing.T, taskID string, run tasksapi.TaskRun, marks string, lines int) outcome {
	var o outcome
	if run.Status == tasksapi.StatusCompleted {
		o.correct = 1
	} else {
		t.Errorf("run %s ended %s: %v", run.ID, run.Status, deref(run.ErrorMessage))
	}
	// Status history: queued, in_progress, completed; a PATCH stored but
	// answered 502 is sent again, so a status may repeat, never go back.
	history := statusHistory(t, run.ID)
	// A run created to be queued by hand (POST /runs/) starts not_started.
	if len(history) > 0 && history[0] == tasksapi.StatusNotStarted {
		history = history[1:]
	}
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCompleted},
		slices.Compact(history), "run %s", run.ID)

	raw, err := s.control.Logs(context.Background(), taskID, run.ID)
	require.NoError(t, err)
	record, _ := json.Marshal(run)
	o.leaks += leaks(string(record))
	for _, r := range raw {
		o.leaks += leaks(string(r))
	}
	for _, a := range run.Artifacts {
		data, err := os.ReadFile(s.stack.API.ArtifactPath(run.ID, a.Name))
		require.NoError(t, err)
		o.leaks += leaks(string(data))
	}
	seen := map[string]bool{}
	var printed []string
	for _, r := range raw {
		var e struct {
			EventID      string `json:"event_id"`
			Notification struct {
				Method string         `json:"method"`
				Params map[string]any `json:"params"`
			} `json:"notification"`
		}
		require.NoError(t, json.Unmarshal(r, &e))
		if seen[e.EventID] {
			o.duplicates++
			continue
		}
		seen[e.EventID] = true
		if msg, _ := e.Notification.Params["message"].(string); strings.HasPrefix(msg, "line ") {
			printed = append(printed, msg)
		}
	}
	var want []string
	for i := 1; i <= lines; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	o.lost = max(0, len(want)-len(printed))
	require.Equal(t, want, printed, "run %s: every line the agent printed, once, in order", run.ID)
	require.EqualValues(t, 0, run.Output["log_entries_dropped"])

	pid, err := os.ReadFile(filepath.Join(marks, "pid."+run.ID))
	require.NoError(t, err)
	n, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	if proctest.Alive(n) {
		o.agentsAlive++
	}
	return o
}

func statusHistory(t *testing.T, runID string) []tasksapi.Status {
	history, err := s.stack.API.StatusHistory(context.Background(), runID)
	require.NoError(t, err)
	return history
}

// TestFaultsOnThirtyPercentOfCalls: 20 concurrent runs while 30 % of the
// worker's calls fail (500, 502, 503 and 429 with Retry-After, slow, and
// stored-but-502).
func TestFaultsOnThirtyPercentOfCalls(t *testing.T) {
	const runs, lines = 20, 40
	s.faults.SetRate(0.3)
	type started struct{ taskID, runID, marks string }
	var all []started
	for i := range runs {
		task, runID, marks := kickOff(t, fmt.Sprintf("lines %d", lines))
		_ = i
		all = append(all, started{task.ID, runID, marks})
	}
	r := row{scenario: "1. API faults on 30 % of calls, 20 concurrent runs", runs: runs}
	var ended []tasksapi.TaskRun
	for _, st := range all {
		run := waitEnd(t, st.taskID, st.runID, 5*time.Minute)
		ended = append(ended, run)
		r.terminal++
	}
	s.faults.SetRate(0)
	for i, st := range all {
		o := check(t, st.taskID, ended[i], st.marks, lines)
		r.correct += o.correct
		r.lost += o.lost
		r.duplicates += o.duplicates
		r.agentsAlive += o.agentsAlive
		r.leaks += o.leaks
	}
	t.Logf("faults served: %v", s.faults.Counts())
	s.record(r)
}

// TestAnOutageLongerThanTheHeartbeatTimeout: the API answers nothing but
// 503 from while the agent works until the agent has exited and its step
// has heartbeated, its final flush waiting on the API, for longer than the
// heartbeat timeout into the outage. The outage ends on that, not after a
// set time; the run completes with every line, on its first worker.
func TestAnOutageLongerThanTheHeartbeatTimeout(t *testing.T) {
	const lines = 20
	ctx := context.Background()
	task, runID, marks := kickOff(t, fmt.Sprintf("lines %d sleep 3", lines))
	require.Eventually(t, func() bool {
		run, err := s.control.GetRun(ctx, task.ID, runID)
		require.NoError(t, err)
		return run.Stage != nil && *run.Stage == "agent"
	}, time.Minute, 20*time.Millisecond)
	s.faults.SetOutage(true)
	began := time.Now()
	pid := agentPID(t, marks, runID)
	require.Eventually(t, func() bool {
		if proctest.Alive(pid) {
			return false
		}
		desc, err := s.stack.Client.DescribeWorkflowExecution(ctx, kickoff.WorkflowID(task.ID, runID), "")
		require.NoError(t, err)
		for _, a := range desc.GetPendingActivities() {
			if a.GetActivityType().GetName() == "RunAgent" && a.GetLastHeartbeatTime().AsTime().After(began.Add(heartbeatTimeout)) {
				return true
			}
		}
		return false
	}, 3*time.Minute, 100*time.Millisecond, "the agent's step outlives its heartbeat timeout in the outage, heartbeating")
	s.faults.SetOutage(false)
	t.Logf("the outage lasted %s, %d answers", time.Since(began).Round(time.Second), s.faults.Counts()["outage"])
	run := waitEnd(t, task.ID, runID, 5*time.Minute)
	o := check(t, task.ID, run, marks, lines)
	raw, err := s.control.Logs(ctx, task.ID, runID)
	require.NoError(t, err)
	require.NotContains(t, strings.Join(rawStrings(raw), ""), "starting over on another worker", "the outage did not look like a lost worker")
	s.record(row{scenario: "2. an API outage past the heartbeat timeout, during the agent", runs: 1, terminal: 1,
		correct: o.correct, lost: o.lost, duplicates: o.duplicates, agentsAlive: o.agentsAlive, leaks: o.leaks})
}

// TestSIGKILLOfTheWorkerRunningAnAgent: the worker dies outright; the other
// notices within the heartbeat timeout and runs the workspace steps again.
func TestSIGKILLOfTheWorkerRunningAnAgent(t *testing.T) {
	const lines = 10
	task, runID, marks := kickOff(t, fmt.Sprintf("once %d", lines))
	first := agentPID(t, marks, runID)
	victim := s.holder(t, first)
	require.NoError(t, victim.Process.Signal(syscall.SIGKILL))
	_ = victim.Wait()
	s.retire(t, victim, "worker-c")
	run := waitEnd(t, task.ID, runID, 3*time.Minute)
	o := check(t, task.ID, run, marks, lines)
	require.Eventually(t, func() bool { return !proctest.Alive(first) }, 10*time.Second, 20*time.Millisecond,
		"the dead worker's agent died with it")
	raw, err := s.control.Logs(context.Background(), task.ID, runID)
	require.NoError(t, err)
	require.Contains(t, strings.Join(rawStrings(raw), ""), "starting over on another worker")
	s.record(row{scenario: "3. SIGKILL of the worker running the agent", runs: 1, terminal: 1,
		correct: o.correct, lost: o.lost, duplicates: o.duplicates, agentsAlive: o.agentsAlive, leaks: o.leaks})
}

func rawStrings(raw []json.RawMessage) []string {
	out := make([]string, len(raw))
	for i, r := range raw {
		out[i] = string(r)
	}
	return out
}

// TestSIGTERMDrainsTheRun: the worker holding a run is told to stop; it
// takes nothing new and finishes the run first.
func TestSIGTERMDrainsTheRun(t *testing.T) {
	const lines = 10
	task, runID, marks := kickOff(t, fmt.Sprintf("lines %d sleep 4", lines))
	holder := s.holder(t, agentPID(t, marks, runID))
	require.NoError(t, holder.Process.Signal(syscall.SIGTERM))
	run := waitEnd(t, task.ID, runID, 3*time.Minute)
	o := check(t, task.ID, run, marks, lines)
	require.NoError(t, holder.Wait(), "the drained worker exits cleanly")
	s.retire(t, holder, "worker-d")
	s.record(row{scenario: "4. SIGTERM of the worker running the agent (drain)", runs: 1, terminal: 1,
		correct: o.correct, lost: o.lost, duplicates: o.duplicates, agentsAlive: o.agentsAlive, leaks: o.leaks})
}

// TestCancelDuringTheAgent: the workflow is cancelled while the agent works.
func TestCancelDuringTheAgent(t *testing.T) {
	task, runID, marks := kickOff(t, "hang")
	pid := agentPID(t, marks, runID)
	require.NoError(t, s.stack.Client.CancelWorkflow(context.Background(), kickoff.WorkflowID(task.ID, runID), ""))
	run := waitEnd(t, task.ID, runID, time.Minute)
	r := row{scenario: "5. cancel during the agent", runs: 1, terminal: 1}
	if run.Status == tasksapi.StatusCancelled {
		r.correct = 1
	}
	require.Equal(t, tasksapi.StatusCancelled, run.Status)
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCancelled},
		slices.Compact(statusHistory(t, runID)))
	require.Eventually(t, func() bool { return !proctest.Alive(pid) }, 10*time.Second, 20*time.Millisecond)
	s.record(r)
}

// bigRepository writes a repository whose checkout takes a while, with git
// fast-import: one commit of files files.
func bigRepository(path string, files int) error {
	if out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch=main", path).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	var stream strings.Builder
	fmt.Fprintf(&stream, "commit refs/heads/main\ncommitter Gen <gen@example.com> 1700000000 +0000\ndata 3\nbig\n")
	for i := range files {
		content := fmt.Sprintf("file %d\n", i)
		fmt.Fprintf(&stream, "M 100644 inline d%03d/f%05d.txt\ndata %d\n%s\n", i/100, i, len(content), content)
	}
	cmd := exec.Command("git", "--git-dir", path, "fast-import", "--quiet")
	cmd.Stdin = strings.NewReader(stream.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// TestCancelWhileCloning: the run is cancelled while its workspace is being
// cloned (a repository of 30,000 files).
func TestCancelWhileCloning(t *testing.T) {
	ctx := context.Background()
	marks := agenttest.SharedDir(t)
	task, err := s.control.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "lines 1", Description: marks, Repository: "acme/big"})
	require.NoError(t, err)
	kicked, err := s.control.RunTask(ctx, task.ID)
	require.NoError(t, err)
	runID := kicked.LatestRun.ID
	var log string
	require.Eventually(t, func() bool {
		raw, err := s.control.Logs(ctx, task.ID, runID)
		require.NoError(t, err)
		log = strings.Join(rawStrings(raw), "")
		return strings.Contains(log, `"status":"started","step":"clone"`)
	}, time.Minute, 5*time.Millisecond, "the clone never started")
	require.NoError(t, s.stack.Client.CancelWorkflow(ctx, kickoff.WorkflowID(task.ID, runID), ""))
	require.NotContains(t, log, `"status":"completed","step":"clone"`, "the cancel came while the clone ran")
	run := waitEnd(t, task.ID, runID, time.Minute)
	r := row{scenario: "5. cancel while cloning", runs: 1, terminal: 1}
	if run.Status == tasksapi.StatusCancelled {
		r.correct = 1
	}
	require.Equal(t, tasksapi.StatusCancelled, run.Status, "error: %v", deref(run.ErrorMessage))
	// The cancel reaches the step at its next heartbeat (up to 2 s): the
	// agent may have started by then, and must be gone now.
	if data, err := os.ReadFile(filepath.Join(marks, "pid."+runID)); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		if !assertGone(pid) {
			r.agentsAlive++
		}
	}
	require.Zero(t, r.agentsAlive)
	s.record(r)
}

// TestCancelWhilePublishing: the run is cancelled while its Publish step
// waits on the Tasks API.
func TestCancelWhilePublishing(t *testing.T) {
	s.faults.Delay(`"stage":"publish"`, time.Minute)
	defer s.faults.Delay(`"stage":"publish"`, 0)
	task, runID, _ := kickOff(t, "lines 2")
	require.Eventually(t, func() bool {
		raw, err := s.control.Logs(context.Background(), task.ID, runID)
		require.NoError(t, err)
		return strings.Contains(strings.Join(rawStrings(raw), ""), `"status":"completed","step":"agent"`)
	}, time.Minute, 20*time.Millisecond, "the agent step never finished")
	require.NoError(t, s.stack.Client.CancelWorkflow(context.Background(), kickoff.WorkflowID(task.ID, runID), ""))
	run := waitEnd(t, task.ID, runID, time.Minute)
	r := row{scenario: "5. cancel while publishing", runs: 1, terminal: 1}
	if run.Status == tasksapi.StatusCancelled {
		r.correct = 1
	}
	require.Equal(t, tasksapi.StatusCancelled, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Nil(t, run.Branch, "nothing was published")
	s.record(r)
}

// TestBadInputsFailWithAMessageAndTheWorkerServesOn: each ends failed (or
// its workflow fails, when there is no run to mark) with a message that
// names the problem; a normal run afterwards completes.
func TestBadInputsFailWithAMessageAndTheWorkerServesOn(t *testing.T) {
	ctx := context.Background()
	r := row{scenario: "6. bad inputs"}
	runCase := func(title, repository, want string, wantStatus tasksapi.Status) {
		marks := agenttest.SharedDir(t)
		task, err := s.control.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Description: marks, Repository: repository})
		require.NoError(t, err)
		kicked, err := s.control.RunTask(ctx, task.ID)
		require.NoError(t, err)
		run := waitEnd(t, task.ID, kicked.LatestRun.ID, 3*time.Minute)
		r.runs++
		r.terminal++
		text := fmt.Sprint(run.ErrorMessage)
		if run.ErrorMessage != nil {
			text = *run.ErrorMessage
		}
		raw, err := s.control.Logs(ctx, task.ID, run.ID)
		require.NoError(t, err)
		logText := strings.Join(rawStrings(raw), "\n")
		r.leaks += leaks(logText) + leaks(text)
		if run.Status == wantStatus && (strings.Contains(text, want) || strings.Contains(logText, want)) {
			r.correct++
		} else {
			t.Errorf("%s on %q: %s %q, want %s naming %q", title, repository, run.Status, text, wantStatus, want)
		}
		if data, err := os.ReadFile(filepath.Join(marks, "pid."+run.ID)); err == nil {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
			if !assertGone(pid) {
				r.agentsAlive++
			}
		}
	}
	runCase("fail", repo, "exited with code 3; last stderr lines: error: the build is broken", tasksapi.StatusFailed)
	runCase("killed", repo, "was killed by signal killed", tasksapi.StatusFailed)
	runCase("bigline", repo, "[line cut: 8951424 more bytes]", tasksapi.StatusCompleted)
	runCase("gib", repo, "log cut:", tasksapi.StatusCompleted)
	runCase("artifacts", repo, "artifact passwd is a symlink (never followed); skipped", tasksapi.StatusCompleted)
	runCase("artifacts", repo, "artifact too-big.bin is 31457281 bytes, over the 31457280 byte limit; skipped", tasksapi.StatusCompleted)
	runCase("lines 1", "", "has no repository", tasksapi.StatusFailed)
	runCase("lines 1", "../x", "is not of the form org/repo", tasksapi.StatusFailed)
	runCase("lines 1", "-x/y", "is not of the form org/repo", tasksapi.StatusFailed)
	runCase("lines 1", "acme/does-not-exist", "the repository does not exist or this worker can't read it", tasksapi.StatusFailed)
	runCase("missing", repo, "exited with code 127; last stderr lines:", tasksapi.StatusFailed)

	// The API answers a body that is not JSON: the run still ends failed, saying so.
	broken, err := s.control.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "lines 1", Repository: repo})
	require.NoError(t, err)
	s.faults.InvalidJSON(broken.ID)
	kicked, err := s.control.RunTask(ctx, broken.ID)
	require.NoError(t, err)
	run := waitEnd(t, broken.ID, kicked.LatestRun.ID, time.Minute)
	r.runs++
	r.terminal++
	if run.Status == tasksapi.StatusFailed && strings.Contains(*run.ErrorMessage, "not valid JSON") {
		r.correct++
	} else {
		t.Errorf("invalid JSON: %s %v", run.Status, run.ErrorMessage)
	}

	// The API answers 401 or 403: nothing can be written to the run; the
	// workflow fails with the API's answer and what to check.
	for code, hint := range map[int]string{401: "check POSTHOG_PERSONAL_API_KEY", 403: "task:read and task:write scopes"} {
		refused, err := s.control.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "lines 1", Repository: repo})
		require.NoError(t, err)
		s.faults.Force(refused.ID, code)
		kicked, err := s.control.RunTask(ctx, refused.ID)
		require.NoError(t, err)
		err = s.stack.Client.GetWorkflow(ctx, kickoff.WorkflowID(refused.ID, kicked.LatestRun.ID), "").Get(ctx, nil)
		s.faults.Force(refused.ID, 0)
		r.runs++
		r.terminal++
		if err != nil && strings.Contains(err.Error(), fmt.Sprintf("HTTP %d", code)) && strings.Contains(err.Error(), hint) {
			r.correct++
		} else {
			t.Errorf("HTTP %d: %v", code, err)
		}
	}

	// Workflows for a task or a run that doesn't exist: no run to mark, the
	// workflow itself fails saying which.
	for name, ids := range map[string][2]string{
		"task": {"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"},
	} {
		wf, err := s.stack.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: kickoff.WorkflowID(ids[0], ids[1]), TaskQueue: kickoff.DefaultTaskQueue,
		}, kickoff.WorkflowType, map[string]any{"run_id": ids[1]})
		require.NoError(t, err)
		err = wf.Get(ctx, nil)
		r.runs++
		r.terminal++
		if err != nil && strings.Contains(err.Error(), "task "+ids[0]+" not found in this project") {
			r.correct++
		} else {
			t.Errorf("missing %s: %v", name, err)
		}
	}
	task, err := s.control.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "lines 1", Repository: repo})
	require.NoError(t, err)
	missingRun := "00000000-0000-4000-8000-000000000003"
	wf, err := s.stack.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: kickoff.WorkflowID(task.ID, missingRun), TaskQueue: kickoff.DefaultTaskQueue,
	}, kickoff.WorkflowType, map[string]any{"run_id": missingRun})
	require.NoError(t, err)
	err = wf.Get(ctx, nil)
	r.runs++
	r.terminal++
	if err != nil && strings.Contains(err.Error(), "run "+missingRun+" of task") {
		r.correct++
	} else {
		t.Errorf("missing run: %v", err)
	}

	// And the workers still serve.
	next, runID, marks := kickOff(t, "lines 3")
	run = waitEnd(t, next.ID, runID, time.Minute)
	o := check(t, next.ID, run, marks, 3)
	r.runs++
	r.terminal++
	r.correct += o.correct
	s.record(r)
}

func assertGone(pid int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for proctest.Alive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return !proctest.Alive(pid)
}

// sampleArgv records the command lines of every process on the machine
// until stop is closed: a secret in a child's argv would be readable by
// anyone on the host.
func sampleArgv(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			data, err := os.ReadFile(p)
			if err != nil || len(data) == 0 {
				continue
			}
			line := strings.ReplaceAll(string(data), "\x00", " ")
			s.mu.Lock()
			s.argv[line] = true
			s.mu.Unlock()
		}
	}
}

// TestCanarySecretsAppearNowhere runs last: the worker's secrets (API key,
// GitHub token, agent API key) are in no stored entry, run, artifact (the
// scenarios above checked theirs), nor the daemons' own logs, nor the argv
// of any process seen while the runs above worked.
func TestCanarySecretsAppearNowhere(t *testing.T) {
	found := 0
	for _, path := range s.logs {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NotEmpty(t, data, "the daemon logged something")
		found += leaks(string(data))
	}
	s.mu.Lock()
	require.NotEmpty(t, s.argv, "command lines were sampled")
	for line := range s.argv {
		found += leaks(line)
	}
	sampled := len(s.argv)
	s.mu.Unlock()
	for _, r := range s.summary {
		found += r.leaks
	}
	t.Logf("%d distinct command lines sampled", sampled)
	s.record(row{scenario: "7. canary secrets in entries, runs, artifacts, worker logs, argv", leaks: found})
	require.Zero(t, found, "a canary secret leaked")
}

// deref is a run's error message for a test's failure message.
func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}
