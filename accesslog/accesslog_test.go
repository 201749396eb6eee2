package accesslog_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/h2"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/route"
)

// events records a Log's events.
type events struct {
	mu sync.Mutex
	es []accesslog.Event
}

func (ev *events) hooks() accesslog.Hooks {
	return accesslog.Hooks{RequestDone: func(_ *http.Request, e accesslog.Event) {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		ev.es = append(ev.es, e)
	}}
}

func (ev *events) all() []accesslog.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]accesslog.Event(nil), ev.es...)
}

// lockedBuffer is a bytes.Buffer safe for a server's goroutines and the test's.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Every response of the chain gets a line with the fields an operator filters on: one the
// router answered itself (404), and one it routed, whose route the log names although the
// router matched it inside the log.
func TestJSONFields(t *testing.T) {
	var out lockedBuffer
	var ev events
	trusted, err := sluice.ParseTrustedProxies("127.0.0.0/8")
	require.NoError(t, err)
	l, err := accesslog.New(accesslog.Options{
		Logger:         slog.New(slog.NewJSONHandler(&out, nil)),
		TrustedProxies: trusted,
		Hooks:          ev.hooks(),
	})
	require.NoError(t, err)
	tab, err := route.New([]route.Route{{Name: "shop", Hosts: []string{"shop.test"},
		Backends: []route.Backend{{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "made")
		})}}}}, route.Options{})
	require.NoError(t, err)
	srv := httptest.NewServer(l.Handler(route.NewRouter(tab, route.RouterOptions{})))
	defer srv.Close()

	var sizes []float64 // the body lengths the client got
	for _, host := range []string{"shop.test", "other.test"} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/cart?x=1", strings.NewReader("b"))
		require.NoError(t, err)
		req.Host = host
		req.Header.Set("User-Agent", "tester/1.0")
		req.Header.Set("Referer", "https://ref.example/")
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		sizes = append(sizes, float64(n))
	}
	srv.Close() // every handler has returned

	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		got = append(got, m)
	}
	require.Len(t, got, 2)
	for i, want := range []struct {
		host, route string
		status      float64
	}{{"shop.test", "shop", 201}, {"other.test", "", 404}} {
		m := got[i]
		assert.Equal(t, "access", m["msg"])
		assert.Equal(t, "203.0.113.7", m["client"], "the client named by a trusted proxy")
		assert.Equal(t, "POST", m["method"])
		assert.Equal(t, want.host, m["host"])
		assert.Equal(t, "/cart", m["path"])
		assert.Equal(t, "HTTP/1.1", m["proto"])
		assert.Equal(t, want.status, m["status"])
		assert.Equal(t, sizes[i], m["bytes"])
		assert.Contains(t, m, "duration")
		assert.Contains(t, m, "start")
		assert.Equal(t, "tester/1.0", m["user_agent"])
		assert.Equal(t, "https://ref.example/", m["referer"])
		assert.Equal(t, want.route, m["route"])
	}
	es := ev.all()
	require.Len(t, es, 2)
	assert.Equal(t, "shop", es[0].Route)
	assert.Equal(t, 201, es[0].Status)
	assert.EqualValues(t, 4, es[0].Bytes)
	assert.Equal(t, "203.0.113.7", es[0].Client.String())
	assert.Positive(t, es[0].Duration)
	assert.False(t, es[0].Start.IsZero())
	assert.False(t, es[0].Hijacked)
	assert.False(t, es[0].Aborted)
	assert.Equal(t, 404, es[1].Status)
}

// The Common and Combined formats, with what a client chooses escaped so that it cannot forge
// a line or a field.
func TestCLF(t *testing.T) {
	for _, tt := range []struct {
		format accesslog.Format
		want   string
	}{
		{accesslog.Common, `192.0.2.1 - - [02/Jan/2026:15:04:05 +0000] "GET /a?q=\x22x\x22 HTTP/1.1" 200 5` + "\n"},
		{accesslog.Combined, `192.0.2.1 - - [02/Jan/2026:15:04:05 +0000] "GET /a?q=\x22x\x22 HTTP/1.1" 200 5 "-\x5C" "ua\x0A192.0.2.9 - - [forged]"` + "\n"},
	} {
		t.Run(tt.format.String(), func(t *testing.T) {
			var out bytes.Buffer
			var start time.Time
			l, err := accesslog.New(accesslog.Options{Format: tt.format, Writer: &out, Hooks: accesslog.Hooks{
				RequestDone: func(_ *http.Request, e accesslog.Event) { start = e.Start }}})
			require.NoError(t, err)
			h := l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
			req := httptest.NewRequest(http.MethodGet, "/a?q=%22x%22", nil)
			req.RequestURI = `/a?q="x"`
			req.RemoteAddr = "192.0.2.1:1234"
			req.Header.Set("Referer", `-\`)
			req.Header.Set("User-Agent", "ua\n192.0.2.9 - - [forged]")
			h.ServeHTTP(httptest.NewRecorder(), req)
			// The time is the request's: put the test's in its place.
			line := strings.Replace(out.String(), start.Format("02/Jan/2006:15:04:05 -0700"), "02/Jan/2026:15:04:05 +0000", 1)
			assert.Equal(t, tt.want, line)
		})
	}
	_, err := accesslog.New(accesslog.Options{Format: accesslog.Combined})
	assert.EqualError(t, err, "accesslog: Writer is required for Format combined")
	_, err = accesslog.New(accesslog.Options{Format: 9})
	assert.EqualError(t, err, "accesslog: Format must be JSON, Common or Combined, got 9")
}

// hookOnly returns a Log that writes no lines and records its events.
func hookOnly(t *testing.T) (*accesslog.Log, *events) {
	var ev events
	l, err := accesslog.New(accesslog.Options{Hooks: ev.hooks()})
	require.NoError(t, err)
	return l, &ev
}

// Status and bytes as the client saw them: the implicit 200 of a handler that writes nothing,
// Write and ReadFrom counted, 1xx heads not taken for the status.
func TestStatusAndBytes(t *testing.T) {
	for _, tt := range []struct {
		name   string
		h      http.HandlerFunc
		status int
		bytes  int64
	}{
		{"nothing written", func(http.ResponseWriter, *http.Request) {}, 200, 0},
		{"body without status", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "abc") }, 200, 3},
		{"status only", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }, 418, 0},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/b", http.StatusFound) }, 302, 0},
		{"1xx first", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, "ok")
		}, 202, 2},
		{"ReadFrom", func(w http.ResponseWriter, _ *http.Request) {
			n, err := io.Copy(w, io.LimitReader(zeros{}, 100000))
			if n != 100000 || err != nil {
				panic("copy failed")
			}
		}, 200, 100000},
		{"ReadFrom and Write", func(w http.ResponseWriter, _ *http.Request) {
			w.(io.ReaderFrom).ReadFrom(strings.NewReader("12345"))
			io.WriteString(w, "678")
		}, 200, 8},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, ev := hookOnly(t)
			srv := httptest.NewServer(l.Handler(tt.h))
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			res, err := c.Get(srv.URL)
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			srv.Close()
			es := ev.all()
			require.Len(t, es, 1)
			assert.Equal(t, res.StatusCode, es[0].Status, "what the client got")
			assert.Equal(t, tt.status, es[0].Status)
			assert.EqualValues(t, len(body), es[0].Bytes, "what the client got")
			if tt.name != "redirect" { // http.Redirect's body is its own business
				assert.Equal(t, tt.bytes, es[0].Bytes)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A panicking handler is logged as 500 (499 for http.ErrAbortHandler, the client gone), its
// panic goes on to the server, and one that had sent its head keeps that status.
func TestPanic(t *testing.T) {
	for _, tt := range []struct {
		name   string
		v      any
		wrote  bool
		status int
	}{
		{"nothing written", "boom", false, 500},
		{"abort", http.ErrAbortHandler, false, 499},
		{"after the head", "boom", true, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			var ev events
			l, err := accesslog.New(accesslog.Options{Format: accesslog.Common, Writer: &out, Hooks: ev.hooks()})
			require.NoError(t, err)
			h := l.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tt.wrote {
					io.WriteString(w, "part")
				}
				panic(tt.v)
			}))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			assert.PanicsWithValue(t, tt.v, func() { h.ServeHTTP(httptest.NewRecorder(), req) }, "the panic goes on")
			es := ev.all()
			require.Len(t, es, 1)
			assert.Equal(t, tt.status, es[0].Status)
			assert.True(t, es[0].Aborted)
			assert.Contains(t, out.String(), `HTTP/1.1" `+strconv.Itoa(tt.status), "the line is written")
		})
	}
}

// servers are the front ends the log must work behind: net/http's and sluice's, HTTP/1.1 and
// HTTP/2 (h2c with prior knowledge).
var servers = []struct {
	name  string
	h2    bool
	serve func(srv *http.Server, ln net.Listener) func()
}{
	{"net/http h1", false, func(srv *http.Server, ln net.Listener) func() { go srv.Serve(ln); return func() { srv.Close() } }},
	{"sluice h1", false, func(srv *http.Server, ln net.Listener) func() {
		f := h1.New(srv)
		go f.Serve(ln)
		return func() { f.Close() }
	}},
	{"net/http h2c", true, func(srv *http.Server, ln net.Listener) func() {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = p
		go srv.Serve(ln)
		return func() { srv.Close() }
	}},
	{"sluice h2", true, func(srv *http.Server, ln net.Listener) func() {
		f := h2.New(srv)
		go f.Serve(ln)
		return func() { f.Close() }
	}},
}

func start(t *testing.T, i int, h http.Handler) (url string, c *http.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	stop := servers[i].serve(&http.Server{Handler: h}, ln)
	t.Cleanup(stop)
	tr := &http.Transport{}
	if servers[i].h2 {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = p
	}
	t.Cleanup(tr.CloseIdleConnections)
	return "http://" + ln.Addr().String(), &http.Client{Transport: tr}
}

// Server-sent events reach the client as each is flushed: the handler waits for the client
// to have read one before it writes the next, which would deadlock if the log held a flush
// back. http.ResponseController reaches the server's writer through it too.
func TestStreamingFlushes(t *testing.T) {
	for i, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			l, ev := hookOnly(t)
			read := make(chan struct{})
			done := make(chan struct{})
			h := l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(done)
				rc := http.NewResponseController(w)
				if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
					http.Error(w, "deadline: "+err.Error(), 500)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				for range 3 {
					io.WriteString(w, "data: tick\n\n")
					w.(http.Flusher).Flush()
					select {
					case <-read:
					case <-time.After(10 * time.Second):
						return // the event never reached the client
					}
				}
			}))
			url, c := start(t, i, h)
			res, err := c.Get(url)
			require.NoError(t, err)
			defer res.Body.Close()
			require.Equal(t, 200, res.StatusCode)
			br := bufio.NewReader(res.Body)
			for n := range 3 {
				line, err := br.ReadString('\n')
				require.NoError(t, err, "event %d", n)
				assert.Equal(t, "data: tick\n", line)
				br.ReadString('\n')
				read <- struct{}{}
			}
			<-done
			io.Copy(io.Discard, br)
			res.Body.Close()
			require.Eventually(t, func() bool { return len(ev.all()) == 1 }, 10*time.Second, time.Millisecond)
			assert.EqualValues(t, 3*len("data: tick\n\n"), ev.all()[0].Bytes)
		})
	}
}

// A WebSocket upgrade through the proxy, inside the log, behind each HTTP/1.1 server: the
// proxy hijacks the connection through the log's writer, and the log records the 101 and
// counts the bytes the client was sent over the connection.
func TestWebSocketThroughProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString(line)
		brw.Flush()
	}))
	defer backend.Close()
	ep := sluice.Endpoint{Addr: backend.Listener.Addr().String()}
	for i, s := range servers[:2] {
		t.Run(s.name, func(t *testing.T) {
			l, ev := hookOnly(t)
			p := &proxy.Proxy{Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
				return sluice.PickResult{Endpoint: ep}, nil
			})}
			t.Cleanup(p.CloseIdleConnections)
			url, _ := start(t, i, l.Handler(p))
			conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			require.NoError(t, err)
			defer conn.Close()
			io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			br := bufio.NewReader(conn)
			var head strings.Builder // the 101 head as it came, to count its bytes
			for !strings.HasSuffix(head.String(), "\r\n\r\n") {
				line, err := br.ReadString('\n')
				require.NoError(t, err)
				head.WriteString(line)
			}
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(head.String())), nil)
			require.NoError(t, err)
			require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
			io.WriteString(conn, "hello\n")
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "hello\n", line, "the tunnel carries data")
			require.Eventually(t, func() bool { return len(ev.all()) == 1 }, 10*time.Second, time.Millisecond)
			e := ev.all()[0]
			assert.True(t, e.Hijacked)
			assert.Equal(t, http.StatusSwitchingProtocols, e.Status)
			assert.EqualValues(t, head.Len()+len("hello\n"), e.Bytes, "the head and the tunnel's bytes to the client")
		})
	}
}

// Over HTTP/2 there is no connection to hijack: the log says so as the server's writer does.
func TestHijackOverHTTP2(t *testing.T) {
	for i, s := range servers[2:] {
		t.Run(s.name, func(t *testing.T) {
			l, _ := hookOnly(t)
			url, c := start(t, i+2, l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _, err := w.(http.Hijacker).Hijack()
				io.WriteString(w, r.Proto+" "+err.Error())
			})))
			res, err := c.Get(url)
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			assert.Equal(t, "HTTP/2.0 feature not supported", string(body))
		})
	}
}

// The log costs what its event needs: with only a hook set, no allocation per request.
func TestAllocs(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/a", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header.Set("User-Agent", "test/1.0")
	rw := discardWriter{h: http.Header{}} // httptest.ResponseRecorder allocates per response
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
	measure := func(opts accesslog.Options) float64 {
		l, err := accesslog.New(opts)
		require.NoError(t, err)
		lh := l.Handler(h)
		return testing.AllocsPerRun(200, func() { lh.ServeHTTP(rw, req) })
	}
	hook := measure(accesslog.Options{Hooks: accesslog.Hooks{RequestDone: func(*http.Request, accesslog.Event) {}}})
	jsonLog := measure(accesslog.Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	clf := measure(accesslog.Options{Format: accesslog.Combined, Writer: io.Discard})
	t.Logf("allocations per request: hook only %.0f, JSON log %.0f, Combined log %.0f", hook, jsonLog, clf)
	assert.Zero(t, hook, "the middleware with a hook only")
	assert.Zero(t, clf, "a Combined line")
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// WriteString is what net/http's writers have: io.WriteString then copies nothing.
func (d discardWriter) WriteString(s string) (int, error) { return len(s), nil }

// The connection a handler hijacks through the log keeps what copying and closing use, and
// NetConn gives the server's own; a half-close reaches the client.
func TestHijackedConnKeepsMethods(t *testing.T) {
	l, ev := hookOnly(t)
	got := make(chan error, 1)
	url, _ := start(t, 0, l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		if _, ok := c.(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn); !ok {
			got <- fmt.Errorf("NetConn is %T", c.(interface{ NetConn() net.Conn }).NetConn())
			return
		}
		if _, ok := c.(syscall.Conn); !ok {
			got <- errors.New("no SyscallConn")
			return
		}
		brw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
		brw.Flush()
		c.(io.ReaderFrom).ReadFrom(strings.NewReader("body"))
		got <- c.(interface{ CloseWrite() error }).CloseWrite()
	})))
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	all, err := io.ReadAll(conn) // ends at the half-close
	require.NoError(t, err)
	require.NoError(t, <-got)
	assert.True(t, strings.HasSuffix(string(all), "\r\n\r\nbody"))
	require.Eventually(t, func() bool { return len(ev.all()) == 1 }, 10*time.Second, time.Millisecond)
	assert.EqualValues(t, len(all), ev.all()[0].Bytes)
}
