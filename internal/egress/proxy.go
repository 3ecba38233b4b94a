package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Denial is one refused destination.
type Denial struct {
	Host   string
	Port   int
	Reason Reason
	// First is true the first time the run is refused this host.
	First bool
}

// Proxy is one run's HTTP(S) proxy: CONNECT tunnels and plain-HTTP
// requests to the destinations its policy allows.
type Proxy struct {
	policy   *Policy
	onDenied func(Denial)
	dialer   *net.Dialer
	forward  *httputil.ReverseProxy
	// tunnels bounds the connections the run holds open at once.
	tunnels chan struct{}

	mu     sync.Mutex
	denied map[string]bool
	open   map[net.Conn]bool
	closed bool
}

// MaxTunnels is how many connections one run may hold through its proxy.
const MaxTunnels = 256

// NewProxy serves policy; onDenied (may be nil) hears of every refusal.
func NewProxy(policy *Policy, onDenied func(Denial)) *Proxy {
	p := &Proxy{policy: policy, onDenied: onDenied, denied: map[string]bool{}, open: map[net.Conn]bool{},
		tunnels: make(chan struct{}, MaxTunnels)}
	p.dialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           p.dial,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	p.forward = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.Header.Del("Proxy-Authorization")
			r.Out.Header.Del("Proxy-Connection")
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var refused *RefusedError
			if errors.As(err, &refused) {
				http.Error(w, refused.Error(), http.StatusForbidden)
				return
			}
			http.Error(w, "taskworker egress proxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	return p
}

// RefusedError is a destination the policy does not allow.
type RefusedError struct {
	Host   string
	Port   int
	Reason Reason
}

func (e *RefusedError) Error() string {
	if e.Reason == Special {
		return fmt.Sprintf("taskworker egress policy: %s:%d is a private, loopback or metadata address; name it in TASKWORKER_EGRESS_ALLOW to allow it", e.Host, e.Port)
	}
	return fmt.Sprintf("taskworker egress policy: %s:%d is not in TASKWORKER_EGRESS_ALLOW", e.Host, e.Port)
}

// ServeHTTP tunnels a CONNECT and forwards an absolute-form request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.tunnel(w, r)
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "taskworker egress proxy: only CONNECT and http:// requests are proxied", http.StatusBadRequest)
		return
	}
	// As the broker does: without it the server closes the request body at
	// the answer's first byte, and the transport may cut the answer.
	_ = http.NewResponseController(w).EnableFullDuplex()
	p.forward.ServeHTTP(w, r)
}

func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request) {
	select {
	case p.tunnels <- struct{}{}:
		defer func() { <-p.tunnels }()
	default:
		http.Error(w, fmt.Sprintf("taskworker egress proxy: the run holds %d connections already", MaxTunnels), http.StatusTooManyRequests)
		return
	}
	upstream, err := p.dial(r.Context(), "tcp", r.Host)
	if err != nil {
		code := http.StatusBadGateway
		var refused *RefusedError
		if errors.As(err, &refused) {
			code = http.StatusForbidden
		}
		http.Error(w, err.Error(), code)
		return
	}
	defer upstream.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "taskworker egress proxy: cannot tunnel on this connection", http.StatusInternalServerError)
		return
	}
	client, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	if !p.track(client, upstream) {
		return
	}
	defer p.untrack(client, upstream)
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		// What the client sent after its CONNECT is already buffered.
		_, _ = io.Copy(upstream, buf)
		closeWrite(upstream)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, upstream)
		closeWrite(client)
		done <- struct{}{}
	}()
	<-done
	<-done
}

// track holds a tunnel's connections until it ends, so Close can end it:
// a tunnel outlives the server it was hijacked from.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range conns {
		p.open[c] = true
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.open, c)
	}
}

// Close ends every tunnel and refuses new ones: the run is over.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.open = map[net.Conn]bool{}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// dial connects to address if the policy allows it. The check is made on
// the address being connected to, after resolution, so a name that
// resolves to a private address (or changes what it resolves to) is caught.
func (p *Proxy) dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		host, portText = address, "443"
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("taskworker egress proxy: bad port in %q", address)
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	named := p.policy.hostNamed(host, port)
	if !named && !p.policy.all && len(p.policy.nets) == 0 {
		// Refused before any DNS lookup: a denied name tells no resolver.
		return nil, p.refuse(host, port, NotAllowed)
	}
	var refusal *RefusedError
	d := *p.dialer
	d.Control = func(_, addr string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return err
		}
		if ok, reason := p.policy.check(named, nat64(ap.Addr())); !ok {
			refusal = &RefusedError{Host: host, Port: port, Reason: reason}
			return refusal
		}
		return nil
	}
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		if refusal != nil {
			return nil, p.refuse(host, port, refusal.Reason)
		}
		return nil, fmt.Errorf("taskworker egress proxy: connect to %s: %w", address, err)
	}
	return conn, nil
}

func (p *Proxy) refuse(host string, port int, reason Reason) error {
	key := net.JoinHostPort(host, strconv.Itoa(port))
	p.mu.Lock()
	first := !p.denied[key]
	p.denied[key] = true
	p.mu.Unlock()
	if p.onDenied != nil {
		p.onDenied(Denial{Host: host, Port: port, Reason: reason, First: first})
	}
	return &RefusedError{Host: host, Port: port, Reason: reason}
}

// nat64 is the IPv4 address a NAT64 address stands for, so that a
// private IPv4 address can't be reached through the well-known prefix.
func nat64(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() && netip.MustParsePrefix("64:ff9b::/96").Contains(a) {
		b := a.As16()
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	return a
}
