package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The states of a conn, for Shutdown: a conn is closed by Shutdown only while idle, and
// an idle conn claims itself active before it reads a request.
const (
	stateActive int32 = iota
	stateIdle
	stateClosed
)

const (
	// bufSize is the size of a connection's read buffer and of the response bytes collected
	// before they are written. A request head that does not fit grows the read buffer, up
	// to MaxHeaderBytes.
	bufSize = 4 << 10
	// maxDiscard bounds the request body the server reads and throws away after a handler
	// that did not read it, to keep the connection (net/http's figure); a longer one closes
	// the connection.
	maxDiscard = 256 << 10
	// watchDelay is how long a handler runs before the server starts watching its
	// connection for the client going away. Most requests end sooner, and pay nothing.
	watchDelay = 20 * time.Millisecond
	// lingerTime bounds the reads that drain a connection being closed with request bytes
	// still unread, so that closing it does not reset the response away.
	lingerTime = time.Second
)

var aLongTimeAgo = time.Unix(1, 0)

// bufPool holds the buffers of connections, as array pointers: putting one back allocates
// nothing.
var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

func getBuf() []byte { return bufPool.Get().(*[bufSize]byte)[:] }

func putBuf(b []byte) {
	if cap(b) == bufSize {
		bufPool.Put((*[bufSize]byte)(b[:bufSize]))
	}
}

// conn is one HTTP/1 connection and the goroutine that serves it.
type conn struct {
	s        *Server
	rwc      net.Conn        // a *tls.Conn, not yet handshaken, for a TLS connection
	raw      syscall.RawConn // the socket under rwc, for waiting without a buffer; nil if none
	tlsState *tls.ConnectionState
	ctx      context.Context
	remote   string

	rbuf []byte // read buffer; nil while idle
	r, w int    // rbuf[r:w] is read and not yet consumed
	scan int    // where the search for the end of a request head resumes
	out  []byte // response bytes not yet written; nil while idle
	hbuf []byte // the response head being built
	bufs net.Buffers
	werr error // the first write error; the connection is done

	state atomic.Int32

	// The read deadline is moved lazily: a request head that arrives whole (nearly all do)
	// costs one move, the idle timeout's. headArmed says the header timeout is set;
	// staleRead that a deadline meant for the head is left, which a handler's read clears.
	headArmed bool
	staleRead atomic.Bool
	// staleWrite says the write deadline was left by the last request; it is cleared before
	// a write, unless the handler sets one first. Guarded by wmu once a handler runs.
	staleWrite bool
	woke       time.Time // when the request's first bytes came, for ReadTimeout

	wmu sync.Mutex // wmu serializes writes: a 100 Continue sent from a body Read

	// The watch for the client going away while a handler runs.
	wmtx      sync.Mutex
	watching  bool          // the watch is reading the socket
	watchDone chan struct{} // closed when the watch ends
	timer     *time.Timer
	cancel    context.CancelFunc // the running request's; nil between requests
	cur       *exchange          // the request being served; nil between requests
	pk        peeker
}

func newConn(s *Server, rwc net.Conn, ctx context.Context) *conn {
	c := &conn{s: s, rwc: rwc, ctx: ctx}
	c.state.Store(stateIdle)
	return c
}

// serve reads requests and serves them until the connection ends.
func (c *conn) serve() {
	defer c.end()
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		// A handler that panicked never got to serveOne's cancel: its request's context ends
		// here, as net/http's does, so that what waits on it does not wait forever.
		c.wmtx.Lock()
		cancel := c.cancel
		c.wmtx.Unlock()
		// Nor to stopWatch: the watch must be done reading into rbuf before end gives the
		// buffer back to the pool.
		if c.timer != nil {
			c.stopWatch()
		}
		if cancel != nil {
			cancel()
		}
		if v != http.ErrAbortHandler {
			const size = 64 << 10
			buf := make([]byte, size)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.logf("h1: panic serving %v: %v\n%s", c.remoteAddr(), v, buf)
		}
	}()
	if tc, ok := c.rwc.(*tls.Conn); ok {
		if !c.handshake(tc) {
			return
		}
	} else if sc, ok := c.rwc.(syscall.Conn); ok && canPeek {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.pk.init(raw, c)
		}
	}
	if c.s.readHead > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(c.s.readHead))
		c.headArmed = true
	}
	for first := true; c.await(first); first = false {
		if !c.next(first) {
			return
		}
	}
}

// next reads the request whose first bytes came and serves it. It reports whether the
// connection may carry another. The request's template lives in its frame, not in serve's,
// so that the stack of a goroutine waiting for a request stays small.
func (c *conn) next(first bool) bool {
	var tmpl http.Request // WithContext copies it to the heap
	x := &exchange{}
	if err := c.readRequest(x, &tmpl, first); err != nil {
		c.refuse(err)
		return false
	}
	if x.h2c {
		c.handOffH2c()
		return false
	}
	return c.serveOne(x, &tmpl)
}

// handshake runs the TLS handshake and hands the connection to srv when it negotiated h2.
func (c *conn) handshake(tc *tls.Conn) bool {
	if d := c.s.readHead; d > 0 {
		tc.SetDeadline(time.Now().Add(d))
	}
	if err := tc.HandshakeContext(c.ctx); err != nil {
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			re.Conn.Close()
		} else if !isQuiet(err) {
			c.s.logf("h1: TLS handshake error from %s: %v", c.remoteAddr(), err)
		}
		return false
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.tlsState = &st
	if st.NegotiatedProtocol == "h2" && c.s.h2 {
		c.s.tracker.RemoveConn(c)
		c.s.handOff(c.ctx, tc)
		c.rwc = nil
		return false
	}
	if !c.s.h1 {
		return false
	}
	return true
}

func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// handOffH2c gives a connection that opened with the HTTP/2 preface to srv, with the bytes
// read so far.
func (c *conn) handOffH2c() {
	prefix := append([]byte(nil), c.rbuf[c.r:c.w]...)
	nc := &prefixConn{Conn: c.rwc, prefix: prefix}
	c.rwc.SetReadDeadline(time.Time{})
	c.s.tracker.RemoveConn(c)
	c.s.handOff(c.ctx, nc)
	c.rwc = nil
}

// await waits for the first byte of the next request, with the idle timeout (the header
// timeout for the first request, already set). While it waits on a plain socket the
// connection holds no buffer: thousands of idle keep-alive connections cost a goroutine and
// this struct each.
func (c *conn) await(first bool) bool {
	if !first {
		if !c.state.CompareAndSwap(stateActive, stateIdle) {
			return false
		}
		c.s.setState(c, http.StateIdle)
		if c.s.tracker.Closing() {
			return false
		}
	}
	if c.r == c.w {
		c.r, c.w, c.scan = 0, 0, 0
		if !first {
			if d := c.s.idle; d > 0 {
				c.rwc.SetReadDeadline(time.Now().Add(d))
			} else {
				c.rwc.SetReadDeadline(time.Time{})
			}
			c.headArmed = false
		}
		if c.raw != nil {
			c.release()
			if !c.pk.wait() {
				return false
			}
		} else {
			if c.rbuf == nil {
				c.rbuf = getBuf()
			}
			n, _ := c.rwc.Read(c.rbuf)
			c.w = n
			if n == 0 {
				return false
			}
		}
	} else if !first && c.s.readHead > 0 {
		// A pipelined request: its head may still be incomplete.
		c.rwc.SetReadDeadline(time.Now().Add(c.s.readHead))
		c.headArmed = true
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return false
	}
	c.s.setState(c, http.StateActive)
	if c.s.srv.ReadTimeout > 0 {
		c.woke = time.Now()
	}
	return true
}

// armHead sets the header timeout before a read for the rest of a request head.
func (c *conn) armHead() {
	if !c.headArmed && c.s.readHead > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(c.s.readHead))
		c.headArmed = true
	}
}

// freshRead clears a deadline left from the request head before the handler's read.
func (c *conn) freshRead() {
	if c.staleRead.Load() && c.staleRead.CompareAndSwap(true, false) {
		c.rwc.SetReadDeadline(time.Time{})
	}
}

// release returns the buffers of a connection that has nothing buffered either way.
func (c *conn) release() {
	if c.rbuf != nil && c.r == c.w {
		putBuf(c.rbuf)
		c.rbuf = nil
		c.r, c.w, c.scan = 0, 0, 0
	}
	if c.out != nil && len(c.out) == 0 {
		putBuf(c.out)
		c.out = nil
	}
	if c.hbuf != nil {
		putBuf(c.hbuf)
		c.hbuf = nil
	}
}

// closeIfIdle closes the connection if it waits for a request; Shutdown calls it.
func (c *conn) closeIfIdle() {
	if c.state.CompareAndSwap(stateIdle, stateClosed) {
		c.rwc.Close()
	}
}

// fill reads more bytes into rbuf[c.w:], making room first.
func (c *conn) fill() error {
	if c.rbuf == nil {
		c.rbuf = getBuf()
	}
	if c.w == len(c.rbuf) {
		if c.r == 0 {
			return errBufferFull
		}
		n := copy(c.rbuf, c.rbuf[c.r:c.w])
		c.scan -= c.r
		c.r, c.w = 0, n
	}
	n, err := c.rwc.Read(c.rbuf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

var errBufferFull = errors.New("h1: buffer full")

// serveOne runs the handler for x and finishes its response. It reports whether the
// connection may carry another request.
func (c *conn) serveOne(x *exchange, tmpl *http.Request) bool {
	s := c.s
	if s.srv.WriteTimeout > 0 {
		c.rwc.SetWriteDeadline(time.Now().Add(s.srv.WriteTimeout))
		c.staleWrite = false
	}
	if s.srv.ReadTimeout > 0 {
		// ReadTimeout covers the head and body together, as with net/http.
		c.rwc.SetReadDeadline(c.woke.Add(s.srv.ReadTimeout))
	} else {
		c.staleRead.Store(true)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	req := tmpl.WithContext(ctx)
	x.res.req = req
	x.body.req = req
	c.startWatch(cancel, x)
	h := s.handler
	if req.RequestURI == "*" && req.Method == http.MethodOptions && !s.srv.DisableGeneralOptionsHandler {
		h = optionsHandler{}
	}
	h.ServeHTTP(&x.res, req)
	c.stopWatch()
	cancel()
	if x.res.hijacked {
		return false
	}
	x.body.handlerDone()
	if !x.res.committed && x.body.mode != bodyNone && !x.body.finished() {
		// The rest of an unread body is read before the head goes out, as net/http does, so
		// that the head can say Connection: close when the body is too long to keep the
		// connection (a chunked one only shows that by being read).
		if !x.body.discard() {
			x.res.closeAfter = true
		}
	}
	x.res.finish()
	keep := c.werr == nil && !x.res.closeAfter
	if keep && x.body.mode != bodyNone && !x.body.finished() {
		keep = x.body.discard()
	}
	if c.werr == nil && len(c.out) > 0 {
		c.flushOut()
	}
	if s.srv.WriteTimeout > 0 || x.res.deadlines {
		// Cleared before the next request's first write, unless that request sets its own
		// first (as proxy.NewServer's guard does before each response), which saves the move.
		c.staleWrite = true
	}
	if c.werr != nil {
		return false
	}
	if !keep {
		c.closeGracefully(x)
		return false
	}
	return true
}

// closeGracefully closes a connection after a response that said Connection: close. If the
// client may still be sending (a body nobody read), the write side is shut first and what
// arrives is read and dropped for a moment, so that the close does not reset the response
// away before the client read it.
func (c *conn) closeGracefully(x *exchange) {
	if c.r == c.w && (x.body.mode == bodyNone || x.body.finished()) {
		return // end closes
	}
	c.linger()
}

// linger shuts the write side and reads and drops what the client still sends, for a moment.
func (c *conn) linger() {
	cw, ok := c.rwc.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	cw.CloseWrite()
	c.rwc.SetReadDeadline(time.Now().Add(lingerTime))
	buf := c.rbuf
	if buf == nil {
		buf = getBuf()
		defer putBuf(buf)
	}
	for n := 0; n < maxDiscard; {
		m, err := c.rwc.Read(buf)
		n += m
		if err != nil {
			break
		}
	}
}

// end closes the connection and gives its buffers back.
func (c *conn) end() {
	if c.rwc == nil {
		return // handed to srv, or hijacked
	}
	c.state.Store(stateClosed)
	c.rwc.Close()
	c.s.tracker.RemoveConn(c)
	c.s.setState(c, http.StateClosed)
	if c.timer != nil {
		c.timer.Stop()
	}
	c.r, c.w = 0, 0
	c.out = c.out[:0]
	c.release()
}

// freshWrite clears a write deadline left by the last request before this one writes.
func (c *conn) freshWrite() {
	if c.staleWrite {
		c.staleWrite = false
		c.rwc.SetWriteDeadline(time.Time{})
	}
}

// flushOut writes the collected response bytes.
func (c *conn) flushOut() {
	if c.werr != nil || len(c.out) == 0 {
		c.out = c.out[:0]
		return
	}
	c.freshWrite()
	_, err := c.rwc.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		c.werr = err
	}
}

// writeOut writes the collected response bytes followed by p, in one writev on a socket.
func (c *conn) writeOut(p ...[]byte) {
	if c.werr != nil {
		return
	}
	c.freshWrite()
	c.bufs = append(c.bufs[:0], c.out)
	c.bufs = append(c.bufs, p...)
	_, err := c.bufs.WriteTo(c.rwc)
	c.out = c.out[:0]
	clear(c.bufs[:cap(c.bufs)])
	if err != nil {
		c.werr = err
	}
}

func (c *conn) remoteAddr() string {
	if c.remote == "" && c.rwc != nil {
		c.remote = c.rwc.RemoteAddr().String()
	}
	return c.remote
}

// startWatch arms the watch for the client going away during x's handler: if the handler
// still runs after watchDelay and has read its request body (or has none), a read of the
// connection waits in the background, and the request's context is canceled when the client
// closes or resets it. Most requests end before the timer fires, and pay only for the timer.
func (c *conn) startWatch(cancel context.CancelFunc, x *exchange) {
	c.wmtx.Lock()
	c.cancel = cancel
	c.cur = x
	c.wmtx.Unlock()
	if c.timer == nil {
		c.timer = time.AfterFunc(watchDelay, c.watch)
	} else {
		c.timer.Reset(watchDelay)
	}
}

// stopWatch ends the watch before anything else reads the connection.
func (c *conn) stopWatch() {
	c.timer.Stop()
	c.wmtx.Lock()
	c.cur = nil
	c.cancel = nil
	watching, done := c.watching, c.watchDone
	c.wmtx.Unlock()
	if watching {
		c.staleRead.Store(false)
		c.rwc.SetReadDeadline(aLongTimeAgo)
		<-done
		c.staleRead.Store(true) // the next read clears it
	}
}

// watch reads the connection while a handler runs, as net/http's background read does: a
// byte (the next pipelined request) is kept for later, the end of the stream or an error
// cancels the request. It runs on the timer's goroutine, or on the goroutine the request
// body's end starts.
func (c *conn) watch() {
	c.wmtx.Lock()
	x := c.cur
	if x == nil || c.watching {
		c.wmtx.Unlock()
		return
	}
	if !x.body.eofLocked() {
		// The handler still reads the body, and sees the client go from its errors; the
		// body's end starts the watch.
		x.body.watchAtEOF = true
		c.wmtx.Unlock()
		return
	}
	if c.w == len(c.rbuf) {
		c.wmtx.Unlock()
		return // the buffer is full of what the client sent next: it is there
	}
	c.watching = true
	done := make(chan struct{})
	c.watchDone = done
	cancel := c.cancel
	// Under wmtx, so that stopWatch's deadline always comes after this one.
	c.freshRead()
	c.wmtx.Unlock()

	n, err := c.rwc.Read(c.rbuf[c.w:])
	c.w += n
	if n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		cancel()
	}
	c.wmtx.Lock()
	c.watching = false
	close(done)
	c.wmtx.Unlock()
}

// isQuiet reports whether a read error is the ordinary end of a connection, not worth a
// log line.
func isQuiet(err error) bool {
	if err == io.EOF || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF)
}

// optionsHandler answers "OPTIONS *" as net/http does.
type optionsHandler struct{}

func (optionsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		// Read up to 4 KiB of OPTIONS body, then give up.
		io.Copy(io.Discard, io.LimitReader(r.Body, 4<<10))
	}
	w.Header().Set("Content-Length", "0")
}

// refuse answers a request the server will not serve, then closes the connection, lingering
// so that the answer is not reset away by bytes the client is still sending.
func (c *conn) refuse(err error) {
	var re *requestError
	if !errors.As(err, &re) {
		return
	}
	msg := re.why + "\n"
	b := appendStatusLine(c.head(), re.code)
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, msg...)
	c.hbuf = b
	c.rwc.SetWriteDeadline(time.Now().Add(lingerTime))
	if _, err := c.rwc.Write(b); err != nil {
		return
	}
	c.linger()
}
