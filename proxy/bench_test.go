package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/benchcpu"
	"github.com/sluiceproxy/sluice/proxy"
)

// BenchmarkProxy compares a sluice Proxy with net/http/httputil.ReverseProxy, each set up
// the way a user would set it up, in front of the same httptest backend in the same run:
// keep-alive upstream connections, 32 requests in flight, responses of 10 B, 1 KiB and
// 10 KiB, a 1 KiB POST, and h2c upstreams. The backend runs in the same process and costs
// both the same; scripts/bench-process.sh measures whole processes instead.
//
//	go test -run=NONE -bench=BenchmarkProxy -benchtime=1s -count=3 ./proxy
func BenchmarkProxy(b *testing.B) {
	payloads := map[string][]byte{}
	for _, n := range []int{10, 1 << 10, 10 << 10} {
		payloads["/"+strconv.Itoa(n)] = bytes.Repeat([]byte("x"), n)
	}
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(payloads[r.URL.Path])
	}))
	backend.EnableHTTP2 = true
	backend.Config.Protocols = proxy.ServerProtocols() // HTTP/1.1 and h2c
	backend.Start()
	defer backend.Close()
	backendURL, _ := url.Parse(backend.URL)

	for _, upstream := range []struct {
		name   string
		proto  proxy.Protocol
		bodies []string // the cases: "GET /size" or "POST /size"
	}{
		{"h1", proxy.HTTP1, []string{"GET /10", "GET /1024", "GET /10240", "POST /1024"}},
		{"h2c", proxy.H2C, []string{"GET /1024", "POST /1024"}},
	} {
		proxies := []struct {
			name string
			h    http.Handler
		}{
			{"sluice", newSluice(b, backendURL.Host, upstream.proto)},
			{"httputil", newReverseProxy(backendURL, upstream.proto)},
		}
		for _, c := range upstream.bodies {
			method, path, _ := strings.Cut(c, " ")
			for _, px := range proxies {
				name := fmt.Sprintf("%s-%s/%s/%s", method, sizeName(path), upstream.name, px.name)
				b.Run(name, func(b *testing.B) {
					benchServe(b, px.h, method, path, len(payloads[path]))
				})
			}
		}
		for _, px := range proxies {
			if c, ok := px.h.(interface{ CloseIdleConnections() }); ok {
				c.CloseIdleConnections()
			}
		}
	}
}

// sizeName turns "/1024" into "1KiB".
func sizeName(path string) string {
	n, _ := strconv.Atoi(path[1:])
	if n >= 1<<10 && n%(1<<10) == 0 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

func newSluice(b *testing.B, addr string, proto proxy.Protocol) *proxy.Proxy {
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	if err != nil {
		b.Fatal(err)
	}
	bal.Update([]sluice.Endpoint{{Addr: addr}})
	return &proxy.Proxy{Picker: bal, Protocol: proto}
}

// reverseProxy is httputil.ReverseProxy as its documentation recommends setting it up, with
// a transport as large as sluice's default so that neither proxy waits on connections.
type reverseProxy struct {
	httputil.ReverseProxy
	t *http.Transport
}

func (rp *reverseProxy) CloseIdleConnections() { rp.t.CloseIdleConnections() }

func newReverseProxy(target *url.URL, proto proxy.Protocol) *reverseProxy {
	t := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	if proto == proxy.H2C {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	rp := &reverseProxy{t: t}
	rp.Rewrite = func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.SetXForwarded()
	}
	rp.Transport = t
	return rp
}

// benchServe calls h.ServeHTTP from b.RunParallel's goroutines, each with its own request
// and response writer reused across iterations, so that what is measured is the proxy and
// its upstream exchange, not an HTTP client and a front server. Besides ns/op it reports
// cpu-ns/op, the process's CPU time per request, which is steadier than wall time on a shared
// machine.
func benchServe(b *testing.B, h http.Handler, method, path string, size int) {
	payload := bytes.Repeat([]byte("y"), size) // a POST sends as much as it gets back
	serve := func(rw *discardWriter, req *http.Request, body *bytes.Reader) error {
		if method == http.MethodPost {
			body.Reset(payload)
			req.Body = io.NopCloser(body)
		}
		rw.reset()
		h.ServeHTTP(rw, req)
		if rw.status != http.StatusOK || rw.n != int64(len(payload)) {
			return fmt.Errorf("got status %d with %d bytes, want 200 with %d", rw.status, rw.n, len(payload))
		}
		return nil
	}
	newRequest := func() *http.Request {
		req := httptest.NewRequest(method, "http://shop.example"+path+"?q=1", nil)
		req.RemoteAddr = "192.0.2.1:51000"
		req.Header.Set("User-Agent", "bench/1.0")
		req.Header.Set("Accept", "*/*")
		if method == http.MethodPost {
			req.ContentLength = int64(len(payload))
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		return req
	}
	if err := serve(newDiscardWriter(), newRequest(), new(bytes.Reader)); err != nil { // warm the pools
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	stopCPU := benchcpu.Start(b)
	b.SetParallelism(16) // 32 requests in flight on two cores, as with wrk -c32
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rw, req, body := newDiscardWriter(), newRequest(), new(bytes.Reader)
		for pb.Next() {
			if err := serve(rw, req, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	stopCPU()
}

// discardWriter is an http.ResponseWriter that keeps the status and counts the body, reused
// from request to request.
type discardWriter struct {
	h      http.Header
	status int
	n      int64
}

func newDiscardWriter() *discardWriter { return &discardWriter{h: make(http.Header)} }

func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += int64(len(p))
	return len(p), nil
}

func (w *discardWriter) Flush() {}

// TestForwardAllocs pins the allocations of forwarding a bodiless GET, the bulk of a proxy's
// traffic, so that a change that adds some shows up. The backend is a minimal HTTP/1.1 server
// that allocates nothing per request, so that every allocation counted is the proxy's. The GET
// is sent with a context that is never canceled, and with one of its own that is canceled
// once the handler returns, as a server's is: the proxy must not pay for watching that one.
func TestForwardAllocs(t *testing.T) {
	addr := cannedBackend(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	bal.Update([]sluice.Endpoint{{Addr: addr}})
	target, _ := url.Parse("http://" + addr)

	const runs = 200
	get := func(h http.Handler, cancelable bool) float64 {
		rw := newDiscardWriter()
		req := httptest.NewRequest(http.MethodGet, "http://shop.example/a?q=1", nil)
		req.RemoteAddr = "192.0.2.1:51000"
		req.Header.Set("User-Agent", "test/1.0")
		// The requests and their contexts are made beforehand, so that only the handler's
		// allocations count: one for the check below, one for AllocsPerRun's warm-up.
		reqs := make([]*http.Request, runs+2)
		cancels := make([]context.CancelFunc, runs+2)
		for i := range reqs {
			reqs[i], cancels[i] = req, func() {}
			if cancelable {
				ctx, cancel := context.WithCancel(context.Background())
				reqs[i], cancels[i] = req.WithContext(ctx), cancel
			}
		}
		next := 0
		serve := func() {
			rw.reset()
			h.ServeHTTP(rw, reqs[next])
			cancels[next]()
			next++
		}
		serve()
		require.Equal(t, http.StatusOK, rw.status)
		require.EqualValues(t, 5, rw.n)
		return testing.AllocsPerRun(runs, serve)
	}
	p := &proxy.Proxy{Picker: bal}
	ours := get(p, false)
	oursCancelable := get(p, true)
	hooked := get(&proxy.Proxy{Picker: bal, Hooks: noopHooks}, true)
	std := get(newReverseProxy(target, proxy.HTTP1), false)
	t.Logf("allocations per GET: sluice %.0f (%.0f with a cancelable context, %.0f with hooks that do nothing), httputil.ReverseProxy %.0f",
		ours, oursCancelable, hooked, std)
	// The Forwarded value, and the response head's fields: one string, and one slice for
	// their values, which go to the client's header. The exchange and its header maps come
	// from a pool.
	pin := 3.0
	if raceEnabled {
		// The race detector's sync.Pool drops a quarter of what is put in it: the exchange
		// and its two header maps, 5 allocations, every fourth request on average.
		pin += 2
	}
	assert.LessOrEqual(t, ours, pin, "allocations per forwarded GET")
	assert.LessOrEqual(t, oursCancelable, pin, "a quick request does not hook its context")
	assert.LessOrEqual(t, hooked, pin, "calling hooks allocates nothing")
	assert.Less(t, ours*4, std, "sluice allocates under a quarter of what httputil does")
}

// noopHooks are hooks that do nothing, to measure what calling them costs the proxy.
var noopHooks = proxy.Hooks{
	RequestDone: func(*http.Request, proxy.RequestEvent) {},
	TryStart:    func(*http.Request, proxy.TryStartEvent) func(proxy.TryEvent) { return noopTryEnd },
}

func noopTryEnd(proxy.TryEvent) {}

// BenchmarkForward measures the proxy's own cost of forwarding over HTTP/1.1 (a GET, and
// POSTs of 1 KiB and 32 KiB): requests are served one at a time by a backend that allocates
// nothing (cannedBackend), so that the allocations and most of the CPU counted are the
// proxy's and its system calls', not a backend's or a front server's. BenchmarkProxy measures
// the same paths under load, beside httputil.ReverseProxy. GET-ctx gives each GET a context
// of its own, canceled when the handler returns, as a server does; making it costs the
// benchmark 3 allocations (the context, its cancel func and the request's copy). GET-hooks is
// GET-ctx with Hooks set that do nothing: the cost of calling them.
//
//	go test -run=NONE -bench=BenchmarkForward -benchtime=2s -count=3 ./proxy
func BenchmarkForward(b *testing.B) {
	addr := cannedBackend(b, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(b, err)
	bal.Update([]sluice.Endpoint{{Addr: addr}})
	plain := &proxy.Proxy{Picker: bal}
	defer plain.CloseIdleConnections()
	hooked := &proxy.Proxy{Picker: bal, Hooks: noopHooks}
	defer hooked.CloseIdleConnections()
	for _, c := range []struct {
		name   string
		method string
		size   int
		ctx    bool // a context of its own, canceled when the handler returns
		hooks  bool // hooks that do nothing
	}{
		{"GET", http.MethodGet, 0, false, false},
		{"GET-ctx", http.MethodGet, 0, true, false},
		{"GET-hooks", http.MethodGet, 0, true, true},
		{"POST", http.MethodPost, 1 << 10, false, false},
		{"POST-32KiB", http.MethodPost, 32 << 10, false, false},
	} {
		method, payload, withCtx := c.method, bytes.Repeat([]byte("y"), c.size), c.ctx
		p := plain
		if c.hooks {
			p = hooked
		}
		b.Run(c.name, func(b *testing.B) {
			rw := newDiscardWriter()
			req := httptest.NewRequest(method, "http://shop.example/a?q=1", nil)
			req.RemoteAddr = "192.0.2.1:51000"
			req.Header.Set("User-Agent", "bench/1.0")
			body := new(bytes.Reader)
			if method == http.MethodPost {
				req.ContentLength = int64(len(payload))
				req.Header.Set("Content-Type", "application/octet-stream")
			}
			serve := func() {
				if method == http.MethodPost {
					body.Reset(payload)
					req.Body = io.NopCloser(body)
				}
				rw.reset()
				if withCtx {
					ctx, cancel := context.WithCancel(context.Background())
					p.ServeHTTP(rw, req.WithContext(ctx))
					cancel()
				} else {
					p.ServeHTTP(rw, req)
				}
				if rw.status != http.StatusOK || rw.n != 5 {
					b.Fatalf("got status %d with %d bytes, want 200 with 5", rw.status, rw.n)
				}
			}
			serve()
			b.ReportAllocs()
			stopCPU := benchcpu.Start(b)
			for b.Loop() {
				serve()
			}
			stopCPU()
		})
	}
}

// cannedBackend serves response to every request it reads, on keep-alive connections, without
// allocating per request. It skips a request body framed by Content-Length.
func cannedBackend(t testing.TB, response string) string {
	res := []byte(response)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // mu guards conns
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReader(c)
				var length int
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if n, ok := contentLength(line); ok {
						length = n
					}
					if len(line) <= 2 { // the empty line that ends a request head
						if _, err := br.Discard(length); err != nil {
							return
						}
						length = 0
						if _, err := c.Write(res); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// contentLength parses a "Content-Length: n" line without allocating.
func contentLength(line []byte) (int, bool) {
	const name = "content-length:"
	if len(line) < len(name) || !strings.EqualFold(string(line[:len(name)]), name) {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(line[len(name):])))
	return n, err == nil
}
