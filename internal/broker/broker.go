// Package broker serves the model APIs to the agents with credentials of
// the run's own: the provider's real key stays in the worker, and a run's
// token stops working when the run ends.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Provider names an upstream API.
type Provider string

// The providers the agents use.
const (
	Anthropic Provider = "anthropic"
	OpenAI    Provider = "openai"
)

// Upstream is a provider's API and the worker's credential for it.
type Upstream struct {
	// BaseURL is where requests go: the path after the broker's prefix is
	// appended to it.
	BaseURL string
	// Header and Value authenticate the worker, e.g. x-api-key: sk-ant-...
	Header string
	Value  string
}

// Default upstreams, when the configuration names none.
const (
	DefaultAnthropicURL = "https://api.anthropic.com"
	DefaultOpenAIURL    = "https://api.openai.com/v1"
)

// Broker forwards the agents' model requests with the worker's credentials.
type Broker struct {
	upstreams map[Provider]*upstream
	listener  net.Listener
	server    *http.Server

	mu     sync.Mutex
	grants map[string]*Grant
}

type upstream struct {
	Upstream
	proxy *httputil.ReverseProxy
}

// New serves the upstreams on addr (default 127.0.0.1:0).
func New(addr string, upstreams map[Provider]Upstream) (*Broker, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	b := &Broker{upstreams: map[Provider]*upstream{}, grants: map[string]*Grant{}}
	for p, u := range upstreams {
		target, err := url.Parse(u.BaseURL)
		if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
			return nil, fmt.Errorf("model API for %s: %q is not an http(s) URL", p, u.BaseURL)
		}
		up := &upstream{Upstream: u}
		up.proxy = &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.Out.URL.Scheme, r.Out.URL.Host = target.Scheme, target.Host
				r.Out.URL.Path = strings.TrimSuffix(target.Path, "/") + r.Out.URL.Path
				r.Out.URL.RawPath = ""
				r.Out.Host = target.Host
				r.Out.Header.Del("Authorization")
				r.Out.Header.Del("X-Api-Key")
				r.Out.Header.Set(u.Header, u.Value)
			},
			// Streamed answers (server-sent events) reach the agent as they come.
			FlushInterval: -1,
			ModifyResponse: func(res *http.Response) error {
				if g, ok := res.Request.Context().Value(grantKey{}).(*Grant); ok && res.StatusCode == http.StatusOK {
					res.Body = &meter{body: res.Body, g: g, sse: strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream")}
				}
				return nil
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				refuse(w, p, http.StatusBadGateway, "the model API could not be reached through the worker: "+err.Error())
			},
		}
		b.upstreams[p] = up
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the model broker on %s (TASKWORKER_BROKER_ADDR): %w", addr, err)
	}
	b.listener = l
	b.server = &http.Server{Handler: b, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = b.server.Serve(l) }()
	return b, nil
}

// Close stops serving.
func (b *Broker) Close() error { return b.server.Close() }

// URL is where an agent reaches provider through the broker.
func (b *Broker) URL(p Provider) string {
	return "http://" + b.listener.Addr().String() + "/" + string(p)
}

// Grant is one run's access to the model APIs, and what it has used.
type Grant struct {
	RunID string
	// Token is the run's credential, shaped like the provider's keys so
	// that the worker's redaction of key-shaped strings covers it too.
	token string
	b     *Broker

	mu           sync.Mutex
	usage        Usage
	byModel      map[string]Usage
	maxCost      float64
	maxTokens    int64
	exceeded     chan struct{}
	exceededOnce sync.Once
}

// Budget is what a run may spend; zero means no limit.
type Budget struct {
	MaxCostUSD float64
	MaxTokens  int64
}

// Limit sets the run's budget.
func (g *Grant) Limit(b Budget) {
	g.mu.Lock()
	g.maxCost, g.maxTokens = b.MaxCostUSD, b.MaxTokens
	g.mu.Unlock()
}

// Exceeded is closed once the run has used its budget.
func (g *Grant) Exceeded() <-chan struct{} { return g.exceeded }

// Usage is what the run's requests have used so far, as the provider
// answered, and the models they used.
func (g *Grant) Usage() (Usage, []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	models := make([]string, 0, len(g.byModel))
	for m := range g.byModel {
		models = append(models, m)
	}
	return g.usage, models
}

// BudgetReached says which limit the run reached, "" while none.
func (g *Grant) BudgetReached() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reachedLocked()
}

func (g *Grant) reachedLocked() string {
	switch {
	case g.maxCost > 0 && g.usage.CostUSD >= g.maxCost:
		return fmt.Sprintf("budget of $%.2f reached after %d tokens ($%.4f spent)", g.maxCost, g.usage.Tokens(), g.usage.CostUSD)
	case g.maxTokens > 0 && g.usage.Tokens() >= g.maxTokens:
		return fmt.Sprintf("budget of %d tokens reached after %d tokens ($%.4f spent)", g.maxTokens, g.usage.Tokens(), g.usage.CostUSD)
	}
	return ""
}

// add counts one answer's tokens at model's price.
func (g *Grant) add(model string, t tokens) {
	price := PriceOf(model)
	fresh := t.Input
	if t.Details.Cached > 0 && t.CacheRead == 0 {
		// OpenAI counts cached input within input_tokens.
		fresh, t.CacheRead = t.Input-t.Details.Cached, t.Details.Cached
	}
	cost := (float64(fresh)*price.Input + float64(t.Output)*price.Output +
		float64(t.CacheWrite)*price.CacheWrite + float64(t.CacheRead)*price.CacheRead) / 1e6
	one := Usage{Requests: 1, InputTokens: fresh, OutputTokens: t.Output, CacheWriteTokens: t.CacheWrite,
		CacheReadTokens: t.CacheRead, CostUSD: cost}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.usage = g.usage.plus(one)
	g.byModel[model] = g.byModel[model].plus(one)
	if g.reachedLocked() != "" {
		g.exceededOnce.Do(func() { close(g.exceeded) })
	}
}

// Grant mints the run's token.
func (b *Broker) Grant(runID string) *Grant {
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	g := &Grant{RunID: runID, token: "sk-ant-taskworker-run-" + hex.EncodeToString(raw[:]), b: b,
		byModel: map[string]Usage{}, exceeded: make(chan struct{})}
	b.mu.Lock()
	b.grants[g.token] = g
	b.mu.Unlock()
	return g
}

// Token is the credential the run's agent sends.
func (g *Grant) Token() string { return g.token }

// Revoke ends the run's access: its token is refused from now on.
func (g *Grant) Revoke() {
	g.b.mu.Lock()
	delete(g.b.grants, g.token)
	g.b.mu.Unlock()
}

// ServeHTTP forwards /{provider}/... to the provider's API, for a request
// that carries a live run's token.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	p := Provider(name)
	up, ok := b.upstreams[p]
	if !ok {
		refuse(w, p, http.StatusNotFound, "no model API is served at "+r.URL.Path)
		return
	}
	g, err := b.grantOf(r)
	if err != nil {
		refuse(w, p, http.StatusUnauthorized, err.Error())
		return
	}
	if reached := g.BudgetReached(); reached != "" {
		// A 400 the CLIs report at once, rather than retry for minutes.
		refuse(w, p, http.StatusBadRequest, "this run's "+reached)
		return
	}
	r.URL.Path = "/" + rest
	// The transport forwards the request body while the answer streams back.
	// Left half duplex, the HTTP/1 server drains and closes the body when the
	// answer's first bytes are written, under the transport still reading it
	// (if only to see its end): the transport then drops the connection to
	// the provider and the answer is cut. HTTP/2 is full duplex already, and
	// a writer that cannot be switched is left as it is.
	_ = http.NewResponseController(w).EnableFullDuplex()
	up.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), grantKey{}, g)))
}

type grantKey struct{}

func (b *Broker) grantOf(r *http.Request) (*Grant, error) {
	token := r.Header.Get("X-Api-Key")
	if token == "" {
		token = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	if token == "" {
		return nil, errors.New("no run token: the broker serves only a run's agent")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.grants[token]
	if !ok {
		return nil, errors.New("this run's token is not valid (the run has ended, or it is not a run's token)")
	}
	return g, nil
}

// refuse answers in the provider's error shape, so the agent's CLI reports it.
func refuse(w http.ResponseWriter, p Provider, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	quoted := fmt.Sprintf("%q", msg)
	if p == OpenAI {
		fmt.Fprintf(w, `{"error":{"message":%s,"type":"invalid_request_error","code":"taskworker_broker"}}`, quoted)
		return
	}
	kind := "authentication_error"
	switch code {
	case http.StatusUnauthorized:
	case http.StatusBadRequest:
		kind = "invalid_request_error"
	default:
		kind = "api_error"
	}
	fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%s}}`, kind, quoted)
}
