package broker_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/taskworker/taskworker/internal/broker"
	"github.com/taskworker/taskworker/internal/testkit/benchtest"
)

// BenchmarkRequest is one small model request, straight to the API and
// through the broker: the difference is what the broker adds.
func BenchmarkRequest(b *testing.B) {
	directAndBrokered(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"message","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":10,"output_tokens":2}}`)
	}, func(b *testing.B, post func(body string) *http.Response) {
		benchtest.Latency(b, func() {
			res := post(`{"model":"m","messages":[]}`)
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		})
	})
}

// BenchmarkStreamedToken is a streamed answer of 1,000 token events,
// straight and through the broker, which meters each event as it passes:
// the figure is per token.
func BenchmarkStreamedToken(b *testing.B) {
	const tokens = 1000
	event := "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tok \"}}\n\n"
	directAndBrokered(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		flusher := w.(http.Flusher)
		_, _ = io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")
		for i := 0; i < tokens; i++ {
			_, _ = io.WriteString(w, event)
			flusher.Flush()
		}
		_, _ = io.WriteString(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1000}}\n\n")
	}, func(b *testing.B, post func(body string) *http.Response) {
		began := time.Now()
		for i := 0; i < b.N; i++ {
			res := post(`{"model":"m","stream":true}`)
			n, err := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if err != nil || n < tokens*int64(len(event)) {
				b.Fatalf("stream cut after %d bytes: %v", n, err)
			}
		}
		b.ReportMetric(float64(time.Since(began).Nanoseconds())/float64(b.N*tokens)/1000, "µs/token")
	})
}

// directAndBrokered serves api as the Anthropic API, with a broker in front
// of it, and runs bench twice: "direct", posting straight to the API, and
// "broker", posting through the broker with a token it granted.
func directAndBrokered(b *testing.B, api http.HandlerFunc, bench func(b *testing.B, post func(body string) *http.Response)) {
	up := httptest.NewServer(api)
	defer up.Close()
	br, err := broker.New("", map[broker.Provider]broker.Upstream{broker.Anthropic: {BaseURL: up.URL, Header: "x-api-key", Value: "k"}})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	token := br.Grant("bench").Token()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	for _, target := range []struct{ name, url string }{{"direct", up.URL}, {"broker", br.URL(broker.Anthropic)}} {
		b.Run(target.name, func(b *testing.B) {
			bench(b, func(body string) *http.Response {
				req, _ := http.NewRequest(http.MethodPost, target.url+"/v1/messages", strings.NewReader(body))
				req.Header.Set("x-api-key", token)
				res, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				return res
			})
		})
	}
}
