//lint:file-ignore SA1019 The tests need x/net/http2's client: it runs on a net.Conn the test
// dialled (and can close, or read the server's frames beside), and its errors say which
// RST_STREAM or GOAWAY code the server sent. net/http's ClientConn, which replaces it, dials
// its own connection and keeps those error types unexported.

package h2_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/sluiceproxy/sluice/h2"
	"github.com/sluiceproxy/sluice/internal/logbuf"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// The two front ends every differential scenario runs on: net/http's own HTTP/2 server, and
// h2 in front of the same http.Server settings.
const (
	stdlib = "net/http"
	ours   = "h2"
)

var fronts = []string{stdlib, ours}

// The two ways a client reaches a front end: cleartext HTTP/2 with prior knowledge, and TLS
// with ALPN "h2".
const (
	h2c     = "h2c"
	overTLS = "tls"
)

var modes = []string{h2c, overTLS}

// waitFor bounds every wait for something the server should do; a test that waits this long
// has failed.
const waitFor = 5 * time.Second

// probePath is answered by every test server before the test's handler, so that a client can
// ask whether a connection still carries streams.
const probePath = "/__probe"

// front is what both *http.Server and *h2.Server serve with.
type front interface {
	Serve(net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
}

var (
	_ front = (*http.Server)(nil)
	_ front = (*h2.Server)(nil)
)

// testServer is one front end serving on a loopback listener until its test ends.
type testServer struct {
	front     string
	mode      string
	s         front
	addr      string
	log       *logbuf.Buffer // srv.ErrorLog's output
	clientTLS *tls.Config    // nil for h2c

	done    chan struct{} // closed when Serve returned
	serveMu sync.Mutex
	err     error // Serve's result; serveMu protects it
}

// start serves srv through frontName (net/http's server itself, or h2.New(srv)) on
// 127.0.0.1 in mode until the test ends. It records srv's ErrorLog output and answers
// probePath itself.
//
// Both front ends get the same listener: a plain one for h2c, and a tls.NewListener whose
// config offers only "h2" in the TLS mode. net/http serves HTTP/2 on it once srv.Protocols
// allows it; h2 needs nothing of the kind.
func start(t *testing.T, frontName, mode string, srv *http.Server) *testServer {
	t.Helper()
	ts := &testServer{front: frontName, mode: mode, log: new(logbuf.Buffer), done: make(chan struct{})}
	if srv.ErrorLog == nil {
		srv.ErrorLog = log.New(ts.log, "", 0)
	}
	if h := srv.Handler; h != nil {
		srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == probePath {
				w.Header().Set("X-Probe", r.Header.Get("X-Probe"))
				io.WriteString(w, "probe")
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err, "listen")
	ts.addr = ln.Addr().String()
	if mode == overTLS {
		ca := testcert.NewCA(t)
		cert := ca.Server(t, "127.0.0.1")
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"h2"}})
		ts.clientTLS = &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}}
	}
	if frontName == ours {
		ts.s = h2.New(srv)
	} else {
		p := new(http.Protocols)
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = p
		ts.s = srv
	}
	go func() {
		err := ts.s.Serve(ln)
		ts.serveMu.Lock()
		ts.err = err
		ts.serveMu.Unlock()
		close(ts.done)
	}()
	t.Cleanup(func() {
		ts.s.Close()
		select {
		case <-ts.done:
		case <-time.After(waitFor):
			t.Errorf("%s: Serve did not return after Close", frontName)
		}
	})
	return ts
}

// serveErr waits for Serve to return and returns its error.
func (ts *testServer) serveErr(t *testing.T) error {
	t.Helper()
	select {
	case <-ts.done:
	case <-time.After(waitFor):
		t.Fatalf("%s: Serve did not return", ts.front)
	}
	ts.serveMu.Lock()
	defer ts.serveMu.Unlock()
	return ts.err
}

// url returns the server's base URL.
func (ts *testServer) url() string {
	if ts.mode == overTLS {
		return "https://" + ts.addr
	}
	return "http://" + ts.addr
}

// dial opens a connection to ts, handshaken with ALPN "h2" in the TLS mode, and closed when
// the test ends.
func (ts *testServer) dial(t *testing.T) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", ts.addr, waitFor)
	require.NoError(t, err, "dial %s", ts.front)
	t.Cleanup(func() { conn.Close() })
	if ts.clientTLS == nil {
		return conn
	}
	tc := tls.Client(conn, ts.clientTLS.Clone())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, tc.HandshakeContext(ctx), "TLS handshake with %s", ts.front)
	require.Equal(t, "h2", tc.ConnectionState().NegotiatedProtocol, "ALPN")
	return tc
}

// client is golang.org/x/net/http2's client on one connection to a test server.
type client struct {
	t    *testing.T
	ts   *testServer
	conn net.Conn
	cc   *http2.ClientConn
}

// clientOptions tunes a client; the zero value is x/net's defaults without compression.
type clientOptions struct {
	// window, when not zero, is the client's receive window per stream and per connection,
	// small enough that a large response needs many WINDOW_UPDATEs.
	window int32
}

// client opens a client connection to ts, closed when the test ends.
func (ts *testServer) client(t *testing.T) *client {
	return ts.clientWith(t, clientOptions{})
}

// clientWith is client with options.
func (ts *testServer) clientWith(t *testing.T, opts clientOptions) *client {
	t.Helper()
	t1 := &http.Transport{DisableCompression: true}
	if opts.window != 0 {
		t1.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: int(opts.window), MaxReceiveBufferPerConnection: int(opts.window)}
	}
	tr, err := http2.ConfigureTransports(t1)
	require.NoError(t, err)
	tr.AllowHTTP = true
	// One connection is all a test has: a request over the server's stream limit waits for
	// a free stream rather than fail.
	tr.StrictMaxConcurrentStreams = true
	conn := ts.dial(t)
	cc, err := tr.NewClientConn(conn)
	require.NoError(t, err, "start an HTTP/2 client connection to %s", ts.front)
	t.Cleanup(func() { cc.Close() })
	return &client{t: t, ts: ts, conn: conn, cc: cc}
}

// request builds a request to path on the client's server. body may be nil, a string, or an
// io.Reader (sent without a length).
func (c *client) request(method, path string, body any) *http.Request {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case io.Reader:
		r = struct{ io.Reader }{b} // hide the type, so that NewRequest leaves the length unknown
	default:
		c.t.Fatalf("request body of type %T", body)
	}
	req, err := http.NewRequest(method, c.ts.url()+path, r)
	require.NoError(c.t, err)
	return req
}

// response is what a client saw of one exchange.
type response struct {
	informational []string // each 1xx response, "code field: value..."
	status        int
	header        http.Header // without Date
	contentLength int64
	body          string
	trailer       http.Header
	err           error // the round trip or the body failed
}

// do sends req and reads the whole response. Addresses in the body and header values are
// replaced by CLIENT and SERVER, so that two servers' answers compare equal.
func (c *client) do(req *http.Request) *response {
	c.t.Helper()
	r := new(response)
	ctx, cancel := context.WithTimeout(req.Context(), waitFor)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			r.informational = append(r.informational, fmt.Sprintf("%d %s", code, headerString(http.Header(header))))
			return nil
		},
	})
	res, err := c.cc.RoundTrip(req.WithContext(ctx))
	if err != nil {
		r.err = err
		return r
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	r.status, r.contentLength, r.err = res.StatusCode, res.ContentLength, err
	r.header = res.Header.Clone()
	r.header.Del("Date")
	r.trailer = res.Trailer
	repl := c.addrs()
	r.body = repl.Replace(string(body))
	for _, vv := range r.header {
		for i, v := range vv {
			vv[i] = repl.Replace(v)
		}
	}
	return r
}

// addrs replaces the connection's two addresses by their roles.
func (c *client) addrs() *strings.Replacer {
	return strings.NewReplacer(c.conn.LocalAddr().String(), "CLIENT", c.ts.addr, "SERVER")
}

// get sends a GET for path and reads the response.
func (c *client) get(path string) *response {
	c.t.Helper()
	return c.do(c.request(http.MethodGet, path, nil))
}

// alive reports whether the connection still carries new streams: a probe request either
// gets its answer or fails.
func (c *client) alive() bool {
	c.t.Helper()
	r := c.get(probePath)
	return r.err == nil && r.body == "probe"
}

// String is the response with its fields sorted, so that two servers' responses compare
// equal when a client could not tell them apart.
func (r *response) String() string { return r.render(false) }

// render is String, leaving out the length when noLength is set: a server may or may not
// compute the length of a body it has to stream, and both are right.
func (r *response) render(noLength bool) string {
	var b strings.Builder
	for _, i := range r.informational {
		fmt.Fprintf(&b, "[informational] %s\n", i)
	}
	if r.status != 0 {
		h, n := r.header, r.contentLength
		if noLength {
			h = h.Clone()
			h.Del("Content-Length")
			n = -2
		}
		fmt.Fprintf(&b, "%d content-length=%d\n%s\n%s", r.status, n, headerString(h), abbrev(r.body))
	}
	if len(r.trailer) > 0 {
		fmt.Fprintf(&b, "\n[trailer] %s", headerString(r.trailer))
	}
	if r.err != nil {
		fmt.Fprintf(&b, "\n[error] %s", errKind(r.err))
	}
	return b.String()
}

// headerString is h one field a line, sorted by name.
func headerString(h http.Header) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(h)) {
		fmt.Fprintf(&b, "%s: %q\n", k, h[k])
	}
	return b.String()
}

// errKind names an error the same way for both servers: which stream or connection error
// the peer sent, else how the connection ended.
func errKind(err error) string {
	var se http2.StreamError
	var ga http2.GoAwayError
	switch {
	case errors.As(err, &se):
		return "stream error " + se.Code.String()
	case errors.As(err, &ga):
		return "GOAWAY " + ga.ErrCode.String()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case isTimeout(err):
		return "timeout"
	}
	return "connection error"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// abbrev shortens a long or binary body to its length, ends and checksum, to keep failures
// readable.
func abbrev(s string) string {
	if len(s) <= 4096 && utf8.ValidString(s) {
		return s
	}
	return fmt.Sprintf("%q...%q (%d bytes, crc32 %08x)", s[:40], s[len(s)-40:], len(s), crc32.ChecksumIEEE([]byte(s)))
}

// handle makes a handler constructor of a stateless handler.
func handle(f http.HandlerFunc) func(*testing.T) http.Handler {
	return func(*testing.T) http.Handler { return f }
}

// forModes runs f in a subtest for each way of reaching a server.
func forModes(t *testing.T, f func(t *testing.T, mode string)) {
	t.Helper()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { f(t, mode) })
	}
}

// differential sends the request that req builds to each front end in mode, each with a
// handler from mk and settings from cfg (nil for none), asserts that the client saw the same
// from both, and returns both responses for further checks.
func differential(t *testing.T, mode string, mk func(*testing.T) http.Handler, cfg func(*http.Server), req func(c *client) *http.Request) (std, h *response) {
	t.Helper()
	run := func(name string) *response {
		srv := &http.Server{Handler: mk(t)}
		if cfg != nil {
			cfg(srv)
		}
		c := start(t, name, mode, srv).client(t)
		return c.do(req(c))
	}
	std, h = run(stdlib), run(ours)
	assert.Equal(t, std.String(), h.String(), "what a client sees of h2 (right) differs from net/http (left)")
	return std, h
}

// get is a differential request for a GET of path.
func get(path string) func(c *client) *http.Request {
	return func(c *client) *http.Request { return c.request(http.MethodGet, path, nil) }
}

// deadline is the deadline of a socket operation that should not block.
func deadline() time.Time { return time.Now().Add(waitFor) }

// afterWait fires when a wait for the server has failed.
func afterWait() <-chan time.Time { return time.After(waitFor) }

// recv returns the next value from ch, failing t after waitFor.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(5 * time.Millisecond) // polling, not waiting for the behaviour itself
	}
}
