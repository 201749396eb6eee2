package pool_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
)

// setSource is a discovery.Source whose set the test changes with set.
type setSource struct {
	mu     sync.Mutex
	eps    []sluice.Endpoint
	update func([]sluice.Endpoint)
}

func (s *setSource) Watch(ctx context.Context, update func([]sluice.Endpoint)) error {
	s.mu.Lock()
	s.update = update
	update(s.eps)
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.update = nil
	s.mu.Unlock()
	return ctx.Err()
}

func (s *setSource) set(addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eps = nil
	for _, a := range addrs {
		s.eps = append(s.eps, sluice.Endpoint{Addr: a})
	}
	if s.update != nil {
		s.update(s.eps)
	}
}

// wsServer is a real upstream that switches to a line protocol on "Upgrade: websocket": it
// sends its name, then echoes lines until the connection ends.
func wsServer(t *testing.T, name string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n%s\n", name)
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(line)
			brw.Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// tunnel opens an upgraded connection through the server at addr and returns it with the
// name of the upstream it reached.
func tunnel(t *testing.T, addr string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprint(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
	name, err := br.ReadString('\n')
	require.NoError(t, err)
	return conn, br, strings.TrimSpace(name)
}

// An endpoint that leaves the set loses its tunnels, on the pool's proxy and on an attached
// one, once TunnelGrace has passed, and not before; the tunnels of an endpoint still in the
// set stay.
func TestPoolClosesTunnelsOfEndpointsThatLeft(t *testing.T) {
	stay, leave := wsServer(t, "stay"), wsServer(t, "leave")
	src := &setSource{}
	src.set(stay, leave)
	const grace = 300 * time.Millisecond
	p, err := pool.New(pool.Options{Source: src, TunnelGrace: grace, Proxy: &proxy.Proxy{Logger: quiet()}})
	require.NoError(t, err)
	other := &proxy.Proxy{Picker: p.Balancer()} // as a second protocol's proxy would
	p.Attach(other)
	run(t, p)
	waitSynced(t, p)
	front, otherFront := httptest.NewServer(p), httptest.NewServer(other)
	t.Cleanup(front.Close)
	t.Cleanup(otherFront.Close)

	type conn struct {
		net.Conn
		br *bufio.Reader
	}
	byName := map[string][]conn{}
	for _, srv := range []*httptest.Server{front, front, otherFront, otherFront} {
		c, br, name := tunnel(t, srv.Listener.Addr().String())
		byName[name] = append(byName[name], conn{c, br})
	}
	require.Len(t, byName["stay"], 2, "round robin reaches each endpoint from each proxy")
	require.Len(t, byName["leave"], 2, "round robin reaches each endpoint from each proxy")

	left := time.Now()
	src.set(stay)
	for _, c := range byName["leave"] {
		_, err := io.Copy(io.Discard, c.br)
		assert.NoError(t, err, "the tunnel to the endpoint that left is closed, not timed out")
		assert.GreaterOrEqual(t, time.Since(left), grace, "the tunnel is kept for the grace")
	}
	for _, c := range byName["stay"] {
		fmt.Fprint(c, "ping\n")
		line, err := c.br.ReadString('\n')
		assert.NoError(t, err, "the tunnel to the endpoint still in the set is open")
		assert.Equal(t, "ping\n", line)
	}
	assert.Eventually(t, func() bool { return p.Proxy().Upgraded() == 1 && other.Upgraded() == 1 },
		10*time.Second, time.Millisecond, "each proxy keeps one tunnel")
}

// An endpoint that comes back within the grace keeps its tunnels.
func TestPoolKeepsTunnelsOfEndpointsBackWithinGrace(t *testing.T) {
	a, b := wsServer(t, "a"), wsServer(t, "b")
	src := &setSource{}
	src.set(a, b)
	const grace = 300 * time.Millisecond
	p, err := pool.New(pool.Options{Source: src, TunnelGrace: grace, Proxy: &proxy.Proxy{Logger: quiet()}})
	require.NoError(t, err)
	run(t, p)
	waitSynced(t, p)
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	conns := map[string]*bufio.Reader{}
	var cs []net.Conn
	for range 2 {
		c, br, name := tunnel(t, front.Listener.Addr().String())
		conns[name] = br
		cs = append(cs, c)
	}
	require.Len(t, conns, 2)

	src.set(a)    // b leaves...
	src.set(a, b) // ...and comes back at once
	src.set(b)    // then a leaves for good: b's tunnel must outlive a's closing
	_, err = io.Copy(io.Discard, conns["a"])
	require.NoError(t, err, "a's tunnel is closed after the grace")
	for _, c := range cs {
		fmt.Fprint(c, "ping\n")
	}
	line, err := conns["b"].ReadString('\n')
	assert.NoError(t, err, "b came back within the grace: its tunnel stays")
	assert.Equal(t, "ping\n", line)
}
