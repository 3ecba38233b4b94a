// Package stacktest starts the local stack for the suites that run on one
// (internal/e2e, internal/reliability, the tests of internal/reaper): a
// folder the sandbox's uids can reach, Repository seeded as the runs'
// origin, the suite's agent script, a GitHub stand-in that sees the
// origin's branches, and a client of the stack's Tasks API.
//
// It links the Temporal server, through devstack: only tests import it.
package stacktest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/taskworker/taskworker/internal/devstack"
	"github.com/taskworker/taskworker/internal/tasksapi"
	"github.com/taskworker/taskworker/internal/testkit/agenttest"
	"github.com/taskworker/taskworker/internal/testkit/standin/githubtest"
)

// Repository is the repository the suites' runs work on.
const Repository = "acme/app"

// Options are what a suite chooses of its stack.
type Options struct {
	// Files are the first commit of Repository; nil seeds no repository.
	Files map[string]string
	// Agent is the suite's agent script, relative to its folder; the worker
	// runs it with sh. Empty, the worker has no agent command.
	Agent string
	// GitHubToken, when set, starts a GitHub stand-in that accepts only it,
	// and gives the worker both.
	GitHubToken string
	// UserAgent is the User-Agent of the Tasks API client.
	UserAgent string
	// Stack is the stack's own. Of its Worker the harness fills in the agent
	// command, the repository URL template, the workspace and cache folders,
	// GitHub's URL and token, and the sandbox when it is empty.
	Stack devstack.Options
}

// Setup is a folder made ready for a stack; Start starts one on it, as
// often as a test restarts it.
type Setup struct {
	Dir string
	// GitRoot holds the origins: GitRoot/{owner}/{repo}.git.
	GitRoot string
	// GitHub is the stand-in, nil without Options.GitHubToken.
	GitHub *githubtest.Server
	// Options start the stack, filled in.
	Options   devstack.Options
	userAgent string
}

// Prepare seeds dir and fills in opts.Stack. Close closes what it started.
func Prepare(ctx context.Context, dir string, opts Options) (*Setup, error) {
	s := &Setup{Dir: dir, GitRoot: filepath.Join(dir, "git"), Options: opts.Stack, userAgent: opts.UserAgent}
	if opts.Files != nil {
		if _, err := devstack.SeedRepository(ctx, s.GitRoot, Repository, opts.Files); err != nil {
			return nil, err
		}
	}
	w := &s.Options.Worker
	if opts.Agent != "" {
		agent, err := filepath.Abs(opts.Agent)
		if err != nil {
			return nil, err
		}
		w.AgentCommand = "sh " + agent
	}
	if w.Sandbox == "" {
		w.Sandbox = agenttest.SuiteSandbox()
	}
	w.RepoURLTemplate = devstack.RepoURLTemplate(s.GitRoot)
	w.WorkspaceDir = filepath.Join(dir, "workspaces")
	w.CacheDir = filepath.Join(dir, "cache")
	if opts.GitHubToken != "" {
		s.GitHub = githubtest.NewServer(opts.GitHubToken)
		s.GitHub.BranchExists = s.branchExists
		w.GitHubAPIURL, w.GitHubToken = s.GitHub.URL, opts.GitHubToken
	}
	return s, nil
}

// branchExists looks for the branch in the origin, where the runs push.
func (s *Setup) branchExists(owner, repo, branch string) bool {
	bare := filepath.Join(s.GitRoot, owner, repo+".git")
	return exec.Command("git", "--git-dir", bare, "rev-parse", "--verify", "--quiet", "refs/heads/"+branch).Run() == nil
}

// Start starts a stack on the setup, and a client of its Tasks API; the
// caller stops the stack.
func (s *Setup) Start(ctx context.Context) (*devstack.Stack, *tasksapi.Client, error) {
	stack, err := devstack.Start(ctx, s.Options)
	if err != nil {
		return nil, nil, err
	}
	cfg := stack.WorkerConfig
	api := tasksapi.New(tasksapi.Config{BaseURL: stack.APIURL, APIKey: cfg.APIKey, ProjectID: cfg.ProjectID, UserAgent: s.userAgent})
	return stack, api, nil
}

// Close closes the GitHub stand-in.
func (s *Setup) Close() {
	if s.GitHub != nil {
		s.GitHub.Close()
	}
}

// Suite is the stack a TestMain shares among its tests.
type Suite struct {
	*Setup
	Stack *devstack.Stack
	API   *tasksapi.Client
}

// Start prepares a temporary folder named after the suite and starts a
// stack on it. stop stops the stack and removes the folder.
func Start(ctx context.Context, name string, opts Options) (suite *Suite, stop func(), err error) {
	dir, err := os.MkdirTemp("", "taskworker-"+name+"-")
	if err != nil {
		return nil, nil, err
	}
	// A run in the uid sandbox reaches its workspace and the origins
	// through dir.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, nil, errors.Join(err, os.RemoveAll(dir))
	}
	setup, err := Prepare(ctx, dir, opts)
	if err != nil {
		return nil, nil, errors.Join(err, os.RemoveAll(dir))
	}
	stack, api, err := setup.Start(ctx)
	if err != nil {
		setup.Close()
		return nil, nil, errors.Join(err, os.RemoveAll(dir))
	}
	stop = func() {
		_ = stack.Stop()
		setup.Close()
		_ = os.RemoveAll(dir)
	}
	return &Suite{Setup: setup, Stack: stack, API: api}, stop, nil
}
