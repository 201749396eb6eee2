package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// dialError marks a failure to open a connection to an endpoint: the request never left, so
// it may be retried whatever its method.
type dialError struct{ err error }

func (e *dialError) Error() string { return "proxy: connecting: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

type transports struct {
	main    http.RoundTripper
	upgrade http.RoundTripper
	fast    *h1Client
}

// newTransports builds the default transports of p: one for p.Protocol, one speaking
// HTTP/1.1 for Upgrade requests (which HTTP/2 cannot carry), and for HTTP1 the lean client.
func newTransports(p *Proxy) transports {
	dial := p.dialer()
	maxIdle := p.MaxIdleConnsPerEndpoint
	if maxIdle <= 0 {
		maxIdle = 256
	}
	idle := p.IdleConnTimeout
	if idle == 0 {
		idle = defaultIdleConnTimeout
	}
	tdial, tidle := dial, idle
	if p.ProxyProtocol != 0 {
		// net/http's Transport cannot keep one client's connections apart from another's:
		// each of its requests gets a connection of its own, with its client's header. Only
		// HTTP1 gets here (see checkProxyProtocol), whose Transport speaks HTTP/1.1 alone.
		tdial, tidle = proxyHeaderDialer(dial), -1
	}
	main := newTransport(p.Protocol, tdial, p.TLSClientConfig, maxIdle, tidle)
	t := transports{main: main, upgrade: main}
	switch p.Protocol {
	case HTTP1:
		t.fast = &h1Client{dial: dial, maxIdle: maxIdle, idleTimeout: idle, bodyTimeout: p.bodyIdle,
			hookDelay: defaultHookDelay, proxyProtocol: p.ProxyProtocol}
		if idle < 0 {
			t.fast.maxIdle, t.fast.idleTimeout = 0, defaultIdleConnTimeout
		}
	case HTTPS, HTTP2:
		t.upgrade = newTransport(HTTPS, dial, p.TLSClientConfig, maxIdle, idle)
		t.upgrade.(*http.Transport).Protocols = protocols(true, false, false)
		t.upgrade.(*http.Transport).DialTLSContext = tlsDialer(dial, p.TLSClientConfig, []string{"http/1.1"})
	case H2C:
		t.upgrade = newTransport(HTTP1, dial, nil, maxIdle, idle)
	}
	return t
}

// defaultIdleConnTimeout is Proxy.IdleConnTimeout's default: NGINX's keepalive_timeout for
// upstream connections.
const defaultIdleConnTimeout = 60 * time.Second

// newTransport builds an http.Transport for proto. A negative idle timeout disables
// keep-alive: no connection is kept idle.
func newTransport(proto Protocol, dial func(context.Context, string, string) (net.Conn, error),
	tc *tls.Config, maxIdle int, idle time.Duration) *http.Transport {
	t := &http.Transport{
		Proxy:                 nil, // a proxy inside a cluster must not follow HTTP_PROXY
		DialContext:           dial,
		MaxIdleConnsPerHost:   maxIdle,
		IdleConnTimeout:       idle,
		DisableKeepAlives:     idle < 0,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // forward the client's Accept-Encoding, never add gzip
		HTTP2: &http.HTTP2Config{
			// Probe idle HTTP/2 connections, so that a dead one is found before a request
			// waits on it.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	switch proto {
	case HTTP1:
		t.Protocols = protocols(true, false, false)
	case HTTPS:
		t.Protocols = protocols(true, true, false)
		t.DialTLSContext = tlsDialer(dial, tc, []string{"h2", "http/1.1"})
	case HTTP2:
		t.Protocols = protocols(false, true, false)
		t.DialTLSContext = tlsDialer(dial, tc, []string{"h2"})
	case H2C:
		t.Protocols = protocols(false, false, true)
	}
	return t
}

func protocols(h1, h2, h2c bool) *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(h1)
	p.SetHTTP2(h2)
	p.SetUnencryptedHTTP2(h2c)
	return &p
}

// dialer returns p.DialContext (or a default dialer) with its errors marked as dial errors.
func (p *Proxy) dialer() func(context.Context, string, string) (net.Conn, error) {
	dial := p.DialContext
	if dial == nil {
		d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err}
		}
		return c, nil
	}
}

// tlsDialer dials and completes the TLS handshake itself, so that a failed handshake is known
// to be a connection that never carried the request.
func tlsDialer(dial func(context.Context, string, string) (net.Conn, error), tc *tls.Config,
	alpn []string) func(context.Context, string, string) (net.Conn, error) {
	var cfg *tls.Config
	if tc != nil {
		cfg = tc.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.NextProtos = alpn
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conf := cfg
		if conf.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			conf = cfg.Clone()
			conf.ServerName = host
		}
		tc := tls.Client(c, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, &dialError{err}
		}
		return tc, nil
	}
}
