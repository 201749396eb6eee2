package h1_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// protoHandler answers how the request came.
var protoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	alpn := ""
	if r.TLS != nil {
		alpn = r.TLS.NegotiatedProtocol
	}
	fmt.Fprintf(w, "%s major=%d tls=%v alpn=%q", r.Proto, r.ProtoMajor, r.TLS != nil, alpn)
})

// fetch GETs url with tr and returns the body, failing t on error.
func fetch(t *testing.T, tr *http.Transport, url string) (string, *http.Response) {
	t.Helper()
	res, err := (&http.Client{Transport: tr}).Get(url)
	require.NoError(t, err, "GET %s", url)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(body), res
}

// protocols returns a Protocols value with the given ones set.
func protocols(http1, http2, h2c bool) *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(http1)
	p.SetHTTP2(http2)
	p.SetUnencryptedHTTP2(h2c)
	return p
}

// assertConnsEnd checks that every connection the ConnState hook saw begin also ended, in
// StateClosed or StateHijacked, with one sequence per connection value.
func assertConnsEnd(t *testing.T, ts *testServer) {
	t.Helper()
	ended := func() bool {
		for _, states := range ts.states.byConn() {
			if last := states[len(states)-1]; last != http.StateClosed && last != http.StateHijacked {
				return false
			}
		}
		return true
	}
	eventually(t, ended, "%s: a connection never ended; states by connection: %v", ts.front, ts.states.byConn())
	for _, states := range ts.states.byConn() {
		assert.Equal(t, http.StateNew, states[0], "%s: the first state of a connection, in %v", ts.front, states)
		assert.Equal(t, 1, countState(states, http.StateNew), "%s: one StateNew per connection, in %v", ts.front, states)
	}
}

func countState(states []http.ConnState, st http.ConnState) int {
	n := 0
	for _, s := range states {
		if s == st {
			n++
		}
	}
	return n
}

// TestH2C checks that a cleartext connection opening with the HTTP/2 preface reaches srv,
// when srv.Protocols allows unencrypted HTTP/2, and that HTTP/1.1 still works beside it.
func TestH2C(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, &http.Server{Handler: protoHandler, Protocols: protocols(true, false, true)})

			h2c := &http.Transport{Protocols: protocols(false, false, true)}
			body, res := fetch(t, h2c, ts.url())
			assert.Equal(t, `HTTP/2.0 major=2 tls=false alpn=""`, body)
			assert.Equal(t, 2, res.ProtoMajor)
			body, _ = fetch(t, h2c, ts.url()+"/again")
			assert.Equal(t, `HTTP/2.0 major=2 tls=false alpn=""`, body, "a second request on the connection")

			h1c := &http.Transport{}
			defer h1c.CloseIdleConnections()
			body, res = fetch(t, h1c, ts.url())
			assert.Equal(t, `HTTP/1.1 major=1 tls=false alpn=""`, body)
			assert.Equal(t, 1, res.ProtoMajor)
		})
	}
}

// TestH2CShutdown checks that Shutdown ends the HTTP/2 connections handed to srv too.
func TestH2CShutdown(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, &http.Server{Handler: protoHandler, Protocols: protocols(true, false, true)})
			h2c := &http.Transport{Protocols: protocols(false, false, true)}
			defer h2c.CloseIdleConnections()
			body, _ := fetch(t, h2c, ts.url())
			require.Equal(t, `HTTP/2.0 major=2 tls=false alpn=""`, body)
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			assert.NoError(t, ts.s.Shutdown(ctx))
			assert.ErrorIs(t, ts.serveErr(t), http.ErrServerClosed)
		})
	}
}

// tlsServer starts front with a certificate for 127.0.0.1 and returns a client TLS config
// that trusts it.
func tlsServer(t *testing.T, name string, srv *http.Server) (*testServer, *tls.Config) {
	ca := testcert.NewCA(t)
	cert := ca.Server(t, "127.0.0.1")
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
	return startTLS(t, name, srv), &tls.Config{RootCAs: ca.Pool}
}

// TestTLS checks ServeTLS: HTTP/1.1 and HTTP/2 chosen by ALPN, the request's TLS state, and
// the answer to a plain HTTP request on the TLS port.
func TestTLS(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts, clientTLS := tlsServer(t, name, &http.Server{Handler: protoHandler})
			url := "https://" + ts.addr

			h1TLS := clientTLS.Clone()
			h1TLS.NextProtos = []string{"http/1.1"}
			h1c := &http.Transport{TLSClientConfig: h1TLS, Protocols: protocols(true, false, false)}
			body, res := fetch(t, h1c, url)
			assert.Equal(t, `HTTP/1.1 major=1 tls=true alpn="http/1.1"`, body)
			assert.Equal(t, 1, res.ProtoMajor)
			fetch(t, h1c, url) // a second request on the connection

			h2 := &http.Transport{TLSClientConfig: clientTLS.Clone(), ForceAttemptHTTP2: true}
			body, res = fetch(t, h2, url)
			assert.Equal(t, `HTTP/2.0 major=2 tls=true alpn="h2"`, body)
			assert.Equal(t, 2, res.ProtoMajor)
		})
	}
}

// TestTLSConnState checks that the ConnState hook sees an HTTP/1.1 connection over TLS as
// one connection, from StateNew to StateClosed, as with net/http.
func TestTLSConnState(t *testing.T) {
	got := make(map[string][][]http.ConnState)
	for _, name := range fronts {
		ts, clientTLS := tlsServer(t, name, &http.Server{Handler: protoHandler})
		tr := &http.Transport{TLSClientConfig: clientTLS, Protocols: protocols(true, false, false)}
		fetch(t, tr, "https://"+ts.addr)
		tr.CloseIdleConnections()
		eventually(t, func() bool { return ts.states.count(http.StateClosed) == 1 }, "%s: no StateClosed", name)
		got[name] = ts.states.byConn()
	}
	assert.Equal(t, got[stdlib], got[ours])
}

// TestPlainHTTPToTLS checks the answer to a plain HTTP request on a TLS port: net/http's
// exact 400, then the connection closes.
func TestPlainHTTPToTLS(t *testing.T) {
	got := make(map[string]string)
	for _, name := range fronts {
		ts, _ := tlsServer(t, name, &http.Server{Handler: protoHandler})
		c := ts.dial(t)
		c.send(get("/"))
		b, err := io.ReadAll(c.br)
		require.NoError(t, err, name)
		got[name] = string(b)
	}
	assert.Equal(t, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n", got[ours])
	assert.Equal(t, got[stdlib], got[ours])
}

// TestTLSHandshakeTimeout checks that a client that never finishes its TLS handshake is
// cut off after ReadHeaderTimeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			srv := &http.Server{Handler: protoHandler, ReadHeaderTimeout: 200 * time.Millisecond}
			ts, _ := tlsServer(t, name, srv)
			conn, err := net.Dial("tcp", ts.addr)
			require.NoError(t, err)
			defer conn.Close()
			c := newRawConn(t, conn)
			assert.True(t, c.eof(), "the silent connection closes")
		})
	}
}

// TestServeTLSListener checks Serve on a tls.NewListener: the handshake's ALPN decides between
// HTTP/1.1 and HTTP/2, and requests carry their TLS state, as with net/http.
func TestServeTLSListener(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ca := testcert.NewCA(t)
			cert := ca.Server(t, "127.0.0.1")
			srv := &http.Server{Handler: protoHandler}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			tlsLn := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"h2", "http/1.1"}})
			var s front = srv
			if name == ours {
				s = h1.New(srv)
			}
			go s.Serve(tlsLn)
			defer s.Close()
			url := "https://" + ln.Addr().String()

			h1c := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, NextProtos: []string{"http/1.1"}}, Protocols: protocols(true, false, false)}
			defer h1c.CloseIdleConnections()
			body, _ := fetch(t, h1c, url)
			assert.Equal(t, `HTTP/1.1 major=1 tls=true alpn="http/1.1"`, body)

			h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}
			defer h2.CloseIdleConnections()
			body, _ = fetch(t, h2, url)
			assert.Equal(t, `HTTP/2.0 major=2 tls=true alpn="h2"`, body)
		})
	}
}

// TestHandOffConnState checks that the ConnState hook sees a connection handed to srv for
// HTTP/2 as one connection, from one StateNew to StateClosed, as with net/http.
func TestHandOffConnState(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, name string) *testServer
	}{
		{"h2c", func(t *testing.T, name string) *testServer {
			ts := start(t, name, &http.Server{Handler: protoHandler, Protocols: protocols(true, false, true)})
			tr := &http.Transport{Protocols: protocols(false, false, true)}
			fetch(t, tr, ts.url())
			fetch(t, tr, ts.url())
			tr.CloseIdleConnections()
			return ts
		}},
		{"h2 over TLS", func(t *testing.T, name string) *testServer {
			ts, clientTLS := tlsServer(t, name, &http.Server{Handler: protoHandler})
			tr := &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: true}
			fetch(t, tr, "https://"+ts.addr)
			fetch(t, tr, "https://"+ts.addr)
			tr.CloseIdleConnections()
			return ts
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range fronts {
				t.Run(name, func(t *testing.T) {
					assertConnsEnd(t, tc.run(t, name))
				})
			}
		})
	}
}
