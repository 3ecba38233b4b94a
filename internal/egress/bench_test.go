package egress_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/taskworker/taskworker/internal/egress"
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
			took := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				began := time.Now()
				res, err := c.client.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				took = append(took, time.Since(began))
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
