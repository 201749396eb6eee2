package tcpproxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tcpproxy"
	"github.com/sluiceproxy/sluice/tls/certs"
)

func TestRouting(t *testing.T) {
	ca := testcert.NewCA(t)
	cert := ca.Server(t, "api.example.com", "*.example.com", "h2.test", "other.test").TLS
	api := tlsBackend(t, "api", cert)
	wild := tlsBackend(t, "wild", cert)
	h2 := tlsBackend(t, "h2", cert)
	plain := namedBackend(t, "default")
	rr := balancer.RoundRobin{}
	_, addr := start(t, []tcpproxy.Route{
		{Name: "api", ServerNames: []string{"api.example.com"}, Picker: pool(t, rr, api)},
		{Name: "wild", ServerNames: []string{"*.example.com"}, Picker: pool(t, rr, wild)},
		{Name: "h2", ServerNames: []string{"h2.test"}, ALPN: []string{"h2"}, Picker: pool(t, rr, h2)},
		{Name: "default", Picker: pool(t, rr, plain)},
	}, tcpproxy.Options{HelloTimeout: 500 * time.Millisecond})

	for _, tc := range []struct {
		name string
		alpn []string
		want string
	}{
		{"api.example.com", nil, "api api.example.com"},
		{"API.EXAMPLE.COM", []string{"http/1.1"}, "api API.EXAMPLE.COM http/1.1"},
		{"x.example.com", nil, "wild x.example.com"},
		{"h2.test", []string{"h2"}, "h2 h2.test h2"},
	} {
		_, got := tlsClient(t, addr, tc.name, tc.alpn, ca)
		assert.Equal(t, tc.want, got, "backend reached for %q %v", tc.name, tc.alpn)
	}

	// A name whose only route wants another protocol falls through to the default route.
	c := dial(t, addr)
	_, err := c.Write(clientHello(t, &tls.Config{ServerName: "h2.test", NextProtos: []string{"http/1.1"}}))
	require.NoError(t, err)
	line, err := readLine(c)
	require.NoError(t, err)
	assert.Equal(t, "default", line, "h2.test without h2 has no route of its own")

	// Plain text goes to the default route, and so does a client that says nothing (a
	// protocol whose server speaks first), once HelloTimeout has passed.
	c = dial(t, addr)
	io.WriteString(c, "hello\n")
	line, err = readLine(c)
	require.NoError(t, err)
	assert.Equal(t, "default", line, "plain text goes to the default route")
	line, err = readLine(c)
	require.NoError(t, err)
	assert.Equal(t, "hello", line, "and the bytes read to route it are replayed")

	c = dial(t, addr)
	line, err = readLine(c)
	require.NoError(t, err)
	assert.Equal(t, "default", line, "a silent client goes to the default route after HelloTimeout")
}

func TestNoRouteCloses(t *testing.T) {
	ca := testcert.NewCA(t)
	api := tlsBackend(t, "api", ca.Server(t, "api.example.com").TLS)
	p, addr := start(t, []tcpproxy.Route{
		{Name: "api", ServerNames: []string{"api.example.com"}, Picker: pool(t, balancer.RoundRobin{}, api)},
	}, tcpproxy.Options{})
	c := dial(t, addr)
	err := tls.Client(c, &tls.Config{ServerName: "other.example.com", RootCAs: ca.Pool}).Handshake()
	assert.Error(t, err, "no route: the connection is closed")
	c = dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	assert.True(t, closedByPeer(c), "plain text without a default route is closed")
	assert.Equal(t, uint64(2), p.Stats().NoRoute)
}

func TestConnectFailureTriesNext(t *testing.T) {
	live := echoBackend(t)
	dead1, dead2 := deadAddr(t), deadAddr(t)
	rec := newRecorder()
	// Round robin starts at a random offset: with two dead endpoints before or after the live
	// one, some connection tries a dead one first whatever the offset.
	picker := rec.wrap(pool(t, balancer.RoundRobin{}, dead1, dead2, live))
	p, addr := start(t, []tcpproxy.Route{{Name: "all", Picker: picker}}, tcpproxy.Options{Observer: rec})
	failures := 0
	for range 3 {
		c := dial(t, addr)
		io.WriteString(c, "ping")
		c.CloseWrite()
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		assert.Equal(t, "ping", string(got), "the connection reached the live endpoint")
		for {
			o := next(t, rec.done)
			ob := next(t, rec.observed)
			assert.Equal(t, o, ob, "Done and the Observer are told the same")
			if o.o.Failure == sluice.ConnectFailure {
				assert.NotEqual(t, live, o.addr)
				assert.False(t, o.o.GatewayFailure() == false, "a connect failure is a gateway failure")
				failures++
				continue
			}
			assert.Equal(t, live, o.addr)
			assert.Equal(t, sluice.NoFailure, o.o.Failure, "a clean end")
			assert.Positive(t, o.o.Latency, "Latency is the time to connect")
			assert.GreaterOrEqual(t, o.o.Duration, o.o.Latency, "Duration spans the connection")
			break
		}
	}
	assert.Positive(t, failures, "some connection met a dead endpoint first")
	assert.Equal(t, uint64(3), p.Stats().Forwarded)
}

func TestAllEndpointsDown(t *testing.T) {
	rec := newRecorder()
	dead := []string{deadAddr(t), deadAddr(t), deadAddr(t), deadAddr(t)}
	p, addr := start(t, []tcpproxy.Route{{Name: "all", Picker: rec.wrap(pool(t, balancer.RoundRobin{}, dead...))}},
		tcpproxy.Options{Observer: rec, ConnectTries: 3})
	c := dial(t, addr)
	assert.True(t, closedByPeer(c), "the client is closed when no endpoint answers")
	for range 3 {
		o := next(t, rec.observed)
		assert.Equal(t, sluice.ConnectFailure, o.o.Failure)
	}
	assert.Equal(t, uint64(1), p.Stats().NoEndpoint)
	select {
	case o := <-rec.observed:
		t.Errorf("a fourth try was made (ConnectTries is 3): %+v", o)
	default:
	}
}

func TestHalfClose(t *testing.T) {
	for _, mode := range []string{"splice", "copy"} {
		t.Run(mode, func(t *testing.T) {
			// The client finishes sending first: the backend reads to EOF, then answers.
			answerAfterEOF := listen(t)
			serveConns(t, answerAfterEOF, func(c net.Conn) {
				got, _ := io.ReadAll(c)
				fmt.Fprintf(c, "got %d bytes", len(got))
			})
			// The backend finishes sending first: it sends a banner, half-closes, and still
			// reads what the client sends, which it reports through recv.
			recv := make(chan string, 1)
			bannerFirst := listen(t)
			serveConns(t, bannerFirst, func(c net.Conn) {
				io.WriteString(c, "banner")
				c.(*net.TCPConn).CloseWrite()
				got, _ := io.ReadAll(c)
				recv <- string(got)
			})
			_, addr := start(t, []tcpproxy.Route{
				{Name: "a", ServerNames: []string{"a.test"}, Picker: pool(t, balancer.RoundRobin{}, answerAfterEOF.Addr().String())},
				{Name: "b", Picker: pool(t, balancer.RoundRobin{}, bannerFirst.Addr().String())},
			}, tcpproxy.Options{HelloTimeout: 200 * time.Millisecond}, mode)

			c := dial(t, addr)
			hello := clientHello(t, &tls.Config{ServerName: "a.test"})
			_, err := c.Write(hello)
			require.NoError(t, err)
			_, err = c.Write(bytes.Repeat([]byte("x"), 100000))
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			got, err := io.ReadAll(c)
			require.NoError(t, err)
			assert.Equal(t, fmt.Sprintf("got %d bytes", len(hello)+100000), string(got),
				"the answer sent after the client's FIN arrives whole")

			c = dial(t, addr) // silent: routed to b after HelloTimeout
			banner := make([]byte, 6)
			_, err = io.ReadFull(c, banner)
			require.NoError(t, err)
			assert.Equal(t, "banner", string(banner))
			n, err := c.Read(make([]byte, 1))
			assert.Equal(t, io.EOF, err, "the backend's FIN reaches the client (read %d)", n)
			_, err = io.WriteString(c, "still talking")
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			select {
			case s := <-recv:
				assert.Equal(t, "still talking", s, "the client's bytes after the backend's FIN arrive")
			case <-time.After(10 * time.Second):
				t.Fatal("the backend never saw the client's FIN")
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	rec := newRecorder()
	_, addr := start(t, []tcpproxy.Route{{Name: "echo", Picker: pool(t, balancer.RoundRobin{}, echoBackend(t))}},
		tcpproxy.Options{IdleTimeout: idle, Observer: rec})
	c := dial(t, addr)
	// Traffic in one direction at a time, spread over three idle periods, keeps it open.
	// Each exchange waits for its echo, so the pauses are the client's, not the test's.
	buf := make([]byte, 1)
	for range 9 {
		time.Sleep(idle / 3)
		_, err := c.Write([]byte("x"))
		require.NoError(t, err)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err, "an active connection must stay open")
	}
	last := time.Now()
	assert.True(t, closedByPeer(c), "an idle connection is closed")
	waited := time.Since(last)
	assert.GreaterOrEqual(t, waited, idle, "not before IdleTimeout")
	assert.Less(t, waited, idle+2*time.Second, "soon after IdleTimeout")
	o := next(t, rec.observed)
	assert.Equal(t, sluice.ClientFailure, o.o.Failure, "an idle close is not the endpoint's failure")
	assert.False(t, o.o.Counts(), "and does not count against it")
}

func TestOutcomes(t *testing.T) {
	// The backend resets the connection when it reads "reset", and closes cleanly on EOF.
	ln := listen(t)
	serveConns(t, ln, func(c net.Conn) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if string(buf) == "reset" {
			c.(*net.TCPConn).SetLinger(0)
			return
		}
		c.Write(buf)
		io.Copy(c, c)
	})
	rec := newRecorder()
	_, addr := start(t, []tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, ln.Addr().String())}},
		tcpproxy.Options{Observer: rec})

	c := dial(t, addr)
	io.WriteString(c, "reset")
	_, err := io.ReadAll(c)
	assert.Error(t, err, "the upstream's reset reaches the client as a reset")
	o := next(t, rec.observed)
	assert.Equal(t, sluice.ConnectionFailure, o.o.Failure, "an upstream reset mid-stream")
	assert.True(t, o.o.Counts())

	c = dial(t, addr)
	io.WriteString(c, "hello")
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	c.SetLinger(0)
	c.Close() // the client resets
	o = next(t, rec.observed)
	assert.Equal(t, sluice.Canceled, o.o.Failure, "a client reset is not the endpoint's fault")
	assert.False(t, o.o.Counts())
}

func TestLimits(t *testing.T) {
	a, b := echoBackend(t), echoBackend(t)
	p, addr := start(t, []tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, a, b)}},
		tcpproxy.Options{MaxConns: 3, MaxConnsPerEndpoint: 1})
	ping := func(c net.Conn) error {
		if _, err := io.WriteString(c, "p"); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	c1, c2 := dial(t, addr), dial(t, addr)
	require.NoError(t, ping(c1))
	require.NoError(t, ping(c2))
	assert.Equal(t, 1, p.EndpointConns(a), "one connection on each endpoint")
	assert.Equal(t, 1, p.EndpointConns(b), "one connection on each endpoint")

	c3 := dial(t, addr)
	assert.Error(t, ping(c3), "both endpoints at MaxConnsPerEndpoint: closed")
	st := p.Stats()
	assert.Equal(t, uint64(1), st.NoEndpoint)
	assert.Positive(t, st.EndpointFull, "the full endpoints were skipped")

	c4 := dial(t, addr) // the listener has c1, c2 and, until its close is seen, c3
	c5 := dial(t, addr)
	errs := 0
	for _, c := range []net.Conn{c4, c5} {
		if ping(c) != nil {
			errs++
		}
	}
	assert.Equal(t, 2, errs, "over MaxConns or over the endpoints' limits, both are closed")

	c1.Close()
	require.Eventually(t, func() bool { return p.EndpointConns(a)+p.EndpointConns(b) == 1 }, 10*time.Second, 5*time.Millisecond,
		"a closed connection frees its endpoint")
	c6 := dial(t, addr)
	assert.NoError(t, ping(c6), "a freed endpoint takes a new connection")
	assert.Positive(t, p.Stats().OverLimit+p.Stats().NoEndpoint, "the refusals are counted")
}

func TestMaxConnsClosesAtOnce(t *testing.T) {
	p, addr := start(t, []tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, echoBackend(t))}},
		tcpproxy.Options{MaxConns: 1})
	c1 := dial(t, addr)
	io.WriteString(c1, "x")
	_, err := io.ReadFull(c1, make([]byte, 1))
	require.NoError(t, err)
	c2 := dial(t, addr)
	assert.True(t, closedByPeer(c2), "over MaxConns: closed at once")
	assert.Equal(t, uint64(1), p.Stats().OverLimit)
	assert.Equal(t, int64(1), p.Stats().Active)
}

func TestLeastRequest(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	rec := newRecorder()
	_, addr := start(t, []tcpproxy.Route{{Name: "r", Picker: rec.wrap(pool(t, balancer.LeastRequest{}, a, b))}}, tcpproxy.Options{})
	open := func() (net.Conn, string) {
		c := dial(t, addr)
		name, err := readLine(c)
		require.NoError(t, err)
		return c, name
	}
	// With two endpoints, least-request sends a new connection to the one with fewer open:
	// four connections split two and two.
	on := map[string][]net.Conn{}
	for range 4 {
		c, name := open()
		on[name] = append(on[name], c)
	}
	require.Len(t, on["a"], 2, "four connections split evenly")
	// Closing a's two leaves a with none and b with two, if each close called Done: then the
	// next two connections both go to a. Without Done they would split one and one.
	for _, c := range on["a"] {
		c.Close()
		o := next(t, rec.done)
		assert.Equal(t, a, o.addr)
		assert.Equal(t, sluice.NoFailure, o.o.Failure)
	}
	for range 2 {
		_, name := open()
		assert.Equal(t, "a", name, "the endpoint with fewer connections open gets the new one")
	}
}

func TestShutdown(t *testing.T) {
	table, err := tcpproxy.NewTable([]tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, echoBackend(t))}})
	require.NoError(t, err)
	rec := newRecorder()
	p, err := tcpproxy.New(table, tcpproxy.Options{Observer: rec})
	require.NoError(t, err)
	ln := listen(t)
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	c := dial(t, addr)
	io.WriteString(c, "a")
	_, err = io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)

	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(context.Background()) }()
	require.ErrorIs(t, <-served, tcpproxy.ErrClosed, "Serve returns once Shutdown is called")
	_, err = net.Dial("tcp", addr)
	assert.Error(t, err, "no new connection is accepted while draining")

	io.WriteString(c, "b")
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	require.NoError(t, err, "an open connection keeps working while draining")
	assert.Equal(t, "b", string(b))
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a connection open", err)
	default:
	}
	c.CloseWrite()
	io.ReadAll(c)
	require.NoError(t, <-shut, "Shutdown returns once the last connection ends")
	assert.Equal(t, sluice.NoFailure, next(t, rec.observed).o.Failure)
	assert.ErrorIs(t, p.Serve(listen(t)), tcpproxy.ErrClosed)
}

func TestShutdownDeadline(t *testing.T) {
	rec := newRecorder()
	p, addr := start(t, []tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, echoBackend(t))}},
		tcpproxy.Options{Observer: rec})
	c := dial(t, addr)
	io.WriteString(c, "a")
	_, err := io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, p.Shutdown(ctx), context.DeadlineExceeded)
	assert.True(t, closedByPeer(c), "connections still open when ctx ends are closed")
	o := next(t, rec.observed)
	assert.Equal(t, sluice.Canceled, o.o.Failure, "closed by the drain: not the endpoint's failure")
	assert.Equal(t, int64(0), p.Stats().Active)
}

func TestTLSTermination(t *testing.T) {
	ca := testcert.NewCA(t)
	var ring certs.Keyring
	require.NoError(t, ring.Set("site", &ca.Server(t, "secure.example.com").TLS))
	cfg, err := certs.ServerConfig(&ring, certs.ServerOptions{NextProtos: []string{"echo"}})
	require.NoError(t, err)

	seen := make(chan string, 1) // what the backend read: plain text
	ln := listen(t)
	serveConns(t, ln, func(c net.Conn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		seen <- string(buf)
		c.Write(buf)
		io.Copy(c, c)
	})
	_, addr := start(t, []tcpproxy.Route{
		{Name: "secure", ServerNames: []string{"secure.example.com"}, TLS: cfg, Picker: pool(t, balancer.RoundRobin{}, ln.Addr().String())},
	}, tcpproxy.Options{})
	tc := tls.Client(dial(t, addr), &tls.Config{ServerName: "secure.example.com", RootCAs: ca.Pool, NextProtos: []string{"echo"}})
	require.NoError(t, tc.Handshake(), "the proxy's certificate is verified by the client")
	assert.Equal(t, "echo", tc.ConnectionState().NegotiatedProtocol)
	io.WriteString(tc, "hello")
	assert.Equal(t, "hello", <-seen, "the backend reads plain text")
	got := make([]byte, 5)
	_, err = io.ReadFull(tc, got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	require.NoError(t, tc.CloseWrite())

	// A client that never finishes its handshake is closed after HandshakeTimeout.
	_, addr = start(t, []tcpproxy.Route{{Name: "secure", TLS: cfg, Picker: pool(t, balancer.RoundRobin{}, ln.Addr().String())}},
		tcpproxy.Options{HandshakeTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	assert.True(t, closedByPeer(c), "a client that sends nothing is closed after the handshake timeout")
}

func TestListenerRoute(t *testing.T) {
	ca := testcert.NewCA(t)
	cert := ca.Server(t, "local.example.com", "pass.example.com").TLS
	pass := tlsBackend(t, "passthrough", cert)
	local := tcpproxy.NewListener(nil)
	_, addr := start(t, []tcpproxy.Route{
		{Name: "pass", ServerNames: []string{"pass.example.com"}, Picker: pool(t, balancer.RoundRobin{}, pass)},
		{Name: "local", ServerNames: []string{"*.example.com"}, Listener: local},
	}, tcpproxy.Options{})

	// The in-process HTTPS server terminates TLS itself, from the replayed ClientHello on.
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "local %s %s", r.TLS.ServerName, r.Proto)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(local, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		assert.ErrorIs(t, <-done, http.ErrServerClosed)
	})

	client := &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return net.Dial("tcp", addr) },
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool},
		ForceAttemptHTTP2: true,
	}}
	res, err := client.Get("https://local.example.com/")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "local local.example.com HTTP/2.0", string(body), "served in process, over HTTP/2")

	_, greeting := tlsClient(t, addr, "pass.example.com", nil, ca)
	assert.Equal(t, "passthrough pass.example.com", greeting, "other names still pass through")
}

func TestListenerClosed(t *testing.T) {
	local := tcpproxy.NewListener(nil)
	local.Close()
	_, err := local.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	_, addr := start(t, []tcpproxy.Route{{Name: "local", Listener: local}}, tcpproxy.Options{})
	c := dial(t, addr)
	io.WriteString(c, "x")
	assert.True(t, closedByPeer(c), "a route to a closed Listener closes its connections")
}

func TestLargeTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 256 MiB")
	}
	const size = 64 << 20
	for _, mode := range []string{"splice", "copy"} {
		t.Run(mode, func(t *testing.T) {
			// The backend sends size random bytes, hashing them, while it reads and hashes what
			// it gets; the client does the same the other way.
			upSum, downSum := make(chan [32]byte, 1), make(chan [32]byte, 1)
			ln := listen(t)
			serveConns(t, ln, func(c net.Conn) {
				h := sha256.New()
				got := make(chan struct{})
				go func() { io.Copy(h, c); close(got) }()
				sent := sha256.New()
				io.Copy(io.MultiWriter(c, sent), io.LimitReader(rand.Reader, size))
				c.(*net.TCPConn).CloseWrite()
				downSum <- [32]byte(sent.Sum(nil))
				<-got
				upSum <- [32]byte(h.Sum(nil))
			})
			_, addr := start(t, []tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, ln.Addr().String())}}, tcpproxy.Options{}, mode)
			c := dial(t, addr)
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			sent := sha256.New()
			writeErr := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.MultiWriter(c, sent), io.LimitReader(rand.Reader, size))
				c.CloseWrite()
				writeErr <- err
			}()
			recv := sha256.New()
			n, err := io.Copy(recv, c)
			require.NoError(t, err)
			require.NoError(t, <-writeErr)
			assert.Equal(t, int64(size), n, "every byte the backend sent arrived")
			assert.Equal(t, <-downSum, [32]byte(recv.Sum(nil)), "the client got the backend's bytes intact")
			assert.Equal(t, [32]byte(sent.Sum(nil)), <-upSum, "the backend got the client's bytes intact")
		})
	}
}

// TestBadHelloNoLeak sends garbage and slow, never-finished hellos: each is closed by the
// hello timeout, and once the proxy is closed no goroutine of its is left.
func TestBadHelloNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	table, err := tcpproxy.NewTable([]tcpproxy.Route{
		{Name: "a", ServerNames: []string{"a.test"}, Picker: pool(t, balancer.RoundRobin{}, echoBackend(t))},
	})
	require.NoError(t, err)
	p, err := tcpproxy.New(table, tcpproxy.Options{HelloTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	ln := listen(t)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	hello := clientHello(t, &tls.Config{ServerName: "a.test"})
	garbage := append([]byte{22, 3, 1, 0x40, 0x00, 1, 0, 0x3f, 0xfc}, bytes.Repeat([]byte{0xee}, 100)...)
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"garbage", []byte{22, 3, 1, 0, 0}},
		{"lying length", garbage},
		{"half a hello", hello[:len(hello)/2]},
		{"oversized", append([]byte{22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff}, make([]byte, 100)...)},
	} {
		c := dial(t, ln.Addr().String())
		start := time.Now()
		c.Write(tc.send)
		assert.True(t, closedByPeer(c), "%s: closed", tc.name)
		assert.Less(t, time.Since(start), 5*time.Second, "%s: closed by the hello timeout at the latest", tc.name)
	}
	// A slow hello, a byte at a time, is cut off by the timeout however it trickles.
	c := dial(t, ln.Addr().String())
	start := time.Now()
	for i := 0; i < len(hello); i++ {
		if _, err := c.Write(hello[i : i+1]); err != nil {
			break
		}
		if time.Since(start) > 2*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	assert.True(t, closedByPeer(c), "a slow hello is closed")
	assert.Less(t, time.Since(start), 3*time.Second, "by HelloTimeout, not after the whole trickle")
	assert.Equal(t, uint64(5), p.Stats().BadHello)

	require.NoError(t, p.Close())
	require.ErrorIs(t, <-served, tcpproxy.ErrClosed)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+2 }, 10*time.Second, 10*time.Millisecond,
		"goroutines left after Close: %d before, %d now", before, runtime.NumGoroutine())
}

func TestNewErrors(t *testing.T) {
	table, err := tcpproxy.NewTable(nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		opts tcpproxy.Options
		want string
	}{
		{tcpproxy.Options{ConnectTimeout: -1}, "tcpproxy: ConnectTimeout must be ≥ 0, got -1ns"},
		{tcpproxy.Options{HelloTimeout: -1}, "HelloTimeout must be ≥ 0"},
		{tcpproxy.Options{ConnectTries: -1}, "ConnectTries must be ≥ 0, got -1"},
		{tcpproxy.Options{MaxHelloBytes: 100}, "MaxHelloBytes must be 512 to 1 MiB, got 100"},
		{tcpproxy.Options{MaxConns: -1}, "MaxConns must be ≥ 0"},
		{tcpproxy.Options{MaxConnsPerEndpoint: -2}, "MaxConnsPerEndpoint must be ≥ 0, got -2"},
	} {
		_, err := tcpproxy.New(table, tc.opts)
		if assert.Error(t, err, tc.want) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
	_, err = tcpproxy.New(table, tcpproxy.Options{IdleTimeout: -1})
	assert.NoError(t, err, "a negative IdleTimeout means none")
	_, err = tcpproxy.New(nil, tcpproxy.Options{})
	assert.Error(t, err)
}

func TestStore(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	p, addr := start(t, []tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, a)}}, tcpproxy.Options{})
	c := dial(t, addr)
	line, _ := readLine(c)
	assert.Equal(t, "a", line)
	next, err := tcpproxy.NewTable([]tcpproxy.Route{{Name: "r", Picker: pool(t, balancer.RoundRobin{}, b)}})
	require.NoError(t, err)
	p.Store(next)
	assert.Same(t, next, p.Load())
	line, _ = readLine(dial(t, addr))
	assert.Equal(t, "b", line, "new connections take the new table")
	io.WriteString(c, "still\n")
	line, err = readLine(c)
	require.NoError(t, err)
	assert.Equal(t, "still", line, "a connection routed by the old table goes on")
}
