package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// wsBackend is a minimal WebSocket-like upstream: it switches protocols on the hijacked
// connection and echoes every line until the client ends the tunnel or sends "bye", after
// which it closes the connection itself. ended is closed when the upstream saw its side end.
type wsBackend struct {
	ended  chan struct{}
	header chan http.Header // the upgrade request's header
}

func newWSBackend() *wsBackend {
	return &wsBackend{ended: make(chan struct{}), header: make(chan http.Header, 1)}
}

func (b *wsBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.header <- r.Header.Clone()
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer close(b.ended)
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	for {
		line, err := brw.ReadString('\n')
		if err != nil || line == "bye\n" {
			return
		}
		brw.WriteString(line)
		brw.Flush()
	}
}

// wsDial opens an upgraded connection to the proxy at addr.
func wsDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	req, _ := http.NewRequest("GET", "http://"+addr+"/chat", nil)
	req.Header.Set("Connection", "Upgrade, X-Conn-Only")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("X-Conn-Only", "hop-by-hop")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	require.NoError(t, req.Write(conn))
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, req)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
	require.Equal(t, "websocket", res.Header.Get("Upgrade"))
	return conn, br
}

// waitClosed fails the test unless ch is closed within 10 seconds.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal(what)
	}
}

// readEOF fails the test unless conn's peer closes it within 10 seconds. What arrives before
// the end (a close frame) is skipped.
func readEOF(t *testing.T, conn net.Conn, br *bufio.Reader, what string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, br)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "%s: got %v", what, err)
}

func TestWebSocketTunnel(t *testing.T) {
	// setup returns the upstream, the proxy, its metrics, the front address, and a channel
	// closed when the proxy has finished serving the upgrade request.
	setup := func(t *testing.T, idle time.Duration) (*wsBackend, *proxy.Proxy, *metrics, string, chan struct{}) {
		c := newCluster()
		ws := newWSBackend()
		c.backend(t, "10.0.0.1:80", ws)
		var m metrics
		p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, UpgradeIdleTimeout: idle,
			Hooks: m.hooks()}
		t.Cleanup(p.CloseIdleConnections)
		served := make(chan struct{})
		srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer close(served)
			p.ServeHTTP(w, r)
		}))
		return ws, p, &m, srv.Listener.Addr().String(), served
	}
	echoes := func(t *testing.T, conn net.Conn, br *bufio.Reader) {
		t.Helper()
		for _, msg := range []string{"hello\n", strings.Repeat("z", 100<<10) + "\n"} {
			_, err := io.WriteString(conn, msg)
			require.NoError(t, err)
			got, err := readLine(br, 10*time.Second)
			require.NoError(t, err)
			assert.Equal(t, msg, got)
		}
	}

	t.Run("client closes", func(t *testing.T) {
		ws, p, m, addr, served := setup(t, 0)
		conn, br := wsDial(t, addr)
		h := <-ws.header
		assert.Equal(t, "Upgrade", h.Get("Connection"), "the upstream is asked to upgrade")
		assert.Empty(t, h.Get("X-Conn-Only"), "fields the client's Connection names are still dropped")
		echoes(t, conn, br)
		assert.Equal(t, 1, p.Upgraded())
		conn.Close()
		waitClosed(t, ws.ended, "the upstream side must end when the client closes")
		// The tunnel is forgotten before ServeHTTP returns, and the metrics record is written
		// just before it returns: wait for that, not for Upgraded to drop, which comes first.
		waitClosed(t, served, "the proxy must finish serving when the tunnel ends")
		assert.Equal(t, 0, p.Upgraded(), "the closed tunnel is forgotten")
		m.mu.Lock()
		defer m.mu.Unlock()
		require.Len(t, m.stats, 1)
		assert.True(t, m.stats[0].Upgraded)
		assert.Equal(t, 101, m.stats[0].Status)
		assert.Positive(t, m.stats[0].Bytes)
	})
	t.Run("upstream closes", func(t *testing.T) {
		ws, _, _, addr, _ := setup(t, 0)
		conn, br := wsDial(t, addr)
		echoes(t, conn, br)
		io.WriteString(conn, "bye\n")
		waitClosed(t, ws.ended, "the upstream ends")
		readEOF(t, conn, br, "the client side must be closed when the upstream ends")
	})
	t.Run("idle timeout", func(t *testing.T) {
		// No traffic at all: an echo first would race the short idle timeout on a loaded
		// machine. The other cases show that a tunnel carries data.
		ws, _, _, addr, _ := setup(t, 50*time.Millisecond)
		conn, br := wsDial(t, addr)
		readEOF(t, conn, br, "an idle tunnel must be closed")
		waitClosed(t, ws.ended, "both sides of an idle tunnel are closed")
	})
}

// An HTTP/1.0 client's Upgrade is ignored (RFC 9110 §7.8): it must not be sent a 101. The
// upstream is not asked to switch and answers the plain request.
func TestUpgradeIgnoredForHTTP10(t *testing.T) {
	c := newCluster()
	ws := newWSBackend()
	c.backend(t, "10.0.0.1:80", ws)
	srv := front(t, &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial})
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, "GET /chat HTTP/1.0\r\nHost: app.example\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusUpgradeRequired, res.StatusCode, "the upstream answers the plain request")
	h := <-ws.header
	assert.Empty(t, h.Get("Upgrade"), "the upstream must not be asked to upgrade")
	assert.Empty(t, h.Get("Connection"))
}

// Upgrades always travel over HTTP/1.1, whatever protocol the Proxy speaks to its upstreams:
// HTTP/2 has no Upgrade.
func TestWebSocketOverEveryProtocol(t *testing.T) {
	for _, proto := range []proxy.Protocol{proxy.HTTP1, proxy.HTTPS, proxy.HTTP2, proxy.H2C} {
		t.Run(proto.String(), func(t *testing.T) {
			c := newCluster()
			ws := newWSBackend()
			var tc *tls.Config
			if proto == proxy.HTTPS || proto == proxy.HTTP2 {
				tc = c.tlsBackend(t, "10.0.0.1:80", ws, true)
			} else {
				c.backend(t, "10.0.0.1:80", ws)
			}
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Protocol: proto,
				TLSClientConfig: tc}
			srv := front(t, p)
			conn, br := wsDial(t, srv.Listener.Addr().String())
			io.WriteString(conn, "over "+proto.String()+"\n")
			got, err := readLine(br, 10*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "over "+proto.String()+"\n", got)
			conn.Close()
			waitClosed(t, ws.ended, "the upstream side ends with the client")
		})
	}
}

// Drain lets in-flight requests finish, then closes upgraded connections at once rather than
// wait for them to end by themselves; what is left at the deadline is closed.
func TestDrain(t *testing.T) {
	start := func(t *testing.T) (*wsBackend, chan struct{}, chan struct{}, *proxy.Proxy, *httptest.Server) {
		c := newCluster()
		ws := newWSBackend()
		c.backend(t, "10.0.0.1:80", ws)
		slow := make(chan struct{})
		arrived := make(chan struct{})
		c.backend(t, "10.0.0.2:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-slow
			io.WriteString(w, "finished")
		}))
		p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
		slowP := &proxy.Proxy{Picker: newPicker("10.0.0.2:80"), DialContext: c.dial}
		mux := http.NewServeMux()
		mux.Handle("/chat", p)
		mux.Handle("/slow", slowP)
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		t.Cleanup(slowP.CloseIdleConnections)
		return ws, slow, arrived, p, srv
	}

	t.Run("finishes requests, then closes tunnels", func(t *testing.T) {
		ws, slow, arrived, p, srv := start(t)
		conn, br := wsDial(t, srv.Listener.Addr().String())
		inflight := make(chan string, 1)
		go func() {
			res, err := http.Get(srv.URL + "/slow")
			if err != nil {
				inflight <- err.Error()
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			inflight <- string(b)
		}()
		waitClosed(t, arrived, "the slow request reaches its upstream")

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drained := make(chan error, 1)
		go func() { drained <- proxy.Drain(ctx, []proxy.Server{srv.Config}, p) }()

		// While a request is in flight the tunnel still works.
		io.WriteString(conn, "still here\n")
		got, err := readLine(br, 10*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "still here\n", got)
		select {
		case err := <-drained:
			t.Fatalf("Drain returned (%v) while a request was in flight", err)
		default:
		}

		released := time.Now()
		close(slow)
		select {
		case body := <-inflight:
			assert.Equal(t, "finished", body, "an in-flight request finishes during the drain")
		case <-time.After(10 * time.Second):
			t.Fatal("in-flight request did not finish")
		}
		select {
		case err := <-drained:
			assert.NoError(t, err, "a drain that closed everything before the deadline is clean")
		case <-time.After(10 * time.Second):
			t.Fatal("Drain waited for an open tunnel to end by itself")
		}
		assert.Less(t, time.Since(released), 2*time.Second,
			"Drain must close tunnels once requests finish, not wait for its 30s deadline")
		readEOF(t, conn, br, "the client's side of the tunnel is closed")
		waitClosed(t, ws.ended, "the upstream's side of the tunnel is closed")
		assert.Equal(t, 0, p.Upgraded())
	})

	t.Run("closes upgrades that complete after it", func(t *testing.T) {
		ws, _, _, p, srv := start(t)
		require.NoError(t, p.Shutdown(context.Background()), "nothing to close")
		conn, br := wsDial(t, srv.Listener.Addr().String())
		readEOF(t, conn, br, "a tunnel that starts after Shutdown is closed at once")
		waitClosed(t, ws.ended, "and so is its upstream side")
		assert.Equal(t, 0, p.Upgraded())
	})

	t.Run("closes what is left at the deadline", func(t *testing.T) {
		ws, slow, arrived, p, srv := start(t)
		defer close(slow)
		conn, br := wsDial(t, srv.Listener.Addr().String())
		inflight := make(chan error, 1)
		go func() {
			res, err := http.Get(srv.URL + "/slow")
			if err == nil {
				_, err = io.ReadAll(res.Body)
				res.Body.Close()
			}
			inflight <- err
		}()
		waitClosed(t, arrived, "the slow request reaches its upstream")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := proxy.Drain(ctx, []proxy.Server{srv.Config}, p)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		select {
		case err := <-inflight:
			assert.Error(t, err, "a request still in flight at the deadline is cut off")
		case <-time.After(10 * time.Second):
			t.Fatal("the in-flight request was not closed at the deadline")
		}
		readEOF(t, conn, br, "a tunnel left at the deadline is closed")
		waitClosed(t, ws.ended, "and so is its upstream side")
		require.Eventually(t, func() bool { return p.Upgraded() == 0 }, 10*time.Second, time.Millisecond,
			"the closed tunnel is forgotten")
	})
}

// The deprecated "Upgrade: h2c" is ignored: the request is answered over HTTP/1.1 and the
// upstream sees no upgrade.
func TestH2CUpgradeIgnored(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", echo("a"))
	srv := front(t, &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial})
	req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
	req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
	req.Header.Set("Upgrade", "h2c")
	req.Header.Set("Http2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
	res, body := do(t, srv.Client(), req)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, 1, res.ProtoMajor)
	assert.True(t, strings.HasPrefix(body, "a GET /x "), body)
	assert.NotContains(t, body, "Upgrade", "the upstream must not be asked to upgrade")
	assert.NotContains(t, body, "Connection")
}

// brokenClient is a ResponseWriter whose hijacked connection cannot be written to, as when
// the client's connection breaks just as the upstream agrees to switch protocols.
type brokenClient struct{ http.ResponseWriter }

func (w brokenClient) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	bc := &brokenConn{Conn: conn}
	return bc, bufio.NewReadWriter(brw.Reader, bufio.NewWriter(bc)), nil
}

type brokenConn struct{ net.Conn }

func (c *brokenConn) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// A 101 head that cannot be written to the client starts no tunnel: the upstream's side is
// closed at once and the request is recorded as the client's fault, with nothing sent.
func TestUpgradeHeadWriteFails(t *testing.T) {
	c := newCluster()
	ws := newWSBackend()
	c.backend(t, "10.0.0.1:80", ws)
	var m metrics
	pk := newPicker("10.0.0.1:80")
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Hooks: m.hooks()}
	served := make(chan struct{})
	srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		p.ServeHTTP(brokenClient{w}, r)
	}))
	t.Cleanup(p.CloseIdleConnections)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n"+
		"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	require.NoError(t, err)

	// The client's connection stays open: only the proxy can end the exchange.
	waitClosed(t, ws.ended, "the upstream's side must be closed when the 101 cannot reach the client")
	waitClosed(t, served, "the proxy must finish serving without a tunnel")
	assert.Equal(t, 0, p.Upgraded())
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Len(t, m.stats, 1)
	assert.Equal(t, sluice.Canceled, m.stats[0].Failure, "a client that cannot be written to is the client's fault")
	assert.Zero(t, m.stats[0].Bytes, "nothing reached the client")
	for _, d := range pk.dones() {
		assert.Equal(t, sluice.NoFailure, d.Outcome.Failure, "the upstream did nothing wrong")
	}
}

// Timeouts bound the handshake only: WebSockets work with every Retry setting over every
// upstream protocol, and a tunnel outlives the timeouts (UpgradeIdleTimeout is the tunnel's).
func TestWebSocketWithTimeouts(t *testing.T) {
	// Long enough for a TLS handshake under the race detector on a busy machine, short enough
	// to wait out: each case waits past it once, on a real timer, since the point is that
	// the handshake's timer must not fire on the tunnel.
	const timeout = 200 * time.Millisecond
	for _, proto := range []proxy.Protocol{proxy.HTTP1, proxy.HTTPS, proxy.HTTP2, proxy.H2C} {
		t.Run(proto.String(), func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name  string
				retry proxy.Retry
			}{
				{"no timeout", proxy.Retry{}},
				{"PerTryTimeout", proxy.Retry{PerTryTimeout: timeout}},
				{"Timeout", proxy.Retry{Timeout: timeout}},
				{"both", proxy.Retry{PerTryTimeout: timeout, Timeout: timeout}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c := newCluster()
					ws := newWSBackend()
					var tlsConf *tls.Config
					if proto == proxy.HTTPS || proto == proxy.HTTP2 {
						tlsConf = c.tlsBackend(t, "10.0.0.1:80", ws, true)
					} else {
						c.backend(t, "10.0.0.1:80", ws)
					}
					p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Protocol: proto,
						TLSClientConfig: tlsConf, Retry: tc.retry}
					srv := front(t, p)
					start := time.Now()
					conn, br := wsDial(t, srv.Listener.Addr().String())
					say := func(msg string) {
						t.Helper()
						_, err := io.WriteString(conn, msg)
						require.NoError(t, err)
						got, err := readLine(br, 10*time.Second)
						require.NoError(t, err, "the tunnel must carry %q", msg)
						assert.Equal(t, msg, got)
					}
					say("before the deadline\n")
					if tc.retry.PerTryTimeout > 0 || tc.retry.Timeout > 0 {
						wait := time.NewTimer(time.Until(start.Add(timeout + 100*time.Millisecond)))
						<-wait.C
					}
					say("after the deadline\n")
					assert.Equal(t, 1, p.Upgraded())
					conn.Close()
					waitClosed(t, ws.ended, "the upstream side ends with the client")
				})
			}
		})
	}
}

// wsFrame is a WebSocket frame as a test peer reads it.
type wsFrame struct {
	op      byte
	payload []byte
}

// readFrame reads one WebSocket frame from r and unmasks it.
func readFrame(r io.Reader) (wsFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return wsFrame{}, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return wsFrame{}, errors.New("frame too large for a test")
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return wsFrame{}, err
		}
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return wsFrame{}, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return wsFrame{op: h[0] & 0x0f, payload: payload}, nil
}

// writeFrame writes a final frame with opcode op, masked as a client's frames are.
func writeFrame(w io.Writer, op byte, payload []byte, masked bool) error {
	b := []byte{0x80 | op, 0}
	switch n := len(payload); {
	case n < 126:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		_, err := w.Write(append(b, payload...))
		return err
	}
	b[1] |= 0x80
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	_, err := w.Write(b)
	return err
}

// wsFrameBackend is a WebSocket upstream that speaks frames: it echoes data frames, and
// answers a close frame with one of its own and closes the connection, as a WebSocket
// server does. closed receives the payload of the close frame it got.
type wsFrameBackend struct{ closed chan []byte }

func (b *wsFrameBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	for {
		f, err := readFrame(brw)
		if err != nil {
			return
		}
		if f.op == 0x8 {
			b.closed <- f.payload
			writeFrame(conn, 0x8, f.payload, false)
			return
		}
		writeFrame(conn, f.op, f.payload, false)
	}
}

// Shutdown closes a WebSocket tunnel the way a server going down does: both peers get a close
// frame 1001 "going away" between two frames, and the upstream's answer ends the tunnel
// without waiting for the grace.
func TestShutdownSendsWebSocketClose(t *testing.T) {
	c := newCluster()
	ws := &wsFrameBackend{closed: make(chan []byte, 1)}
	c.backend(t, "10.0.0.1:80", ws)
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	srv := front(t, p)
	conn, br := wsDial(t, srv.Listener.Addr().String())
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// Payloads with a 7-bit, a 16-bit and a 64-bit length, so that the proxy follows every
	// header form.
	for _, size := range []int{5, 300, 70000} {
		msg := []byte(strings.Repeat("m", size))
		require.NoError(t, writeFrame(conn, 0x2, msg, true))
		f, err := readFrame(br)
		require.NoError(t, err)
		require.Equal(t, byte(0x2), f.op)
		require.Equal(t, msg, f.payload, "a %d-byte message is echoed", size)
	}

	begin := time.Now()
	require.NoError(t, p.Shutdown(context.Background()))
	assert.Less(t, time.Since(begin), 2*time.Second, "the upstream's answer ends the tunnel")
	goingAway := append([]byte{0x03, 0xe9}, "going away"...)
	select {
	case got := <-ws.closed:
		assert.Equal(t, goingAway, got, "the upstream is sent close 1001 \"going away\"")
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream got no close frame")
	}
	f, err := readFrame(br)
	require.NoError(t, err, "the client is sent a close frame")
	assert.Equal(t, byte(0x8), f.op)
	assert.Equal(t, goingAway, f.payload, "the client is sent close 1001 \"going away\"")
	rest, err := io.ReadAll(br)
	assert.NoError(t, err, "then its connection is closed")
	assert.Empty(t, rest, "nothing follows the close frame, not even the upstream's answer")
	assert.Equal(t, 0, p.Upgraded())
}

// Drain shuts several servers down together: each one's in-flight request finishes, and both
// stop accepting, before Drain returns.
func TestDrainSeveralServers(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "done")
	}))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		p.ServeHTTP(w, r)
	})
	a, b := httptest.NewServer(h), httptest.NewServer(h)
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	results := make(chan string, 2)
	for _, srv := range []*httptest.Server{a, b} {
		go func() {
			res, err := srv.Client().Get(srv.URL)
			if err != nil {
				results <- err.Error()
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			results <- string(body)
		}()
	}
	<-started
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- proxy.Drain(ctx, []proxy.Server{a.Config, b.Config}, p) }()
	close(release)
	require.NoError(t, <-drained, "both servers drained before the deadline")
	assert.Equal(t, "done", <-results, "in-flight requests finish")
	assert.Equal(t, "done", <-results, "on both servers")
	for _, srv := range []*httptest.Server{a, b} {
		_, err := http.Get(srv.URL)
		assert.Error(t, err, "a drained server accepts nothing")
	}
}

// CloseTunnels closes only the tunnels to endpoints keep rejects, each with close 1001 "going
// away", and leaves the others echoing; InFlight counts a tunnel as a request until it ends.
func TestCloseTunnels(t *testing.T) {
	c := newCluster()
	kept := &wsFrameBackend{closed: make(chan []byte, 1)}
	gone := &wsFrameBackend{closed: make(chan []byte, 1)}
	c.backend(t, "10.0.0.1:80", kept)
	c.backend(t, "10.0.0.2:80", gone)
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80", "10.0.0.2:80"), DialContext: c.dial}
	srv := front(t, p)
	keptConn, keptBr := wsDial(t, srv.Listener.Addr().String()) // round robin: 10.0.0.1 first
	goneConn, goneBr := wsDial(t, srv.Listener.Addr().String())
	keptConn.SetDeadline(time.Now().Add(10 * time.Second))
	goneConn.SetDeadline(time.Now().Add(10 * time.Second))
	echo := func(conn net.Conn, br *bufio.Reader, msg string) error {
		if err := writeFrame(conn, 0x1, []byte(msg), true); err != nil {
			return err
		}
		f, err := readFrame(br)
		if err == nil && string(f.payload) != msg {
			err = errors.New("echoed " + string(f.payload))
		}
		return err
	}
	require.NoError(t, echo(keptConn, keptBr, "a"))
	require.NoError(t, echo(goneConn, goneBr, "b"))
	require.Equal(t, 2, p.Upgraded())
	require.Equal(t, 2, p.InFlight(), "an open tunnel is a request in flight")

	n := p.CloseTunnels(func(addr string) bool { return addr != "10.0.0.2:80" })
	assert.Equal(t, 1, n, "one tunnel goes to the rejected endpoint")
	goingAway := append([]byte{0x03, 0xe9}, "going away"...)
	f, err := readFrame(goneBr)
	require.NoError(t, err, "the client of the closed tunnel is sent a close frame")
	assert.Equal(t, goingAway, f.payload)
	readEOF(t, goneConn, goneBr, "then its connection is closed")
	select {
	case got := <-gone.closed:
		assert.Equal(t, goingAway, got, "its upstream is sent close 1001")
	case <-time.After(10 * time.Second):
		t.Fatal("the rejected endpoint got no close frame")
	}

	assert.NoError(t, echo(keptConn, keptBr, "still here"), "the kept tunnel still echoes")
	require.Eventually(t, func() bool { return p.Upgraded() == 1 && p.InFlight() == 1 },
		10*time.Second, time.Millisecond, "one tunnel is left, and one request in flight")
	assert.Equal(t, 0, p.CloseTunnels(func(string) bool { return true }), "keeping every address closes nothing")
	keptConn.Close()
	require.Eventually(t, func() bool { return p.InFlight() == 0 },
		10*time.Second, time.Millisecond, "InFlight falls to 0 once the last tunnel ends")
}
