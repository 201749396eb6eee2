package tcpproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// listen returns a loopback listener closed with the test.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveConns runs handle for every connection ln accepts, until the test ends.
func serveConns(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// echoBackend echoes what it reads and half-closes when its client does. It returns its
// address.
func echoBackend(t testing.TB) string {
	ln := listen(t)
	serveConns(t, ln, func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	})
	return ln.Addr().String()
}

// namedBackend greets each connection with its name and a newline, then echoes.
func namedBackend(t testing.TB, name string) string {
	ln := listen(t)
	serveConns(t, ln, func(c net.Conn) {
		io.WriteString(c, name+"\n")
		io.Copy(c, c)
	})
	return ln.Addr().String()
}

// tlsBackend is a TLS server for every name cert covers: it greets each connection with its
// name, the server name it was asked for and the protocol negotiated, then echoes.
func tlsBackend(t testing.TB, name string, cert tls.Certificate) string {
	ln := listen(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1", "acme-tls/1"}}
	serveConns(t, ln, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if tc.Handshake() != nil {
			return
		}
		st := tc.ConnectionState()
		io.WriteString(tc, name+" "+st.ServerName+" "+st.NegotiatedProtocol+"\n")
		io.Copy(tc, tc)
	})
	return ln.Addr().String()
}

// deadAddr returns a loopback address nobody listens on: connecting is refused.
func deadAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// pool returns a balancer over addrs.
func pool(t testing.TB, policy balancer.Policy, addrs ...string) *balancer.Balancer {
	t.Helper()
	b, err := balancer.New(policy, balancer.Options{})
	require.NoError(t, err)
	eps := make([]sluice.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = sluice.Endpoint{Addr: a}
	}
	b.Update(eps)
	return b
}

// start serves routes with opts on a loopback listener and returns the proxy and its address.
// The proxy is closed with the test, and Serve must then have returned ErrClosed. mode, if
// given, is how it copies (see SetCopy).
func start(t testing.TB, routes []tcpproxy.Route, opts tcpproxy.Options, mode ...string) (*tcpproxy.Proxy, string) {
	t.Helper()
	table, err := tcpproxy.NewTable(routes)
	require.NoError(t, err)
	p, err := tcpproxy.New(table, opts)
	require.NoError(t, err)
	if len(mode) > 0 {
		tcpproxy.SetCopy(p, mode[0])
	}
	ln := listen(t)
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-errc; !errors.Is(err, tcpproxy.ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
	return p, ln.Addr().String()
}

// dial connects to the proxy, with a deadline that keeps a broken test from hanging.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readLine reads one line from c, byte by byte so that nothing after it is consumed.
func readLine(c net.Conn) (string, error) {
	var b strings.Builder
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			return b.String(), err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
}

// closedByPeer reports whether reading c ends (EOF or reset) rather than time out.
func closedByPeer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// outcome is one report an Observer or a Done received.
type outcome struct {
	addr string
	o    sluice.Outcome
}

// recorder is an Observer, and a Picker wrapper whose Done it records, that tests wait on.
type recorder struct {
	observed chan outcome
	done     chan outcome
}

func newRecorder() *recorder {
	return &recorder{observed: make(chan outcome, 100), done: make(chan outcome, 100)}
}

func (r *recorder) Observe(ep sluice.Endpoint, o sluice.Outcome) {
	r.observed <- outcome{ep.Addr, o}
}

// wrap returns a Picker that picks with p and records every Done.
func (r *recorder) wrap(p sluice.Picker) sluice.Picker {
	return sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		res, err := p.Pick(info)
		if err != nil {
			return res, err
		}
		inner, addr := res.Done, res.Endpoint.Addr
		res.Done = func(o sluice.Outcome) {
			if inner != nil {
				inner(o)
			}
			r.done <- outcome{addr, o}
		}
		return res, nil
	})
}

// next waits for the next report on ch.
func next(t testing.TB, ch chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome reported")
		return outcome{}
	}
}

// tlsClient dials the proxy and handshakes as a client asking for name and offering alpn;
// it returns the backend's greeting line.
func tlsClient(t testing.TB, addr, name string, alpn []string, roots *testcert.CA) (*tls.Conn, string) {
	t.Helper()
	c := dial(t, addr)
	cfg := &tls.Config{ServerName: name, NextProtos: alpn, RootCAs: roots.Pool}
	tc := tls.Client(c, cfg)
	require.NoError(t, tc.HandshakeContext(context.Background()), "handshake for %q", name)
	line, err := bufio.NewReader(tc).ReadString('\n')
	require.NoError(t, err, "greeting for %q", name)
	return tc, strings.TrimSpace(line)
}
