package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

// echo answers with what it received, so tests can look at the forwarded request.
func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "must not reach the client")
		w.Header().Set("Keep-Alive", "timeout=5")
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s host=%s body=%s\n", name, r.Method, r.URL.RequestURI(), r.Host, body)
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded",
			"Connection", "X-Secret", "Keep-Alive", "Te", "Proxy-Authorization", "Upgrade", "X-Kept"} {
			if vv, ok := r.Header[k]; ok {
				fmt.Fprintf(w, "%s: %s\n", k, strings.Join(vv, " | "))
			}
		}
	})
}

func TestForwardHTTP1(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			c := newCluster()
			c.backend(t, "10.0.0.1:8080", echo("a"))
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:8080"), DialContext: c.dial}
			srv := front(t, p)

			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("hello")
			}
			req, err := http.NewRequest(method, srv.URL+"/a/b%2Fc?q=1&r=%20", body)
			require.NoError(t, err)
			req.Host = "shop.example"
			req.Header.Set("Connection", "X-Secret, keep-alive")
			req.Header.Set("X-Secret", "hop-by-hop by Connection")
			req.Header.Set("Keep-Alive", "timeout=5")
			req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
			req.Header.Set("Te", "trailers, deflate")
			req.Header.Set("X-Kept", "end-to-end")
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			req.Header.Set("Forwarded", "for=6.6.6.6")
			res, err := srv.Client().Do(req)
			require.NoError(t, err)
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			s := string(got)

			assert.Equal(t, http.StatusOK, res.StatusCode)
			assert.Equal(t, "a", res.Header.Get("X-Backend"))
			assert.Empty(t, res.Header.Get("X-Hop"), "a field the response's Connection names must be removed")
			assert.Empty(t, res.Header.Get("Keep-Alive"), "Keep-Alive is hop-by-hop")
			wantBody := ""
			if method == http.MethodPost {
				wantBody = "hello"
			}
			assert.Contains(t, s, "a "+method+" /a/b%2Fc?q=1&r=%20 host=shop.example body="+wantBody+"\n",
				"path, escaped slash, query and Host must pass unchanged")
			assert.Contains(t, s, "X-Forwarded-For: 127.0.0.1\n", "an untrusted client's X-Forwarded-For is replaced")
			assert.Contains(t, s, "X-Forwarded-Host: shop.example\n")
			assert.Contains(t, s, "X-Forwarded-Proto: http\n")
			assert.Contains(t, s, "Forwarded: for=127.0.0.1;host=shop.example;proto=http\n")
			assert.Contains(t, s, "Te: trailers\n", "TE: trailers survives, other codings do not")
			assert.Contains(t, s, "X-Kept: end-to-end\n")
			for _, k := range []string{"X-Secret", "Keep-Alive", "Proxy-Authorization", "Connection:", "Upgrade"} {
				assert.NotContains(t, s, k, "hop-by-hop field must not be forwarded")
			}
		})
	}
}

func TestForwardedHeaders(t *testing.T) {
	trusted, err := sluice.ParseTrustedProxies("127.0.0.0/8")
	require.NoError(t, err)
	other, err := sluice.ParseTrustedProxies("10.0.0.0/8")
	require.NoError(t, err)
	tests := []struct {
		name    string
		trusted *sluice.TrustedProxies
		tls     bool
		in      http.Header
		want    map[string]string
	}{
		{"no prior fields", nil, false, http.Header{},
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
				"X-Forwarded-Host": "app.example", "Forwarded": "for=127.0.0.1;host=app.example;proto=http"}},
		{"untrusted peer: replaced", other, false, http.Header{
			"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"evil"},
			"Forwarded": {"for=1.2.3.4"}},
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
				"X-Forwarded-Host": "app.example", "Forwarded": "for=127.0.0.1;host=app.example;proto=http"}},
		{"trusted peer: appended and kept", trusted, false, http.Header{
			"X-Forwarded-For": {"1.2.3.4, 10.0.0.1", "10.0.0.2"}, "X-Forwarded-Proto": {"https"},
			"X-Forwarded-Host": {"public.example"}, "Forwarded": {`for=1.2.3.4;proto=https`, `for="[2001:db8::1]"`}},
			map[string]string{"X-Forwarded-For": "1.2.3.4, 10.0.0.1, 10.0.0.2, 127.0.0.1",
				"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example",
				"Forwarded": `for=1.2.3.4;proto=https, for="[2001:db8::1]", for=127.0.0.1;host=app.example;proto=http`}},
		{"tls", nil, true, http.Header{},
			map[string]string{"X-Forwarded-Proto": "https", "Forwarded": "for=127.0.0.1;host=app.example;proto=https"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster()
			var got http.Header
			c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
			}))
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, TrustedProxies: tt.trusted}
			var srv *httptest.Server
			if tt.tls {
				srv = httptest.NewTLSServer(p)
			} else {
				srv = httptest.NewServer(p)
			}
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Host = "app.example"
			for k, vv := range tt.in {
				req.Header[k] = vv
			}
			res, err := srv.Client().Do(req)
			require.NoError(t, err)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)
			for k, v := range tt.want {
				assert.Equal(t, v, strings.Join(got.Values(k), ", "), k)
			}
		})
	}
}

func TestForwardedIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		// Without IPv6 loopback the behaviour is still checked by the fuzz target.
		t.Log("no IPv6 loopback:", err)
		return
	}
	c := newCluster()
	var got http.Header
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: p}}
	srv.Start()
	defer srv.Close()
	res, err := http.Get(srv.URL + "/")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, "::1", got.Get("X-Forwarded-For"))
	assert.True(t, strings.HasPrefix(got.Get("Forwarded"), `for="[::1]";host="[::1]:`),
		"an IPv6 node is bracketed and quoted, a host with a colon quoted: %s", got.Get("Forwarded"))
}

func TestNoEndpoint(t *testing.T) {
	var logs logbuf.Buffer
	p := &proxy.Proxy{Picker: newPicker(), Logger: logs.Logger()}
	srv := front(t, p)
	res, body := get(t, srv.Client(), srv.URL)
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	assert.Equal(t, "1", res.Header.Get("Retry-After"))
	assert.Equal(t, "Service Unavailable\n", body)
	lines := logs.Lines(t)
	require.Len(t, lines, 1)
	assert.EqualValues(t, 503, lines[0]["status"])
	assert.EqualValues(t, 0, lines[0]["tries"])
}

func TestNilPicker(t *testing.T) {
	srv := front(t, &proxy.Proxy{})
	res, _ := get(t, srv.Client(), srv.URL)
	assert.Equal(t, http.StatusInternalServerError, res.StatusCode, "a missing Picker is a clear 500, not a panic")
}

func TestErrorHandler(t *testing.T) {
	var got error
	p := &proxy.Proxy{Picker: newPicker("10.9.9.9:1"), DialContext: newCluster().dial,
		Retry: proxy.Retry{MaxTries: 1},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(599)
		}}
	srv := front(t, p)
	res, _ := get(t, srv.Client(), srv.URL)
	assert.Equal(t, 599, res.StatusCode)
	var pe *proxy.Error
	require.ErrorAs(t, got, &pe)
	assert.Equal(t, http.StatusBadGateway, pe.Status)
	assert.Equal(t, sluice.ConnectFailure, pe.Failure)
	assert.Equal(t, "10.9.9.9:1", pe.Endpoint)
	assert.Equal(t, 1, pe.Tries)
}

// A GET keeps working while one of three endpoints refuses connections: every request that
// lands on it is retried elsewhere, and the balancer hears about each refused try.
func TestGETSurvivesRefusingEndpoint(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", echo("a"))
	c.backend(t, "10.0.0.3:80", echo("c"))
	// 10.0.0.2 is not in the cluster: connections to it are refused.
	pk := newPicker("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	var observed atomic.Int64
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Retry: proxy.Retry{Backoff: -1},
		Observer: sluice.ObserverFunc(func(ep sluice.Endpoint, o sluice.Outcome) { observed.Add(1) })}
	srv := front(t, p)
	for i := 0; i < 30; i++ {
		for _, method := range []string{"GET", "HEAD"} {
			req, _ := http.NewRequest(method, srv.URL+"/x", nil)
			res, err := srv.Client().Do(req)
			require.NoError(t, err)
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode, "request %d (%s)", i, method)
		}
	}
	refused := 0
	for _, d := range pk.dones() {
		if d.Addr == "10.0.0.2:80" {
			refused++
			assert.Equal(t, sluice.ConnectFailure, d.Outcome.Failure)
		} else {
			assert.Equal(t, sluice.Outcome{Status: 200}, sluice.Outcome{Status: d.Outcome.Status, Failure: d.Outcome.Failure})
		}
	}
	// The picker's counter advances once per try, so the first try of every second request
	// lands on the refusing endpoint and its retry on the next one.
	assert.Equal(t, 30, refused, "every second request first tries the refusing endpoint")
	assert.EqualValues(t, len(pk.dones()), observed.Load(), "Observer sees every try Done sees")
	assert.EqualValues(t, pk.picks.Load(), len(pk.dones()), "Done is called exactly once per pick")
}

// A POST whose connection breaks after it was sent is not sent again, even with healthy
// endpoints left; a POST whose dial was refused is sent to the next endpoint.
func TestPOSTNeverSentTwice(t *testing.T) {
	c := newCluster()
	var received atomic.Int64
	breaker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		received.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // reset after the request arrived: the upstream may have acted on it
		}
	})
	c.backend(t, "10.0.0.1:80", breaker)
	c.backend(t, "10.0.0.2:80", breaker)
	c.backend(t, "10.0.0.3:80", breaker)
	pk := newPicker("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Retry: proxy.Retry{Backoff: -1}}
	srv := front(t, p)

	for _, body := range []string{"", "order=1", strings.Repeat("x", 100<<10)} {
		received.Store(0)
		res, err := srv.Client().Post(srv.URL+"/orders", "text/plain", strings.NewReader(body))
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusBadGateway, res.StatusCode)
		assert.EqualValues(t, 1, received.Load(), "a POST must reach the upstreams once (body %d bytes)", len(body))
	}

	// The same handler under PUT (idempotent, small body) is retried on every endpoint.
	received.Store(0)
	req, _ := http.NewRequest("PUT", srv.URL+"/doc", strings.NewReader("v=1"))
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusBadGateway, res.StatusCode)
	assert.EqualValues(t, 3, received.Load(), "an idempotent PUT is retried up to MaxTries")
}

func TestPOSTRetriedWhenRefused(t *testing.T) {
	c := newCluster()
	var received atomic.Int64
	c.backend(t, "10.0.0.2:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		io.Copy(w, r.Body)
	}))
	pk := newPicker("10.0.0.1:80", "10.0.0.2:80") // .1 refuses
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Retry: proxy.Retry{Backoff: -1}}
	srv := front(t, p)
	for i := 0; i < 4; i++ {
		res, err := srv.Client().Post(srv.URL, "text/plain", strings.NewReader("payload-"+fmt.Sprint(i)))
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode)
		assert.Equal(t, "payload-"+fmt.Sprint(i), string(b), "the body reaches the second endpoint whole")
	}
	assert.EqualValues(t, 4, received.Load())
}

func TestRetryOnStatus(t *testing.T) {
	c := newCluster()
	var hits503 atomic.Int64
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits503.Add(1)
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	c.backend(t, "10.0.0.2:80", echo("b"))
	pk := newPicker("10.0.0.1:80", "10.0.0.2:80")
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial,
		Retry: proxy.Retry{Backoff: -1, RetryOn: []int{http.StatusServiceUnavailable}}}
	srv := front(t, p)

	pk.next.Store(0)
	res, body := get(t, srv.Client(), srv.URL)
	assert.Equal(t, http.StatusOK, res.StatusCode, "an idempotent GET is retried after a 503 in RetryOn")
	assert.True(t, strings.HasPrefix(body, "b GET"))

	pk.next.Store(0)
	res, err := srv.Client().Post(srv.URL, "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode, "a POST's 503 is forwarded, not retried")

	// MaxTries: 1 forwards the first answer.
	p2 := &proxy.Proxy{Picker: newPicker("10.0.0.1:80", "10.0.0.2:80"), DialContext: c.dial, Retry: proxy.Retry{MaxTries: 1}}
	srv2 := front(t, p2)
	res, body = get(t, srv2.Client(), srv2.URL)
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	assert.Equal(t, "overloaded\n", body)
}

// TestTimeouts counts tries with the picker's Done calls, which the proxy makes before it
// answers: a count of the upstream's handler runs could lag behind the answer under load.
// The timeouts are long enough for a dial on a loaded machine: a try whose connection is not
// open by then is a connect failure, not the timeout under test.
func TestTimeouts(t *testing.T) {
	const timeout = 250 * time.Millisecond
	c := newCluster()
	release := make(chan struct{})
	stuck := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// net/http notices a closed connection only once the request body was read.
		io.Copy(io.Discard, r.Body)
		select { // answers only when the proxy gives up, or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	})
	c.backend(t, "10.0.0.1:80", stuck)
	c.backend(t, "10.0.0.2:80", stuck)
	// Cleanups run last-registered first: release the handlers before the servers close.
	t.Cleanup(func() { close(release) })
	t.Run("per try", func(t *testing.T) {
		pk := newPicker("10.0.0.1:80", "10.0.0.2:80")
		p := &proxy.Proxy{Picker: pk, DialContext: c.dial,
			Retry: proxy.Retry{PerTryTimeout: timeout, MaxTries: 2, Backoff: -1}}
		srv := front(t, p)
		start := time.Now()
		res, _ := get(t, srv.Client(), srv.URL)
		assert.Equal(t, http.StatusGatewayTimeout, res.StatusCode)
		d := pk.dones()
		assert.Len(t, d, 2, "a timed-out GET is retried once")
		assert.Less(t, time.Since(start), 5*time.Second)
		for _, d := range d {
			assert.Equal(t, sluice.Timeout, d.Outcome.Failure)
		}
		// POST is not retried after a timeout: it may have been processed.
		res, err := srv.Client().Post(srv.URL, "text/plain", strings.NewReader("x"))
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusGatewayTimeout, res.StatusCode)
		assert.Len(t, pk.dones(), len(d)+1, "a timed-out POST is not retried")
	})
	t.Run("overall", func(t *testing.T) {
		pk := newPicker("10.0.0.1:80", "10.0.0.2:80")
		p := &proxy.Proxy{Picker: pk, DialContext: c.dial,
			Retry: proxy.Retry{Timeout: timeout, Backoff: -1}}
		srv := front(t, p)
		res, _ := get(t, srv.Client(), srv.URL)
		assert.Equal(t, http.StatusGatewayTimeout, res.StatusCode)
		assert.Len(t, pk.dones(), 1, "the overall timeout leaves no time for another try")
	})
	t.Run("body streams past the timeout", func(t *testing.T) {
		c.backend(t, "10.0.0.3:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The proxy started its timeouts before this request arrived, so they have both
			// passed once timeout has passed here.
			late := time.After(timeout)
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			// A slow stream: the next event comes after both timeouts have passed.
			select {
			case <-late:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, "data: late\n\n")
		}))
		p := &proxy.Proxy{Picker: newPicker("10.0.0.3:80"), DialContext: c.dial,
			Retry: proxy.Retry{Timeout: timeout, PerTryTimeout: timeout}}
		srv := front(t, p)
		res, body := get(t, srv.Client(), srv.URL)
		assert.Equal(t, http.StatusOK, res.StatusCode)
		assert.Equal(t, "data: late\n\n", body, "timeouts bound the wait for headers, not a stream")
	})
}

// A client that goes away cancels the upstream request; the try is reported as Canceled and
// the access log says 499.
func TestClientGone(t *testing.T) {
	for _, method := range []string{"GET", "POST"} { // the lean client and net/http's Transport
		t.Run(method, func(t *testing.T) {
			c := newCluster()
			arrived := make(chan struct{})
			upstreamCanceled := make(chan struct{})
			c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// net/http notices a closed connection only once the request body was read.
				io.Copy(io.Discard, r.Body)
				close(arrived)
				<-r.Context().Done()
				close(upstreamCanceled)
			}))
			pk := newPicker("10.0.0.1:80")
			var logs logbuf.Buffer
			served := make(chan struct{})
			p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Logger: logs.Logger()}
			srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(served) // the proxy aborts the connection of a client that left
				p.ServeHTTP(w, r)
			}))
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-arrived
				cancel()
			}()
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader("x")
			}
			req, _ := http.NewRequestWithContext(ctx, method, srv.URL, body)
			_, err := srv.Client().Do(req)
			require.Error(t, err)
			select {
			case <-upstreamCanceled:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream request was not canceled")
			}
			<-served
			d := pk.dones()
			require.Len(t, d, 1)
			assert.Equal(t, sluice.Canceled, d[0].Outcome.Failure, "a client leaving is not the endpoint's fault")
			lines := logs.Lines(t)
			require.Len(t, lines, 1)
			assert.EqualValues(t, 499, lines[0]["status"])
			assert.Equal(t, "canceled", lines[0]["failure"])
		})
	}
}

func TestAccessLogAndMetrics(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", echo("a"))
	var logs logbuf.Buffer
	var m metrics
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Logger: logs.Logger(), Hooks: m.hooks()}
	srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.ServeHTTP(w, r.WithContext(proxy.WithRoute(r.Context(), "shop")))
	}))
	res, body := get(t, srv.Client(), srv.URL+"/cart?x=1")
	require.Equal(t, 200, res.StatusCode)
	lines := logs.Lines(t)
	require.Len(t, lines, 1)
	l := lines[0]
	assert.Equal(t, "proxy", l["msg"])
	assert.Equal(t, "GET", l["method"])
	assert.Equal(t, "/cart", l["path"])
	assert.Equal(t, "shop", l["route"])
	assert.Equal(t, "10.0.0.1:80", l["endpoint"])
	assert.EqualValues(t, 200, l["status"])
	assert.EqualValues(t, len(body), l["bytes"])
	assert.EqualValues(t, 1, l["tries"])
	assert.Equal(t, "127.0.0.1", l["client"])
	assert.Contains(t, l, "duration")

	m.mu.Lock()
	defer m.mu.Unlock()
	require.Len(t, m.stats, 1)
	s := m.stats[0]
	assert.Equal(t, "shop", s.Route)
	assert.Equal(t, 200, s.Status)
	assert.EqualValues(t, len(body), s.Bytes)
	assert.Equal(t, 1, s.Tries)
	assert.Positive(t, s.Duration)
}

// metrics records the RequestEvents of a proxy.
type metrics struct {
	mu    sync.Mutex
	stats []proxy.RequestEvent
}

func (m *metrics) hooks() proxy.Hooks {
	return proxy.Hooks{RequestDone: func(_ *http.Request, e proxy.RequestEvent) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.stats = append(m.stats, e)
	}}
}

func TestRouteContext(t *testing.T) {
	ctx := proxy.WithRoute(context.Background(), "api")
	assert.Equal(t, "api", proxy.RouteFromContext(ctx))
	assert.Equal(t, "", proxy.RouteFromContext(context.Background()))
}

func TestStickyCookie(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", echo("a"))
	pk := newPicker("10.0.0.1:80")
	pk.cookie = &http.Cookie{Name: "sluice", Value: "ep1", Path: "/", HttpOnly: true}
	srv := front(t, &proxy.Proxy{Picker: pk, DialContext: c.dial})
	res, _ := get(t, srv.Client(), srv.URL)
	assert.Equal(t, []string{"sluice=ep1; Path=/; HttpOnly"}, res.Header.Values("Set-Cookie"))
}

func TestModifyResponse(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", echo("a"))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial,
		ModifyResponse: func(r *http.Response) error {
			if r.Request.URL.Path == "/fail" {
				return errors.New("refused by policy")
			}
			r.Header.Set("X-Modified", "yes")
			return nil
		}}
	srv := front(t, p)
	res, _ := get(t, srv.Client(), srv.URL+"/ok")
	assert.Equal(t, "yes", res.Header.Get("X-Modified"))
	res, _ = get(t, srv.Client(), srv.URL+"/fail")
	assert.Equal(t, http.StatusBadGateway, res.StatusCode)
}

// Headers set by handlers before the proxy survive next to the upstream's.
func TestResponseHeadersMerge(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Accept")
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	}))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Origin")
		w.Header().Set("Strict-Transport-Security", "max-age=60")
		p.ServeHTTP(w, r)
	}))
	res, body := get(t, srv.Client(), srv.URL)
	assert.Equal(t, "ok", body)
	assert.Equal(t, []string{"Origin", "Accept"}, res.Header.Values("Vary"))
	assert.Equal(t, "max-age=60", res.Header.Get("Strict-Transport-Security"))
	assert.EqualValues(t, 2, res.ContentLength)
}

// A large response streams through without being held: the client reads the first part
// while the backend has not written the rest.
func TestLargeResponseStreams(t *testing.T) {
	c := newCluster()
	release := make(chan struct{})
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(8<<20))
		chunk := bytes.Repeat([]byte("y"), 1<<20)
		w.Write(chunk)
		w.(http.Flusher).Flush()
		<-release
		for i := 1; i < 8; i++ {
			w.Write(chunk)
		}
	}))
	srv := front(t, &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial})
	res, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer res.Body.Close()
	first := make([]byte, 512<<10)
	_, err = io.ReadFull(res.Body, first)
	require.NoError(t, err, "the first half MiB arrives before the backend writes the rest")
	close(release)
	n, err := io.Copy(io.Discard, res.Body)
	require.NoError(t, err)
	assert.EqualValues(t, 8<<20-512<<10, n)
}

// An upstream that breaks off mid-body must not look like a complete response to the client.
func TestTruncatedUpstreamBodyAborts(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	}))
	pk := newPicker("10.0.0.1:80")
	srv := front(t, &proxy.Proxy{Picker: pk, DialContext: c.dial})
	// The server may not have flushed the head before the abort: then Get itself fails.
	res, err := srv.Client().Get(srv.URL)
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	assert.Error(t, err, "the client must see the response break, not a short success")
	d := pk.dones()
	require.Len(t, d, 1)
	assert.Equal(t, sluice.ConnectionFailure, d[0].Outcome.Failure)
}
