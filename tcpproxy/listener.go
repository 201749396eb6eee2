package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// Listener is a net.Listener whose connections come from a Proxy: a Route whose Listener is
// set hands it the connections it takes instead of forwarding them. Serve an http.Server (or
// anything that takes a net.Listener) from it to terminate, in this process, the names the
// proxy does not pass through.
//
// Each connection Accept returns reads first the bytes the proxy read to route it (the
// ClientHello), then the rest of the stream, so its consumer sees the stream from its first
// byte. When the route terminates TLS, the connection is the *tls.Conn, handshake done.
// Create a Listener with NewListener; it is safe for concurrent use.
type Listener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewListener returns a Listener whose Addr is addr (normally the proxy's listening address,
// which servers put in their requests' context); nil stands for an address named "tcpproxy".
func NewListener(addr net.Addr) *Listener {
	if addr == nil {
		addr = listenerAddr{}
	}
	return &Listener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

type listenerAddr struct{}

func (listenerAddr) Network() string { return "tcp" }
func (listenerAddr) String() string  { return "tcpproxy" }

// Accept waits for the next connection a Proxy hands over. After Close it returns an error
// wrapping net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
	}
}

// Close makes Accept fail; connections a proxy tries to hand over from then on are closed.
// Connections already accepted are not affected.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr returns the address given to NewListener.
func (l *Listener) Addr() net.Addr { return l.addr }

// deliver waits until Accept takes c, and reports false if the listener or the proxy (stop)
// closed first.
func (l *Listener) deliver(c net.Conn, stop <-chan struct{}) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
	case <-stop:
	}
	return false
}

// replayConn reads replay before the rest of its Conn. It embeds the net.Conn interface, not
// the *net.TCPConn, so that it offers no way to read around the replayed bytes: SyscallConn
// fails until they are consumed, and it has no WriteTo or NetConn.
type replayConn struct {
	net.Conn
	replay  []byte
	mu      sync.Mutex // protects replay against concurrent Reads
	release func()     // called once, on Close
	once    sync.Once
}

// Read returns the replayed bytes first, then reads the connection.
func (c *replayConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.replay) > 0 {
		n := copy(b, c.replay)
		c.replay = c.replay[n:]
		if len(c.replay) == 0 {
			c.replay = nil
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// Close closes the connection.
func (c *replayConn) Close() error {
	err := c.Conn.Close()
	if c.release != nil {
		c.once.Do(c.release)
	}
	return err
}

// CloseWrite shuts down the writing side, when the connection can.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ReadFrom writes what r holds to the connection, with sendfile or splice when the connection
// is a *net.TCPConn and r a file or socket: writing never meets the replayed bytes.
func (c *replayConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// errReplayPending is what SyscallConn returns while replayed bytes are unread.
var errReplayPending = errors.New("tcpproxy: the connection's first bytes are still to be read")

// SyscallConn returns the raw connection once the replayed bytes have been read, and an error
// before: a reader that read the socket directly would skip them.
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	c.mu.Lock()
	pending := len(c.replay) > 0
	c.mu.Unlock()
	if pending {
		return nil, errReplayPending
	}
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
