package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluiceproxy/sluice/proxyproto"
)

// h1Client is the lean HTTP/1.1 client the default HTTP1 transport uses for requests without
// a body and for requests whose small body the proxy read whole beforehand (see
// exchange.readBody): the bulk of a proxy's traffic.
//
// net/http's Transport runs a reader and a writer goroutine per connection and hands every
// request and response between them and the caller over channels, and it writes a request's
// head and body in separate writes. For a request whose body is already in memory none of
// that is needed: h1Client writes the head and the body in one write and reads the response
// head on the handler's goroutine, and the handler then reads the body straight from the
// connection's buffer. That saves two goroutine handoffs, a system call or two and a dozen
// allocations per request, which is most of the proxy's own CPU cost on small responses.
//
// Request bodies of unknown length or larger than the proxy reads ahead, upgrades and every
// other protocol go through net/http's Transport.
//
// A request is sent again on a new connection only when a reused connection fails it and
// either none of it left (the write failed before the kernel took a byte) or it may be resent
// unasked (resendable), the rules net/http's Transport follows for its own retries: a POST
// whose connection closes after it was written is never sent twice.
//
// Without a reader goroutine, nobody watches an idle connection. net/http's reader notices
// bytes an upstream sends unasked (after a HEAD, a 204 or a 304, or at any moment) and drops
// the connection; h1Client instead looks before it reuses one: a connection that has received
// anything while idle, or was closed, is closed and never written to (see idleClean). The one
// window left, bytes arriving between that look and the request's write, is net/http's too.
//
// Idle connections are closed idleTimeout after they were last used, by one timer per
// endpoint: the client starts no goroutine of its own.
type h1Client struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int           // idle connections kept per endpoint; 0 keeps none
	idleTimeout time.Duration // > 0

	// bodyTimeout, when > 0, fails a response body that waits longer than this for its next
	// bytes, with an error that matches os.ErrDeadlineExceeded, and closes the connection.
	// The read deadline is moved forward at most every bodyTimeout/4, so that reading a body
	// costs no deadline update per Read: a wait fails after between bodyTimeout and 1.25×.
	bodyTimeout time.Duration

	// hookDelay is how long a request runs before its context is hooked (see h1Conn.hookAt);
	// ≤ 0 hooks it at once.
	hookDelay time.Duration

	// proxyProtocol, when 1 or 2, is the version of the PROXY header written first on every
	// connection. Such a connection carries one client connection's requests only: the
	// pools are then per endpoint and client (clientPool).
	proxyProtocol int

	pools sync.Map // endpoint address, or clientPool with proxyProtocol → *h1Pool
}

// defaultHookDelay is h1Client.hookDelay for the proxy: a client that goes away in a request's
// first 20 ms has its upstream I/O stopped at most 20 ms late, the delay sluice's own front end
// (package h1) takes to notice a client gone at all.
const defaultHookDelay = 20 * time.Millisecond

// h1Pool holds the idle connections to one endpoint, most recently used last. Its timer runs
// for as long as the pool is in the client's map: it closes idle connections as they expire
// and removes the pool once it has been unused for idleTimeout.
type h1Pool struct {
	c       *h1Client
	key     any    // the pool's key in c.pools: addr, or a clientPool
	addr    string // the endpoint
	preface []byte // the PROXY header a new connection starts with, or nil
	timer   *time.Timer

	mu       sync.Mutex // mu guards the fields below
	idle     []*h1Conn
	lastUsed time.Time
	dead     bool // removed from c.pools; connections put here go to the live pool
}

// h1Conn is one upstream connection.
type h1Conn struct {
	nc     net.Conn
	lr     limitReader // counts header bytes under br
	br     *bufio.Reader
	wbuf   []byte      // the request head being written, kept for the next request
	iov    [2][]byte   // head and body of a request written with one writev
	bufs   net.Buffers // iov's slice, which net.Buffers.WriteTo consumes
	tp     textproto.Reader
	pool   *h1Pool
	idleAt time.Time
	cancel func() // unblocks I/O when the request's context ends; bound once per connection
	// preface is written before the first request: the connection's PROXY header, if any.
	preface []byte
	// armed says a deadline may be set on nc. Deadlines are left in place as the conn goes
	// idle, for the next request to replace or clear, which saves a deadline update per
	// request; readDL is the read deadline last set, zero for none, so that a look at an
	// idle conn can clear one that passed (see idleClean). The cancel func's deadline is not
	// recorded: a canceled request's conn is closed.
	armed  bool
	readDL time.Time
	peeker // looks at an idle connection's socket without reading from it

	// The context of the request in flight, which must stop the conn's I/O when it ends.
	// Hooking it with context.AfterFunc costs five allocations and about a microsecond (the
	// hook, and the parent's Done channel and map of children), a tenth of what the proxy
	// spends on a quick GET, and most requests end long before anyone could cancel them. So
	// on a socket the hook waits: until hookAt, the conn's deadline is at most hookAt, and a
	// read or write that reaches it looks at ctx (see hook) and fails if ctx ended, or hooks
	// ctx, moves the deadline to the request's own (want) and goes on. A request that ends
	// first never hooks ctx. A conn of a custom DialContext is hooked at once: a tls.Conn, for
	// one, cannot write again after a write timed out.
	ctx    context.Context
	hookAt time.Time   // zero once ctx is hooked, and between requests
	want   time.Time   // the deadline the request itself has, zero for none
	unhook func() bool // context.AfterFunc's stop; nil when ctx is not hooked

	// For a conn without a socket to look at: the goroutine that reads from it while it is
	// idle closes watching when its read ends, with watchErr.
	watching chan struct{}
	watchErr error
}

// limitReader reads cc's connection for its bufio.Reader, and fails reads once n bytes were
// read, so that an upstream cannot make the proxy buffer an endless response head.
type limitReader struct {
	cc *h1Conn
	n  int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.cc.read(p)
	l.n -= int64(n)
	return n, err
}

// read reads the connection; a read that reaches hookAt hooks the request's context and goes on.
func (cc *h1Conn) read(p []byte) (int, error) {
	for {
		n, err := cc.nc.Read(p)
		if err == nil || !cc.hook(err) {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// hook is given the error of a read or write that failed. When it is the timeout of hookAt, and
// the request's context and its own deadline are still live, it hooks the context, moves the
// deadline to the request's own and reports true: the I/O goes on.
func (cc *h1Conn) hook(err error) bool {
	if cc.hookAt.IsZero() || !errors.Is(err, os.ErrDeadlineExceeded) || cc.ctx.Err() != nil {
		// Not hookAt's, or the context ended: the I/O fails, as the hook would have made it.
		return false
	}
	if !cc.want.IsZero() && !time.Now().Before(cc.want) {
		return false // the request's own deadline passed
	}
	cc.hookAt = time.Time{}
	cc.setDeadline(cc.want)
	cc.hookCtx()
	return true
}

// hookCtx makes the end of the request's context stop the conn's I/O. The deadline is moved
// before, never after: the hook may run at once, and its deadline in the past must stay.
func (cc *h1Conn) hookCtx() {
	if cc.ctx.Done() != nil {
		cc.unhook = context.AfterFunc(cc.ctx, cc.cancel)
	}
}

// release ends the request's hold on cc. It reports false when the context's hook ran, or is
// running: the conn's deadline is then in the past, and the conn must be closed.
func (cc *h1Conn) release() bool {
	ok := cc.unhook == nil || cc.unhook()
	cc.ctx, cc.unhook, cc.hookAt = nil, nil, time.Time{}
	return ok
}

// setDeadline sets the deadline of the request's reads and writes to d, or to hookAt while
// that comes first.
func (cc *h1Conn) setDeadline(d time.Time) {
	cc.want = d
	if !cc.hookAt.IsZero() && (d.IsZero() || cc.hookAt.Before(d)) {
		d = cc.hookAt
	}
	if d.IsZero() && !cc.armed {
		return
	}
	cc.nc.SetDeadline(d)
	cc.armed, cc.readDL = !d.IsZero(), d
}

// setReadDeadline is setDeadline for reads only.
func (cc *h1Conn) setReadDeadline(d time.Time) {
	cc.want = d
	if !cc.hookAt.IsZero() && (d.IsZero() || cc.hookAt.Before(d)) {
		d = cc.hookAt
	}
	cc.nc.SetReadDeadline(d)
	cc.armed, cc.readDL = cc.armed || !d.IsZero(), d
}

const maxHeaderBytes = 1 << 20

var (
	errHeaderTooLarge = errors.New("proxy: upstream response head, with its 1xx responses, exceeds 1 MiB")
	errStale          = errors.New("proxy: idle upstream connection was closed by the peer")
	errBodyClosed     = errors.New("proxy: response body closed before its end")
	aLongTimeAgo      = time.Unix(1, 0)
)

func (c *h1Client) pool(addr string) *h1Pool {
	if v, ok := c.pools.Load(addr); ok {
		return v.(*h1Pool)
	}
	return c.newPool(&h1Pool{c: c, key: addr, addr: addr})
}

// clientPool returns the pool of connections to k.addr for the client connection from k.src
// to k.dst, whose PROXY header they start with.
func (c *h1Client) clientPool(k clientPool) *h1Pool {
	if v, ok := c.pools.Load(k); ok {
		return v.(*h1Pool)
	}
	// TCP builds only what Append can write (versions 1 and 2).
	preface, _ := proxyproto.TCP(c.proxyProtocol, k.src, k.dst).Append(nil)
	return c.newPool(&h1Pool{c: c, key: k, addr: k.addr, preface: preface})
}

// newPool adds p to c.pools, unless a pool with its key is there already, and returns the
// pool that is.
func (c *h1Client) newPool(p *h1Pool) *h1Pool {
	p.lastUsed = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	v, loaded := c.pools.LoadOrStore(p.key, p)
	if !loaded {
		p.timer = time.AfterFunc(c.idleTimeout, p.reap)
	}
	return v.(*h1Pool)
}

// samePool returns the live pool with p's key, for a connection whose pool was removed.
func (c *h1Client) samePool(p *h1Pool) *h1Pool {
	if k, ok := p.key.(clientPool); ok {
		return c.clientPool(k)
	}
	return c.pool(p.addr)
}

// roundTrip sends x's request to addr and reads the response head into x.res; the body is
// x.h1body, read from the connection as the handler copies it.
func (c *h1Client) roundTrip(x *exchange, addr string, deadline time.Time) error {
	ctx := x.in.Context()
	x.url.Host = addr
	x.out.URL = &x.url
	var pool *h1Pool
	if c.proxyProtocol == 0 {
		pool = c.pool(addr)
	} else {
		src, dst := x.clientAddrs()
		pool = c.clientPool(clientPool{addr: addr, src: src, dst: dst})
	}
	fresh := false
	for {
		now := time.Now()
		cc, reused, err := c.get(ctx, pool, addr, now, deadline, fresh)
		if err != nil {
			return err
		}
		err = c.do(ctx, cc, x, reused, now, deadline)
		if err == nil {
			return nil
		}
		cc.nc.Close()
		if err == errStale && ctx.Err() == nil && !fresh {
			// The endpoint closed the idle connection as we reused it, after idleClean
			// looked. Nothing was processed (no byte came back); try once more on a new
			// connection.
			fresh = true
			continue
		}
		return err
	}
}

// get returns an idle connection to addr that received nothing while idle, or dials one.
func (c *h1Client) get(ctx context.Context, pool *h1Pool, addr string, now, deadline time.Time,
	fresh bool) (*h1Conn, bool, error) {
	for !fresh {
		pool.mu.Lock()
		pool.lastUsed = now
		n := len(pool.idle)
		if n == 0 {
			pool.mu.Unlock()
			break
		}
		cc := pool.idle[n-1]
		pool.idle[n-1] = nil
		pool.idle = pool.idle[:n-1]
		pool.mu.Unlock()
		if now.Sub(cc.idleAt) < c.idleTimeout && cc.idleClean(now) {
			return cc, true, nil
		}
		cc.nc.Close()
	}
	dctx := ctx
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		dctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	nc, err := c.dial(dctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	cc := &h1Conn{nc: nc, pool: pool, preface: pool.preface}
	cc.lr.cc = cc
	cc.br = bufio.NewReaderSize(&cc.lr, 16<<10)
	cc.tp.R = cc.br
	cc.cancel = func() { nc.SetDeadline(aLongTimeAgo) }
	cc.initPeek()
	return cc, false, nil
}

// idleClean reports whether an idle connection has received nothing, not even its end: any
// byte would otherwise be read as the next request's response. It does not block.
func (cc *h1Conn) idleClean(now time.Time) bool {
	if cc.canPeek() {
		if cc.br.Buffered() > 0 {
			return false
		}
		if !cc.readDL.IsZero() && !now.Before(cc.readDL) {
			// peek's RawConn.Read fails at once past a read deadline: clear the one the
			// last request left, which has passed if the conn idled for longer than
			// hookDelay (the request ended before its context was hooked) or about as long
			// as a try may wait.
			cc.nc.SetReadDeadline(time.Time{})
			cc.readDL = time.Time{}
		}
		ok, _ := cc.peek()
		return ok
	}
	// No socket to look at (a DialContext returned a conn of its own): stop the read that
	// watch started, before looking at the buffer, which is that read's until it returns
	// (bufio slides its contents before it reads). A timeout means nothing arrived; the
	// buffer keeps what did. This is net/http's guarantee, not the socket's: bytes that
	// reached the kernel but not yet the reader (the runtime polls for them) are missed. A
	// read with a deadline already past would miss them too: Go's conns fail it before they
	// look for data.
	done := cc.watching
	cc.watching = nil
	if done == nil || cc.nc.SetReadDeadline(aLongTimeAgo) != nil {
		return false // closing the conn ends the read
	}
	<-done
	cc.nc.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(cc.watchErr, &ne) && ne.Timeout() && cc.br.Buffered() == 0
}

// watch reads from an idle conn that has no socket to peek at, the way net/http's reader
// goroutine does, so that idleClean learns whether anything arrived. Closing the conn ends it.
func (cc *h1Conn) watch() {
	done := make(chan struct{})
	cc.watching = done
	go func() {
		_, cc.watchErr = cc.br.Peek(1)
		close(done)
	}()
}

// put returns a connection whose response was read to its end to its pool.
func (c *h1Client) put(cc *h1Conn) {
	if cc.br.Buffered() > 0 || c.maxIdle <= 0 {
		// Bytes nobody asked for: the connection's framing cannot be trusted.
		cc.nc.Close()
		return
	}
	if !cc.readDL.IsZero() && !cc.canPeek() {
		// watch's read would end at the read deadline, and miss what arrives later. A
		// socket's deadlines stay: idleClean clears a read deadline that passed, and do
		// replaces both.
		cc.nc.SetReadDeadline(time.Time{})
		cc.readDL = time.Time{}
	}
	now := time.Now()
	cc.idleAt = now
	p := cc.pool
	for {
		p.mu.Lock()
		if !p.dead {
			break
		}
		// The pool was removed while this connection was out (its endpoint went unused
		// for idleTimeout, or closeIdle ran): move to the live one, which has a timer,
		// rather than sit in a pool nobody reaps.
		p.mu.Unlock()
		p = c.samePool(p)
		cc.pool = p
	}
	if len(p.idle) >= c.maxIdle {
		p.mu.Unlock()
		cc.nc.Close()
		return
	}
	if !cc.canPeek() {
		cc.watch()
	}
	p.idle = append(p.idle, cc)
	p.lastUsed = now
	p.mu.Unlock()
}

// reap runs on p's timer: it closes the idle connections that expired and sets the timer for
// the next expiry, or removes the pool once it has been unused for idleTimeout.
func (p *h1Pool) reap() {
	c := p.c
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return
	}
	next := p.lastUsed.Add(c.idleTimeout)
	kept := p.idle[:0]
	for _, cc := range p.idle {
		expiry := cc.idleAt.Add(c.idleTimeout)
		if !now.Before(expiry) {
			cc.nc.Close()
			continue
		}
		kept = append(kept, cc)
		if expiry.Before(next) {
			next = expiry
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	if len(kept) == 0 && !now.Before(next) {
		// Deleted under mu, so that a put that finds the pool dead finds it gone too.
		c.pools.CompareAndDelete(p.key, p)
		p.dead = true
		return
	}
	if len(kept) == 0 && next.Sub(now) < c.idleTimeout/4 {
		// Busy but nothing idle: look again a while later rather than right away.
		next = now.Add(c.idleTimeout / 4)
	}
	p.timer.Reset(next.Sub(now))
}

// closeIdle closes every idle connection and forgets every endpoint; connections in use go
// to new pools when their responses end.
func (c *h1Client) closeIdle() {
	c.pools.Range(func(k, v any) bool {
		p := v.(*h1Pool)
		p.mu.Lock()
		for _, cc := range p.idle {
			cc.nc.Close()
		}
		clear(p.idle)
		p.idle = p.idle[:0]
		c.pools.CompareAndDelete(k, p)
		p.dead = true
		p.timer.Stop()
		p.mu.Unlock()
		return true
	})
}

// do writes the request on cc and reads the response head.
func (c *h1Client) do(ctx context.Context, cc *h1Conn, x *exchange, reused bool, now, deadline time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// The deadline replaces the one the last request left in place. On a socket, ctx is
	// hooked only if the request lasts (see h1Conn.ctx).
	cc.ctx = ctx
	if c.hookDelay > 0 && cc.canPeek() {
		cc.hookAt = now.Add(c.hookDelay)
		cc.setDeadline(deadline)
	} else {
		cc.setDeadline(deadline)
		cc.hookCtx()
	}
	fail := func(err error) error {
		cc.release()
		return err
	}
	if n, err := cc.write(&x.out, &x.url, x.reqBody); err != nil {
		// A reused connection its endpoint closed as it was taken from the pool fails here.
		// The request may go again on a new connection when none of it left (the kernel took
		// no byte), or when it may be resent anyway; otherwise the endpoint may have read
		// enough of it to act.
		if reused && isNetError(err) && (n == 0 || resendable(x.in)) {
			return fail(errStale)
		}
		return fail(err)
	}
	res := &x.res
	var hdr textproto.MIMEHeader
	// The 1xx responses and the final head share one budget of maxHeaderBytes, so that any
	// number of small 1xx responses passes and an endless stream of them fails by size.
	cc.lr.n = maxHeaderBytes
	for informational := 0; ; informational++ {
		code, minor, reason, err := readStatusLine(cc.br)
		if err != nil {
			if reused && informational == 0 && err == errNoResponse && resendable(x.in) {
				// The endpoint closed the connection without answering: it was closing it
				// as idle, or it read the request, acted on it and failed. Only a request
				// that may be resent unasked is (net/http's errServerClosedIdle rule); a
				// POST fails rather than risk being processed twice.
				return fail(errStale)
			}
			return fail(err)
		}
		// The values go to the client's response header, which outlives a pooled x: they
		// get a slice of their own then.
		vals := x.hvals[:]
		if x.pooled {
			vals = nil
		}
		hdr, err = cc.readHeader(x.resHdr, vals)
		if x.pooled {
			x.resHdr = hdr
		}
		if err != nil {
			return fail(fmt.Errorf("proxy: reading upstream response header: %w", err))
		}
		if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
			x.write1xx(code, http.Header(hdr))
			continue
		}
		if code == http.StatusSwitchingProtocols {
			return fail(errors.New("proxy: upstream switched protocols without being asked"))
		}
		res.StatusCode = code
		res.Status = statusText(code, reason)
		res.ProtoMinor = minor
		break
	}
	cc.lr.n = math.MaxInt64
	h := http.Header(hdr)
	closeAfter := res.ProtoMinor == 0 || hasToken(h["Connection"], "close")
	b := &x.h1body
	*b = h1Body{c: c, cc: cc, res: res}
	noBody := x.out.Method == http.MethodHead || code1xx(res.StatusCode) ||
		res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified
	te, cl := h["Transfer-Encoding"], h["Content-Length"]
	switch {
	case noBody:
		b.mode = bodyNone
		res.ContentLength = 0
		if n, ok := parseContentLength(cl); ok && len(cl) > 0 {
			res.ContentLength = n
		}
	case len(te) > 0:
		if res.ProtoMinor == 0 {
			// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
			return fail(errors.New("proxy: HTTP/1.0 upstream sent Transfer-Encoding"))
		}
		if len(te) != 1 || !asciiEqualFold(trimOWS(te[0]), "chunked") {
			return fail(fmt.Errorf("proxy: upstream sent unsupported Transfer-Encoding %q", te))
		}
		if len(cl) > 0 {
			// Both framings: RFC 9112 §6.3 lets chunked win but says the message ought
			// to be handled as an error, as it smells of response splitting. Like NGINX,
			// refuse it.
			return fail(errors.New("proxy: upstream sent both Transfer-Encoding and Content-Length"))
		}
		b.mode = bodyChunked
		res.ContentLength = -1
	case len(cl) > 0:
		n, ok := parseContentLength(cl)
		if !ok {
			return fail(fmt.Errorf("proxy: upstream sent invalid Content-Length %q", cl))
		}
		b.mode = bodyLength
		b.n = n
		res.ContentLength = n
	default:
		b.mode = bodyUntilClose
		res.ContentLength = -1
		closeAfter = true
	}
	b.close = closeAfter
	// The try's timeouts bound the wait for the head. With bodyTimeout, the body's reads are
	// bounded by it, however long the body lasts: Read sets the read deadline before its
	// first wait on the connection, and a body already in the buffer (most small ones) needs
	// no deadline moved at all. The write deadline is left as it is: nothing is written
	// until the next request replaces it.
	if c.bodyTimeout <= 0 && !deadline.IsZero() && b.mode != bodyNone {
		// A body streams for as long as it lasts.
		cc.setDeadline(time.Time{})
		if ctx.Err() != nil {
			cc.nc.SetDeadline(aLongTimeAgo)
		}
	}
	res.Proto = "HTTP/1.1"
	if res.ProtoMinor == 0 {
		res.Proto = "HTTP/1.0"
	}
	res.ProtoMajor = 1
	res.Header = h
	res.Body = b
	res.Close = closeAfter
	res.Request = &x.out
	return nil
}

// readHeader reads the field lines of a response head, as textproto.Reader.ReadMIMEHeader
// does. A head that is already in the buffer whole, one field per line, is parsed where it
// lies, into h (cleared first; nil makes a map): one string holds its fields, the header's
// keys and values are cut from it, and each field's value slice from vals, or from one slice
// made for them all when vals is too short, which saves an allocation per field. Anything
// else (a head still arriving, obs-fold continuation lines, bytes a field may not hold) is
// left to textproto, which reads it into a map of its own and judges it as net/http's client
// does.
func (cc *h1Conn) readHeader(h textproto.MIMEHeader, vals []string) (textproto.MIMEHeader, error) {
	if h, ok := cc.parseBufferedHeader(h, vals); ok {
		return h, nil
	}
	return cc.tp.ReadMIMEHeader()
}

// parseBufferedHeader parses the header section at the start of cc's buffer into h and
// discards it, or reports false, having consumed nothing, when the section is not all there
// or is not plain. What it accepts, it reads exactly as textproto does: lines end in LF or
// CRLF, are trimmed of spaces and tabs, and the value starts after the spaces following the
// colon.
func (cc *h1Conn) parseBufferedHeader(h textproto.MIMEHeader, vals []string) (textproto.MIMEHeader, bool) {
	buf, _ := cc.br.Peek(cc.br.Buffered())
	fields, end := 0, -1
	for i := 0; i < len(buf); {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return nil, false
		}
		line := buf[i : i+j]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		i += j + 1
		if len(line) == 0 {
			end = i
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, false // a continuation line, or a malformed first one
		}
		fields++
	}
	if end < 0 {
		return nil, false
	}
	if fields > len(vals) {
		vals = make([]string, fields)
	}
	if h == nil {
		h = make(textproto.MIMEHeader, fields)
	} else {
		clear(h)
	}
	s := string(buf[:end])
	for {
		j := strings.IndexByte(s, '\n')
		line := s[:j]
		s = s[j+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(trimOWS(line), ":")
		if !ok || !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return nil, false
		}
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		k = textproto.CanonicalMIMEHeaderKey(k)
		if vv, ok := h[k]; ok {
			h[k] = append(vv, v)
			continue
		}
		vals[0] = v
		h[k] = vals[:1:1]
		vals = vals[1:]
	}
	cc.br.Discard(end)
	return h, true
}

func code1xx(code int) bool { return code >= 100 && code < 200 }

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

var errNoResponse = errors.New("proxy: upstream closed the connection without responding")

// readStatusLine reads "HTTP/1.1 200 OK".
func readStatusLine(br *bufio.Reader) (code, minor int, reason []byte, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && (err == io.EOF || isNetError(err)) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, 0, nil, err
			}
			return 0, 0, nil, errNoResponse
		}
		if err == bufio.ErrBufferFull {
			return 0, 0, nil, errors.New("proxy: upstream status line too long")
		}
		return 0, 0, nil, err
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') ||
		line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, 0, nil, fmt.Errorf("proxy: malformed upstream status line %q", line)
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, nil, fmt.Errorf("proxy: malformed upstream status code %q", line)
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, 0, nil, fmt.Errorf("proxy: malformed upstream status code %q", line)
	}
	if len(line) > 13 {
		reason = line[13:]
	}
	return code, int(line[7] - '0'), reason, nil
}

// statusTexts holds "200 OK" and the like, so that the usual status lines allocate nothing.
var statusTexts = func() (t [600]string) {
	for c := 100; c < len(t); c++ {
		if s := http.StatusText(c); s != "" {
			t[c] = strconv.Itoa(c) + " " + s
		}
	}
	return t
}()

func statusText(code int, reason []byte) string {
	if code < len(statusTexts) && statusTexts[code] != "" && string(reason) == http.StatusText(code) {
		return statusTexts[code]
	}
	return strconv.Itoa(code) + " " + string(reason)
}

// parseContentLength parses one or more Content-Length lines, which must agree.
func parseContentLength(lines []string) (int64, bool) {
	n := int64(-1)
	for _, l := range lines {
		l = trimOWS(l)
		if l == "" || len(l) > 18 {
			return 0, false
		}
		var v int64
		for i := 0; i < len(l); i++ {
			if l[i] < '0' || l[i] > '9' {
				return 0, false
			}
			v = v*10 + int64(l[i]-'0')
		}
		if n >= 0 && v != n {
			return 0, false
		}
		n = v
	}
	return n, n >= 0
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// maxCopiedBody is the largest request body, together with its head, that write copies behind
// the head into one buffer; a larger one goes out with the head in one writev, uncopied. It is
// the size of the write buffer a connection used to have, so that an idle connection keeps no
// larger buffer than it did.
const maxCopiedBody = 4 << 10

// write sends req's head and body in one write, so that the endpoint gets them in as few
// segments as the kernel makes and one system call does it; a new connection's PROXY header
// goes in the same write, before the head. It returns how many bytes the connection took: a
// failed write that took none left nothing of the request behind. (A connection with a
// header to write is new, never reused, so those bytes do not confuse the count.)
func (cc *h1Conn) write(req *http.Request, u *url.URL, body []byte) (int64, error) {
	head, err := appendRequest(append(cc.wbuf[:0], cc.preface...), req, u, len(body))
	if err != nil {
		return 0, err
	}
	cc.preface = nil
	// A write that reaches hookAt (hook) goes on with what is left.
	var n int64
	if len(head)+len(body) <= maxCopiedBody {
		head = append(head, body...)
		for {
			var m int
			m, err = cc.nc.Write(head[n:])
			n += int64(m)
			if err == nil || !cc.hook(err) {
				break
			}
		}
	} else {
		// The array keeps net.Buffers from allocating; WriteTo consumes cc.bufs and clears
		// the array's slices as it goes.
		cc.iov = [2][]byte{head, body}
		cc.bufs = cc.iov[:]
		for {
			var m int64
			m, err = cc.bufs.WriteTo(cc.nc)
			n += m
			if err == nil || !cc.hook(err) {
				break
			}
		}
		cc.iov = [2][]byte{} // what a failed write left: the body's buffer goes back to a pool
	}
	if cap(head) <= 64<<10 {
		cc.wbuf = head // kept for the next request; a huge head's buffer is not
	} else {
		cc.wbuf = nil
	}
	return n, err
}

// appendRequest appends the head of req to b. It validates what it writes, since handlers
// before the proxy may have changed the request. bodyLen is the length of the body that
// follows; like net/http, a POST, PUT or PATCH announces an empty one with Content-Length: 0,
// since many servers want a length for those methods.
func appendRequest(b []byte, req *http.Request, u *url.URL, bodyLen int) ([]byte, error) {
	host := req.Host
	if host == "" {
		host = u.Host
	}
	if !validMethod(req.Method) {
		return b, fmt.Errorf("proxy: invalid method %q", req.Method)
	}
	if !httpguts.ValidHostHeader(host) {
		return b, fmt.Errorf("proxy: invalid Host %q", host)
	}
	b = append(b, req.Method...)
	b = append(b, ' ')
	if u.Opaque != "" {
		uri := u.RequestURI()
		if !validTarget(uri) {
			return b, fmt.Errorf("proxy: invalid request target %q", uri)
		}
		b = append(b, uri...)
	} else {
		p := u.EscapedPath()
		if p == "" || (p[0] != '/' && p != "*") {
			b = append(b, '/')
		}
		b = append(b, p...)
		if u.ForceQuery || u.RawQuery != "" {
			if !validTarget(u.RawQuery) {
				return b, fmt.Errorf("proxy: invalid query %q", u.RawQuery)
			}
			b = append(b, '?')
			b = append(b, u.RawQuery...)
		}
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	if bodyLen > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut ||
		req.Method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(bodyLen), 10)
		b = append(b, "\r\n"...)
	}
	for k, vv := range req.Header {
		if k == "Host" || k == "Content-Length" {
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return b, fmt.Errorf("proxy: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return b, fmt.Errorf("proxy: invalid value for header field %q", k)
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...), nil
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// validTarget reports whether s can sit in a request line: no spaces, controls or DEL.
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// h1Body is a response body read straight from its connection. It lives in the exchange, not
// the connection, so that a connection back in the pool is never reached through an old body.
type h1Body struct {
	c        *h1Client
	cc       *h1Conn   // nil once the body ended
	armedAt  time.Time // when the read deadline was last moved, with bodyTimeout > 0
	res      *http.Response
	mode     uint8
	close    bool  // the connection cannot be reused after this response
	n        int64 // bytes left: of the body (bodyLength) or of the chunk (bodyChunked)
	needCRLF bool  // a chunk's data ended and its CRLF is still unread
	err      error // sticky: io.EOF at the end
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if t := b.c.bodyTimeout; t > 0 && b.mayWait() {
		if now := time.Now(); now.Sub(b.armedAt) >= t/4 {
			b.arm(now)
		}
	}
	br := b.cc.br
	switch b.mode {
	case bodyNone:
		b.finish(nil)
		return 0, io.EOF
	case bodyLength:
		if b.n == 0 {
			b.finish(nil)
			return 0, io.EOF
		}
		if int64(len(p)) > b.n {
			p = p[:b.n]
		}
		n, err := br.Read(p)
		b.n -= int64(n)
		if b.n == 0 {
			b.finish(nil)
			return n, io.EOF
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.finish(err)
		}
		return n, err
	case bodyUntilClose:
		n, err := br.Read(p)
		if err == io.EOF {
			b.finish(nil)
		} else if err != nil {
			b.finish(err)
		}
		return n, err
	}
	// bodyChunked
	for b.n == 0 {
		if err := b.nextChunk(); err != nil {
			if err == io.EOF {
				b.finish(nil)
			} else {
				b.finish(err)
			}
			return 0, err
		}
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := br.Read(p)
	b.n -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.finish(err)
		return n, err
	}
	b.needCRLF = b.n == 0
	return n, nil
}

// mayWait reports whether the next Read may wait on the connection, rather than take what
// the buffer holds: a bufio.Reader's Read reads the connection only when the buffer is empty,
// while a chunk line may be partly buffered.
func (b *h1Body) mayWait() bool {
	switch b.mode {
	case bodyNone:
		return false
	case bodyLength:
		return b.n > 0 && b.cc.br.Buffered() == 0
	case bodyUntilClose:
		return b.cc.br.Buffered() == 0
	}
	return true
}

// arm sets the read deadline to bodyTimeout and a quarter from now. Moved forward at most
// every quarter, it stays at least bodyTimeout ahead of every Read that may wait.
func (b *h1Body) arm(now time.Time) {
	t := b.c.bodyTimeout
	b.armedAt = now
	cc := b.cc
	cc.setReadDeadline(now.Add(t + t/4))
	if cc.ctx.Err() != nil {
		// The request ended as the deadline moved: keep the cancel's deadline in the past.
		cc.nc.SetReadDeadline(aLongTimeAgo)
	}
}

// nextChunk reads a chunk header, or at the last chunk the trailer section and returns io.EOF.
func (b *h1Body) nextChunk() error {
	br := b.cc.br
	if b.needCRLF {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return unexpected(err)
		}
		if string(line) != "\r\n" {
			return errors.New("proxy: malformed chunked encoding from upstream")
		}
		b.needCRLF = false
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return errors.New("proxy: upstream chunk header too long")
		}
		return unexpected(err)
	}
	// A bare LF would let the proxy and the client disagree on where chunks end (request
	// smuggling's trick); like net/http, accept CRLF only.
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return errors.New("proxy: chunk header from upstream does not end in CRLF")
	}
	line = line[:len(line)-2]
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i] // chunk extensions carry nothing a proxy uses
	}
	line = bytes.TrimRight(line, " \t")
	size, err := parseHex(line)
	if err != nil {
		return err
	}
	if size > 0 {
		b.n = size
		return nil
	}
	// The last chunk. Most bodies end with an empty trailer section: a bare CRLF.
	end, err := br.Peek(2)
	if err != nil {
		return fmt.Errorf("proxy: reading upstream trailers: %w", unexpected(err))
	}
	if string(end) == "\r\n" {
		br.Discard(2)
		return io.EOF
	}
	b.cc.lr.n = maxHeaderBytes
	trailer, err := b.cc.tp.ReadMIMEHeader()
	b.cc.lr.n = math.MaxInt64
	if err != nil {
		return fmt.Errorf("proxy: reading upstream trailers: %w", unexpected(err))
	}
	if len(trailer) > 0 {
		b.res.Trailer = http.Header(trailer)
	}
	return io.EOF
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func parseHex(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 15 {
		return 0, fmt.Errorf("proxy: invalid chunk size %q from upstream", b)
	}
	var n int64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, fmt.Errorf("proxy: invalid chunk size %q from upstream", b)
		}
		n = n<<4 | int64(c)
	}
	return n, nil
}

// finish ends the body: the connection goes back to its pool when the response ended cleanly
// and nothing spoils it, and is closed otherwise.
func (b *h1Body) finish(err error) {
	cc := b.cc
	if cc == nil {
		return
	}
	b.cc = nil
	if err == nil {
		b.err = io.EOF
	} else {
		b.err = err
	}
	canceled := !cc.release()
	if err != nil || b.close || canceled {
		cc.nc.Close()
		return
	}
	b.c.put(cc)
}

// Close abandons the rest of the body; the connection is closed unless the body had ended.
func (b *h1Body) Close() error {
	if b.cc != nil {
		if b.mode == bodyNone || (b.mode == bodyLength && b.n == 0) {
			b.finish(nil)
		} else {
			b.finish(errBodyClosed)
		}
	}
	return nil
}
