package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// cluster maps pod-like endpoint addresses ("10.0.0.1:8080") to local test servers, the way
// a proxy in a cluster reaches pods. Addresses it does not know refuse connections.
type cluster struct {
	mu    sync.Mutex
	addrs map[string]string
}

func newCluster() *cluster { return &cluster{addrs: make(map[string]string)} }

// add maps the endpoint address ep to the listener address real.
func (c *cluster) add(ep, real string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addrs[ep] = real
}

func (c *cluster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	real, ok := c.addrs[addr]
	c.mu.Unlock()
	if !ok {
		real = refusingAddr
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

// refusingAddr is a local address whose connections the kernel refuses at once: nothing can
// listen on port 0. A port freed by closing a listener would not do: any server started
// later, by this test binary or another one running beside it, may be given that port and
// answer in place of the refusing endpoint.
const refusingAddr = "127.0.0.1:0"

// backend starts an HTTP/1.1 test server mapped to the endpoint address ep.
func (c *cluster) backend(t testing.TB, ep string, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c.add(ep, srv.Listener.Addr().String())
	return srv
}

// picker is a round-robin Picker over fixed addresses that prefers untried ones, and records
// every Done.
type picker struct {
	addrs []string
	next  atomic.Uint64
	mu    sync.Mutex
	done  []done
	picks atomic.Int64
	// cookie, if set, is attached to every pick.
	cookie *http.Cookie
}

type done struct {
	Addr    string
	Outcome sluice.Outcome
}

func newPicker(addrs ...string) *picker { return &picker{addrs: addrs} }

func (p *picker) Pick(info sluice.PickInfo) (sluice.PickResult, error) {
	if len(p.addrs) == 0 {
		return sluice.PickResult{}, sluice.ErrNoEndpoint
	}
	p.picks.Add(1)
	n := p.next.Add(1) - 1
	var addr string
	for i := range p.addrs {
		a := p.addrs[(int(n)+i)%len(p.addrs)]
		if !contains(info.Tried, a) {
			addr = a
			break
		}
	}
	if addr == "" {
		addr = p.addrs[int(n)%len(p.addrs)]
	}
	ep := sluice.Endpoint{Addr: addr}
	return sluice.PickResult{Endpoint: ep, Cookie: p.cookie, Done: func(o sluice.Outcome) {
		p.mu.Lock()
		p.done = append(p.done, done{addr, o})
		p.mu.Unlock()
	}}, nil
}

func (p *picker) dones() []done {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]done(nil), p.done...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// front starts a test server serving p, the proxy's client side.
func front(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		if p, ok := h.(*proxy.Proxy); ok {
			p.CloseIdleConnections()
		}
	})
	return srv
}

func get(t testing.TB, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	res, err := c.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}
