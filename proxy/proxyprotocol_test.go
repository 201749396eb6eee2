package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxyproto"
)

// ppUpstream is an HTTP/1.1 server that requires a PROXY header first on every connection
// (a second header, or none, fails the connection's requests). It answers every request with
// "<connection number> <RemoteAddr> <LocalAddr>": its connection, and the client and
// destination the header named.
type ppUpstream struct {
	addr  string
	conns atomic.Int64 // connections accepted
}

type connIDKey struct{}

func newPPUpstream(t *testing.T) *ppUpstream {
	t.Helper()
	trusted, err := sluice.ParseTrustedProxies("127.0.0.1")
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &ppUpstream{addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/close" {
				w.Header().Set("Connection", "close")
			}
			fmt.Fprintf(w, "%d %s %v", r.Context().Value(connIDKey{}), r.RemoteAddr, r.Context().Value(http.LocalAddrContextKey))
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connIDKey{}, u.conns.Add(1))
		},
	}
	go srv.Serve(&proxyproto.Listener{Listener: ln, Trusted: trusted, HeaderTimeout: time.Minute})
	t.Cleanup(func() { srv.Close() })
	return u
}

// ppClient is one client connection to the proxy's front server.
type ppClient struct {
	c  net.Conn
	br *bufio.Reader
}

func newPPClient(t *testing.T, front string) *ppClient {
	t.Helper()
	c, err := net.Dial("tcp", front)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &ppClient{c: c, br: bufio.NewReader(c)}
}

// do sends one request and returns the upstream's answer, split into connection number,
// client and destination.
func (pc *ppClient) do(t *testing.T, method, path string, body string) (conn, remote, local string) {
	t.Helper()
	pc.c.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: example.com\r\n", method, path)
	if body != "" {
		req += fmt.Sprintf("Content-Length: %d\r\n", len(body))
	}
	_, err := io.WriteString(pc.c, req+"\r\n"+body)
	require.NoError(t, err)
	res, err := http.ReadResponse(pc.br, nil)
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, "response: %s", b)
	f := strings.Fields(string(b))
	require.Len(t, f, 3, "the upstream's answer: %q", b)
	return f[0], f[1], f[2]
}

func ppProxy(t *testing.T, version int, eps map[string]string) (*proxy.Proxy, string) {
	t.Helper()
	cl := newCluster()
	var addrs []string
	for ep, real := range eps {
		cl.add(ep, real)
		addrs = append(addrs, ep)
	}
	p := &proxy.Proxy{Picker: newPicker(addrs...), DialContext: cl.dial, ProxyProtocol: version}
	fr := front(t, p)
	return p, fr.Listener.Addr().String()
}

// TestProxyProtocolPerClient checks that the header arrives once per upstream connection,
// names the client, and that two clients never share a connection while each reuses its own.
func TestProxyProtocolPerClient(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			up := newPPUpstream(t)
			_, fr := ppProxy(t, version, map[string]string{"10.0.0.1:8080": up.addr})
			a, b := newPPClient(t, fr), newPPClient(t, fr)
			conns := map[*ppClient]map[string]bool{a: {}, b: {}}
			for range 3 {
				for _, c := range []*ppClient{a, b} {
					conn, remote, local := c.do(t, http.MethodGet, "/", "")
					assert.Equal(t, c.c.LocalAddr().String(), remote, "the upstream sees the client")
					assert.Equal(t, fr, local, "and the address the client connected to")
					conns[c][conn] = true
				}
			}
			assert.Len(t, conns[a], 1, "a client's requests reuse its upstream connection: %v", conns[a])
			assert.Len(t, conns[b], 1, "a client's requests reuse its upstream connection: %v", conns[b])
			for conn := range conns[a] {
				assert.False(t, conns[b][conn], "two clients never share an upstream connection")
			}
			assert.EqualValues(t, 2, up.conns.Load(), "one upstream connection per client")
		})
	}
}

// TestProxyProtocolNewConnections checks that every new upstream connection starts with the
// header: after the upstream closed the last one, for a body that goes through net/http's
// Transport, and for a retry on another endpoint after a broken connection.
func TestProxyProtocolNewConnections(t *testing.T) {
	t.Run("after the upstream closed", func(t *testing.T) {
		up := newPPUpstream(t)
		_, fr := ppProxy(t, 2, map[string]string{"10.0.0.1:8080": up.addr})
		c := newPPClient(t, fr)
		conn1, remote, _ := c.do(t, http.MethodGet, "/close", "")
		assert.Equal(t, c.c.LocalAddr().String(), remote)
		conn2, remote, _ := c.do(t, http.MethodGet, "/", "")
		assert.NotEqual(t, conn1, conn2, "a new connection")
		assert.Equal(t, c.c.LocalAddr().String(), remote, "with the header again")
	})

	t.Run("large body, through net/http's Transport", func(t *testing.T) {
		up := newPPUpstream(t)
		_, fr := ppProxy(t, 1, map[string]string{"10.0.0.1:8080": up.addr})
		a, b := newPPClient(t, fr), newPPClient(t, fr)
		body := strings.Repeat("x", 100<<10) // past the lean client's 64 KiB
		seen := map[string]bool{}
		for range 2 {
			for _, c := range []*ppClient{a, b} {
				conn, remote, _ := c.do(t, http.MethodPost, "/", body)
				assert.Equal(t, c.c.LocalAddr().String(), remote, "the upstream sees the client")
				assert.False(t, seen[conn], "each such request has a connection of its own")
				seen[conn] = true
			}
		}
	})

	t.Run("retry on another endpoint", func(t *testing.T) {
		up := newPPUpstream(t)
		// The first endpoint reads the header and the request, then breaks the connection.
		broken, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { broken.Close() })
		var mu sync.Mutex
		var got []proxyproto.Header
		go func() {
			for {
				c, err := broken.Accept()
				if err != nil {
					return
				}
				h, err := proxyproto.ReadHeader(c)
				if err == nil {
					mu.Lock()
					got = append(got, h)
					mu.Unlock()
					http.ReadRequest(bufio.NewReader(c))
				}
				c.Close()
			}
		}()
		p := &proxy.Proxy{Picker: newPicker("10.0.0.1:8080", "10.0.0.2:8080"), ProxyProtocol: 2,
			Retry: proxy.Retry{Backoff: -1}}
		cl := newCluster()
		cl.add("10.0.0.1:8080", broken.Addr().String())
		cl.add("10.0.0.2:8080", up.addr)
		p.DialContext = cl.dial
		c := newPPClient(t, front(t, p).Listener.Addr().String())
		_, remote, _ := c.do(t, http.MethodGet, "/", "")
		assert.Equal(t, c.c.LocalAddr().String(), remote, "the retry's connection carries the header")
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, got, 1, "the broken endpoint was tried first")
		assert.Equal(t, c.c.LocalAddr().String(), got[0].Source.String(), "with the client's header")
	})
}

func TestProxyProtocolRefused(t *testing.T) {
	cases := []struct {
		name string
		p    *proxy.Proxy
		want string
	}{
		{"version 3", &proxy.Proxy{ProxyProtocol: 3}, "ProxyProtocol must be 0, 1 or 2, got 3"},
		{"custom Transport", &proxy.Proxy{ProxyProtocol: 2, Transport: http.DefaultTransport}, "ProxyProtocol needs the default transports"},
		{"HTTPS", &proxy.Proxy{ProxyProtocol: 2, Protocol: proxy.HTTPS}, "ProxyProtocol needs Protocol HTTP1, not https"},
		{"HTTP2", &proxy.Proxy{ProxyProtocol: 1, Protocol: proxy.HTTP2}, "ProxyProtocol needs Protocol HTTP1, not h2"},
		{"H2C", &proxy.Proxy{ProxyProtocol: 1, Protocol: proxy.H2C}, "ProxyProtocol needs Protocol HTTP1, not h2c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pk := newPicker("10.0.0.1:8080")
			tc.p.Picker = pk
			errc := make(chan error, 1)
			tc.p.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
				errc <- err
				w.WriteHeader(err.(*proxy.Error).Status)
			}
			fr := front(t, tc.p)
			res, _ := get(t, fr.Client(), fr.URL)
			assert.Equal(t, http.StatusInternalServerError, res.StatusCode)
			err := <-errc
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Zero(t, pk.picks.Load(), "no endpoint is tried")
		})
	}
}
