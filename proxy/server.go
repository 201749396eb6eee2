package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The defaults of ServerOptions. Each matches NGINX's or is stricter; proxy/doc.go has the
// table that compares them with NGINX's and HAProxy's.
const (
	defaultReadHeaderTimeout    = 10 * time.Second
	defaultIdleTimeout          = 60 * time.Second
	defaultBodyReadTimeout      = 60 * time.Second
	defaultResponseWriteTimeout = 60 * time.Second
	defaultMaxHeaderBytes       = 32 << 10
	defaultMaxTargetBytes       = 8 << 10
	defaultMaxFieldLineBytes    = 8 << 10
	defaultMaxConcurrentStreams = 128
	defaultMaxStreamResets      = 100
	// HTTP/2 frames no larger than RFC 9113's initial SETTINGS_MAX_FRAME_SIZE: net/http's
	// default of 1 MiB lets every client make the server buffer a megabyte per frame.
	defaultMaxReadFrameSize = 16 << 10
)

// ServerOptions configures NewServer. Every zero field means the documented default; a
// negative value turns that protection off. The defaults are safe for a proxy facing the
// internet; tests shorten the timeouts.
type ServerOptions struct {
	// ReadHeaderTimeout bounds the time an HTTP/1 client may take to send a request's line
	// and header fields, so a client trickling them byte by byte (slowloris) is cut off. Zero
	// means 10s (NGINX client_header_timeout is 60s). net/http's HTTP/2 server has no such
	// timeout per stream: it closes a connection that has no complete stream open after
	// IdleTimeout, however its header blocks trickle in.
	ReadHeaderTimeout time.Duration

	// IdleTimeout closes a keep-alive connection, HTTP/1.1 or HTTP/2, that carries no request
	// for this long. Zero means 60s (NGINX keepalive_timeout is 75s).
	IdleTimeout time.Duration

	// BodyReadTimeout bounds the wait for each read of a request body, not the whole body: a
	// long upload at a steady rate succeeds however long it takes, while one that stalls for
	// this long fails with an error satisfying errors.Is(err, os.ErrDeadlineExceeded). Zero
	// means 60s (NGINX client_body_timeout, which is also between two reads).
	BodyReadTimeout time.Duration

	// ResponseWriteTimeout bounds the wait for each write of a response, not the whole
	// response: a client that stops reading (a slow-read attack, which would hold the handler
	// and its upstream connection) is cut off once a write has waited this long, while a long
	// download or stream to a client that keeps reading is not. On HTTP/1 the connection is
	// closed; on HTTP/2 the stream is reset, and a connection that cannot be written to at
	// all is closed. Zero means 60s (NGINX send_timeout, also between two writes).
	ResponseWriteTimeout time.Duration

	// MaxHeaderBytes bounds the request line and header fields together; a request over it
	// is answered 431. Zero means 32 KiB (NGINX large_client_header_buffers 4 8k). A negative
	// value leaves only net/http's own limit of 1 MiB.
	MaxHeaderBytes int

	// MaxRequestTargetBytes bounds the request target (the path and query of the request
	// line); a longer one is answered 414. Zero means 8 KiB, NGINX's buffer for the request
	// line. A target too long for MaxHeaderBytes is answered 431 by net/http before the
	// handler runs: with the defaults, targets between 8 and about 32 KiB get 414 and longer
	// ones 431.
	MaxRequestTargetBytes int

	// MaxFieldLineBytes bounds one header field line (name, ": " and value); a request with a
	// longer one is answered 431. Zero means 8 KiB, NGINX's buffer for one header line.
	MaxFieldLineBytes int

	// MaxConcurrentStreams bounds the requests an HTTP/2 client may have open on one
	// connection; the server refuses streams past it. Zero means 128 (NGINX
	// http2_max_concurrent_streams 128, HAProxy 100). A negative value means net/http's
	// default of 250.
	MaxConcurrentStreams int

	// MaxStreamResets bounds the HTTP/2 streams a client may cancel (RST_STREAM, or gone
	// before its response finished) on one connection: once it has canceled more than this
	// many, and more than half of all its streams, the connection is sent GOAWAY and closed
	// when its open streams end. That ends a rapid-reset attack (CVE-2023-44487) after a
	// bounded number of handlers, while a client that cancels now and then (a gRPC deadline,
	// a browser leaving a page) keeps its connection. Zero means 100 (Envoy closes a
	// connection once over half of at least 500 streams were reset prematurely); negative
	// means never.
	MaxStreamResets int

	// Logger receives the errors net/http reports on its own — failed TLS handshakes, accept
	// errors, handler panics — at level Warn, so that they join the program's structured log.
	// Nil leaves http.Server.ErrorLog nil: the log package's standard logger.
	Logger *slog.Logger
}

// NewServer returns an http.Server for h with limits that keep slow or oversized clients
// from holding connections and memory: see ServerOptions. Its Protocols are
// [ServerProtocols]: HTTP/1.1, HTTP/2 over TLS and h2c with prior knowledge. The caller sets
// Addr, TLSConfig and the like on the result before serving it.
//
// ReadTimeout and WriteTimeout stay zero on purpose: they bound a whole request and a whole
// response, so they would cut a long upload, a download, a server-sent event stream or a
// gRPC stream however steadily it moved. Uploads are bounded between reads instead, by
// BodyReadTimeout, and responses between writes, by ResponseWriteTimeout. Setting ReadTimeout
// or WriteTimeout on the result turns the matching one off, so that the two never fight over
// the connection's deadline. ConnContext is set to count each
// connection's canceled streams (MaxStreamResets); replacing it turns that count off.
//
// The handler NewServer installs checks each request before h sees it: a request target over
// MaxRequestTargetBytes gets 414, and a header field line over MaxFieldLineBytes or a header
// over MaxHeaderBytes gets 431, each with a plain-text reason and, on HTTP/1, Connection:
// close, since the client may still be sending a body nobody will read.
func NewServer(h http.Handler, opts ServerOptions) *http.Server {
	g := &guard{
		next:        h,
		bodyTimeout: orDefault(opts.BodyReadTimeout, defaultBodyReadTimeout),
		sendTimeout: orDefault(opts.ResponseWriteTimeout, defaultResponseWriteTimeout),
		maxHeader:   orDefault(opts.MaxHeaderBytes, defaultMaxHeaderBytes),
		maxTarget:   orDefault(opts.MaxRequestTargetBytes, defaultMaxTargetBytes),
		maxLine:     orDefault(opts.MaxFieldLineBytes, defaultMaxFieldLineBytes),
		maxResets:   int64(orDefault(opts.MaxStreamResets, defaultMaxStreamResets)),
	}
	srv := &http.Server{
		Handler:   g,
		Protocols: ServerProtocols(),
		// A negative timeout is net/http's "none", which it stays even if the caller sets
		// ReadTimeout later (zero would fall back to it).
		ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, defaultReadHeaderTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, defaultIdleTimeout),
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: max(orDefault(opts.MaxConcurrentStreams, defaultMaxConcurrentStreams), 0),
			MaxReadFrameSize:     defaultMaxReadFrameSize,
		},
	}
	if g.sendTimeout > 0 {
		// A connection nothing can be written to holds every stream on it: close it.
		srv.HTTP2.WriteByteTimeout = g.sendTimeout
	}
	if g.maxResets > 0 {
		srv.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connStreamsKey{}, new(connStreams))
		}
	}
	if opts.Logger != nil {
		srv.ErrorLog = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn)
	}
	if g.maxHeader > 0 {
		// net/http reads up to 4 KiB past MaxHeaderBytes before it answers 431; the guard
		// enforces the exact figure once the header is in.
		srv.MaxHeaderBytes = g.maxHeader
	}
	return srv
}

// orDefault returns v, or def when v is zero.
func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// guard is the handler NewServer puts in front of the embedder's: it refuses oversized
// requests, bounds the wait for each read of a request body and each write of a response, and
// counts the HTTP/2 streams each connection's client cancels. A limit ≤ 0 is off.
type guard struct {
	next        http.Handler
	bodyTimeout time.Duration
	sendTimeout time.Duration
	maxHeader   int
	maxTarget   int
	maxLine     int
	maxResets   int64
}

// connStreams counts an HTTP/2 connection's streams and the ones its client canceled.
type connStreams struct {
	streams, resets atomic.Int64
}

type connStreamsKey struct{}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		if g.maxResets > 0 {
			if cs, _ := r.Context().Value(connStreamsKey{}).(*connStreams); cs != nil {
				cs.streams.Add(1)
				defer g.countReset(w, r, cs)
			}
		}
		if r.Context().Err() != nil {
			// The stream was reset before its handler started: nobody is waiting for an
			// answer, so nothing is picked, dialled or forwarded.
			return
		}
	}
	if g.maxTarget > 0 && len(r.RequestURI) > g.maxTarget {
		refuse(w, r, http.StatusRequestURITooLong, "request target longer than the limit")
		return
	}
	if g.maxLine > 0 || g.maxHeader > 0 {
		// Sizes as on the wire: "Name: value\r\n", and the request line.
		total := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
		longest := len("Host: ") + len(r.Host)
		total += longest + 2
		for k, vv := range r.Header {
			for _, v := range vv {
				n := len(k) + 2 + len(v)
				total += n + 2
				longest = max(longest, n)
			}
		}
		if g.maxLine > 0 && longest > g.maxLine {
			refuse(w, r, http.StatusRequestHeaderFieldsTooLarge, "a header field line is longer than the limit")
			return
		}
		if g.maxHeader > 0 && total > g.maxHeader {
			refuse(w, r, http.StatusRequestHeaderFieldsTooLarge, "request header fields larger than the limit")
			return
		}
	}
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	timeRead := g.bodyTimeout > 0 && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 &&
		(srv == nil || srv.ReadTimeout <= 0)
	timeWrite := g.sendTimeout > 0 && (srv == nil || srv.WriteTimeout <= 0)
	// One allocation holds what the request needs: the writer with its ResponseController,
	// and, for a body, a copy of the request with the body swapped (handlers must not change
	// the request they are given).
	switch {
	case timeRead:
		tr := &timedRequest{}
		tr.w = timedWriter{ResponseWriter: w, ctl: *http.NewResponseController(w), timeout: g.sendTimeout}
		tr.req = *r
		tr.body = timedBody{rc: r.Body, ctl: &tr.w.ctl, timeout: g.bodyTimeout}
		tr.req.Body = &tr.body
		r = &tr.req
		if timeWrite {
			w = &tr.w
		}
	case timeWrite:
		w = &timedWriter{ResponseWriter: w, ctl: *http.NewResponseController(w), timeout: g.sendTimeout}
	}
	g.next.ServeHTTP(w, r)
}

// countReset counts r's stream as canceled if the client reset it (or left) before its
// handler returned, and asks for GOAWAY once the connection's client has canceled more than
// maxResets streams and more than half of them. net/http's HTTP/2 server answers a response
// field "Connection: close" with a graceful GOAWAY (it is never sent as a field), which
// stops new streams and closes the connection once the open ones end. Any stream's response
// will do, even a reset one's, since the server looks at it when the handler returns.
func (g *guard) countReset(w http.ResponseWriter, r *http.Request, cs *connStreams) {
	if r.Context().Err() == nil {
		return
	}
	if n := cs.resets.Add(1); n > g.maxResets && 2*n > cs.streams.Load() {
		w.Header().Set("Connection", "close")
	}
}

// refuse answers a request the guard will not serve. On HTTP/1 the connection is closed
// after the answer: a body the client may still be sending would otherwise be read and
// thrown away, or taken for the next request.
func refuse(w http.ResponseWriter, r *http.Request, code int, reason string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.ProtoMajor == 1 {
		h.Set("Connection", "close")
	}
	w.WriteHeader(code)
	io.WriteString(w, reason+"\n")
}

// timedRequest is a request whose body the guard times, with its writer, timed or not, whose
// ResponseController the body's deadlines go through.
type timedRequest struct {
	req  http.Request
	body timedBody
	w    timedWriter
}

// timedBody bounds the wait for each Read of a request body. Before a Read it moves the
// connection's (or the HTTP/2 stream's) read deadline to now + timeout, so the deadline
// follows the upload as long as bytes keep coming. To keep reads cheap the deadline is moved
// only when it was last moved more than an eighth of the timeout ago: a stall is detected
// between 7/8 of the timeout and the timeout after the last Read began.
//
// Once the body is finished (EOF or Close) the deadline is cleared: net/http then reads the
// connection in the background to notice a client going away, and a deadline left behind
// would end that read, and the request, while the response is still streaming.
type timedBody struct {
	rc      io.ReadCloser
	ctl     *http.ResponseController
	timeout time.Duration

	mu    sync.Mutex // mu orders arming against disarming: Close may race a Read
	armed time.Time  // when the deadline was last moved; zero when none is set
	done  bool       // the body is finished, or deadlines are not supported
}

func (b *timedBody) Read(p []byte) (int, error) {
	b.arm()
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.disarm()
	}
	return n, err
}

// Close closes the body under a fresh deadline, since net/http may read what is left of it,
// then clears the deadline.
func (b *timedBody) Close() error {
	b.arm()
	err := b.rc.Close()
	b.disarm()
	return err
}

func (b *timedBody) arm() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	now := time.Now()
	if !b.armed.IsZero() && now.Sub(b.armed) < b.timeout/8 {
		return
	}
	if err := b.ctl.SetReadDeadline(now.Add(b.timeout)); err != nil {
		// A ResponseWriter without deadlines (a test recorder, a wrapper without Unwrap):
		// the body is read as it would be without the guard.
		b.done = true
		return
	}
	b.armed = now
}

func (b *timedBody) disarm() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if !b.armed.IsZero() {
		b.ctl.SetReadDeadline(time.Time{})
	}
}

// timedWriter bounds the wait for each write of a response. Before a Write or Flush it moves
// the connection's (or the HTTP/2 stream's) write deadline to now + timeout, at most every
// eighth of the timeout, as timedBody does for reads. The last deadline also bounds the
// server's final flush after the handler returns; net/http then clears it before the next
// request on the connection, or as the connection is hijacked (an HTTP/2 stream's ends with
// the stream).
type timedWriter struct {
	http.ResponseWriter
	ctl     http.ResponseController
	timeout time.Duration
	armed   time.Time // when the deadline was last moved; zero when none is set
}

func (w *timedWriter) arm() {
	now := time.Now()
	if !w.armed.IsZero() && now.Sub(w.armed) < w.timeout/8 {
		return
	}
	if w.ctl.SetWriteDeadline(now.Add(w.timeout)) == nil {
		w.armed = now
	}
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(p)
}

// Flush sends what is buffered, under the deadline.
func (w *timedWriter) Flush() {
	w.FlushError()
}

// FlushError sends what is buffered, under the deadline; http.ResponseController.Flush
// calls it.
func (w *timedWriter) FlushError() error {
	w.arm()
	return w.ctl.Flush()
}

// Hijack lets handlers that assert http.Hijacker, rather than use http.ResponseController,
// take the connection over. net/http clears its deadlines as it hands it over.
func (w *timedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.ctl.Hijack()
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
