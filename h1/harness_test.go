package h1_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/internal/logbuf"
)

// The two front ends every differential scenario runs on: net/http's server, and h1 in front
// of the same http.Server settings.
const (
	stdlib = "net/http"
	ours   = "h1"
)

var fronts = []string{stdlib, ours}

// waitFor bounds every wait for something the server should do; a test that waits this long
// has failed.
const waitFor = 5 * time.Second

// probePath is answered by every test server before the test's handler, so that a client can
// ask whether a connection still carries requests.
const probePath = "/__probe"

// front is what both *http.Server and *h1.Server serve with.
type front interface {
	Serve(net.Listener) error
	ServeTLS(ln net.Listener, certFile, keyFile string) error
	Shutdown(ctx context.Context) error
	Close() error
}

// testServer is one front end serving on a loopback listener until its test ends.
type testServer struct {
	front  string
	srv    *http.Server
	s      front
	addr   string
	log    *logbuf.Buffer // srv.ErrorLog's output
	states *stateLog

	done    chan struct{} // closed when Serve returned
	serveMu sync.Mutex
	err     error // Serve's result; serveMu protects it
}

// start serves srv through front (net/http's server itself, or h1.New(srv)) on 127.0.0.1
// until the test ends. It records srv's ConnState events and ErrorLog output, and answers
// probePath itself.
func start(t *testing.T, frontName string, srv *http.Server) *testServer {
	return serve(t, frontName, srv, false)
}

// startTLS is start with ServeTLS: srv.TLSConfig must hold the certificate.
func startTLS(t *testing.T, frontName string, srv *http.Server) *testServer {
	return serve(t, frontName, srv, true)
}

func serve(t *testing.T, frontName string, srv *http.Server, useTLS bool) *testServer {
	t.Helper()
	ts := &testServer{front: frontName, srv: srv, log: new(logbuf.Buffer), states: new(stateLog), done: make(chan struct{})}
	if srv.ErrorLog == nil {
		srv.ErrorLog = log.New(ts.log, "", 0)
	}
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		ts.states.add(c, st)
		if next != nil {
			next(c, st)
		}
	}
	if h := srv.Handler; h != nil {
		srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == probePath {
				io.WriteString(w, "probe")
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err, "listen")
	ts.addr = ln.Addr().String()
	if frontName == ours {
		ts.s = h1.New(srv)
	} else {
		ts.s = srv
	}
	go func() {
		var err error
		if useTLS {
			err = ts.s.ServeTLS(ln, "", "")
		} else {
			err = ts.s.Serve(ln)
		}
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
func (ts *testServer) url() string { return "http://" + ts.addr }

// stateLog records ConnState events.
type stateLog struct {
	mu     sync.Mutex
	events []stateEvent // mu protects events
}

type stateEvent struct {
	conn  net.Conn
	state http.ConnState
}

func (l *stateLog) add(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	l.events = append(l.events, stateEvent{c, st})
	l.mu.Unlock()
}

// count returns how many events of state were recorded.
func (l *stateLog) count(st http.ConnState) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.state == st {
			n++
		}
	}
	return n
}

// byConn returns each connection's states in order, connections in the order of their
// first event.
func (l *stateLog) byConn() [][]http.ConnState {
	l.mu.Lock()
	defer l.mu.Unlock()
	var order []net.Conn
	m := make(map[net.Conn][]http.ConnState)
	for _, e := range l.events {
		if _, ok := m[e.conn]; !ok {
			order = append(order, e.conn)
		}
		m[e.conn] = append(m[e.conn], e.state)
	}
	out := make([][]http.ConnState, len(order))
	for i, c := range order {
		out[i] = m[c]
	}
	return out
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

// rawConn is a client connection that writes exact bytes and reads responses as they came.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	rec  *recorder
	br   *bufio.Reader
	used int // bytes of rec.buf that earlier responses took
}

// dial opens a raw client connection to ts, closed when the test ends.
func (ts *testServer) dial(t *testing.T) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", ts.addr)
	require.NoError(t, err, "dial %s", ts.front)
	t.Cleanup(func() { conn.Close() })
	return newRawConn(t, conn)
}

func newRawConn(t *testing.T, conn net.Conn) *rawConn {
	rec := &recorder{r: conn}
	return &rawConn{t: t, conn: conn, rec: rec, br: bufio.NewReader(rec)}
}

// recorder keeps every byte read through it.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

// send writes s.
func (c *rawConn) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(waitFor))
	_, err := io.WriteString(c.conn, s)
	require.NoError(c.t, err, "write the request")
}

// rawResponse is one response as the client read it.
type rawResponse struct {
	status  string   // the status line
	fields  []string // the head's field lines in the order sent
	body    string   // decoded
	trailer http.Header
	err     error // reading the body failed
	res     *http.Response
}

// read reads the next response to a request with method. A response that cannot be read
// fails the test.
func (c *rawConn) read(method string) *rawResponse {
	c.t.Helper()
	r, err := c.tryRead(method)
	require.NoError(c.t, err, "read the response to %s", method)
	return r
}

// tryRead reads the next response, or returns the error that stopped it.
func (c *rawConn) tryRead(method string) (*rawResponse, error) {
	c.conn.SetReadDeadline(time.Now().Add(waitFor))
	start := c.used
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return nil, err
	}
	body, berr := io.ReadAll(res.Body)
	c.used = c.rec.buf.Len() - c.br.Buffered()
	raw := c.rec.buf.Bytes()[start:c.used]
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	return &rawResponse{status: lines[0], fields: lines[1:], body: string(body), trailer: res.Trailer, err: berr, res: res}, nil
}

// header returns the values of the head's field name, as sent.
func (r *rawResponse) header(name string) []string {
	var vv []string
	for _, l := range r.fields {
		k, v, _ := strings.Cut(l, ":")
		if strings.EqualFold(k, name) {
			vv = append(vv, strings.TrimSpace(v))
		}
	}
	return vv
}

// String is the response with its field lines sorted by name and the Date's value elided, so
// that two servers' responses compare equal when a client could not tell them apart.
func (r *rawResponse) String() string {
	fields := slices.Clone(r.fields)
	for i, f := range fields {
		if k, _, _ := strings.Cut(f, ":"); strings.EqualFold(k, "Date") {
			fields[i] = "Date: (present)"
		}
	}
	slices.SortStableFunc(fields, func(a, b string) int {
		ka, _, _ := strings.Cut(a, ":")
		kb, _, _ := strings.Cut(b, ":")
		return strings.Compare(strings.ToLower(ka), strings.ToLower(kb))
	})
	var b strings.Builder
	b.WriteString(r.status + "\n")
	for _, f := range fields {
		b.WriteString(f + "\n")
	}
	b.WriteString("\n" + abbrev(r.body))
	if len(r.trailer) > 0 {
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range r.trailer {
				if !yield(k) {
					return
				}
			}
		})
		b.WriteString("\n[trailer]")
		for _, k := range keys {
			fmt.Fprintf(&b, "\n%s: %s", k, strings.Join(r.trailer[k], ", "))
		}
	}
	if r.err != nil {
		b.WriteString("\n[body error] " + r.err.Error())
	}
	return b.String()
}

// closed reports whether the server closed the connection: the client sends a probe request
// and sees either its answer (false) or the end of the connection (true).
func (c *rawConn) closed() bool {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c.conn, "GET "+probePath+" HTTP/1.1\r\nHost: probe\r\n\r\n"); err != nil {
		return true
	}
	r, err := c.tryRead(http.MethodGet)
	if err != nil {
		require.Falsef(c.t, isTimeout(err), "the probe got neither an answer nor the connection's end: %v", err)
		return true
	}
	require.Equal(c.t, "probe", r.body, "the probe's answer")
	return false
}

// eof waits for the server to close the connection without sending anything more, and
// reports whether it did within waitFor.
func (c *rawConn) eof() bool {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(waitFor))
	n, err := c.br.Read(make([]byte, 1))
	if n > 0 {
		c.t.Errorf("unexpected bytes from the server: %q", c.rec.buf.Bytes()[c.used:])
		return false
	}
	return err != nil && !isTimeout(err)
}

// abbrev shortens a long body to its length, ends and checksum, to keep failures readable.
func abbrev(s string) string {
	if len(s) <= 200 {
		return s
	}
	return fmt.Sprintf("%q...%q (%d bytes, crc32 %08x)", s[:40], s[len(s)-40:], len(s), crc32.ChecksumIEEE([]byte(s)))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// outcome is what a client saw of one exchange: the responses, and whether the connection
// ended after them.
type outcome struct {
	responses []*rawResponse
	readErr   error // the response that could not be read, if fewer came than asked
	closed    bool
}

func (o outcome) String() string {
	var b strings.Builder
	for i, r := range o.responses {
		fmt.Fprintf(&b, "--- response %d\n%s\n", i+1, r)
	}
	if o.readErr != nil {
		fmt.Fprintf(&b, "--- no further response: %v\n", errKind(o.readErr))
	}
	fmt.Fprintf(&b, "--- closed: %v\n", o.closed)
	return b.String()
}

// errKind names a read error the same way for both servers, whose errors differ only in
// which syscall saw the connection go.
func errKind(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case isTimeout(err):
		return "timeout"
	}
	return "connection error"
}

// exchange writes raw on a new connection to ts and reads one response per method, then
// probes whether the connection still carries requests.
func (ts *testServer) exchange(t *testing.T, raw string, methods ...string) outcome {
	t.Helper()
	c := ts.dial(t)
	// The write runs beside the reads: a server may answer, and close, before it read all
	// of a long request.
	written := make(chan error, 1)
	go func() {
		c.conn.SetWriteDeadline(time.Now().Add(waitFor))
		_, err := io.WriteString(c.conn, raw)
		written <- err
	}()
	o, probe := c.readResponses(methods)
	// The probe goes after the request; a write the server cut short is part of it closing.
	werr := recv(t, written, "the request to be written")
	if probe {
		o.closed = werr != nil || c.closed()
	}
	return o
}

// readResponses reads one response per method. It reports whether the connection's end is
// still to be probed: not when a response could not be read, nor after a body that ended
// with the connection.
func (c *rawConn) readResponses(methods []string) (o outcome, probe bool) {
	for _, m := range methods {
		r, err := c.tryRead(m)
		if err != nil {
			o.readErr = err
			o.closed = true
			return o, false
		}
		o.responses = append(o.responses, r)
		if r.err != nil {
			o.closed = true
			return o, false
		}
	}
	last := o.responses[len(o.responses)-1].res
	if last.ContentLength < 0 && len(last.TransferEncoding) == 0 && last.Request.Method != http.MethodHead &&
		last.StatusCode != http.StatusNoContent && last.StatusCode != http.StatusNotModified && last.StatusCode >= 200 {
		o.closed = true // the body ended with the connection
		return o, false
	}
	return o, true
}

// differential runs one exchange against each front end, with a handler from mk and
// settings from cfg (nil for none), asserts that the client saw the same from both, and
// returns both outcomes for further checks.
func differential(t *testing.T, mk func(t *testing.T) http.Handler, cfg func(*http.Server), raw string, methods ...string) (std, h outcome) {
	t.Helper()
	std, h, _ = differentialServers(t, mk, cfg, raw, methods...)
	return std, h
}

// differentialServers is differential returning the servers too, by front end name.
func differentialServers(t *testing.T, mk func(t *testing.T) http.Handler, cfg func(*http.Server), raw string, methods ...string) (std, h outcome, servers map[string]*testServer) {
	t.Helper()
	servers = make(map[string]*testServer)
	run := func(name string) outcome {
		srv := &http.Server{Handler: mk(t)}
		if cfg != nil {
			cfg(srv)
		}
		ts := start(t, name, srv)
		servers[name] = ts
		return ts.exchange(t, raw, methods...)
	}
	std, h = run(stdlib), run(ours)
	want, got := std.String(), h.String()
	if strings.Contains(strings.SplitN(raw, "\n", 2)[0], " HTTP/1.0") {
		want, got = normalize10(want, got)
	}
	assert.Equal(t, want, got, "what a client sees of h1 (right) differs from net/http (left)")
	return std, h, servers
}

// normalize10 removes the two differences of h1's answers to HTTP/1.0 requests, both
// deliberate and both what NGINX sends too: the status line says HTTP/1.1 (RFC 9110 §6.2:
// the highest version the server conforms to, where net/http says HTTP/1.0), and a
// response that ends the connection says Connection: close (net/http says nothing, which
// for HTTP/1.0 means the same).
func normalize10(std, h string) (string, string) {
	std = strings.ReplaceAll(std, "\nHTTP/1.0 ", "\nHTTP/1.1 ")
	h = strings.ReplaceAll(h, "\nConnection: close\n", "\n")
	return std, h
}

// get is a one-line HTTP/1.1 request with a Host.
func get(target string, fields ...string) string {
	return request("GET", target, "", fields...)
}

// request builds an HTTP/1.1 request head (and body) with a Host field first.
func request(method, target, body string, fields ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: test.example\r\n", method, target)
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return b.String()
}
