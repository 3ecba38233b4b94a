package sandbox

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"
)

// A run with a network of its own has no route to the worker: its init
// listens at GatewayAddr inside the run's network and hands the listening
// socket to the worker over a socket pair, and the worker serves the
// gateway on it. No port of the worker's is opened to the run, and no other
// run can reach this one's gateway.

func socketPair() (ours, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox: gateway socket pair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "gateway"), os.NewFile(uintptr(fds[1]), "gateway-init"), nil
}

// gateway serves one command's gateway, from the moment its init hands
// the listener over until the command has ended.
type gateway struct {
	handler http.Handler
	conn    *os.File

	mu     sync.Mutex
	closed bool
	server *http.Server
	wait   *net.UnixConn
}

func (g *gateway) serve() {
	c, err := net.FileConn(g.conn)
	g.conn.Close()
	if err != nil {
		return
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		uc.Close()
		return
	}
	g.wait = uc
	g.mu.Unlock()
	l, err := receiveListener(uc)
	if err != nil {
		return
	}
	// Every connection the run opens is a descriptor of the worker's: a
	// bound keeps one run from taking them all. Idle ones are let go.
	srv := &http.Server{Handler: g.handler, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	l = netutil.LimitListener(l, MaxGatewayConns)
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		l.Close()
		return
	}
	g.server = srv
	g.mu.Unlock()
	_ = srv.Serve(l)
}

// MaxGatewayConns is how many connections one command may hold open to its
// gateway; past it, the next waits in the run's own backlog.
const MaxGatewayConns = 512

// receiveListener reads the listening socket the init sends; it ends
// with an error when the init ends without sending one.
func receiveListener(uc *net.UnixConn) (net.Listener, error) {
	defer uc.Close()
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("sandbox: no gateway socket from the run's init")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("sandbox: no gateway socket from the run's init")
	}
	f := os.NewFile(uintptr(fds[0]), "gateway-listener")
	defer f.Close()
	return net.FileListener(f)
}

// close stops serving: the run's connections end with the command.
func (g *gateway) close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	if g.wait != nil {
		g.wait.Close()
	}
	if g.server != nil {
		g.server.Close()
	}
}

// listenGateway runs in the init, inside the run's network: it listens at
// addr and sends the socket to the worker. The init keeps no copy, so
// nothing of the run can accept on it.
func listenGateway(fd int, addr string) error {
	defer unix.Close(fd)
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return fmt.Errorf("gateway address %s: %w", addr, err)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("gateway socket: %w", err)
	}
	defer unix.Close(s)
	sa := &unix.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	if err := unix.Bind(s, sa); err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", addr, err)
	}
	if err := unix.Listen(s, 128); err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", addr, err)
	}
	if err := unix.Sendmsg(fd, []byte{0}, unix.UnixRights(s), nil, 0); err != nil {
		return fmt.Errorf("gateway: hand the socket to the worker: %w", err)
	}
	return nil
}
