package proxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/logbuf"
	"github.com/sluiceproxy/sluice/proxy"
)

// recordingObserver keeps every outcome it is told.
type recordingObserver struct {
	mu  sync.Mutex
	got []sluice.Outcome
}

func (o *recordingObserver) Observe(_ sluice.Endpoint, oc sluice.Outcome) {
	o.mu.Lock()
	o.got = append(o.got, oc)
	o.mu.Unlock()
}

func (o *recordingObserver) outcomes() []sluice.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]sluice.Outcome(nil), o.got...)
}

// rawExchange writes raw to a new connection to addr, reads one response and reports
// whether the server then closed the connection. The whole exchange is bounded by 10s.
func rawExchange(t *testing.T, addr, raw string, afterWrite func(net.Conn)) (res *http.Response, body string, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, raw)
	require.NoError(t, err)
	if afterWrite != nil {
		afterWrite(conn)
	}
	br := bufio.NewReader(conn)
	res, err = http.ReadResponse(br, nil)
	require.NoError(t, err, "reading the proxy's response")
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err, "reading the proxy's response body")
	// A closed connection reads EOF at once; an open one hits the deadline.
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	closed = !(errors.As(err, &ne) && ne.Timeout())
	return res, string(b), closed
}

// countingBackend counts the requests it serves and reads their bodies to the end.
func countingBackend(n *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	})
}

// Defect 2: a body a middleware replaced with http.NoBody must not be announced with the
// client's old Content-Length, which makes the upstream wait for bytes that never come.
func TestEmptiedBodyFramingFollowsBody(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			c := newCluster()
			var seen atomic.Value
			c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				seen.Store(r.Header.Get("Content-Length") + "/" + string(b))
				io.WriteString(w, "ok")
			}))
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial,
				Retry: proxy.Retry{PerTryTimeout: 5 * time.Second}}
			empty := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				r.Body = http.NoBody // ContentLength and the Content-Length field left stale
				p.ServeHTTP(w, r)
			})
			srv := front(t, empty)
			req, err := http.NewRequest(method, srv.URL, strings.NewReader("hello"))
			require.NoError(t, err)
			res, err := srv.Client().Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			assert.Equal(t, http.StatusOK, res.StatusCode, "the upstream got a whole request: %s", body)
			if method == http.MethodGet {
				assert.Equal(t, "/", seen.Load(), "no Content-Length and no body upstream")
			} else {
				assert.Equal(t, "0/", seen.Load(), "Content-Length: 0 and no body upstream")
			}
		})
	}
}

// Defect 3: a client's broken body is the client's fault. It gets a 4xx; the endpoint is
// not charged (Done and the Observer get an outcome that does not count); nothing is retried;
// the access log says the client was at fault. A small body of known length is read whole
// before an endpoint is picked (readAhead), so its fault involves no endpoint at all.
func TestClientFaultsNotChargedToBackend(t *testing.T) {
	large := strconv.Itoa(100 << 10) // over what the proxy reads ahead: streamed to the try
	tests := []struct {
		name      string
		raw       string
		after     func(net.Conn)
		wrap      func(http.Handler) http.Handler
		status    int
		readAhead bool
	}{
		{
			name: "malformed chunked",
			raw: "PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5\r\nhello\r\nzz\r\nnot a chunk\r\n\r\n",
			status: http.StatusBadRequest,
		},
		{
			name:      "truncated",
			raw:       "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten.",
			after:     func(c net.Conn) { c.(*net.TCPConn).CloseWrite() },
			status:    http.StatusBadRequest,
			readAhead: true,
		},
		{
			name:   "truncated large",
			raw:    "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + large + "\r\n\r\nonly ten.",
			after:  func(c net.Conn) { c.(*net.TCPConn).CloseWrite() },
			status: http.StatusBadRequest,
		},
		{
			name: "over the limit",
			raw:  "PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + "40\r\n" + strings.Repeat("x", 64) + "\r\n0\r\n\r\n",
			wrap: func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					r.Body = http.MaxBytesReader(w, r.Body, 10)
					next.ServeHTTP(w, r)
				})
			},
			status: http.StatusRequestEntityTooLarge,
		},
		{
			name:      "too slow",
			raw:       "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten.",
			wrap:      readDeadline(200 * time.Millisecond),
			status:    http.StatusRequestTimeout,
			readAhead: true,
		},
		{
			name:   "too slow large",
			raw:    "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + large + "\r\n\r\nonly ten.",
			wrap:   readDeadline(200 * time.Millisecond),
			status: http.StatusRequestTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster()
			var served atomic.Int64
			c.backend(t, "10.0.0.1:80", countingBackend(&served))
			c.backend(t, "10.0.0.2:80", countingBackend(&served))
			pk := newPicker("10.0.0.1:80", "10.0.0.2:80")
			obs := &recordingObserver{}
			var log logbuf.Buffer
			p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Observer: obs, Logger: log.Logger(),
				Retry: proxy.Retry{Backoff: -1}}
			var h http.Handler = p
			if tt.wrap != nil {
				h = tt.wrap(p)
			}
			srv := front(t, h)

			res, body, closed := rawExchange(t, srv.Listener.Addr().String(), tt.raw, tt.after)
			assert.Equal(t, tt.status, res.StatusCode, "status for the client's fault: %s", body)
			assert.True(t, closed, "the client connection is closed after a broken body")

			dones := pk.dones()
			if tt.readAhead {
				assert.Empty(t, dones, "no endpoint is picked for a body that broke while read ahead")
				assert.Zero(t, served.Load(), "no upstream got any of a body that broke while read ahead")
			} else {
				require.Len(t, dones, 1, "one try, never retried")
				assert.Equal(t, sluice.ClientFailure, dones[0].Outcome.Failure, "Done is told it was the client")
				assert.False(t, dones[0].Outcome.Counts(), "the outcome does not count against the endpoint")
			}
			for _, o := range obs.outcomes() {
				assert.False(t, o.Counts(), "the Observer is not told anything against the endpoint: %+v", o)
			}
			lines := log.Lines(t)
			require.Len(t, lines, 1)
			assert.Equal(t, "client", lines[0]["failure"], "the access log blames the client")
			assert.EqualValues(t, tt.status, lines[0]["status"])
		})
	}
}

// readDeadline is a middleware that gives the request's body d to arrive, as the server's
// BodyReadTimeout does between reads.
func readDeadline(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
			next.ServeHTTP(w, r)
		})
	}
}

// Defect 4: a request the proxy could not complete is never answered with a success status.
// Here the server's whole-request ReadTimeout cuts a slow upload: the client gets 408 or a
// broken connection, never "200 OK".
func TestCutOffUploadNeverAnswered200(t *testing.T) {
	c := newCluster()
	var served atomic.Int64
	c.backend(t, "10.0.0.1:80", countingBackend(&served))
	var log logbuf.Buffer
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Logger: log.Logger()}
	srv := httptest.NewUnstartedServer(p)
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	require.NoError(t, err)
	// Trickle the body past the deadline; the proxy must answer within a few seconds.
	go func() {
		for i := 0; i < 40; i++ {
			if _, err := io.WriteString(conn, "x"); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		res.Body.Close()
		assert.NotEqual(t, http.StatusOK, res.StatusCode, "a cut-off upload must not be answered 200")
		assert.Equal(t, http.StatusRequestTimeout, res.StatusCode)
	}
	require.Eventually(t, func() bool { return len(log.Lines(t)) == 1 }, 5*time.Second, 10*time.Millisecond)
	line := log.Lines(t)[0]
	assert.NotEqual(t, float64(http.StatusOK), line["status"], "the log tells the truth")
}

// Defect 6: a request with both Content-Length and Transfer-Encoding is chunked, and the
// connection is closed after it (RFC 9112 §6.1), so bytes a front hop counted into the body
// can never be served as a request of their own.
func TestContentLengthWithTransferEncodingClosesConnection(t *testing.T) {
	c := newCluster()
	var mu sync.Mutex
	var paths []string
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
	}))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	srv := front(t, p)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	raw := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(5+len(smuggled)) +
		"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
	res, _, closed := rawExchange(t, srv.Listener.Addr().String(), raw, nil)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.True(t, closed, "the connection is closed after a CL+TE request")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"/a"}, paths, "the upstream never sees the smuggled request")
}

// An HTTP/1.0 request's Transfer-Encoding is dropped by net/http's server before any handler
// runs, so the proxy cannot see it; it closes every HTTP/1.0 connection after its response,
// which keeps a chunked body from being read as further requests even when the request had a
// Content-Length too (a body without one is refused, see TestRefusedRequests).
func TestHTTP10ConnectionClosed(t *testing.T) {
	c := newCluster()
	var served atomic.Int64
	c.backend(t, "10.0.0.1:80", countingBackend(&served))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	srv := front(t, p)
	chunked := "1f\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n"
	raw := "POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 4\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n" + chunked
	res, _, closed := rawExchange(t, srv.Listener.Addr().String(), raw, nil)
	assert.NotEqual(t, 0, res.StatusCode)
	assert.True(t, closed, "an HTTP/1.0 connection is closed after its response")
	assert.EqualValues(t, 1, served.Load(), "the upstream served one request")
}

// Defect 7: once a 1xx reached the client, the request is never retried: the client would see
// the informational responses of two tries, and the first try may have done its work.
func TestNoRetryAfterInformational(t *testing.T) {
	var served atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				served.Add(1)
				io.WriteString(conn, strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 3))
				conn.(*net.TCPConn).SetLinger(0) // then a reset: the response never comes
			}()
		}
	}()
	c := newCluster()
	c.add("10.0.0.1:80", ln.Addr().String())
	c.add("10.0.0.2:80", ln.Addr().String())
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80", "10.0.0.2:80"), DialContext: c.dial,
		Retry: proxy.Retry{Backoff: -1}}
	srv := front(t, p)
	raw := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, raw)
	br := bufio.NewReader(conn)
	var codes []int
	for {
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		codes = append(codes, res.StatusCode)
		io.Copy(io.Discard, res.Body)
		if res.StatusCode >= 200 {
			break
		}
	}
	assert.Equal(t, []int{103, 103, 103, http.StatusBadGateway}, codes, "the 1xx of one try, then the failure")
	assert.EqualValues(t, 1, served.Load(), "a GET is not retried once a 1xx reached the client")
}

// Defect 8: fields that must not be trailers (RFC 9110 §6.5.1) are dropped from the
// upstream's trailers; the others reach the client.
func TestForbiddenTrailersDropped(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum, Grpc-Status")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		h := w.Header()
		h.Set("X-Checksum", "abc")
		h.Set("Grpc-Status", "0")
		for _, k := range []string{"Content-Length", "Host", "Set-Cookie", "Authorization",
			"Content-Type", "Location", "Cache-Control", "Content-Encoding", "Www-Authenticate"} {
			h.Set(http.TrailerPrefix+k, "evil")
		}
	}))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	srv := front(t, p)
	res, body := get(t, srv.Client(), srv.URL)
	assert.Equal(t, "body", body)
	assert.Equal(t, "abc", res.Trailer.Get("X-Checksum"))
	assert.Equal(t, "0", res.Trailer.Get("Grpc-Status"))
	for k := range res.Trailer {
		switch k {
		case "X-Checksum", "Grpc-Status":
		default:
			t.Errorf("trailer %s reached the client", k)
		}
	}
	assert.Empty(t, res.Header.Values("Set-Cookie"), "no Set-Cookie from trailers")
}

// Defect 10: a panic in ModifyResponse releases the try (Done is called once), closes the
// upstream connection, answers 500 and is logged.
func TestPanicInModifyResponse(t *testing.T) {
	c := newCluster()
	var closedConns atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100<<10)) // larger than any read-ahead
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closedConns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	c.add("10.0.0.1:80", up.Listener.Addr().String())
	pk := newPicker("10.0.0.1:80")
	var log logbuf.Buffer
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Logger: log.Logger(),
		ModifyResponse: func(*http.Response) error { panic("hook bug") }}
	srv := front(t, p)
	res, _ := get(t, srv.Client(), srv.URL)
	assert.Equal(t, http.StatusInternalServerError, res.StatusCode)
	dones := pk.dones()
	require.Len(t, dones, 1, "Done called once")
	assert.Equal(t, sluice.InternalFailure, dones[0].Outcome.Failure)
	require.Eventually(t, func() bool { return closedConns.Load() == 1 }, 5*time.Second, 10*time.Millisecond,
		"the upstream connection is closed, not left to the garbage collector")
	var sawPanic, sawAccess bool
	for _, l := range log.Lines(t) {
		if l["msg"] == "proxy: panic" {
			sawPanic = true
			assert.Contains(t, l["panic"], "hook bug")
		}
		if l["msg"] == "proxy" {
			sawAccess = true
			assert.EqualValues(t, 500, l["status"])
			assert.Equal(t, "internal", l["failure"])
		}
	}
	assert.True(t, sawPanic, "the panic is logged")
	assert.True(t, sawAccess, "the request has its access-log line")
}

// A panic in a ResponseWriter wrapper once the response started aborts the client connection
// and still releases the try.
func TestPanicMidBodyAborts(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100<<10))
	}))
	pk := newPicker("10.0.0.1:80")
	var log logbuf.Buffer
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Logger: log.Logger()}
	srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.ServeHTTP(&panickyWriter{ResponseWriter: w}, r)
	}))
	res, err := srv.Client().Get(srv.URL)
	require.NoError(t, err, "the head went out before the panic")
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	assert.Error(t, err, "the client sees a broken body, not a clean short one")
	dones := pk.dones()
	require.Len(t, dones, 1)
	assert.Equal(t, sluice.InternalFailure, dones[0].Outcome.Failure)
	require.Eventually(t, func() bool { return len(log.Lines(t)) == 2 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, "proxy: panic", log.Lines(t)[0]["msg"])
}

// panickyWriter panics on its second Write.
type panickyWriter struct {
	http.ResponseWriter
	writes int
}

func (w *panickyWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes == 2 {
		panic("writer bug")
	}
	return w.ResponseWriter.Write(p)
}

func (w *panickyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status-based retries are opt-in: by default a 503 is forwarded as it is, since retrying it
// would multiply the load on an overloaded service.
func TestNoStatusRetriesByDefault(t *testing.T) {
	c := newCluster()
	var served atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	c.backend(t, "10.0.0.1:80", h)
	c.backend(t, "10.0.0.2:80", h)
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80", "10.0.0.2:80"), DialContext: c.dial}
	srv := front(t, p)
	res, _ := get(t, srv.Client(), srv.URL)
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	assert.EqualValues(t, 1, served.Load(), "a 503 is not retried unless RetryOn asks")
}

// Defect 5: an upstream body that stalls after its head ends with the client's connection
// aborted and a 504 in the log, on the lean client (GET) and on the Transport (POST) alike.
func TestStalledResponseBodyTimesOut(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			c := newCluster()
			release := make(chan struct{})
			c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "first part")
				w.(http.Flusher).Flush()
				select { // then nothing, until the test ends
				case <-release:
				case <-r.Context().Done():
				}
			}))
			t.Cleanup(func() { close(release) }) // runs before the backend's Close
			pk := newPicker("10.0.0.1:80")
			var log logbuf.Buffer
			p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Logger: log.Logger(),
				ResponseBodyTimeout: 200 * time.Millisecond}
			srv := front(t, p)
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("x")
			}
			req, err := http.NewRequest(method, srv.URL, body)
			require.NoError(t, err)
			client := &http.Client{Timeout: 10 * time.Second}
			start := time.Now()
			res, err := client.Do(req)
			if err == nil {
				// The head may have reached the client before the stall, or may still have
				// been in the server's buffer when the connection was aborted.
				_, err = io.ReadAll(res.Body)
				res.Body.Close()
			}
			assert.Error(t, err, "the client sees a broken response, never a clean one")
			assert.Less(t, time.Since(start), 5*time.Second, "the proxy ended it, not the client's timeout")
			lines := log.Lines(t)
			require.Len(t, lines, 1)
			assert.EqualValues(t, http.StatusGatewayTimeout, lines[0]["status"], "the log says 504")
			assert.Equal(t, "timeout", lines[0]["failure"])
			dones := pk.dones()
			require.Len(t, dones, 1)
			assert.Equal(t, sluice.Timeout, dones[0].Outcome.Failure, "the stall is the upstream's")
		})
	}
}

// The client's trailers reach the upstream, less the fields that must not be trailers: a
// client must not slip a Host, Authorization or Cookie past the proxy after the body.
func TestRequestTrailersFiltered(t *testing.T) {
	c := newCluster()
	got := make(chan http.Header, 1)
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Clone()
	}))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	srv := front(t, p)
	raw := "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
		"Trailer: X-Checksum, Host, Authorization, Cookie\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nHost: evil\r\nAuthorization: Bearer evil\r\nCookie: a=b\r\n\r\n"
	res, _, _ := rawExchange(t, srv.Listener.Addr().String(), raw, nil)
	require.Equal(t, http.StatusOK, res.StatusCode)
	tr := <-got
	assert.Equal(t, http.Header{"X-Checksum": {"abc"}}, tr, "only the allowed trailer reaches the upstream")
}

// Requests no upstream should see are refused: CONNECT, an authority-form target on another
// method, and an HTTP/1.0 body without Content-Length (its Transfer-Encoding, if any, was
// dropped unseen by net/http's server).
func TestRefusedRequests(t *testing.T) {
	c := newCluster()
	var served atomic.Int64
	c.backend(t, "10.0.0.1:80", countingBackend(&served))
	pk := newPicker("10.0.0.1:80")
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial}
	srv := front(t, p)
	for _, tt := range []struct {
		raw    string
		status int
	}{
		{"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", http.StatusNotImplemented},
		{"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest},
		{"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", http.StatusLengthRequired},
	} {
		res, _, closed := rawExchange(t, srv.Listener.Addr().String(), tt.raw, nil)
		assert.Equal(t, tt.status, res.StatusCode, "%q", tt.raw)
		assert.True(t, closed, "%q: the connection is closed", tt.raw)
	}
	assert.Zero(t, served.Load(), "the upstream saw none of them")
	assert.Zero(t, pk.picks.Load(), "no endpoint was picked")
}
