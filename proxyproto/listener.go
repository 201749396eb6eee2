package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
)

// ErrUntrusted says that a peer outside Listener.Trusted sent a PROXY header: it is refused,
// since anyone could claim any address that way.
var ErrUntrusted = errors.New("proxyproto: PROXY header from an untrusted peer")

// defaultHeaderTimeout is Listener.HeaderTimeout's default.
const defaultHeaderTimeout = 5 * time.Second

// Listener accepts connections from the net.Listener it wraps, some of them relayed by
// proxies that send a PROXY header first, and gives each the addresses its header says.
//
// Only peers in Trusted may send a header, and they must (unless Optional): a trusted peer's
// connection is returned by Accept once its header is read, with RemoteAddr the client's
// address and LocalAddr the one the client connected to, so that sluice.ClientIP, access
// logs and rate limits see the client. A header with the LOCAL command or an unknown
// address (v1 UNKNOWN, v2 AF_UNSPEC) keeps the connection's real addresses. A trusted peer
// whose header is missing, malformed or late gets a connection whose Read returns the error
// saying why, already closed: the server that accepted it sees it fail at once.
//
// Any other peer's connection is returned at once and passes its bytes through untouched,
// in order, unless they begin with a PROXY signature: that connection's first Read returns
// ErrUntrusted and closes it. On Unix the first bytes are looked at with recv(MSG_PEEK), so
// nothing is copied; elsewhere, or when the connection is not a socket, up to 12 bytes are
// read and given back by Read.
//
// Accept never waits for a peer's bytes. Each trusted peer's header is read on a goroutine
// of its own, under HeaderTimeout, and Accept returns connections in the order their headers
// came, so a peer that is slow or silent holds up only itself. Reading the header when
// the connection is first used instead would hide a wait in RemoteAddr, which accept loops
// call (h1's, for http.LocalAddrContextKey, and the ConnContext and ConnState hooks of
// net/http's): one silent peer would stall every other. The goroutine ends when the header
// is read or the timeout passes. Accept starts, on its first call, one more goroutine that
// accepts from the wrapped Listener; Close ends them all.
//
// The returned connections are *Conn, which keep the fast paths of what they wrap: on Linux
// io.Copy between a *Conn and a *net.TCPConn still moves bytes with splice(2).
//
// A Listener must not be copied or have its fields changed after its first Accept; Accept
// and Close are safe for concurrent use.
type Listener struct {
	// Listener is where connections come from, a TCP listener most often. Required. When the
	// connections also speak TLS, wrap this Listener in the TLS one: the PROXY header comes
	// before the TLS handshake.
	net.Listener

	// Trusted lists the proxies whose PROXY headers are believed: the load balancers in
	// front. Nil trusts nobody: every header is refused, and the Listener only passes plain
	// connections through.
	Trusted *sluice.TrustedProxies

	// Optional lets trusted peers omit the header: their connections then keep their real
	// addresses. A trusted peer that sends nothing within HeaderTimeout is taken as one that
	// sent no header, so a protocol where the server speaks first waits that long for its
	// greeting. False means a trusted peer must send a header, as HAProxy's accept-proxy and
	// NGINX's proxy_protocol require.
	Optional bool

	// HeaderTimeout bounds the wait for a trusted peer's header. Zero means 5 seconds;
	// negative means no limit.
	HeaderTimeout time.Duration

	setup     sync.Once
	start     sync.Once
	closeOnce sync.Once
	conns     chan accepted // connections and temporary errors, to Accept
	closing   chan struct{} // closed by Close
	done      chan struct{} // closed when the accept loop has ended, after it set err
	err       error         // why the accept loop ended

	mu      sync.Mutex
	reading map[net.Conn]struct{} // mu protects reading: connections whose header is being read; nil once closed
}

// accepted is what the accept loop hands Accept: a connection or an error.
type accepted struct {
	c   *Conn
	err error
}

var _ net.Listener = (*Listener)(nil)

func (l *Listener) init() {
	l.setup.Do(func() {
		l.conns = make(chan accepted)
		l.closing = make(chan struct{})
		l.done = make(chan struct{})
		l.reading = make(map[net.Conn]struct{})
	})
}

// Accept returns the next connection whose peer is untrusted, or trusted and done with its
// header: a *Conn. Its errors are those of the wrapped Listener, temporary ones included,
// so that a server's accept loop backs off as it would without this Listener.
func (l *Listener) Accept() (net.Conn, error) {
	l.init()
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case a := <-l.conns:
		if a.err != nil {
			return nil, a.err
		}
		return a.c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close closes the wrapped Listener and the connections whose header is being read;
// connections already returned by Accept stay open.
func (l *Listener) Close() error {
	l.init()
	l.closeOnce.Do(func() {
		close(l.closing)
		l.mu.Lock()
		for nc := range l.reading {
			nc.Close()
		}
		l.reading = nil
		l.mu.Unlock()
	})
	return l.Listener.Close()
}

// acceptLoop accepts connections until the wrapped Listener fails for good: untrusted ones go
// to Accept at once, trusted ones to a goroutine that reads their header.
func (l *Listener) acceptLoop() {
	defer close(l.done)
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				l.deliver(accepted{err: err})
				continue
			}
			l.err = err
			return
		}
		if peer, _ := netAddrPort(nc.RemoteAddr()); l.Trusted.Contains(peer.Addr()) {
			if l.track(nc) {
				go l.handshake(nc)
			}
			continue
		}
		l.deliver(accepted{c: newConn(nc)})
	}
}

// deliver hands a to Accept, or closes its connection when the Listener closes first.
func (l *Listener) deliver(a accepted) {
	select {
	case l.conns <- a:
	case <-l.closing:
		if a.c != nil {
			a.c.nc.Close()
		}
	case <-l.done:
		if a.c != nil {
			a.c.nc.Close()
		}
	}
}

// track records that nc's header is being read, so that Close can end the read; it closes
// nc and returns false when the Listener is closed.
func (l *Listener) track(nc net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reading == nil {
		nc.Close()
		return false
	}
	l.reading[nc] = struct{}{}
	return true
}

// handshake reads the header of a trusted peer's connection and hands the connection to
// Accept.
func (l *Listener) handshake(nc net.Conn) {
	c := l.readHeader(nc)
	l.mu.Lock()
	delete(l.reading, nc)
	l.mu.Unlock()
	l.deliver(accepted{c: c})
}

// readHeader reads the header of a trusted peer's connection, under HeaderTimeout.
func (l *Listener) readHeader(nc net.Conn) *Conn {
	c := newConn(nc)
	d := l.HeaderTimeout
	if d == 0 {
		d = defaultHeaderTimeout
	}
	if d > 0 {
		nc.SetReadDeadline(time.Now().Add(d))
	}
	buf := bufPool.Get().(*[maxV2]byte)
	defer bufPool.Put(buf)
	if l.Optional {
		if found, _ := c.sniff(buf); !found {
			// No signature, the end of the connection, or nothing within the timeout: a
			// connection without a header, whose reader will see what there is to see.
			if d > 0 {
				nc.SetReadDeadline(time.Time{})
			}
			c.checked = true
			c.ready.Store(len(c.pre) == 0)
			return c
		}
	}
	h, err := readHeader(nc, buf, c.pre)
	c.pre = nil
	if err == nil && d > 0 {
		err = nc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		c.fail(fmt.Errorf("%w (from trusted peer %v)", err, c.remote))
		return c
	}
	c.header = cloneTLVs(h)
	if h.Proxied() {
		c.remote, c.local = h.addr(h.Source), h.addr(h.Destination)
	}
	c.checked = true
	c.ready.Store(true)
	return c
}

// addr returns ap as the net.Addr of h's transport.
func (h Header) addr(ap netip.AddrPort) net.Addr {
	if h.Transport == UDP4 || h.Transport == UDP6 {
		return net.UDPAddrFromAddrPort(ap)
	}
	return net.TCPAddrFromAddrPort(ap)
}

// Conn is a connection accepted by a Listener. Its RemoteAddr and LocalAddr are what its
// PROXY header said, or the real ones when it had none or it said LOCAL or UNKNOWN; Header
// returns the header itself, TLVs included.
//
// Conn keeps the fast paths of the connection it wraps: ReadFrom and WriteTo hand the copy
// to it (splice(2) between TCP sockets on Linux), SyscallConn reaches its socket, and
// CloseWrite and CloseRead half-close it. NetConn returns it.
type Conn struct {
	nc            net.Conn
	header        Header
	remote, local net.Addr

	// ready says that Read may go straight to nc: the header is read, or an untrusted
	// peer's first bytes were looked at, and nothing read while looking is left in pre.
	ready atomic.Bool

	mu      sync.Mutex // mu serializes the look at an untrusted peer's first bytes, and protects what follows
	checked bool       // the first bytes were looked at
	err     error      // why the connection failed, returned by every Read; it is closed
	raw     syscall.RawConn
	pre     []byte // bytes read while looking at the first ones, in preBuf, not yet returned by Read
	preBuf  [len(sigV2)]byte
}

var (
	_ net.Conn      = (*Conn)(nil)
	_ syscall.Conn  = (*Conn)(nil)
	_ io.ReaderFrom = (*Conn)(nil)
	_ io.WriterTo   = (*Conn)(nil)
)

func newConn(nc net.Conn) *Conn {
	return &Conn{nc: nc, remote: nc.RemoteAddr(), local: nc.LocalAddr()}
}

// fail closes c and makes every Read return err.
func (c *Conn) fail(err error) {
	c.err = err
	c.nc.Close()
}

// sniff looks at c's first bytes, up to the length of a signature, and reports whether they
// are one. On a socket it peeks; otherwise it reads them into c.pre, for Read to give back.
// The end of the connection is not an error: no header follows it.
func (c *Conn) sniff(buf *[maxV2]byte) (bool, error) {
	if c.raw == nil && canPeek {
		if sc, ok := c.nc.(syscall.Conn); ok {
			c.raw, _ = sc.SyscallConn()
		}
	}
	for have := 0; c.raw != nil; {
		n, err := peek(c.raw, buf[:len(sigV2)], have)
		switch {
		case err == errNoPeek:
			c.raw = nil
			continue
		case err == io.EOF:
			return false, nil
		case err != nil:
			return false, err
		}
		if header, decided := sniff(buf[:n]); decided {
			return header, nil
		}
		have = n
	}
	for {
		if header, decided := sniff(c.pre); decided {
			return header, nil
		}
		n, err := c.nc.Read(c.preBuf[len(c.pre):])
		c.pre = c.preBuf[:len(c.pre)+n]
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// settle is the slow path of Read and its kin, under c.mu: it returns c's failure, or
// looks at an untrusted peer's first bytes if that is not done yet, and refuses a header.
// It sets ready when nothing is left in pre.
func (c *Conn) settle() error {
	if c.err != nil {
		return c.err
	}
	if !c.checked {
		var buf *[maxV2]byte
		if canPeek {
			buf = bufPool.Get().(*[maxV2]byte)
			defer bufPool.Put(buf)
		}
		header, err := c.sniff(buf)
		if err != nil {
			return err
		}
		if header {
			c.fail(fmt.Errorf("%w: %v", ErrUntrusted, c.remote))
			return c.err
		}
		c.checked = true
	}
	if len(c.pre) == 0 {
		c.ready.Store(true)
	}
	return nil
}

// Read reads the connection's bytes after its header.
func (c *Conn) Read(p []byte) (int, error) {
	if c.ready.Load() {
		return c.nc.Read(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.settle(); err != nil {
		return 0, err
	}
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		c.ready.Store(len(c.pre) == 0)
		return n, nil
	}
	return c.nc.Read(p)
}

// WriteTo writes the connection's bytes after its header to w until EOF, with w's ReadFrom
// or the wrapped connection's WriteTo: between TCP sockets on Linux, with splice(2).
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if !c.ready.Load() {
		c.mu.Lock()
		err := c.settle()
		if err == nil && len(c.pre) > 0 {
			m, werr := w.Write(c.pre)
			n, c.pre, err = int64(m), c.pre[m:], werr
			c.ready.Store(len(c.pre) == 0)
		}
		c.mu.Unlock()
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(w, c.nc)
	return n + m, err
}

// ReadFrom writes what r holds to the connection, with the wrapped connection's ReadFrom:
// from a TCP socket on Linux, with splice(2).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.nc.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.nc, r)
}

// Write writes to the connection.
func (c *Conn) Write(p []byte) (int, error) { return c.nc.Write(p) }

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// CloseWrite shuts down the writing side of the connection, when what it wraps can (a
// *net.TCPConn can).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("proxyproto: %T has no CloseWrite", c.nc)
}

// CloseRead shuts down the reading side of the connection, when what it wraps can.
func (c *Conn) CloseRead() error {
	if cr, ok := c.nc.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("proxyproto: %T has no CloseRead", c.nc)
}

// SyscallConn returns the wrapped connection's raw socket, whose reads start after the
// header. For an untrusted peer whose first bytes were not looked at yet, the first
// RawConn.Read looks first, and fails as Read would.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("proxyproto: %T has no SyscallConn", c.nc)
	}
	raw, err := sc.SyscallConn()
	if err != nil || c.ready.Load() {
		return raw, err
	}
	return &rawConn{RawConn: raw, c: c}, nil
}

// rawConn is a Conn's raw socket before its first bytes were looked at.
type rawConn struct {
	syscall.RawConn
	c *Conn
}

func (r *rawConn) Read(f func(fd uintptr) bool) error {
	if c := r.c; !c.ready.Load() {
		c.mu.Lock()
		err := c.settle()
		if err == nil && len(c.pre) > 0 {
			err = errors.New("proxyproto: bytes were read from the connection already: use Read")
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return r.RawConn.Read(f)
}

// NetConn returns the connection c wraps. Its bytes start after the header, but an
// untrusted peer's first bytes are not checked for one there.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Header returns the PROXY header the peer sent; the zero Header when it sent none.
func (c *Conn) Header() Header { return c.header }

// LocalAddr returns the address the client connected to, as the header said, or the real
// local address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the client's address, as the header said, or the real peer's.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the wrapped connection's read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// SetReadDeadline sets the wrapped connection's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the wrapped connection's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }
