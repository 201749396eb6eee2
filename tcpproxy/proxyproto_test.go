package tcpproxy_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/proxyproto"
	"github.com/sluiceproxy/sluice/tcpproxy"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// headerBackend reads a PROXY header from each connection, reports it on the channel, and
// then echoes the connection's own bytes.
func headerBackend(t testing.TB) (string, chan proxyproto.Header) {
	got := make(chan proxyproto.Header, 10)
	ln := listen(t)
	serveConns(t, ln, func(c net.Conn) {
		h, err := proxyproto.ReadHeader(c)
		if err != nil {
			t.Errorf("backend: reading the PROXY header: %v", err)
			return
		}
		got <- h
		io.Copy(c, c)
	})
	return ln.Addr().String(), got
}

func TestProxyProtocol(t *testing.T) {
	ca := testcert.NewCA(t)
	var ring certs.Keyring
	require.NoError(t, ring.Set("t", &ca.Server(t, "term.example.com").TLS))
	cfg, err := certs.ServerConfig(&ring, certs.ServerOptions{NextProtos: []string{"echo"}})
	require.NoError(t, err)
	v1, got1 := headerBackend(t)
	v2, got2 := headerBackend(t)
	term, gotTerm := headerBackend(t)
	rr := balancer.RoundRobin{}
	_, addr := start(t, []tcpproxy.Route{
		{Name: "v1", ServerNames: []string{"v1.example.com"}, ProxyProtocol: 1, Picker: pool(t, rr, v1)},
		{Name: "v2", ServerNames: []string{"v2.example.com"}, ProxyProtocol: 2, Picker: pool(t, rr, v2)},
		{Name: "term", ServerNames: []string{"term.example.com"}, ProxyProtocol: 2, TLS: cfg, Picker: pool(t, rr, term)},
	}, tcpproxy.Options{})

	for _, tc := range []struct {
		name string
		got  chan proxyproto.Header
		ver  int
	}{{"v1.example.com", got1, 1}, {"v2.example.com", got2, 2}} {
		c := dial(t, addr)
		hello := clientHello(t, &tls.Config{ServerName: tc.name})
		_, err := c.Write(hello)
		require.NoError(t, err)
		echo := make([]byte, len(hello))
		_, err = io.ReadFull(c, echo)
		require.NoError(t, err)
		assert.Equal(t, hello, echo, "the hello follows the header, untouched")
		h := <-tc.got
		assert.Equal(t, tc.ver, h.Version)
		assert.Equal(t, c.LocalAddr().String(), h.Source.String(), "the header names the client")
		assert.Equal(t, addr, h.Destination.String(), "and the address it connected to")
		sni, ok := h.TLV(proxyproto.TypeAuthority)
		assert.Equal(t, tc.ver == 2, ok, "version 2 carries the server name")
		if ok {
			assert.Equal(t, tc.name, string(sni))
		}
	}

	tc := tls.Client(dial(t, addr), &tls.Config{ServerName: "term.example.com", RootCAs: ca.Pool, NextProtos: []string{"echo"}})
	require.NoError(t, tc.Handshake())
	io.WriteString(tc, "plain")
	h := <-gotTerm
	alpn, _ := h.TLV(proxyproto.TypeALPN)
	assert.Equal(t, "echo", string(alpn), "a terminating route's header carries the negotiated protocol")
	buf := make([]byte, 5)
	_, err = io.ReadFull(tc, buf)
	require.NoError(t, err)
	assert.Equal(t, "plain", string(buf))
}

// TestProxyProtocolChain serves the proxy behind a trusted load balancer that sends PROXY
// headers: the Picker and the endpoint's header both see the client the balancer named.
func TestProxyProtocolChain(t *testing.T) {
	backend, got := headerBackend(t)
	seen := make(chan netip.AddrPort, 1)
	inner := pool(t, balancer.RoundRobin{}, backend)
	picker := sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		seen <- info.Client
		return inner.Pick(info)
	})
	table, err := tcpproxy.NewTable([]tcpproxy.Route{{Name: "r", ProxyProtocol: 2, Picker: picker}})
	require.NoError(t, err)
	p, err := tcpproxy.New(table, tcpproxy.Options{})
	require.NoError(t, err)
	trusted, err := sluice.ParseTrustedProxies("127.0.0.0/8")
	require.NoError(t, err)
	ln := listen(t)
	go p.Serve(&proxyproto.Listener{Listener: ln, Trusted: trusted})
	t.Cleanup(func() { p.Close() })

	c := dial(t, ln.Addr().String())
	client := netip.MustParseAddrPort("192.0.2.7:5555")
	lb, err := proxyproto.Header{Version: 1, Transport: proxyproto.TCP4, Source: client,
		Destination: netip.MustParseAddrPort("198.51.100.1:443")}.Append(nil)
	require.NoError(t, err)
	_, err = c.Write(append(lb, "data"...))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "data", string(buf))
	assert.Equal(t, client, <-seen, "PickInfo.Client is the client the balancer named")
	h := <-got
	assert.Equal(t, client, h.Source, "the endpoint's header passes the client on")
}

func TestProxyProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		r    tcpproxy.Route
		want string
	}{
		{tcpproxy.Route{Name: "a", ProxyProtocol: 3, Picker: nopPicker}, "ProxyProtocol must be 0, 1 or 2, got 3"},
		{tcpproxy.Route{Name: "a", ProxyProtocol: 1, Listener: tcpproxy.NewListener(nil)}, "ProxyProtocol is for routes with a Picker, not a Listener"},
	} {
		_, err := tcpproxy.NewTable([]tcpproxy.Route{tc.r})
		if assert.Error(t, err) {
			assert.Equal(t, `tcpproxy: routes[0] "a": `+tc.want, err.Error())
		}
	}
}
