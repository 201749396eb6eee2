package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Format is the form of the log lines.
type Format uint8

const (
	// JSON logs through Options.Logger, one record per response at level Info with the
	// message "access": JSON with slog.NewJSONHandler, or any other slog handler. It is the
	// zero value.
	JSON Format = iota
	// Common writes the Common Log Format to Options.Writer:
	//	client - - [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.1" 200 2326
	Common
	// Combined writes the Combined Log Format to Options.Writer: Common with the referer and
	// user agent in quotes after it.
	Combined
)

// Options configure a Log. The zero value logs nothing: set Logger, Writer or Hooks.
type Options struct {
	// Format is the form of the lines; the zero value is JSON.
	Format Format

	// Logger receives the records of Format JSON. Nil means no log lines in that format.
	Logger *slog.Logger

	// Writer receives the lines of Formats Common and Combined, one Write per line, never
	// two at once. Required for those formats.
	Writer io.Writer

	// TrustedProxies lists the peers whose X-Forwarded-For and Forwarded fields are believed
	// for the client's address, as sluice.ClientIP reads them. Nil trusts nobody: the client
	// is the peer.
	TrustedProxies *sluice.TrustedProxies

	// Hooks are told of every response, whatever the format and whether or not lines are
	// written.
	Hooks Hooks
}

// Hooks are the events of a Log, for metrics: one per response, including those no proxy
// saw. A nil field costs a nil check. Hooks are called synchronously on the request's
// goroutine, after the handler returned, never under a lock; they must be safe for concurrent
// use and must not block.
type Hooks struct {
	// RequestDone is called once per request, after the handler chain returned, with the
	// request as the Log received it.
	RequestDone func(r *http.Request, e Event)
}

// JoinHooks returns hooks that call those of every hs, in order, skipping nil fields.
func JoinHooks(hs ...Hooks) Hooks {
	var done []func(*http.Request, Event)
	for _, h := range hs {
		if h.RequestDone != nil {
			done = append(done, h.RequestDone)
		}
	}
	switch len(done) {
	case 0:
		return Hooks{}
	case 1:
		return Hooks{RequestDone: done[0]}
	}
	return Hooks{RequestDone: func(r *http.Request, e Event) {
		for _, f := range done {
			f(r, e)
		}
	}}
}

// Event describes one response. The method, host, path, protocol, user agent and referer are
// the request's own: r.Method, r.Host, r.URL.Path, r.Proto, r.UserAgent(), r.Referer().
type Event struct {
	// Start is when the Log received the request.
	Start time.Time
	// Client is the client's address: the peer's, or, from a peer in TrustedProxies, the
	// one its forwarding fields name.
	Client netip.Addr
	// Status is the status of the response: 200 when the handler wrote a body, or nothing,
	// without a status. A handler that panicked is 500 when it had written nothing (499 for
	// http.ErrAbortHandler, which handlers use when the client left), and what it had sent
	// otherwise; Aborted says the client's connection was cut. A hijacked connection that
	// was written no status, a WebSocket's, is 101.
	Status int
	// Bytes is the number of response body bytes written through the ResponseWriter. For a
	// hijacked connection it is every byte written to the connection until the handler
	// returned, the head a handler writes itself (a WebSocket's 101) included: what NGINX
	// logs as bytes_sent for such a connection.
	Bytes int64
	// Duration is the time from receiving the request to the handler's return.
	Duration time.Duration
	// Route is the name of the route the request matched, as recorded with
	// sluice.RecordRoute by a router inside the Log (package proxy/route's Router does), or "".
	Route string
	// Hijacked reports whether the handler took over the connection.
	Hijacked bool
	// Aborted reports whether the handler panicked, which aborts the client's connection.
	Aborted bool
}

// Log is the edge access log: the middleware that wraps a whole handler chain so that every
// response gets one line and one event. Make it with New; it is safe for concurrent use.
type Log struct {
	opts Options
	mu   sync.Mutex // mu serialises writes to opts.Writer
}

// New returns a Log, or an error naming the option that is wrong.
func New(opts Options) (*Log, error) {
	switch opts.Format {
	case JSON:
	case Common, Combined:
		if opts.Writer == nil {
			return nil, fmt.Errorf("accesslog: Writer is required for Format %s", opts.Format)
		}
	default:
		return nil, fmt.Errorf("accesslog: Format must be JSON, Common or Combined, got %d", opts.Format)
	}
	return &Log{opts: opts}, nil
}

// String returns "json", "common" or "combined".
func (f Format) String() string {
	switch f {
	case JSON:
		return "json"
	case Common:
		return "common"
	case Combined:
		return "combined"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Handler returns next wrapped so that every response it writes is logged and reported. The
// ResponseWriter next gets hides nothing of the server's: it implements http.Flusher,
// http.Hijacker and io.ReaderFrom by delegating to the server's writer (Hijack and Flush
// through http.ResponseController, which returns http.ErrNotSupported where the server's
// writer cannot), and Unwrap, so http.ResponseController reaches everything else (deadlines,
// full duplex). Streams flush as they did, WebSockets hijack, HTTP/2 works, and large bodies
// keep the server's sendfile or splice.
func (l *Log) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := writers.Get().(*writer)
		rw.ResponseWriter = w
		start := time.Now()
		defer func() {
			v := recover()
			if v != nil {
				rw.aborted = true
				if !rw.wrote {
					rw.status = http.StatusInternalServerError
					if v == http.ErrAbortHandler {
						rw.status = statusClientClosed
					}
				}
			}
			l.done(r, rw, start)
			*rw = writer{}
			writers.Put(rw)
			if v != nil {
				panic(v) // for the server, which aborts the connection
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// statusClientClosed is NGINX's status for a request whose client went away.
const statusClientClosed = 499

var writers = sync.Pool{New: func() any { return new(writer) }}

func (l *Log) done(r *http.Request, rw *writer, start time.Time) {
	status := rw.status
	switch {
	case status != 0:
	case rw.hijacked:
		status = http.StatusSwitchingProtocols
	default:
		status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	e := Event{
		Start:    start,
		Client:   sluice.ClientIP(r, l.opts.TrustedProxies),
		Status:   status,
		Bytes:    rw.bytes + rw.conn.sent(),
		Duration: time.Since(start),
		Route:    rw.route,
		Hijacked: rw.hijacked,
		Aborted:  rw.aborted,
	}
	if f := l.opts.Hooks.RequestDone; f != nil {
		f(r, e)
	}
	switch {
	case l.opts.Format == JSON && l.opts.Logger != nil:
		l.logJSON(r, &e)
	case l.opts.Format != JSON:
		l.writeCLF(r, &e)
	}
}

func (l *Log) logJSON(r *http.Request, e *Event) {
	ctx := r.Context()
	if !l.opts.Logger.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := [...]slog.Attr{
		slog.Time("start", e.Start),
		slog.String("client", e.Client.String()),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", e.Status),
		slog.Int64("bytes", e.Bytes),
		slog.Duration("duration", e.Duration),
		slog.String("user_agent", r.UserAgent()),
		slog.String("referer", r.Referer()),
		slog.String("route", e.Route),
	}
	l.opts.Logger.LogAttrs(ctx, slog.LevelInfo, "access", attrs[:]...)
}

// lines pool the buffers Common and Combined lines are built in.
var lines = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// writeCLF writes e in the Common or Combined Log Format. The fields a client chooses (the
// request line, referer, user agent) are escaped as NGINX escapes them: '"', '\' and bytes
// outside printable ASCII as \xHH, so that no client can forge a line or a field.
func (l *Log) writeCLF(r *http.Request, e *Event) {
	bp := lines.Get().(*[]byte)
	b := (*bp)[:0]
	if e.Client.IsValid() {
		b = e.Client.AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " - - ["...)
	b = e.Start.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] \""...)
	b = appendEscaped(b, r.Method)
	b = append(b, ' ')
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	b = appendEscaped(b, target)
	b = append(b, ' ')
	b = appendEscaped(b, r.Proto)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	if e.Bytes == 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendInt(b, e.Bytes, 10)
	}
	if l.opts.Format == Combined {
		b = append(b, " \""...)
		b = appendEscaped(b, r.Referer())
		b = append(b, "\" \""...)
		b = appendEscaped(b, r.UserAgent())
		b = append(b, '"')
	}
	b = append(b, '\n')
	l.mu.Lock()
	l.opts.Writer.Write(b)
	l.mu.Unlock()
	if cap(b) <= 4<<10 {
		*bp = b
		lines.Put(bp)
	}
}

func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}

// writer is the ResponseWriter the wrapped handler gets: it counts what passes and delegates
// everything else.
type writer struct {
	http.ResponseWriter
	status   int   // the final status written, 0 until then
	bytes    int64 // body bytes written
	wrote    bool  // the final head was written (or a body byte, or a flush)
	hijacked bool
	aborted  bool
	route    string
	conn     *countedConn // the hijacked connection, or nil
}

var (
	_ http.Flusher         = (*writer)(nil)
	_ http.Hijacker        = (*writer)(nil)
	_ io.ReaderFrom        = (*writer)(nil)
	_ sluice.RouteRecorder = (*writer)(nil)
)

func (w *writer) WriteHeader(code int) {
	if !w.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		// 1xx heads before the final one are not the response's status.
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(p []byte) (int, error) {
	w.wroteImplicit()
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// WriteString writes s with the server's WriteString when it has one, as io.WriteString
// would without the log in between: no copy of s.
func (w *writer) WriteString(s string) (int, error) {
	w.wroteImplicit()
	n, err := io.WriteString(w.ResponseWriter, s)
	w.bytes += int64(n)
	return n, err
}

// wroteImplicit records the 200 net/http sends when a body is written without a status.
func (w *writer) wroteImplicit() {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
}

// ReadFrom copies from src with the server's own ReadFrom, which may splice or sendfile, or
// with Write when the server's writer has none.
func (w *writer) ReadFrom(src io.Reader) (int64, error) {
	w.wroteImplicit()
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writeOnly{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
}

// writeOnly hides a writer's ReadFrom from io.Copy, which would otherwise call it back.
type writeOnly struct{ io.Writer }

// Flush sends what is buffered to the client, through http.ResponseController so that a
// writer further in that implements only FlushError is reached too.
func (w *writer) Flush() {
	w.wroteImplicit()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack takes over the connection, through http.ResponseController: over HTTP/2, where
// there is no connection to take, it returns an error wrapping http.ErrNotSupported.
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	w.hijacked = true
	w.conn = &countedConn{Conn: c}
	if brw != nil && brw.Writer != nil {
		// The server's writer into the connection is empty after Hijack (net/http's is new);
		// if it is not, its bytes are counted as they go out, and the writer then writes
		// through the count.
		if n := brw.Writer.Buffered(); n > 0 {
			if err := brw.Writer.Flush(); err != nil {
				return c, brw, err
			}
			w.conn.n.Add(int64(n))
		}
		brw.Writer.Reset(w.conn)
	}
	return w.conn, brw, nil
}

// countedConn is a hijacked connection that counts the bytes written to it. It keeps the
// methods of the connection that copying and closing use (ReadFrom, so a copy into it may
// still splice; WriteTo; CloseWrite and CloseRead; SyscallConn), and NetConn returns the
// connection itself, as tls.Conn's does. The count lives in the conn, not in the pooled
// writer, since a handler may keep writing after it returns.
type countedConn struct {
	net.Conn
	n atomic.Int64
}

// sent returns the bytes written to c; 0 for a nil c.
func (c *countedConn) sent() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// ReadFrom copies src into the connection with its own ReadFrom (splice, for TCP), counting.
func (c *countedConn) ReadFrom(src io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writeOnly{c.Conn}, src)
	}
	c.n.Add(n)
	return n, err
}

// WriteTo copies from the connection into w with the connection's own WriteTo, if it has one.
func (c *countedConn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, readOnly{c.Conn})
}

// readOnly hides a reader's WriteTo from io.Copy, which would otherwise call it back.
type readOnly struct{ io.Reader }

// CloseWrite shuts down the writing side of the connection, if it can be (TCP, Unix).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("accesslog: %T cannot close its writing side", c.Conn)
}

// CloseRead shuts down the reading side of the connection, if it can be (TCP, Unix).
func (c *countedConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("accesslog: %T cannot close its reading side", c.Conn)
}

// SyscallConn returns the connection's raw conn, if it has one.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, fmt.Errorf("accesslog: %T has no raw connection", c.Conn)
}

// NetConn returns the hijacked connection itself, without the count.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// Unwrap returns the server's writer, for http.ResponseController.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RecordRoute records the name of the route the request matched (sluice.RecordRoute).
func (w *writer) RecordRoute(name string) { w.route = name }
