package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/runstate"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/testtool"
)

// newBrowser starts a headless Chromium for the test, its tabs' context
// bounded to two minutes.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	browser := testtool.Chromium.Path(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 900),
		// This machine has no network beyond localhost; don't let Chromium try.
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true), chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	t.Cleanup(cancelCtx)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestDashboardCreatesRunsAndFollowsATask drives the local stack's page in
// a real headless Chromium: create a task, run it, watch its log and final
// status appear. Text from tasks and agents must show as text, never markup.
func TestDashboardCreatesRunsAndFollowsATask(t *testing.T) {
	ctx := newBrowser(t)

	title := `change the README from the dashboard <b>bold</b>`
	row := `//tr[contains(., "from the dashboard")]`
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(h.Stack.APIURL+"/"),
		chromedp.WaitVisible(`#create`),
		chromedp.SendKeys(`#create input[name=title]`, title),
		chromedp.SendKeys(`#create input[name=repository]`, repo),
		chromedp.SendKeys(`#create textarea[name=description]`, `<img src=x onerror="document.title='pwned'">`),
		chromedp.Click(`#create button[type=submit]`),
		chromedp.WaitVisible(row),
	))
	taskCell, err := chromedp.Run(ctx, chromedp.Text(row+`/td[1]`))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(row+`//button[contains(@class, "run")]`),
		chromedp.WaitVisible(`#run-facts [data-status="completed"]`),
		chromedp.WaitVisible(`//ol[@id="log"]/li[contains(., "run complete")]`),
	))
	logText, err := chromedp.Run(ctx, chromedp.Text(`#log`))
	require.NoError(t, err)
	facts, err := chromedp.Run(ctx, chromedp.Text(`#run-facts`))
	require.NoError(t, err)
	markup, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#tasks b, #log img, #run-pane img").length`))
	require.NoError(t, err)
	pageTitle, err := chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	screenshot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)

	require.NotEqual(t, "pwned", pageTitle)
	require.Contains(t, taskCell, title, "the title shows as text")
	require.Zero(t, markup, "no markup from a task or agent made it into the page")
	for _, want := range []string{"run started", "Cloning repository started", "line 1: read the prompt", "line 2: editing",
		"a warning on stderr", "line 3: done", "branch posthog/task-", "run complete"} {
		require.Contains(t, logText, want)
	}
	require.Contains(t, facts, "completed")
	require.Contains(t, facts, "posthog/task-")
	require.Contains(t, facts, "success (round 1) build: success test: success", "the pull request's check state")
	require.True(t, strings.Index(logText, "line 1") < strings.Index(logText, "line 3"), "log lines in order")

	// The artifact links download what the agent left.
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#artifacts a")].find(a => a.textContent === "plan.md").href`))
	require.NoError(t, err)
	resp, err := http.Get(href)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "# Plan\n\n1. Edit README.md\n", string(body))

	// docs/dashboard.png is this screenshot; set TASKWORKER_DASHBOARD_SCREENSHOT to refresh it.
	if path := os.Getenv("TASKWORKER_DASHBOARD_SCREENSHOT"); path != "" {
		require.NoError(t, os.WriteFile(path, screenshot, 0o644))
	}
}

// TestDashboardStartsAnInteractiveRunSendsItAMessageAndStopsIt drives the
// run controls: the "interactive" box starts a run in interactive mode, the
// message box sends it a follow-up through command/, a user's message in the
// log shows as the user's (as text), and Stop cancels the run, whose
// controls then go away.
func TestDashboardStartsAnInteractiveRunSendsItAMessageAndStopsIt(t *testing.T) {
	ctx := newBrowser(t)
	pidFile := filepath.Join(agenttest.SharedDir(t), "pids")
	task, err := h.API.CreateTask(context.Background(), tasksapi.CreateTaskRequest{Title: "hang around for the dashboard's controls", Description: pidFile, Repository: repo})
	require.NoError(t, err)
	row := `//tr[contains(., "for the dashboard's controls")]`
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(h.Stack.APIURL+"/"),
		chromedp.WaitVisible(row),
		chromedp.Click(`#run-interactive`),
		chromedp.Click(row+`//button[contains(@class, "run")]`),
		chromedp.WaitVisible(`#run-facts [data-status="in_progress"]`),
		chromedp.WaitVisible(`#followup textarea`),
		chromedp.WaitVisible(`#stop`),
	))
	latest, err := h.API.GetTask(context.Background(), task.ID)
	require.NoError(t, err)
	require.NotNil(t, latest.LatestRun)
	run := *latest.LatestRun
	require.Equal(t, runstate.Interactive, run.State["mode"], "the box made the run interactive")
	pids := waitForAgent(t, pidFile)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(`#followup textarea`, "please also update the changelog"),
		chromedp.Click(`#followup button[type=submit]`),
		chromedp.WaitVisible(`#followup-sent`),
	))
	errorShown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.querySelector("#followup-error").hidden`))
	require.NoError(t, err)
	require.False(t, errorShown, "the command was accepted: the API answered 200, queued for the workflow")
	// A user's message in the log, as an interactive run writes it.
	userEntry := `{"type":"notification","timestamp":"2026-01-01T00:00:00Z","event_id":"dashboard-user-message","notification":{"jsonrpc":"2.0","method":"session/update",` +
		`"params":{"update":{"sessionUpdate":"user_message_chunk","content":{"type":"text","text":"<b>from the user</b>"}}}}}`
	require.NoError(t, h.API.AppendLog(context.Background(), task.ID, run.ID, []json.RawMessage{json.RawMessage(userEntry)}))
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(`//ol[@id="log"]//span[contains(@class, "user")][contains(., "<b>from the user</b>")]`)))
	markup, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#log b").length`))
	require.NoError(t, err)
	require.Zero(t, markup, "the user's message shows as text")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(`#stop`),
		chromedp.WaitVisible(`#run-facts [data-status="cancelled"]`),
		chromedp.WaitNotVisible(`#stop`),
		chromedp.WaitNotVisible(`#followup`),
	))
	requireGone(t, pids, 10*time.Second)
	require.NoError(t, workflowEnds(t, task.ID, run.ID))
	require.Contains(t, consoleLines(logOf(t, task.ID, run.ID)), "warn: run ended from outside (cancelled): stopped from the dashboard; its steps were stopped")
}
