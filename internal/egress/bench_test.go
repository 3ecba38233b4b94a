package egress_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/taskworker/taskworker/internal/egress"
	"github.com/taskworker/taskworker/internal/testkit/benchtest"
)

// BenchmarkRequest is a small GET straight to a server, through the
// proxy as a forwarded http:// request, and through a fresh CONNECT tunnel
// (an HTTPS client's first request to a host).
func BenchmarkRequest(b *testing.B) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer origin.Close()
	tlsOrigin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer tlsOrigin.Close()
	u, _ := url.Parse(origin.URL)
	tu, _ := url.Parse(tlsOrigin.URL)
	policy, err := egress.Parse(u.Host + "," + tu.Host)
	if err != nil {
		b.Fatal(err)
	}
	proxy := httptest.NewServer(egress.NewProxy(policy, nil))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)

	direct := &http.Client{Transport: &http.Transport{}}
	forwarded := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	tunnelled := func() *http.Client {
		t := tlsOrigin.Client().Transport.(*http.Transport).Clone()
		t.Proxy = http.ProxyURL(proxyURL)
		t.DisableKeepAlives = true
		return &http.Client{Transport: t}
	}()
	directTLS := func() *http.Client {
		t := tlsOrigin.Client().Transport.(*http.Transport).Clone()
		t.DisableKeepAlives = true
		return &http.Client{Transport: t}
	}()
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"http/direct", direct, origin.URL}, {"http/proxy", forwarded, origin.URL},
		{"https-new-connection/direct", directTLS, tlsOrigin.URL}, {"https-new-connection/tunnel", tunnelled, tlsOrigin.URL},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchtest.Latency(b, func() {
				res, err := c.client.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			})
		})
	}
}
