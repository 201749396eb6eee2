package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/sluiceproxy/sluice/proxyproto"
)

// checkProxyProtocol refuses a ProxyProtocol the proxy cannot honour: an unknown version, or
// transports that would send one client's requests on a connection whose header names
// another.
func (p *Proxy) checkProxyProtocol() error {
	switch {
	case p.ProxyProtocol == 0:
		return nil
	case p.ProxyProtocol != 1 && p.ProxyProtocol != 2:
		return fmt.Errorf("proxy: ProxyProtocol must be 0, 1 or 2, got %d", p.ProxyProtocol)
	case p.Transport != nil:
		return errors.New("proxy: ProxyProtocol needs the default transports: a custom Transport cannot be made to send PROXY headers")
	case p.Protocol != HTTP1:
		return fmt.Errorf("proxy: ProxyProtocol needs Protocol HTTP1, not %v: net/http shares its HTTP/2 and TLS connections among clients", p.Protocol)
	}
	return nil
}

// proxyHeaderKey is the context key under which a request for net/http's Transport carries
// the PROXY header its connection must start with.
type proxyHeaderKey struct{}

// proxyHeaderDialer returns dial with the PROXY header in the dial's context written first
// on each connection. A request without one is not sent: it would reach the endpoint as the
// proxy's own.
func proxyHeaderDialer(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		hdr, _ := ctx.Value(proxyHeaderKey{}).([]byte)
		if hdr == nil {
			return nil, &dialError{errors.New("proxy: no PROXY header for the connection")}
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// A new connection's send buffer is empty: the write does not wait.
		if _, err := c.Write(hdr); err != nil {
			c.Close()
			return nil, &dialError{err}
		}
		return c, nil
	}
}

// clientAddrs returns the addresses of the client's connection, which a PROXY header
// carries: the source from the request's RemoteAddr, the destination from the server's
// http.LocalAddrContextKey. A server that set no local address (a handler called directly)
// gives the unspecified address and port 0, so that the header still names the client; a
// RemoteAddr that is not an IP address and port gives zero addresses (v1 UNKNOWN, v2
// AF_UNSPEC: the endpoint then sees the proxy).
func (x *exchange) clientAddrs() (src, dst netip.AddrPort) {
	src, err := netip.ParseAddrPort(x.in.RemoteAddr)
	if err != nil {
		return netip.AddrPort{}, netip.AddrPort{}
	}
	if a, ok := x.in.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		dst = a.AddrPort()
	}
	if !dst.IsValid() {
		dst = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		if src.Addr().Unmap().Is6() {
			dst = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
	}
	return src, dst
}

// proxyHeader returns the PROXY header of the client's connection.
func (x *exchange) proxyHeader() []byte {
	src, dst := x.clientAddrs()
	// TCP builds only what Append can write, for versions 1 and 2 (checkProxyProtocol); were
	// it not so, the nil header would fail the try in proxyHeaderDialer.
	b, _ := proxyproto.TCP(x.p.ProxyProtocol, src, dst).Append(nil)
	return b
}

// clientPool is the key of the lean client's pool of connections to one endpoint for one
// client connection, whose PROXY header they carry.
type clientPool struct {
	addr     string // the endpoint
	src, dst netip.AddrPort
}
