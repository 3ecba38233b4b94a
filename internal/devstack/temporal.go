package devstack

import (
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	tlog "go.temporal.io/server/common/log"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const clusterName = "active"

// TemporalServer is an embedded, single-process Temporal server backed by a
// SQLite file, so workflow state survives a restart of the local stack.
type TemporalServer struct {
	server   temporal.Server
	hostPort string
	logLevel zap.AtomicLevel
}

// TemporalOptions configures the embedded server.
type TemporalOptions struct {
	// DatabaseFile is the SQLite file; empty means in memory (tests).
	DatabaseFile string
	// FrontendAddress is host:port of the frontend gRPC service; port 0 picks a free one.
	FrontendAddress string
	Namespace       string
	// LogLevel of the server's own logs; they are noise for a developer, so warn by default.
	LogLevel zapcore.Level
}

// StartTemporal starts the server and returns once its frontend accepts connections.
func StartTemporal(opts TemporalOptions) (*TemporalServer, error) {
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	if opts.FrontendAddress == "" {
		opts.FrontendAddress = "127.0.0.1:0"
	}
	host, port, err := resolvePort(opts.FrontendAddress)
	if err != nil {
		return nil, fmt.Errorf("temporal frontend address %q: %w", opts.FrontendAddress, err)
	}

	sqlConfig := &config.SQL{
		PluginName:        sqliteplugin.PluginName,
		ConnectAttributes: map[string]string{},
		DatabaseName:      opts.DatabaseFile,
	}
	if opts.DatabaseFile == "" {
		sqlConfig.ConnectAttributes["mode"] = "memory"
		sqlConfig.ConnectAttributes["cache"] = "shared"
		// The SQLite plugin creates the schema of an in-memory database itself.
		sqlConfig.DatabaseName = fmt.Sprintf("taskworker-%d-%d", os.Getpid(), time.Now().UnixNano())
	} else {
		sqlConfig.ConnectAttributes["mode"] = "rwc"
		sqlConfig.ConnectAttributes["journal_mode"] = "wal"
		sqlConfig.ConnectAttributes["synchronous"] = "normal"
		if err := os.MkdirAll(filepath.Dir(opts.DatabaseFile), 0o755); err != nil {
			return nil, fmt.Errorf("create temporal data dir: %w", err)
		}
		if _, err := os.Stat(opts.DatabaseFile); errors.Is(err, os.ErrNotExist) {
			if err := sqlite.SetupSchema(sqlConfig); err != nil {
				return nil, fmt.Errorf("set up temporal schema in %s: %w", opts.DatabaseFile, err)
			}
		} else if err := forgetMembership(opts.DatabaseFile); err != nil {
			return nil, err
		}
	}

	nsConfig, err := sqlite.NewNamespaceConfig(clusterName, opts.Namespace, false, nil)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", opts.Namespace, err)
	}
	if err := sqlite.CreateNamespaces(sqlConfig, nsConfig); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", opts.Namespace, err)
	}

	hostPort := net.JoinHostPort(host, fmt.Sprint(port))
	cfg, err := serverConfig(host, port, sqlConfig)
	if err != nil {
		return nil, err
	}

	level := zap.NewAtomicLevelAt(opts.LogLevel)
	zl := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(os.Stderr), level))

	srv, err := temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(tlog.NewZapLogger(zl)),
		temporal.WithDynamicConfigClient(dynamicconfig.StaticClient{
			dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): []dynamicconfig.ConstrainedValue{{Value: true}},
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("create temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start temporal server: %w", err)
	}
	return &TemporalServer{server: srv, hostPort: hostPort, logLevel: level}, nil
}

// HostPort is the frontend address clients dial.
func (s *TemporalServer) HostPort() string { return s.hostPort }

// Stop shuts the server down. Its internal workers log harmless warnings while
// stopping, so only errors are shown from here on.
func (s *TemporalServer) Stop() error {
	s.logLevel.SetLevel(zapcore.FatalLevel)
	return s.server.Stop()
}

func serverConfig(host string, frontendPort int, sqlConfig *config.SQL) (*config.Config, error) {
	services := map[string]config.Service{}
	for _, name := range []string{"frontend", "history", "matching", "worker"} {
		grpcPort := frontendPort
		if name != "frontend" {
			p, err := freePort(host)
			if err != nil {
				return nil, err
			}
			grpcPort = p
		}
		membershipPort, err := freePort(host)
		if err != nil {
			return nil, err
		}
		services[name] = config.Service{RPC: config.RPC{
			GRPCPort:       grpcPort,
			MembershipPort: membershipPort,
			BindOnIP:       host,
		}}
	}
	frontend := net.JoinHostPort(host, fmt.Sprint(frontendPort))
	return &config.Config{
		Global: config.Global{
			Membership: config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: host},
		},
		Persistence: config.Persistence{
			DefaultStore:     sqliteplugin.PluginName,
			VisibilityStore:  sqliteplugin.PluginName,
			NumHistoryShards: 1,
			DataStores:       map[string]config.DataStore{sqliteplugin.PluginName: {SQL: sqlConfig}},
		},
		ClusterMetadata: &cluster.Config{
			FailoverVersionIncrement: 10,
			MasterClusterName:        clusterName,
			CurrentClusterName:       clusterName,
			ClusterInformation: map[string]cluster.ClusterInformation{
				clusterName: {Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontend},
			},
		},
		DCRedirectionPolicy: config.DCRedirectionPolicy{Policy: "noop"},
		Services:            services,
		Archival: config.Archival{
			History:    config.HistoryArchival{State: "disabled"},
			Visibility: config.VisibilityArchival{State: "disabled"},
		},
		NamespaceDefaults: config.NamespaceDefaults{Archival: config.ArchivalNamespaceDefaults{
			History:    config.HistoryArchivalNamespaceDefaults{State: "disabled"},
			Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"},
		}},
		PublicClient: config.PublicClient{HostPort: frontend},
	}, nil
}

// forgetMembership drops the cluster membership a previous process left in
// the database. Its services listened on other ports; until those records
// expire the new server can't route requests ("Not enough hosts"), which
// stalls the first minute after a restart.
func forgetMembership(path string) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM cluster_membership`); err != nil {
		return fmt.Errorf("reset cluster membership in %s: %w", path, err)
	}
	return nil
}

func resolvePort(address string) (string, int, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		host = "127.0.0.1"
	}
	var port int
	if _, err := fmt.Sscan(portText, &port); err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", portText)
	}
	if port == 0 {
		if port, err = freePort(host); err != nil {
			return "", 0, err
		}
	}
	return host, port, nil
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
