package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response.
type stream struct {
	c      *conn
	id     uint32
	req    *http.Request
	cancel context.CancelFunc
	rw     responseWriter
	body   *body // nil when the request has none
	tooBig bool  // the header list was over the limit: the answer is 431

	// c.mu protects these.
	sendWindow  int64
	recvWindow  int32
	recvUnacked int32
	remoteDone  bool // the client ended the stream, or it was reset or closed

	// The reader goroutine's: what the request's body must add up to.
	declared int64 // Content-Length, or -1
	received int64

	// c.wmu protects these.
	wclosed  bool // END_STREAM or RST_STREAM sent: the stream takes no more frames
	timedOut bool // reset because its write deadline passed

	writeDeadline deadline // resets the stream when it passes
}

// endWrite marks the stream as taking no more frames, once its END_STREAM or RST_STREAM is
// queued; c.wmu is held.
func (st *stream) endWrite() {
	if !st.wclosed {
		st.wclosed = true
		st.c.unfinished.Add(-1)
	}
}

// errStreamReset is what a handler's writes return after the stream was reset.
var errStreamReset = errors.New("h2: stream reset")

// writeErr is what a write returns once the stream takes no more frames; c.wmu is held.
func (st *stream) writeErr() error {
	if st.timedOut {
		return os.ErrDeadlineExceeded
	}
	return errStreamReset
}

// newStream builds the request of a HEADERS frame that opens a stream. An error means the
// request is malformed (RFC 9113 §8.1.1): the stream is reset with PROTOCOL_ERROR.
func (c *conn) newStream(f *headerBlock) (*stream, error) {
	st := &stream{c: c, id: f.id, declared: -1}
	c.mu.Lock()
	st.sendWindow = int64(c.peerWindow)
	c.mu.Unlock()
	st.recvWindow = c.s.streamWindow

	var method, scheme, authority, path string
	for _, hf := range f.fields[:f.pseudo] {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		default:
			// :protocol (extended CONNECT) is not offered; :status is a response's.
			return nil, fmt.Errorf("pseudo-header %s in a request", hf.Name)
		}
	}
	if method == "CONNECT" {
		if scheme != "" || path != "" || authority == "" {
			return nil, errors.New("CONNECT needs :authority and no :scheme or :path")
		}
	} else if method == "" || scheme == "" || path == "" {
		return nil, errors.New("missing :method, :scheme or :path")
	} else if path[0] != '/' && !(path == "*" && method == "OPTIONS") {
		return nil, errors.New(":path is not a path")
	}
	if !httpguts.ValidHostHeader(authority) {
		return nil, errors.New("invalid :authority")
	}

	fields := f.regular()
	header := make(http.Header, len(fields))
	var cookies []string
	for _, hf := range fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, fmt.Errorf("connection-specific field %s", hf.Name)
		case "te":
			if hf.Value != "trailers" {
				return nil, errors.New("te other than trailers")
			}
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		}
		k := canonicalKey(hf.Name)
		header[k] = append(header[k], hf.Value)
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = header.Get("Host")
	}

	// The request is built here and copied to the heap once, by WithContext.
	var req http.Request
	req.Method = method
	req.Proto, req.ProtoMajor = "HTTP/2.0", 2
	req.Header = header
	req.Host = authority
	req.RemoteAddr = c.remoteAddr
	req.TLS = c.tlsState
	if method == "CONNECT" {
		req.URL = &url.URL{Host: authority}
		req.RequestURI = authority
	} else {
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return nil, fmt.Errorf("invalid :path: %v", err)
		}
		req.URL = u
		req.RequestURI = path
	}
	if cl := header["Content-Length"]; len(cl) > 0 {
		for _, v := range cl[1:] {
			if v != cl[0] {
				return nil, errors.New("conflicting Content-Length fields")
			}
		}
		n, err := strconv.ParseUint(cl[0], 10, 63)
		if err != nil {
			return nil, errors.New("invalid Content-Length")
		}
		st.declared = int64(n)
	}
	if f.endStream {
		if st.declared > 0 {
			return nil, errors.New("Content-Length with no DATA")
		}
		req.Body = http.NoBody
		st.remoteDone = true
	} else {
		b := &body{st: st}
		b.cond.L = &b.mu
		b.deadline.fire = func() {
			b.mu.Lock()
			b.cond.Broadcast()
			b.mu.Unlock()
		}
		st.body = b
		req.Body = st.body
		req.ContentLength = st.declared
		for _, v := range header["Trailer"] {
			for name := range strings.SplitSeq(v, ",") {
				name = textproto.TrimString(name)
				if name == "" {
					continue
				}
				name = http.CanonicalHeaderKey(name)
				switch name {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					continue // net/http's rule for HTTP/1.1 trailers
				}
				if req.Trailer == nil {
					req.Trailer = make(http.Header)
				}
				req.Trailer[name] = nil
			}
		}
		delete(header, "Trailer") // as net/http's servers do
	}
	st.tooBig = f.truncated

	ctx, cancel := context.WithCancel(c.ctx)
	st.req = req.WithContext(ctx)
	st.cancel = cancel
	st.rw.init(st)
	st.writeDeadline.fire = st.writeTimedOut
	if d := c.s.readTimeout; d > 0 && st.body != nil {
		st.body.deadline.set(time.Now().Add(d))
	}
	if d := c.s.writeTimeout; d > 0 {
		st.writeDeadline.set(time.Now().Add(d))
	}
	return st, nil
}

// run serves the stream on a worker.
func (st *stream) run() {
	c := st.c
	defer func() {
		st.cancel()
		st.writeDeadline.stop()
		if st.body != nil {
			st.body.deadline.stop()
		}
		c.handlerDone(st)
		c.flush()
		st.rw.release()
		// As net/http's HTTP/2 server does, a handler's "Connection: close" (never sent
		// as a field) asks for the connection to end once its streams have.
		if st.rw.header.Get("Connection") == "close" {
			c.goAway(http2.ErrCodeNo, false)
		}
	}()
	if st.tooBig {
		// net/http's answer, word for word.
		st.rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		st.rw.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
		io.WriteString(&st.rw, "<h1>HTTP Error 431</h1><p>Request Header Field(s) Too Large</p>")
		st.rw.finish()
		return
	}
	if !st.serve() {
		return
	}
	st.rw.finish()
}

// serve calls the handler; it reports false if the handler panicked, after resetting the
// stream.
func (st *stream) serve() (ok bool) {
	defer func() {
		if ok {
			return
		}
		e := recover()
		if e != http.ErrAbortHandler {
			const size = 64 << 10
			buf := make([]byte, size)
			buf = buf[:runtime.Stack(buf, false)]
			st.c.logf("panic serving %s: %v\n%s", st.req.RequestURI, e, buf)
		}
		st.c.resetStream(st.id, http2.ErrCodeInternal)
	}()
	handler := st.c.s.handler
	if st.req.RequestURI == "*" && st.req.Method == "OPTIONS" {
		handler = globalOptions{}
	}
	handler.ServeHTTP(&st.rw, st.req)
	return true
}

// globalOptions answers "OPTIONS *" as net/http's server does.
type globalOptions struct{}

func (globalOptions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		io.Copy(io.Discard, io.LimitReader(r.Body, 256<<10))
	}
	w.Header().Set("Content-Length", "0")
}

// deliver adds a DATA frame's payload to the body; it reports false if the payload goes past
// the request's Content-Length. The caller holds c.mu.
func (st *stream) deliver(p []byte) bool {
	st.received += int64(len(p))
	if st.declared >= 0 && st.received > st.declared {
		return false
	}
	if len(p) == 0 {
		return true
	}
	b := st.body
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		st.c.creditLocked(nil, int32(len(p)))
		return true
	}
	b.buf = append(b.buf, p...)
	b.cond.Signal()
	return true
}

// endBody ends the request body when the client ends the stream, with trailers (nil without
// them); it reports false if the body fell short of its Content-Length or a trailer field is
// one that must not be a trailer. The caller holds c.mu.
func (st *stream) endBody(trailers []hpack.HeaderField) bool {
	st.remoteDone = true
	if st.declared >= 0 && st.received != st.declared {
		return false
	}
	b := st.body
	b.mu.Lock()
	defer b.mu.Unlock()
	// As net/http's HTTP/2 server does, a request gets the trailer fields it declared, once
	// its body has been read to the end.
	for _, hf := range trailers {
		k := canonicalKey(hf.Name)
		if !httpguts.ValidTrailerHeader(k) {
			return false
		}
		if _, declared := st.req.Trailer[k]; declared {
			b.trailers = append(b.trailers, k, hf.Value)
		}
	}
	if b.err == nil {
		b.err = io.EOF
	}
	b.cond.Broadcast()
	return true
}

// abort ends the request body with err, unless it has ended, and cancels the request's
// context. The caller holds c.mu.
func (st *stream) abort(err error) {
	if b := st.body; b != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.cond.Broadcast()
		b.mu.Unlock()
	}
	st.cancel()
}

// discard drops what the handler did not read of the body and makes later DATA be dropped on
// arrival; it returns how many bytes were dropped. The caller holds c.mu.
func (st *stream) discard() int32 {
	b := st.body
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.buf) - b.r
	b.buf, b.r, b.closed = nil, 0, true
	return int32(n)
}

// body is a request body: the bytes of DATA frames the handler has not read yet.
type body struct {
	st     *stream
	mu     sync.Mutex
	cond   sync.Cond // on mu: bytes arrived, the body ended, or the deadline passed
	buf    []byte
	r      int   // read offset in buf
	err    error // io.EOF or why the body ended, once no more bytes come
	closed bool  // the handler closed it: arriving bytes are dropped
	// trailers are the request's trailer fields, name and value in turn, put in the
	// request's Trailer when Read returns io.EOF.
	trailers []string

	deadline deadline // Read fails with os.ErrDeadlineExceeded once it passes
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	for b.r == len(b.buf) && b.err == nil && !b.closed {
		if b.deadline.passed(time.Now()) {
			b.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		b.cond.Wait()
	}
	if b.r == len(b.buf) {
		err := b.err
		if err == nil {
			err = http.ErrBodyReadAfterClose // closed by the handler
		}
		if err == io.EOF && b.trailers != nil {
			t := b.st.req.Trailer
			for i := 0; i+1 < len(b.trailers); i += 2 {
				t[b.trailers[i]] = append(t[b.trailers[i]], b.trailers[i+1])
			}
			b.trailers = nil
		}
		b.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.buf[b.r:])
	b.r += n
	if b.r == len(b.buf) {
		b.buf, b.r = b.buf[:0], 0
	}
	b.mu.Unlock()

	c := b.st.c
	c.mu.Lock()
	c.creditLocked(b.st, int32(n))
	c.mu.Unlock()
	c.flush()
	return n, nil
}

// Close drops what is left of the body.
func (b *body) Close() error {
	c := b.st.c
	c.mu.Lock()
	if n := b.st.discard(); n > 0 {
		c.creditLocked(nil, n)
	}
	c.mu.Unlock()
	c.flush()
	return nil
}

// writeTimedOut resets the stream when its write deadline passes, as net/http's HTTP/2
// server does for WriteTimeout and http.ResponseController.SetWriteDeadline.
func (st *stream) writeTimedOut() {
	c := st.c
	c.wmu.Lock()
	st.timedOut = true
	c.wmu.Unlock()
	c.mu.Lock()
	if c.streams[st.id] == st {
		c.resetLocked(st, http2.ErrCodeInternal)
	}
	c.mu.Unlock()
	c.wmu.Lock()
	c.wdrain.Broadcast()
	c.wmu.Unlock()
	c.flush()
}
