package logstream

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Benchmarks of the log pipeline; docs/benchmarks.md has their figures and
// how to run them: go test -run '^$' -bench . -benchtime 1x ./internal/logstream/

// discard is an append_log that accepts everything at once.
type discard struct{}

func (discard) AppendLog(context.Context, string, string, []json.RawMessage) error { return nil }

// stampServer records when each event_id was stored.
type stampServer struct {
	mu       sync.Mutex
	stored   map[string]time.Time
	requests int
}

func (s *stampServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Entries []struct {
			EventID string `json:"event_id"`
		} `json:"entries"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	now := time.Now()
	s.mu.Lock()
	s.requests++
	for _, e := range body.Entries {
		s.stored[e.EventID] = now
	}
	s.mu.Unlock()
	_, _ = w.Write([]byte(`{}`))
}

func localAPI(b *testing.B) (*stampServer, *tasksapi.Client) {
	srv := &stampServer{stored: map[string]time.Time{}}
	h := httptest.NewServer(srv)
	b.Cleanup(h.Close)
	return srv, tasksapi.New(tasksapi.Config{BaseURL: h.URL, APIKey: "k", ProjectID: "1"})
}

var agentLine = `{"type":"assistant","message":{"content":[{"type":"text","text":"Reading src/main.go to find where the handler is registered"}]}}`

// BenchmarkPipelineThroughput: lines from a real process through line reading,
// entry building, redaction and batching, to an API that answers at once.
// Run with -cpu 1 for the one-core figure.
func BenchmarkPipelineThroughput(b *testing.B) {
	const lines = 200_000
	script := fmt.Sprintf(`awk 'BEGIN { for (i = 0; i < %d; i++) print %q }'`, lines, agentLine)
	secrets := redact.New("phx_secret_value_1234567890", "ghs_another_secret_value_12345")
	b.ResetTimer()
	for range b.N {
		s := New(discard{}, "t", "r", secrets, Config{})
		cmd := &agent.Command{Command: script}
		if _, err := cmd.Run(context.Background(), agent.Request{Dir: b.TempDir(), ArtifactsDir: b.TempDir()}, s); err != nil {
			b.Fatal(err)
		}
		stats, err := s.Close(context.Background())
		if err != nil || stats.Sent != lines {
			b.Fatalf("sent %d of %d: %v", stats.Sent, lines, err)
		}
	}
	b.ReportMetric(float64(lines*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkRequestsUnderFlood: how many append_log requests 10,000 entries
// emitted at once take.
func BenchmarkRequestsUnderFlood(b *testing.B) {
	for range b.N {
		srv, api := localAPI(b)
		s := New(api, "t", "r", redact.New(), Config{})
		for i := range 10_000 {
			s.Console(acp.LevelInfo, fmt.Sprintf("line %d %s", i, agentLine))
		}
		if _, err := s.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(srv.requests), "requests/10k-entries")
	}
}

// BenchmarkLatencyAt1000LinesPerSecond: time from a line being emitted to it
// being stored, for a producer writing 1,000 lines a second for 5 s, at the
// default flush delay and two others for comparison.
func BenchmarkLatencyAt1000LinesPerSecond(b *testing.B) {
	for _, delay := range []time.Duration{100 * time.Millisecond, DefaultFlushDelay, 500 * time.Millisecond} {
		b.Run("flush-"+delay.String(), func(b *testing.B) { benchLatency(b, delay) })
	}
}

func benchLatency(b *testing.B, delay time.Duration) {
	for range b.N {
		srv, api := localAPI(b)
		s := New(api, "t", "r", redact.New(), Config{FlushDelay: delay})
		emitted := map[string]time.Time{}
		tick := time.NewTicker(time.Millisecond)
		for i := range 5000 {
			<-tick.C
			e := acp.Console(acp.LevelInfo, agentLine)
			e.EventID = strconv.Itoa(i)
			emitted[e.EventID] = time.Now()
			s.Emit(e)
		}
		tick.Stop()
		if _, err := s.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		var lat []time.Duration
		for id, at := range emitted {
			lat = append(lat, srv.stored[id].Sub(at))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
		b.ReportMetric(float64(srv.requests)/5, "requests/s")
	}
}

// BenchmarkAgentSlowdown: an agent writing 1,000,000 lines measures its own
// run time, once writing to /dev/null and once through the worker's pipeline
// to a local Tasks API. The figure is the difference in percent.
func BenchmarkAgentSlowdown(b *testing.B) {
	// REDIRECT is replaced by where the output goes.
	const script = `start=$(date +%s%N); awk 'BEGIN { for (i = 0; i < 1000000; i++) print "line " i " of the agent output, about sixty bytes long" }' REDIRECT; end=$(date +%s%N); echo "elapsed $(( (end - start) / 1000 ))" >&2`
	selfTime := func(out string) time.Duration {
		i := strings.LastIndex(out, "elapsed ")
		us, _ := strconv.Atoi(strings.TrimSpace(out[i+len("elapsed "):]))
		return time.Duration(us) * time.Microsecond
	}
	for range b.N {
		out, err := exec.Command("sh", "-c", strings.Replace(script, "REDIRECT", ">/dev/null", 1)).CombinedOutput()
		if err != nil {
			b.Fatal(err, string(out))
		}
		alone := selfTime(string(out))

		_, api := localAPI(b)
		s := New(api, "t", "r", redact.New("phx_secret_value_1234567890"), Config{})
		var stderr string
		sink := sinkFunc(func(e acp.Entry) {
			if e.Notification.Params["level"] == acp.LevelWarn {
				stderr = fmt.Sprint(e.Notification.Params["message"])
			}
			s.Emit(e)
		})
		cmd := &agent.Command{Command: strings.Replace(script, "REDIRECT", "", 1)}
		if _, err := cmd.Run(context.Background(), agent.Request{Dir: b.TempDir(), ArtifactsDir: b.TempDir()}, sink); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		through := selfTime(stderr)
		b.ReportMetric(alone.Seconds()*1000, "alone-ms")
		b.ReportMetric(through.Seconds()*1000, "through-worker-ms")
		b.ReportMetric((through.Seconds()/alone.Seconds()-1)*100, "slowdown-%")
	}
}

type sinkFunc func(acp.Entry)

func (f sinkFunc) Emit(e acp.Entry) { f(e) }
