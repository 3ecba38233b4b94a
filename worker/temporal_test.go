package worker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// pki is a CA, a server certificate it signed for temporal.example, and a
// client certificate it signed, all as PEM files.
type pki struct {
	dir                         string
	caFile, certFile, keyFile   string
	caCert, clientCert, srvCert *x509.Certificate
	srvKey                      *ecdsa.PrivateKey
	serverName                  string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	p := pki{dir: dir, serverName: "temporal.example"}
	caKey := newKey(t)
	p.caCert = sign(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, nil, &caKey.PublicKey, caKey)
	clientKey := newKey(t)
	p.clientCert = sign(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "taskworker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, p.caCert, &clientKey.PublicKey, caKey)
	p.srvKey = newKey(t)
	p.srvCert = sign(t, &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: p.serverName}, DNSNames: []string{p.serverName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, p.caCert, &p.srvKey.PublicKey, caKey)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", p.caCert.Raw)
	p.certFile = writePEM(t, dir, "client.pem", "CERTIFICATE", p.clientCert.Raw)
	p.keyFile = writePEM(t, dir, "client.key", "PRIVATE KEY", marshalKey(t, clientKey))
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return key
}

func marshalKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return der
}

// sign makes tmpl a certificate signed by parent's key (tmpl itself when parent is nil).
func sign(t *testing.T, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

func TestPlainGRPCByDefault(t *testing.T) {
	cfg := Config{TemporalAddress: "127.0.0.1:7233", TemporalNamespace: "default", WorkerID: "w1"}
	opts, err := clientOptions(cfg, zap.NewNop(), nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7233", opts.HostPort)
	require.Equal(t, "default", opts.Namespace)
	require.Equal(t, "w1", opts.Identity)
	require.Nil(t, opts.ConnectionOptions.TLS)
	require.Nil(t, opts.Credentials)
	require.Equal(t, "plain gRPC", cfg.temporalSecurity())
}

func TestTLSWithTheSystemRoots(t *testing.T) {
	opts, err := clientOptions(Config{TemporalAddress: "ns.acct.tmprl.cloud:7233", TemporalTLS: true}, zap.NewNop(), nil)
	require.NoError(t, err)
	require.NotNil(t, opts.ConnectionOptions.TLS)
	require.Nil(t, opts.ConnectionOptions.TLS.RootCAs, "nil: the system's roots")
	require.Empty(t, opts.ConnectionOptions.TLS.Certificates)
	require.Empty(t, opts.ConnectionOptions.TLS.ServerName, "empty: the host of the address")
	require.Nil(t, opts.Credentials)
}

func TestMTLSFromTheCertKeyAndCAFiles(t *testing.T) {
	p := newPKI(t)
	cfg := Config{TemporalAddress: "127.0.0.1:7233", TemporalTLSCert: p.certFile, TemporalTLSKey: p.keyFile,
		TemporalTLSCA: p.caFile, TemporalTLSServerName: p.serverName}
	opts, err := clientOptions(cfg, zap.NewNop(), nil)
	require.NoError(t, err)
	tlsCfg := opts.ConnectionOptions.TLS
	require.NotNil(t, tlsCfg)
	want := x509.NewCertPool()
	want.AddCert(p.caCert)
	require.True(t, want.Equal(tlsCfg.RootCAs), "RootCAs is the CA file's")
	require.Len(t, tlsCfg.Certificates, 1)
	require.Equal(t, p.clientCert.Raw, tlsCfg.Certificates[0].Certificate[0], "the client certificate is the cert file's")
	require.Equal(t, p.serverName, tlsCfg.ServerName)
	require.Nil(t, opts.Credentials)
	require.Equal(t, "mTLS", cfg.temporalSecurity())

	// The configuration does what it says: a handshake with a server that
	// requires a client certificate signed by the CA, its own signed by it too.
	serverPool := x509.NewCertPool()
	serverPool.AddCert(p.caCert)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{p.srvCert.Raw}, PrivateKey: p.srvKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: serverPool, MinVersion: tls.VersionTLS12,
	})
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err == nil {
			err = conn.(*tls.Conn).Handshake()
			if err == nil {
				state := conn.(*tls.Conn).ConnectionState()
				if len(state.PeerCertificates) == 0 || !state.PeerCertificates[0].Equal(p.clientCert) {
					err = os.ErrInvalid
				}
			}
			conn.Close()
		}
		accepted <- err
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", l.Addr().String(), tlsCfg)
	require.NoError(t, err, "the client trusts the server through the CA file and the server name")
	require.NoError(t, conn.Close())
	select {
	case err := <-accepted:
		require.NoError(t, err, "the server got the client certificate")
	case <-time.After(10 * time.Second):
		t.Fatal("the server side of the handshake did not finish")
	}
}

func TestAnAPIKeyIsSentOverTLS(t *testing.T) {
	cfg := Config{TemporalAddress: "ns.acct.tmprl.cloud:7233", TemporalAPIKey: "tmprl_key_123"}
	opts, err := clientOptions(cfg, zap.NewNop(), nil)
	require.NoError(t, err)
	require.NotNil(t, opts.Credentials)
	require.NotNil(t, opts.ConnectionOptions.TLS, "an API key implies TLS")
	require.Equal(t, "TLS with an API key", cfg.temporalSecurity())
	require.Contains(t, cfg.Secrets(), "tmprl_key_123")
	require.NotContains(t, cfg.temporalSecurity(), "tmprl_key_123")
}

func TestBadTLSSettingsAreClearStartUpErrors(t *testing.T) {
	p := newPKI(t)
	otherKey := writePEM(t, p.dir, "other.key", "PRIVATE KEY", marshalKey(t, newKey(t)))
	notPEM := filepath.Join(p.dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	missing := filepath.Join(p.dir, "missing.pem")
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"cert without key", Config{TemporalTLSCert: p.certFile},
			[]string{"TEMPORAL_TLS_CERT is set but TEMPORAL_TLS_KEY is not: mTLS needs the client certificate and its private key; set both, or neither"}},
		{"key without cert", Config{TemporalTLSKey: p.keyFile},
			[]string{"TEMPORAL_TLS_KEY is set but TEMPORAL_TLS_CERT is not"}},
		{"unreadable files", Config{TemporalTLSCert: missing, TemporalTLSKey: missing, TemporalTLSCA: missing},
			[]string{"TEMPORAL_TLS_CERT: open " + missing + ": no such file or directory: set it to the path of a PEM file this worker can read",
				"TEMPORAL_TLS_KEY: open " + missing, "TEMPORAL_TLS_CA: open " + missing}},
		{"a CA that is no PEM", Config{TemporalTLSCA: notPEM},
			[]string{"TEMPORAL_TLS_CA: " + notPEM + " holds no PEM certificate: set it to the PEM file of the CA that signed Temporal's server certificate"}},
		{"a cert that is no PEM", Config{TemporalTLSCert: notPEM, TemporalTLSKey: p.keyFile},
			[]string{"TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY (" + notPEM + ", " + p.keyFile + ") are not a PEM certificate and its private key"}},
		{"a key of another cert", Config{TemporalTLSCert: p.certFile, TemporalTLSKey: otherKey},
			[]string{"are not a PEM certificate and its private key (tls: private key does not match public key)"}},
	} {
		_, err := clientOptions(tc.cfg, zap.NewNop(), nil)
		for _, want := range tc.want {
			require.ErrorContains(t, err, want, tc.name)
		}
	}
}

func TestLoadReportsBadTemporalSettingsForTheWorkerAndTheDispatcher(t *testing.T) {
	setRequired(t)
	t.Setenv("TEMPORAL_TLS_CERT", "/nonexistent/client.pem")
	_, err := Load()
	require.ErrorContains(t, err, "TEMPORAL_TLS_CERT is set but TEMPORAL_TLS_KEY is not")
	_, err = LoadDispatch()
	require.ErrorContains(t, err, "TEMPORAL_TLS_CERT is set but TEMPORAL_TLS_KEY is not")

	t.Setenv("TEMPORAL_TLS_CERT", "")
	t.Setenv("TEMPORAL_API_KEY", "tmprl_key_123\n")
	_, err = Load()
	require.EqualError(t, err, "TEMPORAL_API_KEY starts or ends with white space (a newline of the file it came from?): set it to the key alone")
	require.NotContains(t, err.Error(), "tmprl_key_123")

	p := newPKI(t)
	t.Setenv("TEMPORAL_API_KEY", "tmprl_key_123")
	t.Setenv("TEMPORAL_TLS_CA", p.caFile)
	t.Setenv("TEMPORAL_TLS_SERVER_NAME", p.serverName)
	cfg, err := Load()
	require.NoError(t, err)
	require.True(t, cfg.usesTLS())
	require.Equal(t, "tmprl_key_123", cfg.TemporalAPIKey)
	require.Contains(t, cfg.Secrets(), "tmprl_key_123")

	t.Setenv("TEMPORAL_API_KEY", "")
	t.Setenv("TEMPORAL_TLS_CA", "")
	t.Setenv("TEMPORAL_TLS_SERVER_NAME", "")
	t.Setenv("TEMPORAL_TLS", "true")
	cfg, err = Load()
	require.NoError(t, err)
	require.True(t, cfg.TemporalTLS)
}
