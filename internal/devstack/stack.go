package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/taskworker/taskworker/internal/dashboard"
	"github.com/taskworker/taskworker/internal/kickoff"
	"github.com/taskworker/taskworker/internal/localapi"
	"github.com/taskworker/taskworker/internal/sandbox"
	"github.com/taskworker/taskworker/internal/signals"
	"github.com/taskworker/taskworker/worker"
)

// Defaults of the local stack: fixed, so a worker started by hand finds it.
const (
	DefaultTemporalAddress = "127.0.0.1:7233"
	DefaultAPIAddress      = "127.0.0.1:8010"
	DefaultAPIKey          = "local-dev-personal-api-key"
	DefaultProjectID       = "1"
)

// Options configures a stack. Zero values take the defaults above; an empty
// DataDir keeps all state in memory (tests).
type Options struct {
	DataDir         string
	TemporalAddress string
	APIAddress      string
	APIKey          string
	ProjectID       string
	// Worker is the in-process worker's configuration; its API and Temporal
	// settings are filled in by the stack. NoWorker leaves it out.
	Worker   worker.Config
	NoWorker bool
	// NoKickoff makes POST /tasks/{id}/run/ only create the queued (cloud)
	// run, as PostHog Cloud does from the point of view of a worker that
	// can't reach its Temporal: its own runner takes it. With Worker.Dispatch
	// set, the stack's dispatcher starts the local runs queued for it.
	NoKickoff bool
	// Faults, when set, make the local Tasks API misbehave (tests).
	Faults *localapi.Faults
	Logger *zap.Logger
}

// Stack is a running local stack.
type Stack struct {
	Temporal *TemporalServer
	API      *localapi.Server
	Client   client.Client
	Worker   *worker.Worker
	// APIURL is the base URL of the local Tasks API; WorkerConfig is the
	// configuration a worker needs to serve it.
	APIURL       string
	WorkerConfig worker.Config
	// Sandbox is the sandbox the stack's workers run agents in.
	Sandbox      *sandbox.Sandbox
	httpServer   *http.Server
	stopDispatch context.CancelFunc
	dispatchDone chan struct{}
}

// Start starts the embedded Temporal server, the local Tasks API and, unless
// NoWorker, an in-process worker.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.APIKey == "" {
		opts.APIKey = DefaultAPIKey
	}
	if opts.ProjectID == "" {
		opts.ProjectID = DefaultProjectID
	}
	s := &Stack{}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()

	temporalDB := ""
	if opts.DataDir != "" {
		temporalDB = filepath.Join(opts.DataDir, "temporal.db")
	}
	var err error
	s.Temporal, err = StartTemporal(TemporalOptions{DatabaseFile: temporalDB, FrontendAddress: opts.TemporalAddress, LogLevel: zapcore.ErrorLevel})
	if err != nil {
		return nil, err
	}
	s.Client, err = dialWithRetry(ctx, s.Temporal.HostPort(), opts.Logger)
	if err != nil {
		return nil, err
	}

	if opts.Worker.Sandbox == "" {
		opts.Worker.Sandbox = string(sandbox.Auto)
	}
	wcfg := opts.Worker.WithDefaults()
	wcfg.TemporalAddress = s.Temporal.HostPort()
	// The local stack takes the strongest sandbox the host offers, and
	// hands workers it starts as processes the same choice, spelled out.
	if s.Sandbox, err = resolveSandbox(wcfg); err != nil {
		return nil, err
	}
	wcfg.Sandbox = string(s.Sandbox.Mode())

	listener, err := net.Listen("tcp", orDefault(opts.APIAddress, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("listen for the local Tasks API on %s: %w", opts.APIAddress, err)
	}
	apiDir := ""
	if opts.DataDir != "" {
		apiDir = filepath.Join(opts.DataDir, "tasks")
	}
	var starter localapi.Starter = kickoff.Starter{Temporal: s.Client, TaskQueue: wcfg.TaskQueue, ExecutionTimeout: wcfg.RunTimeout + time.Hour}
	var signaller localapi.Signaller = kickoff.Signaller{Temporal: s.Client, Identity: "local Tasks API"}
	if opts.NoKickoff {
		starter = nil
	}
	s.API, err = localapi.New(localapi.Config{
		DataDir: apiDir, APIKey: opts.APIKey, ProjectID: opts.ProjectID, Logger: opts.Logger, Starter: starter, Faults: opts.Faults,
		Signaller: signaller,
	})
	if err != nil {
		listener.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", s.API)
	mux.Handle("/dashboard/", dashboard.Handler(dashboard.Config{
		APIKey: opts.APIKey, ProjectID: opts.ProjectID, ArtifactPath: s.API.ArtifactPath,
	}))
	mux.Handle("/{$}", http.RedirectHandler("/dashboard/", http.StatusFound))
	mux.Handle("/", s.API) // the API's own answer for anything else: 404 JSON
	s.httpServer = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.httpServer.Serve(listener) }()
	s.APIURL = "http://" + listener.Addr().String()

	wcfg.APIURL, wcfg.APIKey, wcfg.ProjectID = s.APIURL, opts.APIKey, opts.ProjectID
	s.WorkerConfig = wcfg
	if !opts.NoWorker {
		s.Worker, err = worker.New(s.Client, wcfg, opts.Logger, nil)
		if err != nil {
			return nil, err
		}
		if err := s.Worker.Start(); err != nil {
			return nil, err
		}
	}
	if wcfg.Dispatch {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopDispatch, s.dispatchDone = cancel, make(chan struct{})
		d := worker.NewDispatcher(s.Client, wcfg, opts.Logger, nil)
		go func() { defer close(s.dispatchDone); _ = d.Run(ctx) }()
	}
	ok = true
	return s, nil
}

func resolveSandbox(cfg worker.Config) (*sandbox.Sandbox, error) {
	sbCfg, err := cfg.SandboxConfig()
	if err != nil {
		return nil, err
	}
	return sandbox.New(sbCfg)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func dialWithRetry(ctx context.Context, hostPort string, logger *zap.Logger) (client.Client, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := client.Dial(client.Options{HostPort: hostPort, Logger: worker.NewTemporalLogger(logger),
			DataConverter: signals.DataConverter(nil)})
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to the embedded Temporal server at %s: %w", hostPort, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops everything the stack started, the worker first.
func (s *Stack) Stop() error {
	var errs []error
	if s.stopDispatch != nil {
		s.stopDispatch()
		<-s.dispatchDone
	}
	if s.Worker != nil {
		s.Worker.Stop()
	}
	if s.httpServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, s.httpServer.Shutdown(ctx))
		cancel()
	}
	if s.API != nil {
		errs = append(errs, s.API.Close())
	}
	if s.Client != nil {
		s.Client.Close()
	}
	if s.Temporal != nil {
		errs = append(errs, s.Temporal.Stop())
	}
	return errors.Join(errs...)
}
