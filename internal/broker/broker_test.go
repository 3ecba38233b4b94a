package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskworker/taskworker/internal/broker"
)

const realKey = "sk-ant-real-provider-key-0123456789"

// upstream stands in for the provider: it takes only the real key, and
// streams two events with a flush between them.
func upstream(t *testing.T, seen *[]string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*seen = append(*seen, r.URL.Path+" key="+r.Header.Get("x-api-key")+" auth="+r.Header.Get("Authorization"))
		if r.Header.Get("x-api-key") != realKey {
			http.Error(w, "bad key", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		fmt.Fprint(w, "event: message_stop\ndata: {}\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestARunsTokenReachesTheProviderWithTheRealKeyUntilTheRunEnds(t *testing.T) {
	var seen []string
	up := upstream(t, &seen)
	b, err := broker.New("", map[broker.Provider]broker.Upstream{
		broker.Anthropic: {BaseURL: up.URL + "/base", Header: "x-api-key", Value: realKey},
	})
	require.NoError(t, err)
	defer b.Close()
	grant := b.Grant("run-1")
	require.NotContains(t, grant.Token(), realKey)

	post := func(token string) (*http.Response, string) {
		req, err := http.NewRequest(http.MethodPost, b.URL(broker.Anthropic)+"/v1/messages", strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set("x-api-key", token)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}

	res, body := post(grant.Token())
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.Contains(t, body, "message_stop")
	require.Equal(t, []string{"/base/v1/messages key=" + realKey + " auth="}, seen, "the provider saw the real key, not the run's token")

	res, body = post("sk-ant-made-up")
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Contains(t, body, `"authentication_error"`)

	grant.Revoke()
	res, body = post(grant.Token())
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Contains(t, body, "the run has ended")
	require.Len(t, seen, 1, "no request of an ended run reached the provider")
}

func TestAStreamedAnswerArrivesAsItComes(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: second\n\n")
	}))
	defer up.Close()
	b, err := broker.New("", map[broker.Provider]broker.Upstream{broker.OpenAI: {BaseURL: up.URL + "/v1", Header: "Authorization", Value: "Bearer k"}})
	require.NoError(t, err)
	defer b.Close()
	g := b.Grant("run")
	req, _ := http.NewRequest(http.MethodPost, b.URL(broker.OpenAI)+"/responses", nil)
	req.Header.Set("Authorization", "Bearer "+g.Token())
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "data: first\n", line, "the first event came before the upstream sent the second")
	close(release)
}

// The transport forwards the agent's request while the answer comes back;
// an HTTP/1 server left half duplex takes the request body away from it
// once the answer starts (drains it, closes it), which drops the
// connection to the provider mid-answer. Holding the request's end back
// until the first event has arrived makes that overlap certain: half
// duplex, the first event never comes.
func TestAnAnswerStreamsBackWhileTheRequestIsStillGoingUp(t *testing.T) {
	head, tail := `{"model":"claude-sonnet-4-5",`, `"stream":true}`
	got := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		first := make([]byte, len(head))
		if _, err := io.ReadFull(r.Body, first); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		rest, err := io.ReadAll(r.Body)
		got <- string(first) + string(rest) + fmt.Sprint(err)
		fmt.Fprint(w, "event: message_stop\ndata: {}\n\n")
	}))
	defer up.Close()
	b, err := broker.New("", map[broker.Provider]broker.Upstream{broker.Anthropic: {BaseURL: up.URL, Header: "x-api-key", Value: realKey}})
	require.NoError(t, err)
	defer b.Close()
	g := b.Grant("run")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, send := io.Pipe()
	// The client waits for its body to end before it gives up on the request.
	context.AfterFunc(ctx, func() { send.CloseWithError(ctx.Err()) })
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.URL(broker.Anthropic)+"/v1/messages", body)
	require.NoError(t, err)
	req.ContentLength = int64(len(head) + len(tail))
	req.Header.Set("x-api-key", g.Token())
	go func() { _, _ = io.WriteString(send, head) }()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	res, err := client.Do(req)
	require.NoError(t, err, "the answer's first event came before the request's end")
	defer res.Body.Close()
	events := bufio.NewReader(res.Body)
	line, err := events.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "event: message_start\n", line)

	_, err = io.WriteString(send, tail)
	require.NoError(t, err)
	require.NoError(t, send.Close())
	rest, err := io.ReadAll(events)
	require.NoError(t, err, "the answer was not cut")
	require.Equal(t, "data: {}\n\nevent: message_stop\ndata: {}\n\n", string(rest))
	require.Equal(t, head+tail+"<nil>", <-got, "the provider had the whole request")
}

func TestTheBrokerCountsUsageAndStopsARunAtItsBudget(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.RawQuery, "stream") {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":1000,\"output_tokens\":1}}}\n\n")
			w.(http.Flusher).Flush()
			fmt.Fprint(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":500}}\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"claude-sonnet-4-5","usage":{"input_tokens":2000,"output_tokens":100,"cache_read_input_tokens":10000}}`)
	}))
	defer up.Close()
	b, err := broker.New("", map[broker.Provider]broker.Upstream{broker.Anthropic: {BaseURL: up.URL, Header: "x-api-key", Value: realKey}})
	require.NoError(t, err)
	defer b.Close()
	g := b.Grant("run")
	g.Limit(broker.Budget{MaxCostUSD: 0.02})
	call := func(query string) int {
		req, _ := http.NewRequest(http.MethodPost, b.URL(broker.Anthropic)+"/v1/messages"+query, strings.NewReader(`{}`))
		req.Header.Set("x-api-key", g.Token())
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, http.StatusOK, call("?stream"))
	u, models := g.Usage()
	require.Equal(t, []string{"claude-sonnet-4-5"}, models)
	require.EqualValues(t, 1000, u.InputTokens)
	require.EqualValues(t, 500, u.OutputTokens, "the last message_delta's cumulative count")
	require.InDelta(t, (1000*3+500*15)/1e6, u.CostUSD, 1e-9)
	require.Empty(t, g.BudgetReached())

	require.Equal(t, http.StatusOK, call(""))
	u, _ = g.Usage()
	require.InDelta(t, (3000*3+600*15+10000*0.3)/1e6, u.CostUSD, 1e-9) // 0.021
	select {
	case <-g.Exceeded():
	default:
		t.Fatal("a run past its budget is not flagged")
	}
	require.Equal(t, "budget of $0.02 reached after 13600 tokens ($0.0210 spent)", g.BudgetReached())
	require.Equal(t, http.StatusBadRequest, call(""), "the next request is refused")
	u2, _ := g.Usage()
	require.Equal(t, u, u2, "and never reaches the provider")
}
