package tcpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxyproto"
)

// Defaults of Options' zero fields.
const (
	// DefaultConnectTimeout bounds one connection attempt to an endpoint, as
	// proxy.Proxy's dialer does.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultConnectTries is how many endpoints a connection is offered to.
	DefaultConnectTries = 3
	// DefaultIdleTimeout closes a connection on which no byte moved for an hour: Envoy's
	// tcp_proxy default, and the order of HAProxy's usual "timeout client/server" for TCP
	// services. L4 protocols (databases, message brokers, SSH) hold connections idle for long
	// stretches between bursts, so the timeout is a backstop against leaked connections, not
	// a keep-alive policy. Dead peers are found sooner by TCP keep-alives, which Go's
	// listeners and dialers turn on (every 15 s).
	DefaultIdleTimeout = time.Hour
	// DefaultHelloTimeout bounds reading the ClientHello when routes need it.
	DefaultHelloTimeout = 5 * time.Second
	// DefaultHandshakeTimeout bounds the TLS handshake of routes that terminate TLS.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxHelloBytes bounds a ClientHello: 16 KiB holds the largest ones browsers send,
	// post-quantum key shares and resumption tickets included, with room to spare.
	DefaultMaxHelloBytes = 16 << 10
)

// ErrClosed is returned by Serve once Shutdown or Close has been called.
var ErrClosed = errors.New("tcpproxy: Proxy closed")

// Options configure a Proxy. The zero value is usable: every zero field means the default
// its comment gives.
type Options struct {
	// Observer, when not nil, is told the outcome of every try: each failed connection attempt
	// as it fails, each forwarded connection when it ends. Passive health checking plugs in
	// here.
	Observer sluice.Observer

	// ConnectTimeout bounds one connection attempt to an endpoint. Zero means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration

	// ConnectTries is how many endpoints a connection is offered to, one after the other,
	// while connecting fails; nothing has been sent to an endpoint that refused, so trying
	// the next is always safe. Endpoints skipped for being at MaxConnsPerEndpoint do not
	// count. Zero means DefaultConnectTries.
	ConnectTries int

	// IdleTimeout closes a connection after this long without a byte moving either way, and
	// one side that accepts no byte for this long. Zero means DefaultIdleTimeout; negative
	// means never. The close comes within a few milliseconds of the deadline: the proxy arms
	// the sockets' deadlines when a connection starts and, when one fires, re-arms it from
	// the last transfer rather than on every read, so the timeout costs nothing per byte.
	IdleTimeout time.Duration

	// HelloTimeout bounds the wait for a client's ClientHello, read when some route needs its
	// server name or ALPN. A client that has sent nothing by then is taken for a protocol
	// whose server speaks first (SMTP, MySQL) and given to the default route; one that sent
	// part of a hello is closed. Zero means DefaultHelloTimeout.
	HelloTimeout time.Duration

	// HandshakeTimeout bounds the TLS handshake of routes that terminate TLS. Zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// MaxHelloBytes bounds the ClientHello the proxy reads, record headers included; a larger
	// one closes the connection. Zero means DefaultMaxHelloBytes; it must be 512 to 1 MiB.
	MaxHelloBytes int

	// MaxConns bounds the connections open at once through each listener given to Serve;
	// a connection accepted beyond it is closed at once. Connections handed to a route's
	// Listener count until their consumer closes them. Zero means no limit.
	MaxConns int

	// MaxConnsPerEndpoint bounds the connections open at once to each endpoint address,
	// across routes: an endpoint at its limit is skipped for the next one the Picker offers
	// (circuit breaking), and when none is left the connection is closed. Zero means no limit.
	MaxConnsPerEndpoint int

	// Dial opens the connection to an endpoint. Nil means a net.Dialer with ConnectTimeout.
	// Forwarding uses splice(2) on Linux only between two *net.TCPConn.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Logger, when not nil, receives accept errors and, at level Debug, a line for each
	// connection refused for a bad hello, no route or no endpoint. Nil logs nothing:
	// forwarded connections are never logged, so that the per-connection path stays lean.
	Logger *slog.Logger
}

// Stats are a Proxy's counters since it was made.
type Stats struct {
	Active       int64  // connections open now, from Accept to close (or hand-off to a Listener)
	Accepted     uint64 // connections accepted
	OverLimit    uint64 // closed at once: the listener was at MaxConns
	BadHello     uint64 // closed: a malformed, oversized or late ClientHello, or a failed TLS handshake
	NoRoute      uint64 // closed: no route took the connection
	NoEndpoint   uint64 // closed: no endpoint was offered, connected, or under MaxConnsPerEndpoint
	EndpointFull uint64 // endpoints skipped for being at MaxConnsPerEndpoint
	Forwarded    uint64 // connections forwarded to an endpoint or handed to a Listener
}

// Proxy forwards the TCP connections accepted on its listeners to the endpoints of the route
// each one matches. Create it with New; it is safe for concurrent use.
type Proxy struct {
	opts  Options
	table atomic.Pointer[Table]
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)

	ctx    context.Context // canceled by Close: ends dials and Listener hand-offs in progress
	cancel context.CancelFunc

	closing atomic.Bool

	mu        sync.Mutex // protects listeners, conns and drained
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	drained   chan struct{} // closed when conns empties after closing

	epMu    sync.Mutex     // protects epConns
	epConns map[string]int // connections open per endpoint address, when MaxConnsPerEndpoint is set

	active                                                                atomic.Int64
	accepted, overLimit, badHello, noRoute, noEndpoint, epFull, forwarded atomic.Uint64

	// spliceOff turns the splice(2) path off, for benchmarks that compare it with io.Copy's.
	spliceOff bool
	// stdCopy forwards with io.Copy (which splices too on Linux, holding a pipe per direction
	// for the connection's life), for benchmarks and the memory test to compare with.
	stdCopy bool
}

// New returns a Proxy serving through table, which must not be nil. The error names the field
// of opts that is out of range.
func New(table *Table, opts Options) (*Proxy, error) {
	if table == nil {
		return nil, errors.New("tcpproxy: New needs a table")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
		neg  bool
	}{
		{"ConnectTimeout", &opts.ConnectTimeout, DefaultConnectTimeout, false},
		{"IdleTimeout", &opts.IdleTimeout, DefaultIdleTimeout, true},
		{"HelloTimeout", &opts.HelloTimeout, DefaultHelloTimeout, false},
		{"HandshakeTimeout", &opts.HandshakeTimeout, DefaultHandshakeTimeout, false},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0 && !d.neg:
			return nil, fmt.Errorf("tcpproxy: %s must be ≥ 0, got %v", d.name, *d.v)
		}
	}
	switch {
	case opts.ConnectTries == 0:
		opts.ConnectTries = DefaultConnectTries
	case opts.ConnectTries < 0:
		return nil, fmt.Errorf("tcpproxy: ConnectTries must be ≥ 0, got %d", opts.ConnectTries)
	}
	switch {
	case opts.MaxHelloBytes == 0:
		opts.MaxHelloBytes = DefaultMaxHelloBytes
	case opts.MaxHelloBytes < 512 || opts.MaxHelloBytes > 1<<20:
		return nil, fmt.Errorf("tcpproxy: MaxHelloBytes must be 512 to 1 MiB, got %d", opts.MaxHelloBytes)
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("tcpproxy: MaxConns must be ≥ 0, got %d", opts.MaxConns)
	}
	if opts.MaxConnsPerEndpoint < 0 {
		return nil, fmt.Errorf("tcpproxy: MaxConnsPerEndpoint must be ≥ 0, got %d", opts.MaxConnsPerEndpoint)
	}
	p := &Proxy{
		opts:      opts,
		dial:      opts.Dial,
		listeners: map[*net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		epConns:   map[string]int{},
	}
	if p.dial == nil {
		d := &net.Dialer{Timeout: opts.ConnectTimeout}
		p.dial = d.DialContext
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.table.Store(table)
	return p, nil
}

// Store replaces the routing table. Connections already routed keep their route; the next
// connection is routed by t, which must not be nil.
func (p *Proxy) Store(t *Table) {
	if t != nil {
		p.table.Store(t)
	}
}

// Load returns the current routing table.
func (p *Proxy) Load() *Table { return p.table.Load() }

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Active:       p.active.Load(),
		Accepted:     p.accepted.Load(),
		OverLimit:    p.overLimit.Load(),
		BadHello:     p.badHello.Load(),
		NoRoute:      p.noRoute.Load(),
		NoEndpoint:   p.noEndpoint.Load(),
		EndpointFull: p.epFull.Load(),
		Forwarded:    p.forwarded.Load(),
	}
}

// EndpointConns returns the connections open now to the endpoint at addr. It counts only when
// Options.MaxConnsPerEndpoint is set; balancers keep their own in-flight counts through
// PickResult.Done.
func (p *Proxy) EndpointConns(addr string) int {
	p.epMu.Lock()
	defer p.epMu.Unlock()
	return p.epConns[addr]
}

// listenerState is what Serve keeps for one listener.
type listenerState struct {
	active atomic.Int64 // connections counted against MaxConns
}

// Serve accepts connections on ln and forwards each in a goroutine of its own, until ln
// fails or the proxy is shut down; it then returns ErrClosed, or the accept error. Serve
// closes ln. A temporary accept error (out of file descriptors) is retried after a pause
// that doubles from 5 ms to 1 s, as net/http does.
func (p *Proxy) Serve(ln net.Listener) error {
	defer ln.Close()
	if !p.addListener(&ln) {
		return ErrClosed
	}
	defer p.removeListener(&ln)
	ls := &listenerState{}
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if p.closing.Load() {
				return ErrClosed
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				if l := p.opts.Logger; l != nil {
					l.Error("tcpproxy: accept", "err", err, "retry_in", delay)
				}
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		p.accepted.Add(1)
		if max := p.opts.MaxConns; max > 0 && ls.active.Load() >= int64(max) {
			p.overLimit.Add(1)
			nc.Close()
			continue
		}
		ls.active.Add(1)
		c := &conn{p: p, ls: ls, client: nc}
		if !p.track(c) {
			ls.active.Add(-1)
			nc.Close()
			return ErrClosed
		}
		go c.serve()
	}
}

func (p *Proxy) addListener(ln *net.Listener) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Load() {
		return false
	}
	p.listeners[ln] = struct{}{}
	return true
}

func (p *Proxy) removeListener(ln *net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.listeners, ln)
}

func (p *Proxy) track(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Load() {
		return false
	}
	p.conns[c] = struct{}{}
	p.active.Add(1)
	return true
}

func (p *Proxy) untrack(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.conns[c]; !ok {
		return
	}
	delete(p.conns, c)
	p.active.Add(-1)
	if len(p.conns) == 0 && p.drained != nil {
		close(p.drained)
		p.drained = nil
	}
}

// stop marks the proxy closing and closes its listeners. It returns a channel closed when the
// last connection ends, or nil when none is open.
func (p *Proxy) stop() (<-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closing.Store(true)
	var err error
	for ln := range p.listeners {
		if e := (*ln).Close(); e != nil && err == nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	if len(p.conns) == 0 {
		return nil, err
	}
	if p.drained == nil {
		p.drained = make(chan struct{})
	}
	return p.drained, err
}

// abortAll closes every connection the proxy still holds.
func (p *Proxy) abortAll() {
	p.cancel()
	p.mu.Lock()
	cs := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.abort()
	}
}

// Shutdown stops accepting connections and waits for the open ones to end on their own.
// When ctx ends first, it closes them, waits for their goroutines to finish, and returns
// ctx.Err(). Connections already handed to a route's Listener belong to its consumer and are
// not waited for. Serve returns ErrClosed once Shutdown is called.
func (p *Proxy) Shutdown(ctx context.Context) error {
	drained, err := p.stop()
	if drained == nil {
		p.cancel()
		return err
	}
	select {
	case <-drained:
		p.cancel()
		return err
	case <-ctx.Done():
	}
	p.abortAll()
	p.wait()
	return ctx.Err()
}

// Close stops accepting connections and closes the open ones at once; their ends are reported
// as Canceled. It returns once their goroutines have finished.
func (p *Proxy) Close() error {
	_, err := p.stop()
	p.abortAll()
	p.wait()
	return err
}

// wait blocks until no connection is left.
func (p *Proxy) wait() {
	p.mu.Lock()
	if len(p.conns) == 0 {
		p.mu.Unlock()
		return
	}
	if p.drained == nil {
		p.drained = make(chan struct{})
	}
	d := p.drained
	p.mu.Unlock()
	<-d
}

func (p *Proxy) acquireEndpoint(addr string) bool {
	max := p.opts.MaxConnsPerEndpoint
	if max == 0 {
		return true
	}
	p.epMu.Lock()
	defer p.epMu.Unlock()
	n := p.epConns[addr]
	if n >= max {
		return false
	}
	p.epConns[addr] = n + 1
	return true
}

func (p *Proxy) releaseEndpoint(addr string) {
	if p.opts.MaxConnsPerEndpoint == 0 {
		return
	}
	p.epMu.Lock()
	defer p.epMu.Unlock()
	if n := p.epConns[addr] - 1; n > 0 {
		p.epConns[addr] = n
	} else {
		delete(p.epConns, addr) // endpoints come and go: keep no entry for idle ones
	}
}

func (p *Proxy) debug(msg string, c net.Conn, args ...any) {
	if l := p.opts.Logger; l != nil && l.Enabled(context.Background(), slog.LevelDebug) {
		l.Debug(msg, append([]any{"client", c.RemoteAddr().String()}, args...)...)
	}
}

// helloBufs holds the buffers ClientHellos are read into, of MaxHelloBytes each; a buffer is
// held only until the hello is replayed.
var helloBufs sync.Pool

func (p *Proxy) getHelloBuf() *[]byte {
	if b, ok := helloBufs.Get().(*[]byte); ok && cap(*b) >= p.opts.MaxHelloBytes {
		*b = (*b)[:p.opts.MaxHelloBytes]
		return b
	}
	b := make([]byte, p.opts.MaxHelloBytes)
	return &b
}

// readFirst reads the client's first bytes into a hello buffer. The buffer is taken once
// bytes have arrived, where the system lets the proxy wait for them without one, so that
// clients that connect and say nothing (a slow loris) hold no buffer while they wait. bufp is
// nil only when n is 0 and err is not nil.
func (c *conn) readFirst() (bufp *[]byte, n int, err error) {
	if rc, ok := socket(c.client); ok {
		var rerr error
		err = rc.Read(func(fd uintptr) bool {
			if bufp == nil {
				bufp = c.p.getHelloBuf()
			}
			n, rerr = readFd(fd, *bufp)
			if rerr == errWouldBlock {
				helloBufs.Put(bufp)
				bufp = nil
				return false
			}
			return true
		})
		switch {
		case err != nil:
		case rerr != nil:
			err = rerr
		case n == 0:
			err = io.EOF
		}
		if n <= 0 {
			n = 0
			c.putHello(&bufp)
		}
		return bufp, n, err
	}
	bufp = c.p.getHelloBuf()
	n, err = c.client.Read(*bufp)
	if n > 0 {
		err = nil // a later read says it again
	} else {
		c.putHello(&bufp)
	}
	return bufp, n, err
}

// conn is one client connection, from Accept to close.
type conn struct {
	p      *Proxy
	ls     *listenerState
	client net.Conn    // the accepted conn, then the *tls.Conn over it when the route terminates TLS
	raw    net.Conn    // the accepted conn
	rc     *replayConn // under the *tls.Conn, when the route terminates TLS

	mu      sync.Mutex // protects up and aborted
	up      net.Conn
	aborted bool

	start   time.Time
	pick    sluice.PickResult
	latency time.Duration // to connect
	tried   [4]string

	last      atomic.Int64  // UnixNano of the last byte moved
	failure   atomic.Uint32 // the first failure, as sluice.Failure+1; 0 while none
	remaining atomic.Int32  // directions still copying
}

// serve routes, connects and forwards one connection.
func (c *conn) serve() {
	p := c.p
	c.raw = c.client
	t := p.table.Load()
	var (
		hello ClientHello
		bufp  *[]byte
		n     int
	)
	if t.peek {
		c.client.SetReadDeadline(time.Now().Add(p.opts.HelloTimeout))
		var err error
		bufp, n, err = c.readFirst()
		if n > 0 {
			hello, n, err = readClientHello(c.client, *bufp, n)
		}
		switch {
		case err == nil, errors.Is(err, ErrNotTLS):
		case n == 0 && errors.Is(err, os.ErrDeadlineExceeded):
			// The client waits for the server to speak first: not TLS.
		case n == 0 && err == io.EOF:
			c.end(bufp) // connected and left: a load balancer's health check, say
			return
		default:
			p.badHello.Add(1)
			p.debug("tcpproxy: bad ClientHello", c.client, "err", err)
			c.end(bufp)
			return
		}
		c.client.SetReadDeadline(time.Time{})
	}
	r := t.Lookup(hello.ServerName, hello.ALPN)
	if r == nil {
		p.noRoute.Add(1)
		p.debug("tcpproxy: no route", c.client, "server_name", hello.ServerName, "alpn", hello.ALPN)
		c.end(bufp)
		return
	}
	var replay []byte
	if bufp != nil {
		replay = (*bufp)[:n]
	}
	if r.TLS != nil {
		// The handshake reads the hello again, through a replaying conn; the bytes are copied
		// out of the pooled buffer because tls.Conn may keep reading them after we return it.
		rc := &replayConn{Conn: c.client, replay: append([]byte(nil), replay...)}
		c.rc = rc
		c.putHello(&bufp)
		replay = nil
		tc := tls.Server(rc, r.TLS)
		c.setClient(tc)
		c.raw.SetDeadline(time.Now().Add(p.opts.HandshakeTimeout))
		if err := tc.HandshakeContext(p.ctx); err != nil {
			p.badHello.Add(1)
			p.debug("tcpproxy: TLS handshake", c.raw, "route", r.Name, "err", err)
			c.end(nil)
			return
		}
		c.raw.SetDeadline(time.Time{})
	}
	if r.Listener != nil {
		c.handOff(r, replay, bufp)
		return
	}
	if !c.connect(r) {
		c.end(bufp)
		return
	}
	p.forwarded.Add(1)
	var first net.Buffers // what the endpoint gets before the stream: a PROXY header, the replay
	if r.ProxyProtocol != 0 {
		hdr, err := c.proxyHeader(r.ProxyProtocol, hello.ServerName)
		if err != nil {
			// FromConn builds only headers Append can write; a failure is ours.
			p.debug("tcpproxy: PROXY header", c.raw, "route", r.Name, "err", err)
			c.putHello(&bufp)
			c.fail(sluice.InternalFailure, nil)
			c.finish()
			return
		}
		first = append(first, hdr)
	}
	if len(replay) > 0 {
		first = append(first, replay)
	}
	if len(first) > 0 {
		if _, err := first.WriteTo(c.up); err != nil {
			c.putHello(&bufp)
			c.fail(sluice.ConnectionFailure, c.raw)
			c.finish()
			return
		}
	}
	c.putHello(&bufp)
	c.forward()
}

func (c *conn) setClient(nc net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.client = nc
}

func (c *conn) putHello(bufp **[]byte) {
	if *bufp != nil {
		helloBufs.Put(*bufp)
		*bufp = nil
	}
}

// end closes a connection that was never forwarded.
func (c *conn) end(bufp *[]byte) {
	c.putHello(&bufp)
	c.ls.active.Add(-1) // before the close: a client that sees it may connect again at once
	c.raw.Close()
	c.p.untrack(c)
}

// handOff gives the connection to the route's Listener, with replay in front of it.
func (c *conn) handOff(r *Route, replay []byte, bufp *[]byte) {
	p := c.p
	var nc net.Conn
	release := func() { c.ls.active.Add(-1) }
	if c.rc != nil {
		c.rc.release = release // tls.Conn's Close closes it
		nc = c.client          // the *tls.Conn itself, which servers look for
	} else {
		nc = &replayConn{Conn: c.client, replay: append([]byte(nil), replay...), release: release}
	}
	c.putHello(&bufp)
	p.untrack(c) // from here on the connection is the consumer's
	if !r.Listener.deliver(nc, p.ctx.Done()) {
		p.noRoute.Add(1)
		nc.Close()
		return
	}
	p.forwarded.Add(1)
}

// clientAddr returns the client's address as a Picker wants it.
func (c *conn) clientAddr() netip.AddrPort {
	if a, ok := c.raw.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// maxSkips bounds the endpoints at MaxConnsPerEndpoint one connection skips.
const maxSkips = 16

// connect picks and dials endpoints until one answers, reporting each failure, and keeps the
// winning pick in c.pick and the connection in c.up. It reports whether one answered.
func (c *conn) connect(r *Route) bool {
	p := c.p
	tried := c.tried[:0]
	client := c.clientAddr()
	for tries, skips := 0, 0; tries < p.opts.ConnectTries && skips <= maxSkips; {
		res, err := r.Picker.Pick(sluice.PickInfo{Client: client, Tried: tried})
		if err != nil {
			break
		}
		addr := res.Endpoint.Addr
		again := false
		for _, a := range tried {
			again = again || a == addr
		}
		if again {
			// The Picker has nothing untried left: the endpoints it offered first failed.
			done(res, sluice.Outcome{Failure: sluice.Canceled})
			break
		}
		tried = append(tried, addr)
		if !p.acquireEndpoint(addr) {
			p.epFull.Add(1)
			done(res, sluice.Outcome{Failure: sluice.Canceled}) // not tried: says nothing of it
			skips++
			continue
		}
		tries++
		start := time.Now()
		ctx, cancel := context.WithTimeout(p.ctx, p.opts.ConnectTimeout)
		up, err := p.dial(ctx, "tcp", addr)
		cancel()
		lat := time.Since(start)
		if err == nil {
			c.mu.Lock()
			if c.aborted {
				c.mu.Unlock()
				up.Close()
				p.releaseEndpoint(addr)
				done(res, sluice.Outcome{Failure: sluice.Canceled, Latency: lat, Duration: lat})
				return false
			}
			c.up = up
			c.mu.Unlock()
			c.start, c.pick, c.latency = start, res, lat
			return true
		}
		p.releaseEndpoint(addr)
		o := sluice.Outcome{Failure: sluice.ConnectFailure, Latency: lat, Duration: lat}
		if p.ctx.Err() != nil {
			o.Failure = sluice.Canceled // our Close, not the endpoint
		}
		done(res, o)
		if ob := p.opts.Observer; ob != nil {
			ob.Observe(res.Endpoint, o)
		}
		if o.Failure == sluice.Canceled {
			break
		}
	}
	p.noEndpoint.Add(1)
	p.debug("tcpproxy: no endpoint", c.raw, "route", r.Name, "tried", tried)
	return false
}

func done(res sluice.PickResult, o sluice.Outcome) {
	if res.Done != nil {
		res.Done(o)
	}
}

// fail records f as the connection's failure, unless one is recorded already, and closes both
// sides; reset, when not nil, is closed with a reset rather than a FIN, so that the peer whose
// partner broke learns the stream was cut short rather than complete.
func (c *conn) fail(f sluice.Failure, reset net.Conn) {
	c.failure.CompareAndSwap(0, uint32(f)+1)
	if reset != nil {
		if tc, ok := tcpConn(reset); ok {
			tc.SetLinger(0)
		}
	}
	c.closeBoth()
}

func (c *conn) closeBoth() {
	c.mu.Lock()
	client, up := c.client, c.up
	c.mu.Unlock()
	client.Close()
	if client != c.raw {
		c.raw.Close()
	}
	if up != nil {
		up.Close()
	}
}

// abort closes the connection for Close or a Shutdown that ran out of time.
func (c *conn) abort() {
	c.mu.Lock()
	c.aborted = true
	c.mu.Unlock()
	c.failure.CompareAndSwap(0, uint32(sluice.Canceled)+1)
	c.closeBoth()
}

// finish ends a forwarded connection: it closes both sides and reports the outcome.
func (c *conn) finish() {
	p := c.p
	o := sluice.Outcome{Latency: c.latency, Duration: time.Since(c.start)}
	if f := c.failure.Load(); f != 0 {
		o.Failure = sluice.Failure(f - 1)
	}
	// The books are settled before the sockets close, so that a client that sees the close
	// and connects again finds the endpoint and the listener free.
	p.releaseEndpoint(c.pick.Endpoint.Addr)
	done(c.pick, o)
	if ob := p.opts.Observer; ob != nil {
		ob.Observe(c.pick.Endpoint, o)
	}
	c.ls.active.Add(-1)
	c.closeBoth()
	p.untrack(c)
}

// proxyHeader returns the PROXY protocol header of version v that tells the endpoint about the
// client: its addresses and, in version 2, the server name it asked for and the protocol its
// TLS session with this proxy negotiated.
func (c *conn) proxyHeader(v int, serverName string) ([]byte, error) {
	h := proxyproto.FromConn(v, c.raw)
	if v == 2 {
		var err error
		if serverName != "" {
			h.TLVs, err = proxyproto.AppendTLV(h.TLVs, proxyproto.TypeAuthority, []byte(serverName))
		}
		if tc, ok := c.client.(*tls.Conn); ok && err == nil {
			if proto := tc.ConnectionState().NegotiatedProtocol; proto != "" {
				h.TLVs, err = proxyproto.AppendTLV(h.TLVs, proxyproto.TypeALPN, []byte(proto))
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return h.Append(make([]byte, 0, 64))
}

// tcpConn returns the *net.TCPConn under nc, through a *tls.Conn, a replaying conn or a
// proxyproto.Conn.
func tcpConn(nc net.Conn) (*net.TCPConn, bool) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if rc, ok := nc.(*replayConn); ok {
		nc = rc.Conn
	}
	if pc, ok := nc.(*proxyproto.Conn); ok {
		nc = pc.NetConn()
	}
	t, ok := nc.(*net.TCPConn)
	return t, ok
}
