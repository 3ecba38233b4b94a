package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/github"
	"github.com/taskworker/taskworker/internal/gitrepo"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/runstate"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/standin/githubtest"
)

func TestClassifyDecidesWhatIsRetried(t *testing.T) {
	a := &Activities{Redactor: redact.New("phx_secret_value")}
	cases := []struct {
		err       error
		errType   string
		retryable bool
	}{
		{&tasksapi.APIError{StatusCode: 503}, ErrTasksAPI, true},
		{&tasksapi.APIError{StatusCode: 429}, ErrTasksAPI, true},
		{&tasksapi.APIError{StatusCode: 401, Detail: "bad key phx_secret_value"}, ErrTasksAPI, false},
		{&tasksapi.APIError{StatusCode: 404}, ErrTasksAPI, false},
		{&tasksapi.DecodeError{Err: errors.New("eof")}, ErrTasksAPIResponse, false},
		{&gitrepo.Error{Stderr: "fatal: repository 'x' not found"}, ErrGit, false},
		{&gitrepo.Error{Stderr: "fatal: unable to access: Connection reset"}, ErrGit, true},
		{&process.StartError{Path: "claude", Err: errors.New("no")}, ErrAgentNotStarted, false},
		{&agent.ExitError{Agent: "command", Result: process.Result{ExitCode: 3}}, ErrAgentFailed, false},
		{&agent.ResultError{Agent: "claude", Kind: "error_max_turns", Turns: 200, Message: "max turns"}, ErrAgentFailed, false},
		{&agentTimeoutError{after: "1h0m0s"}, ErrAgentTimeout, false},
		{permanent("task %s has no repository", "t"), ErrInvalidInput, false},
		{alreadyEnded(tasksapi.StatusCancelled), ErrRunAlreadyEnded, false},
		{&pullRequestError{err: fmt.Errorf("open: %w", &github.Error{StatusCode: 422, Message: "Validation Failed"}), branch: "b"}, ErrPullRequest, false},
		// GitHub's client retried it already: Publish is not run again for it.
		{&pullRequestError{err: fmt.Errorf("open: %w", &github.Error{StatusCode: 502, Message: "Bad Gateway"}), branch: "b"}, ErrPullRequest, false},
		// A call the Tasks API client retried had its level of retries.
		{&tasksapi.APIError{StatusCode: 503, Attempts: 7}, ErrTasksAPI, false},
		{&tasksapi.NetworkError{Attempts: 7, Err: errors.New("connection refused")}, "Error", false},
		{&tasksapi.NetworkError{Attempts: 1, Err: errors.New("connection refused")}, "Error", true},
		{fmt.Errorf("wrapped: %w", errors.New("disk full")), "Error", true},
	}
	for _, tc := range cases {
		err := a.temporalError(fmt.Errorf("step: %w", tc.err))
		var appErr *temporal.ApplicationError
		require.ErrorAs(t, err, &appErr, "%v", tc.err)
		require.Equal(t, tc.errType, appErr.Type(), "%v", tc.err)
		require.Equal(t, !tc.retryable, appErr.NonRetryable(), "%v", tc.err)
		require.NotContains(t, appErr.Message(), "phx_secret_value")
	}
}

// A Tasks API answer sent once leaves its retry to the step's policy, no
// sooner than the API asked; a final one asks for no delay.
func TestTheAPIsRetryAfterIsTheStepsNextRetryDelay(t *testing.T) {
	a := &Activities{Redactor: redact.New()}
	for _, tc := range []struct {
		err  *tasksapi.APIError
		want time.Duration
	}{
		{&tasksapi.APIError{StatusCode: 429, Attempts: 1, RetryAfter: 5 * time.Second}, 5 * time.Second},
		{&tasksapi.APIError{StatusCode: 503, Attempts: 1}, 0},
		{&tasksapi.APIError{StatusCode: 429, Attempts: 5, RetryAfter: 5 * time.Second}, 0},
		{&tasksapi.APIError{StatusCode: 400, Attempts: 1, RetryAfter: 5 * time.Second}, 0},
	} {
		var appErr *temporal.ApplicationError
		require.ErrorAs(t, a.temporalError(fmt.Errorf("step: %w", tc.err)), &appErr)
		require.Equal(t, tc.want, appErr.NextRetryDelay(), "%v", tc.err)
	}
}

func TestAFailedPullRequestKeepsTheBranchUnlessStrict(t *testing.T) {
	srv := githubtest.NewServer("ghs_token_123456")
	defer srv.Close()
	srv.BranchExists = func(_, _, branch string) bool { return branch == "main" } // the head is "missing"
	in := PublishInput{
		Run:       RunContext{RunRef: RunRef{TaskID: "t", RunID: "r"}, Title: "Fix", Repository: "acme/app", Branch: "posthog/task-1"},
		Workspace: Workspace{BaseBranch: "main"},
	}
	pub := PublishOutput{Changed: true, Branch: "posthog/task-1"}
	srvURL := srv.URL
	for _, strict := range []bool{false, true} {
		a := &Activities{Redactor: redact.New("ghs_token_123456"), GitHub: github.New(srvURL, "ghs_token_123456"),
			Config: Config{PRStrict: strict}}
		output := map[string]any{}
		log := logstream.New(discardLog{}, "t", "r", a.Redactor, logstream.Config{})
		_, err := a.pullRequest(context.Background(), in, pub, output, log)
		_, _ = log.Close(context.Background())
		if strict {
			require.ErrorContains(t, err, "HTTP 422")
			require.ErrorContains(t, err, "the branch posthog/task-1 is pushed")
			var appErr *temporal.ApplicationError
			require.ErrorAs(t, a.temporalError(err), &appErr)
			require.Equal(t, ErrPullRequest, appErr.Type())
			require.True(t, appErr.NonRetryable(), "GitHub's refusal is final: Publish is not tried six times")
			continue
		}
		require.NoError(t, err)
		require.Contains(t, output["pr_error"], "HTTP 422: Validation Failed (head invalid)")
		require.Nil(t, output["pr_url"])
	}
}

func TestPullRequestsAreDraftsAsTheWorkerOrTheRunSays(t *testing.T) {
	srv := githubtest.NewServer("ghs_token_123456")
	defer srv.Close()
	srv.BranchExists = func(string, string, string) bool { return true }
	yes, no := true, false
	for i, tc := range []struct {
		workerDraft bool
		keepDraft   *bool
		want        bool
	}{{false, nil, false}, {true, nil, true}, {true, &no, false}, {false, &yes, true}} {
		branch := fmt.Sprintf("posthog/task-%d", i)
		in := PublishInput{
			Run: RunContext{RunRef: RunRef{TaskID: "t", RunID: "r"}, Title: "Fix", Repository: "acme/app", Branch: branch,
				Settings: runstate.Settings{KeepDraft: tc.keepDraft}},
			Workspace: Workspace{BaseBranch: "main"},
		}
		a := &Activities{Redactor: redact.New(), GitHub: github.New(srv.URL, "ghs_token_123456"), Config: Config{PRDraft: tc.workerDraft}}
		log := logstream.New(discardLog{}, "t", "r", a.Redactor, logstream.Config{})
		url, err := a.pullRequest(context.Background(), in, PublishOutput{Changed: true, Branch: branch}, map[string]any{}, log)
		_, _ = log.Close(context.Background())
		require.NoError(t, err)
		require.NotEmpty(t, url)
		pulls := srv.Pulls()
		require.Equal(t, tc.want, pulls[len(pulls)-1].Draft, "TASKWORKER_PR_DRAFT %v, state.keep_draft %v", tc.workerDraft, tc.keepDraft)
	}
}

type discardLog struct{}

func (discardLog) AppendLog(context.Context, string, string, []json.RawMessage) error { return nil }

func TestAStepGoesOnWhenItsStageCantBeRecorded(t *testing.T) {
	for _, tc := range []struct {
		patchStatus int
		wantErr     bool
	}{{503, false}, {403, true}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPatch {
				w.WriteHeader(tc.patchStatus)
				_, _ = w.Write([]byte(`{"detail":"no"}`))
				return
			}
			_, _ = w.Write([]byte(`{}`))
		}))
		a := &Activities{
			API:      tasksapi.New(tasksapi.Config{BaseURL: srv.URL, APIKey: "k", ProjectID: "1", Retries: 1, RetryWait: time.Millisecond, RetryMaxWait: time.Millisecond}),
			Redactor: redact.New(), Logger: zap.NewNop(), Config: Config{WorkspaceDir: t.TempDir()},
		}
		ran := false
		_, err := a.runStep(context.Background(), RunRef{TaskID: "t", RunID: "r"}, StepAgent, "", 0, func(*logstream.Stream) (string, error) {
			ran = true
			return "", nil
		})
		srv.Close()
		if tc.wantErr {
			require.ErrorContains(t, err, "HTTP 403")
			require.False(t, ran, "a refused run is not worked on")
			continue
		}
		require.NoError(t, err, "a stage PATCH that got 503 does not fail the step")
		require.True(t, ran)
	}
}
