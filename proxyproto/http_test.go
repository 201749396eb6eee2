package proxyproto_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/proxyproto"
)

// server is what net/http's Server and h1's serve with.
type server interface {
	Serve(net.Listener) error
	Close() error
}

// fronts are the two HTTP servers a Listener must work behind.
var fronts = map[string]func(*http.Server) server{
	"net/http": func(srv *http.Server) server { return srv },
	"h1":       func(srv *http.Server) server { return h1.New(srv) },
}

// whoAmI answers with what the server knows of the client: r.RemoteAddr, sluice.ClientIP and
// the local address.
var whoAmI = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s %v %v", r.RemoteAddr, sluice.ClientIP(r, nil), r.Context().Value(http.LocalAddrContextKey))
})

// serveHTTP serves h through front behind l until the test ends.
func serveHTTP(t *testing.T, front string, l *proxyproto.Listener, h http.Handler) {
	t.Helper()
	s := fronts[front](&http.Server{Handler: h, ReadHeaderTimeout: waitFor})
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
}

// get sends GET requests on c, and returns the bodies of their responses.
func get(t *testing.T, c net.Conn, n int) []string {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitFor))
	br := bufio.NewReader(c)
	var bodies []string
	for range n {
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		require.NoError(t, err)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		bodies = append(bodies, string(body))
	}
	return bodies
}

func TestHTTPServers(t *testing.T) {
	for front := range fronts {
		t.Run(front, func(t *testing.T) {
			t.Run("v1 TCP4", func(t *testing.T) {
				l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "127.0.0.1")})
				serveHTTP(t, front, l, whoAmI)
				c := dial(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"))
				want := "192.0.2.7:56324 192.0.2.7 198.51.100.1:443"
				assert.Equal(t, []string{want, want}, get(t, c, 2), "every request of the connection sees the client")
			})
			t.Run("v2 TCP6", func(t *testing.T) {
				l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "127.0.0.1")})
				serveHTTP(t, front, l, whoAmI)
				hdr, err := proxyproto.TCP(2, src6, dst6).Append(nil)
				require.NoError(t, err)
				c := dial(t, l, hdr)
				assert.Equal(t, []string{"[2001:db8::7]:56324 2001:db8::7 [2001:db8::1]:443"}, get(t, c, 1))
			})
			t.Run("v2 LOCAL", func(t *testing.T) {
				l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "127.0.0.1")})
				serveHTTP(t, front, l, whoAmI)
				c := dial(t, l, v2(0x20, 0x00))
				want := fmt.Sprintf("%s 127.0.0.1 %s", c.LocalAddr(), c.RemoteAddr())
				assert.Equal(t, []string{want}, get(t, c, 1), "LOCAL keeps the real peer")
			})
			t.Run("trusted without a header", func(t *testing.T) {
				l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "127.0.0.1")})
				serveHTTP(t, front, l, whoAmI)
				c := dial(t, l, []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
				c.SetDeadline(time.Now().Add(waitFor))
				_, err := http.ReadResponse(bufio.NewReader(c), nil)
				assert.Error(t, err, "the connection is closed without a response")
			})
			t.Run("untrusted", func(t *testing.T) {
				l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "10.0.0.0/8")})
				serveHTTP(t, front, l, whoAmI)
				c := dial(t, l, nil)
				want := fmt.Sprintf("%s 127.0.0.1 %s", c.LocalAddr(), c.RemoteAddr())
				assert.Equal(t, []string{want, want}, get(t, c, 2), "an untrusted peer is served as it is")
			})
			t.Run("untrusted with a header", func(t *testing.T) {
				l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "10.0.0.0/8")})
				serveHTTP(t, front, l, whoAmI)
				c := dial(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
				c.SetDeadline(time.Now().Add(waitFor))
				_, err := http.ReadResponse(bufio.NewReader(c), nil)
				assert.Error(t, err, "the connection is closed without a response")
			})
			t.Run("silent peer", func(t *testing.T) {
				l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "127.0.0.1"), HeaderTimeout: time.Hour})
				serveHTTP(t, front, l, whoAmI)
				dial(t, l, nil) // says nothing
				c := dial(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"))
				assert.Equal(t, []string{"192.0.2.7:56324 192.0.2.7 198.51.100.1:443"}, get(t, c, 1),
					"a silent peer holds up no one else")
			})
		})
	}
}

// TestH1Splice checks that h1 still splices a response body behind a Listener: the body goes
// through the connection's ReadFrom, which takes exactly the Content-Length from the source
// socket and leaves the rest in it, where h1's copy through a buffer would read past it.
func TestH1Splice(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	const length = 700_000
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "10.0.0.0/8")})
			var hdr []byte
			if trusted {
				l.Trusted = trust(t, "127.0.0.1")
				hdr = []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n")
			}
			left := make(chan int, 1)
			serveHTTP(t, "h1", l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				src, peer := tcpPair(t)
				go func() {
					peer.Write(data)
					peer.CloseWrite()
				}()
				w.Header().Set("Content-Length", fmt.Sprint(length))
				n, err := w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: src, N: int64(len(data))})
				assert.NoError(t, err)
				assert.Equal(t, int64(length), n)
				rest, _ := io.ReadAll(src)
				left <- len(rest)
			}))
			c := dial(t, l, hdr)
			body := get(t, c, 1)[0]
			assert.True(t, body == string(data[:length]), "the body is the source's first %d bytes", length)
			assert.Equal(t, len(data)-length, <-left, "what the length did not take stays in the source: the body was spliced")
		})
	}
}
