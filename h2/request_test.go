package h2_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// seen answers what the handler saw of the request, one item a line: the request line's
// parts, the header, the framing, the TLS state and the addresses, then the body and the
// trailer as they were once the body was read.
var seen = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	fmt.Fprintf(&b, "method=%s\nurl=%s scheme=%q host=%q path=%q rawpath=%q query=%q\n", r.Method, r.URL, r.URL.Scheme, r.URL.Host, r.URL.Path, r.URL.RawPath, r.URL.RawQuery)
	fmt.Fprintf(&b, "requestURI=%s\nhost=%s\nproto=%s %d.%d\n", r.RequestURI, r.Host, r.Proto, r.ProtoMajor, r.ProtoMinor)
	fmt.Fprintf(&b, "header:\n%s", headerString(r.Header))
	// Whether Body is http.NoBody is left out: net/http's HTTP/2 server gives a request
	// that ended with its HEADERS frame a body that reads nothing, h2 gives http.NoBody, as
	// net/http's HTTP/1 server does (TestNoBody).
	fmt.Fprintf(&b, "contentLength=%d transferEncoding=%q close=%v\n", r.ContentLength, r.TransferEncoding, r.Close)
	fmt.Fprintf(&b, "trailer before the body: %s\n", trailerString(r.Trailer))
	fmt.Fprintf(&b, "tls=%v", r.TLS != nil)
	if r.TLS != nil {
		fmt.Fprintf(&b, " alpn=%q complete=%v", r.TLS.NegotiatedProtocol, r.TLS.HandshakeComplete)
	}
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	fmt.Fprintf(&b, "\nremote=%s local=%v server=%v\n", r.RemoteAddr, r.Context().Value(http.LocalAddrContextKey), srv != nil)
	body, err := io.ReadAll(r.Body)
	fmt.Fprintf(&b, "body: %d bytes, crc32 %08x, %q, err=%v\n", len(body), crc32.ChecksumIEEE(body), abbrev(string(body)), err)
	fmt.Fprintf(&b, "trailer after the body: %s\n", trailerString(r.Trailer))
	io.WriteString(w, b.String())
})

// trailerString is a request's trailer, sorted, with nil values (declared, not yet come)
// told apart from empty ones.
func trailerString(h http.Header) string {
	if h == nil {
		return "nil"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(h)) {
		parts = append(parts, fmt.Sprintf("%s=%#v", k, h[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// randomBody is n random bytes as a string.
func randomBody(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return string(b)
}

// TestRequest checks what a handler sees of requests from x/net's client, over h2c and TLS:
// the fields of http.Request, the header with cookies joined, the body and the trailer.
func TestRequest(t *testing.T) {
	big := randomBody(1 << 20)
	cases := []struct {
		name  string
		build func(c *client) *http.Request
		check func(t *testing.T, view string) // on h2's view, beside the comparison
	}{
		{"GET", get("/"), func(t *testing.T, view string) {
			assert.Contains(t, view, "proto=HTTP/2.0 2.0\n")
			assert.Contains(t, view, "requestURI=/\n")
			assert.Contains(t, view, "contentLength=0 ")
			assert.Contains(t, view, "remote=CLIENT local=SERVER server=true\n", "RemoteAddr is the client's address")
		}},
		{"path and query", get("/a%2Fb/c?x=1&y=%20z"), func(t *testing.T, view string) {
			assert.Contains(t, view, `path="/a/b/c" rawpath="/a%2Fb/c" query="x=1&y=%20z"`)
			assert.Contains(t, view, "requestURI=/a%2Fb/c?x=1&y=%20z\n")
		}},
		{"HEAD", func(c *client) *http.Request { return c.request(http.MethodHead, "/", nil) }, nil},
		{"POST with a length", func(c *client) *http.Request { return c.request(http.MethodPost, "/", "hello") }, func(t *testing.T, view string) {
			assert.Contains(t, view, "contentLength=5 ")
			assert.Contains(t, view, `"hello", err=<nil>`)
		}},
		{"POST without a length", func(c *client) *http.Request {
			return c.request(http.MethodPost, "/", strings.NewReader("hello"))
		}, func(t *testing.T, view string) {
			assert.Contains(t, view, "contentLength=-1 ", "no content-length field: unknown, not zero")
			assert.Contains(t, view, `"hello", err=<nil>`)
		}},
		{"POST with an empty body", func(c *client) *http.Request { return c.request(http.MethodPost, "/", "") }, nil},
		{"POST of 1 MiB", func(c *client) *http.Request { return c.request(http.MethodPost, "/", big) }, func(t *testing.T, view string) {
			assert.Contains(t, view, fmt.Sprintf("body: %d bytes, crc32 %08x", len(big), crc32.ChecksumIEEE([]byte(big))))
		}},
		{"POST of 1 MiB without a length", func(c *client) *http.Request {
			return c.request(http.MethodPost, "/", strings.NewReader(big))
		}, nil},
		{"header fields", func(c *client) *http.Request {
			req := c.request(http.MethodGet, "/", nil)
			req.Header.Add("X-Multi", "one")
			req.Header.Add("X-Multi", "two")
			req.Header.Add("Cookie", "a=1")
			req.Header.Add("Cookie", "b=2; c=3")
			req.Header.Set("Empty", "")
			return req
		}, func(t *testing.T, view string) {
			assert.Contains(t, view, `X-Multi: ["one" "two"]`)
			// The client splits cookies into fields of their own; the server joins them with
			// "; " (RFC 9113 §8.2.3).
			assert.Contains(t, view, `Cookie: ["a=1; b=2; c=3"]`)
		}},
		{"Host", func(c *client) *http.Request {
			req := c.request(http.MethodGet, "/", nil)
			req.Host = "virtual.example:8443"
			return req
		}, func(t *testing.T, view string) {
			assert.Contains(t, view, "\nhost=virtual.example:8443\n", ":authority is the Host")
			assert.NotContains(t, view, "Host:", "no Host in the header")
		}},
		{"request trailer", func(c *client) *http.Request {
			req := c.request(http.MethodPost, "/", strings.NewReader("body"))
			req.Trailer = http.Header{"X-Checksum": {"abc"}, "X-Other": {"1", "2"}}
			return req
		}, func(t *testing.T, view string) {
			assert.Contains(t, view, `trailer before the body: {X-Checksum=[]string(nil) X-Other=[]string(nil)}`, "declared, not yet come")
			assert.Contains(t, view, `trailer after the body: {X-Checksum=[]string{"abc"} X-Other=[]string{"1", "2"}}`)
			assert.NotContains(t, view, "Trailer:", "the Trailer field is not in the header")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forModes(t, func(t *testing.T, mode string) {
				_, h := differential(t, mode, handle(seen), nil, tc.build)
				require.NoError(t, h.err)
				assert.Equal(t, http.StatusOK, h.status)
				switch {
				case h.body == "": // HEAD: no view to look at
				case mode == overTLS:
					assert.Contains(t, h.body, "tls=true alpn=\"h2\" complete=true\n")
				default:
					assert.Contains(t, h.body, "tls=false\n")
				}
				if tc.check != nil {
					tc.check(t, h.body)
				}
			})
		})
	}
}

// TestRawRequest checks what a handler sees of requests only a hand-made client sends: split
// TestNoBody checks that a request that ended with its HEADERS frame has http.NoBody, which
// tells a handler (a proxy's, say) that there is nothing to forward without reading.
func TestNoBody(t *testing.T) {
	ts := start(t, ours, h2c, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%v", r.Body == http.NoBody)
	})})
	c := ts.client(t)
	assert.Equal(t, "true", c.get("/").body)
	assert.Equal(t, "false", c.do(c.request("POST", "/", strings.NewReader("abc"))).body)
}

// cookies, OPTIONS *, CONNECT, the Host field against :authority, padded DATA, trailers.
func TestRawRequest(t *testing.T) {
	cases := []struct {
		name   string
		script func(c *rawConn) uint32
		check  func(t *testing.T, s *stream) // on h2's stream, beside the comparison
	}{
		{"cookies in three fields", func(c *rawConn) uint32 {
			return c.request("GET", "/", true, "cookie", "a=1", "cookie", "b=2", "x-other", "x", "cookie", "c=3")
		}, func(t *testing.T, s *stream) {
			assert.Contains(t, s.body.String(), `Cookie: ["a=1; b=2; c=3"]`, "RFC 9113 §8.2.3: cookies joined with \"; \"")
		}},
		{"OPTIONS *", func(c *rawConn) uint32 { return c.request("OPTIONS", "*", true) }, func(t *testing.T, s *stream) {
			// net/http's serverHandler answers OPTIONS * itself, without the handler.
			assert.Equal(t, "200", s.status())
			assert.Empty(t, s.body.String(), "the handler does not run")
		}},
		{"CONNECT", func(c *rawConn) uint32 {
			id := c.newStream()
			// RFC 9113 §8.5: only :method and :authority.
			c.writeHeaders(id, false, ":method", "CONNECT", ":authority", "backend.example:443")
			c.writeData(id, true, "tunnel")
			return id
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, "200", s.status())
			assert.Contains(t, s.body.String(), "method=CONNECT\n")
			assert.Contains(t, s.body.String(), "requestURI=backend.example:443\n")
			assert.Contains(t, s.body.String(), "host=backend.example:443\n")
			assert.Contains(t, s.body.String(), `"tunnel", err=<nil>`)
		}},
		{"Host without :authority", func(c *rawConn) uint32 {
			id := c.newStream()
			c.writeHeaders(id, true, ":method", "GET", ":scheme", "https", ":path", "/", "host", "from-host.example")
			return id
		}, func(t *testing.T, s *stream) {
			assert.Contains(t, s.body.String(), "\nhost=from-host.example\n", "RFC 9113 §8.3.1: Host stands in for a missing :authority")
		}},
		{"Host beside the same :authority", func(c *rawConn) uint32 {
			return c.request("GET", "/", true, "host", "test.example")
		}, func(t *testing.T, s *stream) {
			// Unlike HTTP/1.1, net/http leaves a Host field in the header.
			assert.Contains(t, s.body.String(), "\nhost=test.example\n")
		}},
		{"padded DATA", func(c *rawConn) uint32 {
			id := c.request("POST", "/", false, "content-length", "10")
			c.conn.SetWriteDeadline(deadline())
			require.NoError(c.t, c.fr.WriteDataPadded(id, false, []byte("hello"), make([]byte, 200)))
			require.NoError(c.t, c.fr.WriteDataPadded(id, true, []byte("world"), make([]byte, 7)))
			return id
		}, func(t *testing.T, s *stream) {
			assert.Contains(t, s.body.String(), `"helloworld", err=<nil>`, "padding is not body")
		}},
		{"trailers", func(c *rawConn) uint32 {
			id := c.request("POST", "/", false, "trailer", "x-t")
			c.writeData(id, false, "body")
			c.writeHeaders(id, true, "x-t", "v", "x-undeclared", "u")
			return id
		}, func(t *testing.T, s *stream) {
			// net/http keeps only the declared trailer fields.
			assert.Contains(t, s.body.String(), `trailer after the body: {X-T=[]string{"v"}}`)
		}},
		{"trailers on an empty body", func(c *rawConn) uint32 {
			id := c.request("POST", "/", false)
			c.writeHeaders(id, true, "x-t", "v")
			return id
		}, nil},
		{"te: trailers", func(c *rawConn) uint32 {
			// The one value of TE that RFC 9113 §8.2.2 allows.
			return c.request("GET", "/", true, "te", "trailers")
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, "200", s.status())
		}},
		{"empty DATA frames", func(c *rawConn) uint32 {
			id := c.request("POST", "/", false)
			c.writeData(id, false, "")
			c.writeData(id, false, "x")
			c.writeData(id, false, "")
			c.writeData(id, true, "")
			return id
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, h := rawDifferential(t, handle(seen), nil, tc.script)
			assert.True(t, h.endStream, "a complete response")
			if tc.check != nil {
				tc.check(t, h)
			}
		})
	}
}

// TestRequestContext checks the request's context: the server and the local address,
// BaseContext and ConnContext, and the connection ConnContext gets.
func TestRequestContext(t *testing.T) {
	type key string
	forModes(t, func(t *testing.T, mode string) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				srv := &http.Server{
					BaseContext: func(ln net.Listener) context.Context {
						return context.WithValue(context.Background(), key("base"), ln.Addr().String())
					},
					ConnContext: func(ctx context.Context, c net.Conn) context.Context {
						_, isTLS := c.(*tls.Conn)
						return context.WithValue(ctx, key("conn"), fmt.Sprintf("%s tls=%v", c.RemoteAddr(), isTLS))
					},
				}
				srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctx := r.Context()
					fmt.Fprintf(w, "server=%v local=%v base=%v conn=%v",
						ctx.Value(http.ServerContextKey) == srv, ctx.Value(http.LocalAddrContextKey), ctx.Value(key("base")), ctx.Value(key("conn")))
				})
				ts := start(t, name, mode, srv)
				c := ts.client(t)
				// ConnContext sees the connection the listener accepted: a *tls.Conn in the TLS
				// mode, as with net/http.
				want := fmt.Sprintf("server=true local=SERVER base=SERVER conn=CLIENT tls=%v", mode == overTLS)
				assert.Equal(t, want, c.get("/").body)
				assert.Equal(t, want, c.get("/").body, "a second stream on the connection")
			})
		}
	})
}

// TestRequestContextCanceled checks that a request's context ends when its handler returns,
// when the client resets the stream, and when the connection goes.
func TestRequestContextCanceled(t *testing.T) {
	t.Run("when the handler returns", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				ctxs := make(chan context.Context, 1)
				ts := start(t, name, h2c, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctxs <- r.Context()
				})})
				require.NoError(t, ts.client(t).get("/").err)
				ctx := recv(t, ctxs, "the handler")
				assert.ErrorIs(t, ctx.Err(), context.Canceled, "canceled before the response ended")
			})
		}
	})

	// waitCanceled is a handler that reports whether its context was canceled within waitFor.
	waitCanceled := func(started chan<- struct{}, result chan<- error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			w.(http.Flusher).Flush()
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				result <- r.Context().Err()
			case <-afterWait():
				result <- fmt.Errorf("not canceled")
			}
		}
	}

	for _, tc := range []struct {
		name    string
		post    bool // the request body is still open when the client cancels
		closeIt bool // the client closes the connection rather than reset the stream
	}{
		{"when the client resets the stream", false, false},
		{"when the client resets the stream with the body open", true, false},
		{"when the client closes the connection", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range fronts {
				t.Run(name, func(t *testing.T) {
					started, result := make(chan struct{}, 1), make(chan error, 1)
					ts := start(t, name, h2c, &http.Server{Handler: waitCanceled(started, result)})
					c := ts.dialRaw(t)
					var id uint32
					if tc.post {
						id = c.request("POST", "/", false)
						c.writeData(id, false, "part")
					} else {
						id = c.request("GET", "/", true)
					}
					recv(t, started, "the handler")
					require.True(t, c.waitUntil(func() bool { return len(c.stream(id).blocks) > 0 }), "the 202's head")
					if tc.closeIt {
						c.conn.Close()
					} else {
						c.writeRST(id, http2.ErrCodeCancel)
					}
					assert.ErrorIs(t, recv(t, result, "the handler's result"), context.Canceled)
					if !tc.closeIt {
						assert.True(t, c.alive(), "a reset stream leaves the connection working")
					}
				})
			}
		})
	}
}

// TestHostBesideOtherAuthority checks a request whose Host field names another authority than
// its :authority. RFC 9113 §8.3.1 says a server SHOULD treat it as malformed; net/http takes
// :authority and serves it. Either is right, so this asserts only that h2 does one of the two.
func TestHostBesideOtherAuthority(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, h2c, &http.Server{Handler: seen})
			c := ts.dialRaw(t)
			s := c.wait(c.request("GET", "/", true, "host", "other.example"))
			t.Logf("%s: %s", name, s)
			if s.endStream {
				assert.Contains(t, s.body.String(), "\nhost=test.example\n", ":authority wins")
				return
			}
			assert.True(t, s.ended, "the stream ends")
			assert.Equal(t, http2.ErrCodeProtocol, s.rst, "malformed: a stream error of type PROTOCOL_ERROR (RFC 9113 §8.1.1)")
			assert.True(t, c.alive(), "a stream error leaves the connection working")
		})
	}
}
