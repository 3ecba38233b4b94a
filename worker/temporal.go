package worker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/metrics"
	"github.com/taskworker/taskworker/internal/signals"
)

// usesTLS reports a connection to Temporal over TLS: asked for, or implied
// by a certificate, a CA, a server name or an API key (Temporal Cloud takes
// API keys over TLS only).
func (c Config) usesTLS() bool {
	return c.TemporalTLS || c.TemporalTLSCert != "" || c.TemporalTLSKey != "" || c.TemporalTLSCA != "" ||
		c.TemporalTLSServerName != "" || c.TemporalAPIKey != ""
}

// temporalTLS is the TLS configuration of the connection to Temporal, nil
// for plain gRPC. Its errors name the variable at fault and what to do.
func (c Config) temporalTLS() (*tls.Config, error) {
	if !c.usesTLS() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TemporalTLSServerName}
	var errs []error
	switch {
	case c.TemporalTLSCert != "" && c.TemporalTLSKey == "":
		errs = append(errs, errors.New("TEMPORAL_TLS_CERT is set but TEMPORAL_TLS_KEY is not: mTLS needs the client certificate and its private key; set both, or neither"))
	case c.TemporalTLSKey != "" && c.TemporalTLSCert == "":
		errs = append(errs, errors.New("TEMPORAL_TLS_KEY is set but TEMPORAL_TLS_CERT is not: mTLS needs the client certificate and its private key; set both, or neither"))
	case c.TemporalTLSCert != "":
		certPEM, certErr := readPEM("TEMPORAL_TLS_CERT", c.TemporalTLSCert)
		keyPEM, keyErr := readPEM("TEMPORAL_TLS_KEY", c.TemporalTLSKey)
		if certErr != nil || keyErr != nil {
			errs = append(errs, certErr, keyErr)
			break
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			errs = append(errs, fmt.Errorf("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY (%s, %s) are not a PEM certificate and its private key (%v): set them to the client certificate's file and its key's",
				c.TemporalTLSCert, c.TemporalTLSKey, err))
			break
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if c.TemporalTLSCA != "" {
		caPEM, err := readPEM("TEMPORAL_TLS_CA", c.TemporalTLSCA)
		if err != nil {
			errs = append(errs, err)
		} else if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(caPEM) {
			errs = append(errs, fmt.Errorf("TEMPORAL_TLS_CA: %s holds no PEM certificate: set it to the PEM file of the CA that signed Temporal's server certificate", c.TemporalTLSCA))
		} else {
			cfg.RootCAs = pool
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readPEM reads the file a variable names.
func readPEM(variable, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v: set it to the path of a PEM file this worker can read", variable, err)
	}
	return data, nil
}

// clientOptions are the options Dial connects to Temporal with: address,
// namespace, TLS and API key from cfg, the worker's logger and metrics (m
// may be nil).
func clientOptions(cfg Config, logger *zap.Logger, m *metrics.Metrics) (client.Options, error) {
	tlsCfg, err := cfg.temporalTLS()
	if err != nil {
		return client.Options{}, err
	}
	opts := client.Options{
		HostPort:          cfg.TemporalAddress,
		Namespace:         cfg.TemporalNamespace,
		Identity:          cfg.WorkerID,
		Logger:            NewTemporalLogger(logger),
		MetricsHandler:    m.TemporalHandler(),
		ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg},
		// PostHog's signals carry several arguments; the workflow reads them all through it.
		DataConverter: signals.DataConverter(nil),
	}
	if cfg.TemporalAPIKey != "" {
		opts.Credentials = client.NewAPIKeyStaticCredentials(cfg.TemporalAPIKey)
	}
	return opts, nil
}

// temporalSecurity says how the connection to Temporal is secured, for
// messages; never the key itself.
func (c Config) temporalSecurity() string {
	switch {
	case !c.usesTLS():
		return "plain gRPC"
	case c.TemporalAPIKey != "":
		return "TLS with an API key"
	case c.TemporalTLSCert != "":
		return "mTLS"
	}
	return "TLS"
}
