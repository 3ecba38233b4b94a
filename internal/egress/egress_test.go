package egress_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/egress"
)

// recorder keeps the proxy's refusals.
type recorder struct {
	mu      sync.Mutex
	denials []egress.Denial
}

func (r *recorder) add(d egress.Denial) {
	r.mu.Lock()
	r.denials = append(r.denials, d)
	r.mu.Unlock()
}

func (r *recorder) all() []egress.Denial {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]egress.Denial(nil), r.denials...)
}

// through serves a proxy of policy and returns a client that uses it for
// every request, as an agent's tools do with HTTPS_PROXY.
func through(t *testing.T, allow string) (*http.Client, *recorder) {
	t.Helper()
	policy, err := egress.Parse(allow)
	require.NoError(t, err)
	rec := &recorder{}
	proxy := httptest.NewServer(egress.NewProxy(policy, rec.add))
	t.Cleanup(proxy.Close)
	proxyURL, _ := url.Parse(proxy.URL)
	return &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the test's own server
	}}, rec
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	res, err := c.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func origin(t *testing.T, tlsOn bool) (*httptest.Server, string) {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "origin says hi") })
	var s *httptest.Server
	if tlsOn {
		s = httptest.NewTLSServer(h)
	} else {
		s = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	u, _ := url.Parse(s.URL)
	return s, u.Host
}

func TestAHostNotAllowedIsRefusedAndReportedOnce(t *testing.T) {
	c, rec := through(t, "defaults")
	for range 3 {
		code, body := get(t, c, "http://denied.invalid/")
		require.Equal(t, http.StatusForbidden, code)
		require.Contains(t, body, "denied.invalid:80 is not in TASKWORKER_EGRESS_ALLOW")
	}
	_, err := c.Get("https://denied.invalid/")
	require.Error(t, err, "a CONNECT to a host not allowed is refused")

	d := rec.all()
	require.Len(t, d, 4, "every refusal is counted")
	require.Equal(t, egress.Denial{Host: "denied.invalid", Port: 80, Reason: egress.NotAllowed, First: true}, d[0])
	require.False(t, d[1].First)
	require.False(t, d[2].First)
	require.Equal(t, egress.Denial{Host: "denied.invalid", Port: 443, Reason: egress.NotAllowed, First: true}, d[3])
}

func TestAnAllowedHostIsReachedOverHTTPAndHTTPS(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		s, hostPort := origin(t, tlsOn)
		// Loopback is a special address: only an entry that names it opens it.
		c, rec := through(t, "defaults,"+hostPort)
		code, body := get(t, c, s.URL+"/x")
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, "origin says hi", body)
		require.Empty(t, rec.all())
	}
}

func TestPrivateAndMetadataAddressesNeedToBeNamed(t *testing.T) {
	s, hostPort := origin(t, false)
	_, port, _ := net.SplitHostPort(hostPort)

	// "*" opens the public internet, not the host, the cluster or the
	// cloud's metadata service: "localhost" resolves to loopback.
	c, rec := through(t, "*")
	code, body := get(t, c, "http://localhost:"+port+"/")
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, "is a private, loopback or metadata address")
	code, _ = get(t, c, "http://169.254.169.254/latest/meta-data/")
	require.Equal(t, http.StatusForbidden, code)
	code, _ = get(t, c, "http://[::ffff:127.0.0.1]:"+port+"/")
	require.Equal(t, http.StatusForbidden, code, "an IPv4-mapped address is the IPv4 address")
	code, _ = get(t, c, "http://[64:ff9b::7f00:1]:"+port+"/")
	require.Equal(t, http.StatusForbidden, code, "a NAT64 address is the IPv4 address")
	for _, d := range rec.all() {
		require.Equal(t, egress.Special, d.Reason, d.Host)
	}

	// Named by host and port, or by address range, it is reached.
	c, _ = through(t, "localhost:"+port)
	code, _ = get(t, c, "http://localhost:"+port+"/")
	require.Equal(t, http.StatusOK, code)
	c, _ = through(t, "127.0.0.0/8")
	code, _ = get(t, c, s.URL)
	require.Equal(t, http.StatusOK, code)
	// A host named without a port is open on the web's ports only.
	c, _ = through(t, "localhost")
	code, _ = get(t, c, "http://localhost:"+port+"/")
	require.Equal(t, http.StatusForbidden, code)
}

func TestSubdomainPatterns(t *testing.T) {
	c, rec := through(t, "*.example.invalid")
	code, body := get(t, c, "http://api.example.invalid/")
	require.Equal(t, http.StatusBadGateway, code, "a subdomain is allowed, so it is looked up (and, .invalid, not found): %s", body)
	code, _ = get(t, c, "http://example.invalid/")
	require.Equal(t, http.StatusForbidden, code, "*.domain does not match the domain itself")
	code, _ = get(t, c, "http://api.example.invalid.evil.test/")
	require.Equal(t, http.StatusForbidden, code)
	require.Len(t, rec.all(), 2)
}

func TestABadEntryNamesItself(t *testing.T) {
	for entry, want := range map[string]string{
		"10.0.0.0/33":   `TASKWORKER_EGRESS_ALLOW entry "10.0.0.0/33": not an address range`,
		"pypi.org:http": `TASKWORKER_EGRESS_ALLOW entry "pypi.org:http": port "http" is not a number`,
		"*.":            `TASKWORKER_EGRESS_ALLOW entry "*.": not a host name`,
		"a*b.com":       `TASKWORKER_EGRESS_ALLOW entry "a*b.com": not a host name`,
	} {
		_, err := egress.Parse("defaults," + entry)
		require.ErrorContains(t, err, want)
	}
	p, err := egress.Parse(" * ")
	require.NoError(t, err)
	require.True(t, p.Open())
}

func TestTheGatewaySendsTheRunsOwnRequestsToTheModelAPI(t *testing.T) {
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "model:"+r.URL.Path) })
	s, hostPort := origin(t, false)
	policy, err := egress.Parse(hostPort)
	require.NoError(t, err)
	gw := httptest.NewServer(egress.Gateway(egress.NewProxy(policy, nil), local, "127.0.0.1:3128"))
	defer gw.Close()

	_, body := get(t, http.DefaultClient, gw.URL+"/anthropic/v1/messages")
	require.Equal(t, "model:/anthropic/v1/messages", body)

	gwURL, _ := url.Parse(gw.URL)
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(gwURL)}}
	_, body = get(t, viaProxy, s.URL+"/x")
	require.Equal(t, "origin says hi", body)
	// A client that sends its model requests through the proxy too.
	_, body = get(t, viaProxy, "http://127.0.0.1:3128/anthropic/v1/messages")
	require.Equal(t, "model:/anthropic/v1/messages", body)
}

func TestClosingTheProxyEndsItsTunnels(t *testing.T) {
	// An origin that keeps every connection open, as a hostile run's would.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	policy, err := egress.Parse(l.Addr().String())
	require.NoError(t, err)
	proxy := egress.NewProxy(policy, nil)
	srv := httptest.NewServer(proxy)
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", l.Addr(), l.Addr())
	reply := make([]byte, 64)
	n, err := conn.Read(reply)
	require.NoError(t, err)
	require.Contains(t, string(reply[:n]), "200 Connection established")

	proxy.Close()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Read(reply)
	require.ErrorIs(t, err, io.EOF, "the tunnel ended with the proxy, not at the deadline")
}
