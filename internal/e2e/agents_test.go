package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/sandbox"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/proctest"
	"github.com/taskworker/taskworker/internal/testkit/standin/anthropictest"
	"github.com/taskworker/taskworker/internal/testkit/standin/openaitest"
	"github.com/taskworker/taskworker/internal/testkit/testtool"
	"github.com/taskworker/taskworker/worker"
)

// sessionUpdates lists the session/update entries as kind or kind:status.
func sessionUpdates(entries []entry) []map[string]any {
	var out []map[string]any
	for _, e := range entries {
		if e.Notification.Method == "session/update" {
			out = append(out, e.Notification.Params["update"].(map[string]any))
		}
	}
	return out
}

func kinds(updates []map[string]any) []string {
	var out []string
	for _, u := range updates {
		k := u["sessionUpdate"].(string)
		if s, ok := u["status"].(string); ok {
			k += ":" + s
		}
		out = append(out, k)
	}
	return out
}

func TestTheCommandProtocolGivesARichLogArtifactsAndASummary(t *testing.T) {
	task, run := startRun(t, "protocol demo", "", repo)
	run = waitForEnd(t, task.ID, run.ID)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Equal(t, "Added a changelog.", run.Output["summary"])

	entries := logOf(t, task.ID, run.ID)
	updates := sessionUpdates(entries)
	require.Equal(t, []string{"agent_message", "tool_call:in_progress", "tool_call_update:completed"}, kinds(updates))
	require.Equal(t, "I will add a changelog.", updates[0]["content"].(map[string]any)["text"])
	require.Equal(t, "c1", updates[1]["toolCallId"])
	require.Equal(t, "Write CHANGELOG.md", updates[1]["title"])
	require.Equal(t, "edit", updates[1]["kind"])
	require.Equal(t, map[string]any{"path": "CHANGELOG.md"}, updates[1]["rawInput"])
	require.Equal(t, "c1", updates[2]["toolCallId"])
	require.Equal(t, "wrote 1 line", updates[2]["rawOutput"])

	var agentSteps []string
	for _, e := range entries {
		if e.Notification.Method == "_posthog/progress" && e.Notification.Params["group"] == "agent" {
			agentSteps = append(agentSteps, e.Notification.Params["step"].(string)+":"+e.Notification.Params["status"].(string))
		}
	}
	require.Equal(t, []string{"tests:started", "tests:completed"}, agentSteps)
	lines := consoleLines(entries)
	require.Contains(t, lines, `info: {"level":"info","msg":"a JSON log line that is not protocol"}`)
	require.Contains(t, lines, `warn: agent protocol: tool_result line: "id" is missing: it names the tool_call this result ends: {"type":"tool_result","status":"completed"}`)
	require.Contains(t, lines, "info: artifact run-notes.md saved for upload")

	notes, err := os.ReadFile(h.Stack.API.ArtifactPath(run.ID, "run-notes.md"))
	require.NoError(t, err)
	require.Equal(t, "notes of the run\n", string(notes))
}

const findingSchema = `{"type":"object","required":["severity","files"],"properties":{"severity":{"enum":["low","high"]},"files":{"type":"array","items":{"type":"string"}}}}`

func runWithSchema(t *testing.T, title, description, schema string) tasksapi.TaskRun {
	t.Helper()
	ctx := context.Background()
	task, err := h.API.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: title, Description: description, Repository: repo, JSONSchema: json.RawMessage(schema)})
	require.NoError(t, err)
	kicked, err := h.API.RunTask(ctx, task.ID)
	require.NoError(t, err)
	return waitForEnd(t, task.ID, kicked.LatestRun.ID)
}

func TestAResultMatchingTheTasksSchemaBecomesTheRunsOutput(t *testing.T) {
	run := runWithSchema(t, "report findings", "good", findingSchema)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Equal(t, "low", run.Output["severity"])
	require.Equal(t, []any{"main.go"}, run.Output["files"])
	lines := consoleLines(logOf(t, run.Task, run.ID))
	require.Contains(t, lines, "info: the prompt asks for JSON")
	require.Contains(t, lines, "info: the agent's result (from TASK_OUTPUT_FILE) matches the task's json_schema")

	run = runWithSchema(t, "report findings", "line", findingSchema)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Equal(t, "high", run.Output["severity"])
	require.Equal(t, "one finding", run.Output["summary"])
}

func TestAMissingOrInvalidResultFailsTheRunNamingTheViolation(t *testing.T) {
	run := runWithSchema(t, "report findings", "bad", findingSchema)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.NotNil(t, run.ErrorMessage)
	require.Contains(t, *run.ErrorMessage, "the result does not match the task's json_schema")
	require.Contains(t, *run.ErrorMessage, "at /severity")
	require.Contains(t, *run.ErrorMessage, "(from TASK_OUTPUT_FILE)")

	run = runWithSchema(t, "report findings", "none", findingSchema)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Contains(t, *run.ErrorMessage, "the agent gave no result")

	run = runWithSchema(t, "report findings", "good", `{"type":"nonsense"}`)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Contains(t, *run.ErrorMessage, "json_schema is not a valid JSON Schema")
	require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusFailed}, statusHistory(t, run.ID), "refused before any work")
}

// overloads counts the calls of the overload scenario.
var overloads atomic.Int32

// egressTarget is the URL the network scenario's allowed request goes to.
var egressTarget atomic.Value

// claudeScript is the model behind the Claude Code runs: the task title picks the scenario.
func claudeScript(c anthropictest.Conversation) anthropictest.Reply {
	if len(c.Tools) == 0 {
		return anthropictest.Reply{Text: "ok"} // the CLI's side requests (titles, summaries)
	}
	switch {
	case strings.HasPrefix(c.Prompt, "Add a greeting"):
		switch c.Turn {
		case 0:
			return anthropictest.Reply{Text: "Adding a greeting.", Tools: []anthropictest.ToolUse{{Name: "Write",
				Input: map[string]any{"file_path": filepath.Join(c.WorkDir, "greeting.txt"), "content": "hello from claude\n"}}}}
		case 1:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash",
				Input: map[string]any{"command": "git status --short", "description": "Show the change"}}}}
		}
		return anthropictest.Reply{Text: "Added greeting.txt with a hello."}
	case strings.HasPrefix(c.Prompt, "Classify the repository"):
		// The schema reaches Claude Code as --json-schema: it offers a
		// StructuredOutput tool and refuses input that doesn't match.
		switch {
		case !slices.Contains(c.Tools, "StructuredOutput"):
			return anthropictest.Reply{Text: "nobody asked for JSON"}
		case c.Turn == 0:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "StructuredOutput", Input: map[string]any{"severity": "medium"}}}}
		case c.Turn == 1:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "StructuredOutput", Input: map[string]any{"severity": "low", "files": []any{"README.md"}}}}}
		}
		return anthropictest.Reply{Text: "Classified."}
	case strings.HasPrefix(c.Prompt, "Classify in prose"):
		return anthropictest.Reply{Text: "It is a small Go repository."}
	case strings.HasPrefix(c.Prompt, "Overflow the context"):
		return anthropictest.Reply{Status: 400, ErrType: "invalid_request_error", Message: "messages.0.content: this request can never succeed"}
	case strings.HasPrefix(c.Prompt, "Hang"):
		// A command that runs until the run is cancelled and says where it is,
		// in a script (Claude Code asks before running sh -c or writing
		// outside the clone, and nobody answers).
		if c.Turn == 0 {
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Write", Input: map[string]any{
				"file_path": filepath.Join(c.WorkDir, "hang.sh"),
				"content":   "echo $$ > claude.pid.tmp && mv claude.pid.tmp claude.pid && exec sleep 300\n"}}}}
		}
		return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{"command": "sh hang.sh"}}}}
	case strings.HasPrefix(c.Prompt, "Dump what you can reach"):
		// An agent told to look for credentials: everything in its
		// environment and HOME, committed for the test to read.
		switch c.Turn {
		case 0:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{
				"command": "env; cat ~/.claude.json ~/.claude/* 2>/dev/null; true", "description": "Look around"}}}}
		case 1:
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Write", Input: map[string]any{
				"file_path": filepath.Join(c.WorkDir, "found.txt"), "content": c.Results[0].Content}}}}
		}
		return anthropictest.Reply{Text: "Wrote found.txt."}
	case strings.HasPrefix(c.Prompt, "Reach the network"):
		// A host the policy denies (twice: one warning), then one it allows.
		if c.Turn == 0 {
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{
				"command": "curl -s -m 20 -o /dev/null -w 'denied:%{http_code}\\n' http://denied.invalid/; " +
					"curl -s -m 20 -o /dev/null -w 'denied-again:%{http_connect}\\n' https://denied.invalid/; " +
					"curl -s -m 20 " + egressTarget.Load().(string) + "/hello",
				"description": "Reach out"}}}}
		}
		return anthropictest.Reply{Text: "Reached: " + strings.TrimSpace(c.Results[0].Content)}
	case strings.HasPrefix(c.Prompt, "Print the key"):
		if c.Turn == 0 {
			return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{"command": "printenv ANTHROPIC_API_KEY"}}}}
		}
		return anthropictest.Reply{Text: "The key is " + strings.TrimSpace(c.Results[0].Content)}
	case strings.HasPrefix(c.Prompt, "Ride out an overload"):
		// The API is overloaded for this conversation's first two calls.
		if overloads.Add(1) <= 2 {
			return anthropictest.Reply{Status: 529, ErrType: "overloaded_error", Message: "Overloaded"}
		}
		return anthropictest.Reply{Text: "Done despite the overload."}
	case strings.HasPrefix(c.Prompt, "Converse"):
		return converse(c)
	case strings.HasPrefix(c.Prompt, "Loop"):
		return anthropictest.Reply{Tools: []anthropictest.ToolUse{{Name: "Bash", Input: map[string]any{"command": "true"}}}}
	}
	return anthropictest.Reply{Text: "unknown scenario"}
}

// retryDelay is the delay the n-th retry warning announced.
func retryDelay(lines []string, n int) string {
	prefix := fmt.Sprintf("retry %d of 10 in ", n)
	for _, l := range lines {
		if i := strings.Index(l, prefix); i >= 0 {
			return strings.TrimSuffix(l[i+len(prefix):], " ms")
		}
	}
	return "?"
}

// logWithout reads a run's log, failing if secret appears anywhere in it.
func logWithout(t *testing.T, client *tasksapi.Client, run tasksapi.TaskRun, secret string) []entry {
	raw, err := client.Logs(context.Background(), run.Task, run.ID)
	require.NoError(t, err)
	var entries []entry
	for _, r := range raw {
		require.NotContains(t, string(r), secret)
		var e entry
		require.NoError(t, json.Unmarshal(r, &e))
		entries = append(entries, e)
	}
	return entries
}

// claudeProcesses are the live claude processes the in-process worker started.
func claudeProcesses(t *testing.T) []int {
	return descendants(t, func(comm, _ string) bool { return strings.HasPrefix(comm, "claude") })
}

// descendants are the live processes below this one (the worker) that match:
// the agent runs in its sandbox, under the sandbox's init.
func descendants(t *testing.T, match func(comm, cmdline string) bool) []int {
	dirs, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if !match(strings.TrimSpace(string(comm)), string(cmdline)) || !proctest.Alive(pid) {
			continue
		}
		for p := pid; p > 1; {
			parent, err := proctest.Parent(p)
			if err != nil {
				break
			}
			if parent == os.Getpid() {
				pids = append(pids, pid)
				break
			}
			p = parent
		}
	}
	return pids
}

// TestClaudeCodeStopsAtItsRunsBudget: the broker counts what the stand-in's
// answers say they used (120 tokens a call), stops the agent past the run's
// budget, and lets no further request through.
func TestClaudeCodeStopsAtItsRunsBudget(t *testing.T) {
	claude := agenttest.Binary(t, "claude", "TASKWORKER_CLAUDE_PATH")
	const key = "sk-ant-e2e-budget-key-0123456789"
	api := anthropictest.Start(key, claudeScript)
	defer api.Close()
	own := newOwnStack(t, devstack.Options{Worker: worker.Config{
		Sandbox: string(sandbox.Auto), Agent: "claude", ClaudePath: claude, ClaudeMaxTurns: 50,
		AnthropicAPIKey: key, AnthropicBaseURL: api.URL, RunMaxTokens: 1000,
		AgentTimeout: 2 * time.Minute, RunTimeout: 5 * time.Minute, StopGrace: 2 * time.Second,
	}})
	stack, client := own.start(t)
	defer stack.Stop()
	_, run := runToEnd(t, stack, client, "Loop forever", "", 2*time.Minute)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Regexp(t, `^budget of 1000 tokens reached after \d+ tokens`, deref(run.ErrorMessage))
	served := api.Requests()
	require.Less(t, served, 20, "the agent was stopped at its budget, well before its 50 turns")
	usage := run.Output["usage"].(map[string]any)
	require.Equal(t, "broker", usage["counted_by"])
	require.GreaterOrEqual(t, usage["input_tokens"].(float64)+usage["output_tokens"].(float64), 1000.0)
	require.Empty(t, api.Violations())
}

func TestClaudeCodeRunsEndToEnd(t *testing.T) {
	claude := agenttest.Binary(t, "claude", "TASKWORKER_CLAUDE_PATH")
	const key = "sk-ant-e2e-canary-key-0123456789"
	api := anthropictest.Start(key, claudeScript)
	defer api.Close()
	// A host the egress policy names, on an address of this machine the
	// run's own network can't reach but through the worker's proxy.
	allowed, allowedHits := egressOrigin(t)
	brokerAddr := freeAddr(t)
	// The strongest sandbox the host offers: the real CLIs in their own
	// namespaces, root and network, as on a VM.
	own := newOwnStack(t, devstack.Options{Worker: worker.Config{
		Sandbox: string(sandbox.Auto),
		Agent:   "claude", ClaudePath: claude, ClaudeMaxTurns: 4,
		AnthropicAPIKey: key, AnthropicBaseURL: api.URL, BrokerAddr: brokerAddr,
		EgressAllow:  "defaults," + allowed.Host,
		AgentTimeout: 2 * time.Minute, RunTimeout: 5 * time.Minute, StopGrace: 2 * time.Second,
	}})
	stack, client := own.start(t)
	defer stack.Stop()
	logOfRun := func(run tasksapi.TaskRun) []entry { return logWithout(t, client, run, key) }

	t.Run("a run that edits files completes with its branch, summary and usage", func(t *testing.T) {
		task, run := runToEnd(t, stack, client, "Add a greeting", "A file that says hello.", 2*time.Minute)
		require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
		require.Equal(t, "Added greeting.txt with a hello.", run.Output["summary"])
		usage := run.Output["usage"].(map[string]any)
		require.Equal(t, "claude", usage["agent"])
		require.EqualValues(t, 3, usage["num_turns"])
		require.Contains(t, usage, "cost_usd")
		require.NotEmpty(t, run.State["agent_session"])

		branch := "posthog/task-" + task.Slug
		require.Equal(t, branch, *run.Branch)
		bare := filepath.Join(own.Dir, "git", repo+".git")
		require.Equal(t, "hello from claude", gitOut(t, bare, "show", branch+":greeting.txt"))

		entries := logOfRun(run)
		updates := sessionUpdates(entries)
		require.Equal(t, []string{"agent_message", "tool_call:in_progress", "tool_call_update:completed",
			"tool_call:in_progress", "tool_call_update:completed", "agent_message"}, kinds(updates))
		require.Equal(t, "Write greeting.txt", updates[1]["title"])
		require.Equal(t, "edit", updates[1]["kind"])
		require.Equal(t, "`git status --short`", updates[3]["title"])
		require.Contains(t, updates[4]["rawOutput"], "greeting.txt")
		require.Contains(t, strings.Join(consoleLines(entries), "\n"), "info: Claude Code ")
		require.Empty(t, api.Violations())
	})

	t.Run("a result matching the schema becomes the output", func(t *testing.T) {
		_, run := runTaskToEnd(t, stack, client, tasksapi.CreateTaskRequest{Title: "Classify the repository", Repository: repo,
			JSONSchema: json.RawMessage(findingSchema)}, 2*time.Minute)
		require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
		require.Equal(t, "low", run.Output["severity"])
		require.Equal(t, []any{"README.md"}, run.Output["files"])
		updates := sessionUpdates(logWithout(t, client, run, key))
		require.Equal(t, "failed", updates[1]["status"], "Claude Code refused the first, invalid result")
		require.Contains(t, updates[1]["rawOutput"], "does not match required schema")
	})

	t.Run("prose where the schema wants JSON fails the run", func(t *testing.T) {
		_, run := runTaskToEnd(t, stack, client, tasksapi.CreateTaskRequest{Title: "Classify in prose", Repository: repo,
			JSONSchema: json.RawMessage(findingSchema)}, 2*time.Minute)
		require.Equal(t, tasksapi.StatusFailed, run.Status)
		require.Contains(t, *run.ErrorMessage, "final message is not JSON")
	})

	t.Run("an API error ends the run failed, never completed", func(t *testing.T) {
		_, run := runToEnd(t, stack, client, "Overflow the context", "", 2*time.Minute)
		require.Equal(t, tasksapi.StatusFailed, run.Status)
		require.Contains(t, *run.ErrorMessage, "agent claude reported an error")
		require.Contains(t, *run.ErrorMessage, "API status 400")
		require.Nil(t, run.Branch)
		require.Contains(t, run.Output, "usage", "a failed run's cost is recorded too")
	})

	t.Run("the agent's own key never reaches the log or the run", func(t *testing.T) {
		_, run := runToEnd(t, stack, client, "Print the key", "", 2*time.Minute)
		require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
		summary := run.Output["summary"].(string)
		require.NotContains(t, summary, key)
		entries := logOfRun(run) // fails on the key anywhere in the log
		updates := sessionUpdates(entries)
		require.Equal(t, []string{"tool_call:in_progress", "tool_call_update:completed", "agent_message"}, kinds(updates))
		require.Equal(t, "[REDACTED]", strings.TrimSpace(updates[1]["rawOutput"].(string)), "Claude Code's command saw the key; the log must not")
		require.Equal(t, "The key is [REDACTED]", summary)
	})

	t.Run("the provider's key never enters the sandbox: the agent holds a run token the broker refuses once the run ends", func(t *testing.T) {
		_, run := runToEnd(t, stack, client, "Dump what you can reach", "", 2*time.Minute)
		require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
		// What the agent found, as it pushed it: no redaction on the way.
		found := gitOut(t, filepath.Join(own.Dir, "git", repo+".git"), "show", *run.Branch+":found.txt")
		require.NotContains(t, found, key, "the provider's key was in the agent's reach")
		var token, baseURL string
		for _, line := range strings.Split(found, "\n") {
			if v, ok := strings.CutPrefix(line, "ANTHROPIC_API_KEY="); ok {
				token = v
			}
			if v, ok := strings.CutPrefix(line, "ANTHROPIC_BASE_URL="); ok {
				baseURL = v
			}
		}
		require.True(t, strings.HasPrefix(token, "sk-ant-taskworker-run-"), "the agent held a run token: %q", token)
		require.NotContains(t, baseURL, api.URL, "the agent talked to the worker's broker, not the provider")
		if stack.Sandbox.IsolatesNetwork() {
			require.Equal(t, "http://"+sandbox.GatewayAddr+"/anthropic", baseURL, "through its gateway")
		}
		// Every request the provider served carried the real key (it
		// refuses any other): the broker put it there.
		require.Empty(t, api.Violations())
		served := api.Requests()
		// The broker as the worker serves it on its own network; in an
		// isolated run the agent reached it at the run's gateway.
		req, err := http.NewRequest(http.MethodPost, "http://"+brokerAddr+"/anthropic/v1/messages", strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set("x-api-key", token)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusUnauthorized, res.StatusCode, "the token of an ended run is refused")
		require.Equal(t, served, api.Requests(), "nothing reached the provider with it")
	})

	t.Run("an isolated run reaches the hosts the egress policy allows, and each denied host is logged once", func(t *testing.T) {
		if !isolatedHere(t, stack) {
			t.Skip("this host gives runs no network of their own (the uid or off sandbox); .ci/run runs where it does")
		}
		testtool.Curl.Path(t)
		egressTarget.Store(allowed.String())
		_, run := runToEnd(t, stack, client, "Reach the network", "", 2*time.Minute)
		require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
		summary := run.Output["summary"].(string)
		require.Contains(t, summary, "denied:403", "the proxy refused the host the policy doesn't allow")
		require.Contains(t, summary, "denied-again:403", "a CONNECT to it too")
		require.Contains(t, summary, "egress origin says hello", "the allowed host answered through the proxy")
		require.EqualValues(t, 1, allowedHits.Load())
		var warnings []string
		for _, line := range consoleLines(logWithout(t, client, run, key)) {
			if strings.Contains(line, "network: the agent was refused") {
				warnings = append(warnings, line)
			}
		}
		require.Equal(t, []string{
			"warn: network: the agent was refused denied.invalid:80 (not in TASKWORKER_EGRESS_ALLOW); further refusals of it are not logged",
			"warn: network: the agent was refused denied.invalid:443 (not in TASKWORKER_EGRESS_ALLOW); further refusals of it are not logged",
		}, warnings)
	})

	// hangingRun starts a run whose Claude Code waits in a command, and
	// returns it once the command runs, with the command's pid.
	hangingRun := func(t *testing.T) (tasksapi.Task, string, int) {
		ctx := context.Background()
		task, err := client.CreateTask(ctx, tasksapi.CreateTaskRequest{Title: "Hang", Repository: repo})
		require.NoError(t, err)
		kicked, err := client.RunTask(ctx, task.ID)
		require.NoError(t, err)
		runID := kicked.LatestRun.ID
		pidFile := filepath.Join(stack.WorkerConfig.WorkspaceDir, runID, "repo", "claude.pid")
		var pid int
		started := func() bool {
			if _, err := os.Stat(pidFile); err != nil {
				return false
			}
			// The pid it wrote is its sandbox's; the worker sees another.
			sleeps := descendants(t, func(_, cmdline string) bool { return cmdline == "sleep\x00300\x00" })
			if len(sleeps) == 1 {
				pid = sleeps[0]
			}
			return len(sleeps) == 1
		}
		if !assert.Eventually(t, started, time.Minute, 20*time.Millisecond, "Claude Code never ran the command") {
			raw, _ := client.Logs(ctx, task.ID, runID)
			for _, r := range raw {
				t.Log(string(r))
			}
			t.FailNow()
		}
		require.True(t, proctest.Alive(pid))
		require.Len(t, claudeProcesses(t), 1, "Claude Code runs below the worker, in its sandbox")
		return task, runID, pid
	}
	waitForStatus := func(t *testing.T, task tasksapi.Task, runID string, status tasksapi.Status) tasksapi.TaskRun {
		var run tasksapi.TaskRun
		require.Eventually(t, func() bool {
			var err error
			run, err = client.GetRun(context.Background(), task.ID, runID)
			require.NoError(t, err)
			return run.Status.Terminal()
		}, time.Minute, 50*time.Millisecond)
		require.Equal(t, status, run.Status, "error: %v", deref(run.ErrorMessage))
		return run
	}

	t.Run("cancelling a run stops Claude Code and the commands it runs", func(t *testing.T) {
		task, runID, pid := hangingRun(t)
		require.NoError(t, stack.Client.CancelWorkflow(context.Background(), kickoff.WorkflowID(task.ID, runID), ""))
		waitForStatus(t, task, runID, tasksapi.StatusCancelled)
		require.Eventually(t, func() bool { return !proctest.Alive(pid) && len(claudeProcesses(t)) == 0 },
			10*time.Second, 20*time.Millisecond, "Claude Code or its command outlived the cancelled run")
	})

	t.Run("a Claude Code that crashes mid-run fails the run, never completes it", func(t *testing.T) {
		task, runID, pid := hangingRun(t)
		require.NoError(t, syscall.Kill(claudeProcesses(t)[0], syscall.SIGKILL))
		run := waitForStatus(t, task, runID, tasksapi.StatusFailed)
		require.Contains(t, *run.ErrorMessage, "agent claude was killed by signal killed before reporting a result")
		require.Nil(t, run.Branch)
		require.Eventually(t, func() bool { return !proctest.Alive(pid) }, 10*time.Second, 20*time.Millisecond,
			"the crashed Claude Code's command outlived it")
	})

	t.Run("an overloaded API is retried and the run completes", func(t *testing.T) {
		_, run := runToEnd(t, stack, client, "Ride out an overload", "", 2*time.Minute)
		require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
		require.Equal(t, "Done despite the overload.", run.Output["summary"])
		lines := consoleLines(logWithout(t, client, run, key))
		require.Contains(t, lines, "warn: claude: API call failed (HTTP 529, overloaded); retry 1 of 10 in "+retryDelay(lines, 1)+" ms")
	})

	t.Run("complete_task(cancelled) in the middle of a turn stops Claude Code within 10 s", func(t *testing.T) {
		task, runID, pid := hangingRun(t)
		code, body := post(t, stack, "/tasks/"+task.ID+"/runs/"+runID+"/cancel/", `{"reason":"stop now"}`)
		require.Equal(t, http.StatusOK, code, body)
		require.Eventually(t, func() bool { return !proctest.Alive(pid) && len(claudeProcesses(t)) == 0 },
			10*time.Second, 20*time.Millisecond, "Claude Code or its command outlived complete_task")
		run := waitForStatus(t, task, runID, tasksapi.StatusCancelled)
		require.Equal(t, []tasksapi.Status{tasksapi.StatusQueued, tasksapi.StatusInProgress, tasksapi.StatusCancelled},
			statusHistoryOf(t, stack, run.ID), "the API's one terminal status")
	})

	interactiveRuns(t, stack, client, filepath.Join(own.Dir, "git", repo+".git"), logOfRun)

	t.Run("running out of turns fails the run", func(t *testing.T) {
		_, run := runToEnd(t, stack, client, "Loop forever", "", 2*time.Minute)
		require.Equal(t, tasksapi.StatusFailed, run.Status)
		require.Contains(t, *run.ErrorMessage, "error_max_turns")
	})
}

func TestCodexRunsEndToEnd(t *testing.T) {
	codex := agenttest.Binary(t, "codex", "TASKWORKER_CODEX_PATH")
	const key = "sk-openai-e2e-canary-key-0123456789"
	var dumped atomic.Value
	api := openaitest.Start(key, func(c openaitest.Conversation) openaitest.Reply {
		if strings.HasPrefix(c.Prompt, "Refuse") {
			return openaitest.Reply{Status: 400, ErrType: "invalid_request_error", Message: "this request can never succeed"}
		}
		if strings.HasPrefix(c.Prompt, "Dump what you can reach") {
			// An agent told to look for credentials: its environment, its
			// HOME and Codex's own files, as Codex hands them back.
			if c.Turn == 0 {
				return openaitest.Reply{Exec: `const r = await tools.exec_command({cmd: "env; cat ~/.codex/* 2>/dev/null; grep -rs . ~ 2>/dev/null | head -c 200000; true"}); text(r.output);`}
			}
			dumped.Store(strings.Join(c.Outputs, "\n"))
			return openaitest.Reply{Text: "Looked around."}
		}
		if c.Turn == 0 {
			return openaitest.Reply{Text: "Adding a greeting.", Exec: `const r = await tools.exec_command({cmd: "printf 'hello from codex\\n' > greeting.txt"}); text(r.output);`}
		}
		return openaitest.Reply{Text: "Added greeting.txt."}
	})
	defer api.Close()
	// The strongest sandbox the host offers: the real CLIs in their own
	// namespaces and root, as on a VM.
	own := newOwnStack(t, devstack.Options{Worker: worker.Config{
		Sandbox: string(sandbox.Auto),
		Agent:   "codex", CodexPath: codex, OpenAIAPIKey: key, OpenAIBaseURL: api.URL,
		AgentTimeout: 2 * time.Minute, RunTimeout: 5 * time.Minute, StopGrace: 2 * time.Second,
	}})
	stack, client := own.start(t)
	defer stack.Stop()

	task, run := runToEnd(t, stack, client, "Add a greeting", "", 2*time.Minute)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	require.Equal(t, "Added greeting.txt.", run.Output["summary"])
	require.Equal(t, "codex", run.Output["usage"].(map[string]any)["agent"])
	require.NotEmpty(t, run.State["agent_session"])
	bare := filepath.Join(own.Dir, "git", repo+".git")
	require.Equal(t, "hello from codex", gitOut(t, bare, "show", "posthog/task-"+task.Slug+":greeting.txt"))
	require.Equal(t, []string{"agent_message", "tool_call:in_progress", "tool_call_update:completed", "agent_message"},
		kinds(sessionUpdates(logWithout(t, client, run, key))))
	require.Empty(t, api.Violations())

	_, run = runToEnd(t, stack, client, "Refuse this", "", 2*time.Minute)
	require.Equal(t, tasksapi.StatusFailed, run.Status)
	require.Contains(t, *run.ErrorMessage, "agent codex reported an error (turn.failed)")

	// What Codex's command found went back to the model unredacted: the
	// provider's key is not in it, the run's token is, and the model API it
	// used was the worker's.
	_, run = runToEnd(t, stack, client, "Dump what you can reach", "", 2*time.Minute)
	require.Equal(t, tasksapi.StatusCompleted, run.Status, "error: %v", deref(run.ErrorMessage))
	found, _ := dumped.Load().(string)
	require.Contains(t, found, "OPENAI_API_KEY=sk-ant-taskworker-run-", "the command's output reached the model")
	require.NotContains(t, found, key, "the provider's key was in the agent's reach")
	if stack.Sandbox.IsolatesNetwork() {
		require.Contains(t, found, "HTTPS_PROXY=http://"+sandbox.GatewayAddr)
	}
	require.Empty(t, api.Violations(), "every request reached the provider with the real key")
}

// egressOrigin serves a host for the network scenario on an address of this
// machine other than loopback (the run's own loopback is another), and
// counts its requests; nil when the machine has no such address.
func egressOrigin(t *testing.T) (*url.URL, *atomic.Int32) {
	t.Helper()
	hits := &atomic.Int32{}
	var ip net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			ip = n.IP
			break
		}
	}
	if ip == nil {
		return &url.URL{Scheme: "http", Host: "192.0.2.1:9"}, hits
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "egress origin says hello")
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return &url.URL{Scheme: "http", Host: l.Addr().String()}, hits
}

// freeAddr is a loopback address nothing listens on yet.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// isolatedHere reports a stack whose runs have a network of their own; a
// host that offers none fails the test where the sandbox is required.
func isolatedHere(t *testing.T, stack *devstack.Stack) bool {
	t.Helper()
	if stack.Sandbox.IsolatesNetwork() {
		return true
	}
	if os.Getenv("TASKWORKER_REQUIRE_SANDBOX") != "" {
		t.Fatalf("TASKWORKER_REQUIRE_SANDBOX is set, but the stack's sandbox is %s", stack.Sandbox.Describe())
	}
	return false
}
