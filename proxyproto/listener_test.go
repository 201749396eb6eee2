package proxyproto_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxyproto"
)

// waitFor bounds every wait for something that should happen; a test that waits this long has
// failed.
const waitFor = 5 * time.Second

// shortTimeout is the HeaderTimeout of tests that wait for it to pass.
const shortTimeout = 100 * time.Millisecond

// plainConn hides everything of a TCP connection but net.Conn: a connection that is not a
// socket to the Listener, which must then read a peer's first bytes and give them back.
type plainConn struct{ net.Conn }

type plainListener struct{ net.Listener }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

// kinds are the two sorts of connection every Listener test runs on.
var kinds = []string{"socket", "not a socket"}

// listen serves l on a new loopback listener, of the given kind, until the test ends.
func listen(t *testing.T, kind string, l *proxyproto.Listener) *proxyproto.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l.Listener = ln
	if kind == "not a socket" {
		l.Listener = plainListener{ln}
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func trust(t *testing.T, cidrs ...string) *sluice.TrustedProxies {
	t.Helper()
	tp, err := sluice.ParseTrustedProxies(cidrs...)
	require.NoError(t, err)
	return tp
}

// dial connects to l and writes b.
func dial(t *testing.T, l net.Listener, b []byte) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	if len(b) > 0 {
		_, err = c.Write(b)
		require.NoError(t, err)
	}
	return c.(*net.TCPConn)
}

// accept returns l's next connection, failing the test if none comes within waitFor.
func accept(t *testing.T, l net.Listener) *proxyproto.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		require.NoError(t, r.err)
		t.Cleanup(func() { r.c.Close() })
		return r.c.(*proxyproto.Conn)
	case <-time.After(waitFor):
		t.Fatal("Accept did not return")
		return nil
	}
}

// addrPort returns a TCP or UDP address as a netip.AddrPort.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// readAll reads c to its end, within waitFor.
func readAll(t *testing.T, c net.Conn) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	return io.ReadAll(c)
}

// assertClosed checks that the server closed client's connection: a read ends at once, with
// EOF or a reset, rather than waiting.
func assertClosed(t *testing.T, client net.Conn) {
	t.Helper()
	client.SetReadDeadline(time.Now().Add(waitFor))
	_, err := io.Copy(io.Discard, client)
	assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server closed the connection")
}

func TestListenerHeaders(t *testing.T) {
	const payload = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
	for _, kind := range kinds {
		for _, tc := range validHeaders {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				l := listen(t, kind, &proxyproto.Listener{Trusted: trust(t, "127.0.0.1")})
				client := dial(t, l, append(bytes.Clone(tc.in), payload...))
				require.NoError(t, client.CloseWrite())
				c := accept(t, l)

				assert.Equal(t, tc.want, c.Header())
				if tc.want.Proxied() {
					assert.Equal(t, tc.want.Source, addrPort(c.RemoteAddr()), "RemoteAddr is the header's source")
					assert.Equal(t, tc.want.Destination, addrPort(c.LocalAddr()), "LocalAddr is the header's destination")
				} else {
					assert.Equal(t, client.LocalAddr().String(), c.RemoteAddr().String(), "LOCAL and UNKNOWN keep the real peer")
					assert.Equal(t, client.RemoteAddr().String(), c.LocalAddr().String())
				}
				got, err := readAll(t, c)
				require.NoError(t, err)
				assert.Equal(t, payload, string(got), "the bytes after the header are the application's, all of them")
			})
		}
	}
}

func TestListenerTrustedFailures(t *testing.T) {
	cases := []struct {
		name    string
		send    string
		close   bool   // the peer closes its side after sending
		timeout bool   // the failure is HeaderTimeout passing
		want    string // in the error
		is      error
	}{
		{"nothing, then closed", "", true, false, "ended before the PROXY header", io.EOF},
		{"silent", "", false, true, "i/o timeout", os.ErrDeadlineExceeded},
		{"v1 truncated, then closed", "PROXY TCP4 192.0.2.7 19", true, false, "ended inside the PROXY header", io.ErrUnexpectedEOF},
		{"v1 start, then closed", "PROX", true, false, "ended inside the PROXY header", io.ErrUnexpectedEOF},
		{"v2 truncated, then closed", string(v2(0x21, 0x11, addrs4())[:20]), true, false, "ended inside the PROXY header", io.ErrUnexpectedEOF},
		{"v1 truncated, peer stays", "PROXY TCP4 192.0.2.7 19", false, true, "i/o timeout", os.ErrDeadlineExceeded},
		{"v2 length lies, peer stays", string(v2Len(0x21, 0x11, 100, addrs4())), false, true, "i/o timeout", os.ErrDeadlineExceeded},
		{"v1 oversized", "PROXY UNKNOWN " + strings.Repeat("a", 200), false, false, "no CRLF within 107", nil},
		{"v2 oversized", string(v2Len(0x21, 0x11, 0xFFFF, addrs4())), false, false, "more than the 4080", nil},
		{"v2 malformed TLVs", string(v2(0x21, 0x11, addrs4(), []byte{0x02, 0x00, 0x09, 'a'})), false, false, "TLV 0x02", nil},
		{"v1 wrong family", "PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\nGET", false, false, "source address", nil},
		{"no header", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", false, false, "no PROXY header", proxyproto.ErrNoHeader},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh", false, false, "no PROXY header", proxyproto.ErrNoHeader},
	}
	for _, kind := range kinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				l := &proxyproto.Listener{Trusted: trust(t, "127.0.0.0/8")}
				if tc.timeout {
					l.HeaderTimeout = shortTimeout
				}
				listen(t, kind, l)
				client := dial(t, l, []byte(tc.send))
				if tc.close {
					require.NoError(t, client.CloseWrite())
				}
				c := accept(t, l)
				assert.Equal(t, client.LocalAddr().String(), c.RemoteAddr().String(), "a failed connection keeps its real peer")
				n, err := c.Read(make([]byte, 100))
				assert.Zero(t, n)
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
				assert.Contains(t, err.Error(), "trusted peer "+client.LocalAddr().String(), "the error names the peer")
				if tc.is != nil {
					assert.ErrorIs(t, err, tc.is)
				}
				_, err2 := c.Read(make([]byte, 100))
				assert.Equal(t, err, err2, "every Read fails the same way")
				assertClosed(t, client)
			})
		}
	}
}

func TestListenerUntrusted(t *testing.T) {
	cases := []struct {
		name   string
		send   []string // written one after the other
		refuse bool
	}{
		{"HTTP/1.1", []string{"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"}, false},
		{"HTTP/2 preface", []string{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"}, false},
		{"starts like v2, then not", []string{"\r\n\r\n", "\x00\r\nQUI", "T!"}, false},
		{"starts like v1, then not", []string{"PROX", "Y!"}, false},
		{"one byte", []string{"x"}, false},
		{"nothing", nil, false},
		{"v1 header", []string{"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n"}, true},
		{"v1 header in pieces", []string{"PR", "OX", "Y TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"}, true},
		{"v1 signature alone", []string{"PROXY "}, true},
		{"v2 header", []string{string(v2(0x21, 0x11, addrs4()))}, true},
		{"v2 LOCAL header", []string{string(v2(0x20, 0x00))}, true},
		{"v2 signature alone", []string{sigV2}, true},
	}
	for _, kind := range kinds {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				// The peer, 127.0.0.1, is not in Trusted.
				l := listen(t, kind, &proxyproto.Listener{Trusted: trust(t, "10.0.0.0/8", "::1")})
				client := dial(t, l, nil)
				c := accept(t, l)
				assert.Equal(t, client.LocalAddr().String(), c.RemoteAddr().String())
				go func() {
					for _, s := range tc.send {
						client.Write([]byte(s))
					}
					client.CloseWrite()
				}()
				got, err := readAll(t, c)
				if tc.refuse {
					assert.ErrorIs(t, err, proxyproto.ErrUntrusted)
					assert.ErrorContains(t, err, client.LocalAddr().String(), "the error names the peer")
					assert.Empty(t, got, "nothing of the header is read")
					assertClosed(t, client)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, strings.Join(tc.send, ""), string(got), "an untrusted peer's bytes pass through untouched")
			})
		}
	}
}

// TestListenerBulk sends 4 MiB each way through a Listener's connection, with io.Copy,
// which takes the wrapped connection's ReadFrom and WriteTo (splice(2) on Linux).
func TestListenerBulk(t *testing.T) {
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	for _, kind := range kinds {
		for _, trusted := range []bool{true, false} {
			name := kind + "/untrusted"
			if trusted {
				name = kind + "/trusted"
			}
			t.Run(name, func(t *testing.T) {
				l := listen(t, kind, &proxyproto.Listener{Trusted: trust(t, "10.0.0.0/8")})
				var hdr []byte
				if trusted {
					l.Trusted = trust(t, "127.0.0.1")
					hdr = []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n")
				}
				client := dial(t, l, hdr)
				c := accept(t, l)

				// Upload: the client's bytes, copied from c into a TCP sink.
				sink, sinkPeer := tcpPair(t)
				go func() {
					client.Write(data)
					client.CloseWrite()
				}()
				done := make(chan error, 1)
				go func() {
					_, err := io.Copy(sink, c) // c.WriteTo
					sink.CloseWrite()
					done <- err
				}()
				got, err := readAll(t, sinkPeer)
				require.NoError(t, err)
				require.NoError(t, <-done)
				assert.Equal(t, sha256.Sum256(data), sha256.Sum256(got), "the upload is intact")

				// Download: bytes from a TCP source, copied into c.
				src, srcPeer := tcpPair(t)
				go func() {
					srcPeer.Write(data)
					srcPeer.CloseWrite()
				}()
				go func() {
					_, err := io.Copy(c, src) // c.ReadFrom
					if c.CloseWrite() != nil {
						c.Close() // not a socket: no half-close
					}
					done <- err
				}()
				got, err = readAll(t, client)
				require.NoError(t, err)
				require.NoError(t, <-done)
				assert.Equal(t, sha256.Sum256(data), sha256.Sum256(got), "the download is intact")
			})
		}
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	b, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestListenerSilentPeer checks that a trusted peer that sends nothing holds up no one else,
// and that Close ends the wait for its header.
func TestListenerSilentPeer(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			l := listen(t, kind, &proxyproto.Listener{Trusted: trust(t, "127.0.0.1"), HeaderTimeout: time.Hour})
			silent := dial(t, l, nil)
			dial(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"))
			c := accept(t, l)
			assert.Equal(t, "192.0.2.7:56324", c.RemoteAddr().String(), "the second peer is accepted while the first says nothing")

			require.NoError(t, l.Close())
			assertClosed(t, silent)
			_, err := l.Accept()
			assert.ErrorIs(t, err, net.ErrClosed, "Accept after Close")
		})
	}
}

func TestListenerOptional(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind+"/header", func(t *testing.T) {
			l := listen(t, kind, &proxyproto.Listener{Trusted: trust(t, "127.0.0.1"), Optional: true})
			client := dial(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nhello"))
			client.CloseWrite()
			c := accept(t, l)
			assert.Equal(t, "192.0.2.7:56324", c.RemoteAddr().String())
			got, err := readAll(t, c)
			require.NoError(t, err)
			assert.Equal(t, "hello", string(got))
		})
		t.Run(kind+"/no header", func(t *testing.T) {
			l := listen(t, kind, &proxyproto.Listener{Trusted: trust(t, "127.0.0.1"), Optional: true})
			client := dial(t, l, []byte("\r\n\r\nGET / HTTP/1.1\r\n\r\n"))
			client.CloseWrite()
			c := accept(t, l)
			assert.Equal(t, client.LocalAddr().String(), c.RemoteAddr().String())
			assert.Equal(t, proxyproto.Header{}, c.Header())
			got, err := readAll(t, c)
			require.NoError(t, err)
			assert.Equal(t, "\r\n\r\nGET / HTTP/1.1\r\n\r\n", string(got), "the bytes are untouched")
		})
		t.Run(kind+"/silent", func(t *testing.T) {
			l := listen(t, kind, &proxyproto.Listener{Trusted: trust(t, "127.0.0.1"), Optional: true, HeaderTimeout: shortTimeout})
			client := dial(t, l, nil)
			c := accept(t, l) // after HeaderTimeout
			assert.Equal(t, client.LocalAddr().String(), c.RemoteAddr().String())
			client.Write([]byte("late"))
			client.CloseWrite()
			got, err := readAll(t, c)
			require.NoError(t, err, "the header's deadline is gone")
			assert.Equal(t, "late", string(got))
		})
	}
}

func TestConnUnwrap(t *testing.T) {
	l := listen(t, "socket", &proxyproto.Listener{})
	client := dial(t, l, nil)
	c := accept(t, l)
	tc, ok := c.NetConn().(*net.TCPConn)
	require.True(t, ok, "NetConn returns the TCP connection")
	assert.Equal(t, client.LocalAddr().String(), tc.RemoteAddr().String())
	require.NoError(t, c.CloseWrite())
	assertClosed(t, client) // the client reads EOF: the server's side is half-closed
	require.NoError(t, c.CloseRead())
}

func TestFromConn(t *testing.T) {
	l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "127.0.0.1")})
	client := dial(t, l, []byte("PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n"))
	c := accept(t, l)
	assert.Equal(t, proxyproto.Header{Version: 2, Transport: proxyproto.TCP6, Source: src6, Destination: dst6},
		proxyproto.FromConn(2, c), "a proxy behind a proxy passes the client on")
	assert.Equal(t, proxyproto.Header{Version: 1, Transport: proxyproto.TCP4,
		Source: client.RemoteAddr().(*net.TCPAddr).AddrPort(), Destination: client.LocalAddr().(*net.TCPAddr).AddrPort()},
		proxyproto.FromConn(1, client))
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	assert.Equal(t, proxyproto.Header{Version: 2}, proxyproto.FromConn(2, a), "a pipe has no IP addresses")
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer u.Close()
	uc, err := net.DialUDP("udp", nil, u.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer uc.Close()
	assert.Equal(t, proxyproto.UDP4, proxyproto.FromConn(2, uc).Transport)
}
