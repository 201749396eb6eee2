package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/proxy"
)

// serverProtocols returns the protocols a test server accepts.
func serverProtocols(h1, h2, h2c bool) *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(h1)
	p.SetHTTP2(h2)
	p.SetUnencryptedHTTP2(h2c)
	return &p
}

// tlsBackend starts a TLS test server mapped to ep, offering h2 in ALPN when h2 is set, and
// returns a client TLS config that trusts it.
func (c *cluster) tlsBackend(t testing.TB, ep string, h http.Handler, h2 bool) *tls.Config {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	// Tests make handshakes fail on purpose; their log lines are noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c.add(ep, srv.Listener.Addr().String())
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	// httptest's certificate is for example.com, not for the pod-like endpoint address.
	return &tls.Config{RootCAs: roots, ServerName: "example.com"}
}

// h2cBackend starts a cleartext server mapped to ep that speaks only h2c with prior
// knowledge, so that a request reaching it proves the proxy spoke h2c.
func (c *cluster) h2cBackend(t testing.TB, ep string, h http.Handler) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = serverProtocols(false, false, true)
	srv.Start()
	t.Cleanup(srv.Close)
	c.add(ep, srv.Listener.Addr().String())
}

// h2cClient is a client that speaks only h2c with prior knowledge.
func h2cClient(t testing.TB) *http.Client {
	tr := &http.Transport{Protocols: serverProtocols(false, false, true)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// frontend starts the proxy's client side: over TLS with h2 in ALPN, or in cleartext with
// proxy.ServerProtocols (HTTP/1.1 and h2c). It returns the server and a client that speaks
// HTTP/2 to it.
func frontend(t testing.TB, h http.Handler, useTLS bool) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if useTLS {
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv, srv.Client()
	}
	srv.Config.Protocols = proxy.ServerProtocols()
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, h2cClient(t)
}

// protoEcho answers with the protocol the request arrived in.
var protoEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s tls=%t", r.Proto, r.TLS != nil)
})

// Clients reach the proxy over HTTP/2: negotiated with ALPN over TLS, and h2c with prior
// knowledge in cleartext. HTTP/1.1 clients keep working next to h2c.
func TestClientProtocols(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", protoEcho)
	for _, useTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%t", useTLS), func(t *testing.T) {
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
			t.Cleanup(p.CloseIdleConnections)
			srv, client := frontend(t, p, useTLS)
			res, body := get(t, client, srv.URL)
			assert.Equal(t, 2, res.ProtoMajor, "the client must have spoken HTTP/2 to the proxy")
			assert.Equal(t, "HTTP/1.1 tls=false", body, "the upstream is reached with the proxy's Protocol")
			if !useTLS {
				h1 := &http.Client{Transport: &http.Transport{}}
				defer h1.CloseIdleConnections()
				res, body := get(t, h1, srv.URL)
				assert.Equal(t, 1, res.ProtoMajor)
				assert.Equal(t, "HTTP/1.1 tls=false", body, "HTTP/1.1 still works on the h2c port")
			}
		})
	}
}

// The proxy speaks HTTP/2 over TLS, h2c or HTTPS (h2 when offered, else HTTP/1.1) to
// upstreams.
func TestUpstreamProtocols(t *testing.T) {
	tests := []struct {
		proto proxy.Protocol
		h2    bool // whether the TLS upstream offers h2
		want  string
	}{
		{proxy.HTTP2, true, "HTTP/2.0 tls=true"},
		{proxy.HTTPS, true, "HTTP/2.0 tls=true"},
		{proxy.HTTPS, false, "HTTP/1.1 tls=true"},
		{proxy.H2C, false, "HTTP/2.0 tls=false"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/h2=%t", tt.proto, tt.h2), func(t *testing.T) {
			c := newCluster()
			var tc *tls.Config
			if tt.proto == proxy.H2C {
				c.h2cBackend(t, "10.0.0.1:80", protoEcho)
			} else {
				tc = c.tlsBackend(t, "10.0.0.1:80", protoEcho, tt.h2)
			}
			pk := newPicker("10.0.0.1:80")
			p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Protocol: tt.proto, TLSClientConfig: tc}
			srv := front(t, p)
			for _, method := range []string{"GET", "POST"} {
				req, err := http.NewRequest(method, srv.URL, nil)
				require.NoError(t, err)
				res, err := srv.Client().Do(req)
				require.NoError(t, err)
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				assert.Equal(t, http.StatusOK, res.StatusCode, method)
				assert.Equal(t, tt.want, string(body), method)
			}
			for _, d := range pk.dones() {
				assert.Equal(t, 200, d.Outcome.Status)
			}
		})
	}

	t.Run("HTTP2 refuses an upstream without h2", func(t *testing.T) {
		c := newCluster()
		tc := c.tlsBackend(t, "10.0.0.1:80", protoEcho, false)
		pk := newPicker("10.0.0.1:80")
		p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Protocol: proxy.HTTP2, TLSClientConfig: tc,
			Retry: proxy.Retry{MaxTries: 1}}
		srv := front(t, p)
		res, _ := get(t, srv.Client(), srv.URL)
		assert.Equal(t, http.StatusBadGateway, res.StatusCode)
	})

	t.Run("untrusted certificate is a connect failure", func(t *testing.T) {
		c := newCluster()
		c.tlsBackend(t, "10.0.0.1:80", protoEcho, true)
		pk := newPicker("10.0.0.1:80")
		p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Protocol: proxy.HTTPS, Retry: proxy.Retry{MaxTries: 1}}
		srv := front(t, p)
		res, _ := get(t, srv.Client(), srv.URL)
		assert.Equal(t, http.StatusBadGateway, res.StatusCode)
		d := pk.dones()
		require.Len(t, d, 1)
		assert.Equal(t, "connect", d[0].Outcome.Failure.String(), "a failed handshake never carried the request")
	})
}

// grpcEcho behaves like a streaming gRPC method: it answers every request line as it
// arrives, then ends with Grpc-Status in the trailers. mode selects how the trailers are
// sent: announced in a Trailer field, unannounced (http.TrailerPrefix, as grpc-go does), or
// a trailers-only response (the status in the only HEADERS frame, no body).
func grpcEcho(mode string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Header.Get("Te") != "trailers" || r.Header.Get("Content-Type") != "application/grpc" {
			http.Error(w, fmt.Sprintf("not a gRPC request: %s te=%q", r.Proto, r.Header.Get("Te")), 400)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		if mode == "trailers-only" {
			w.Header().Set("Grpc-Status", "5")
			w.Header().Set("Grpc-Message", "not found")
			w.WriteHeader(200)
			return
		}
		if mode == "announced" {
			w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		}
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		rc.Flush()
		lines := bufio.NewScanner(r.Body)
		for lines.Scan() {
			fmt.Fprintf(w, "echo:%s\n", lines.Text())
			rc.Flush()
		}
		prefix := ""
		if mode == "unannounced" {
			prefix = http.TrailerPrefix
		}
		w.Header().Set(prefix+"Grpc-Status", "0")
		w.Header().Set(prefix+"Grpc-Message", "done")
	})
}

// gRPC works end to end: an HTTP/2 client streams request messages through the proxy to an
// HTTP/2 upstream, each answer comes back before the next message is sent, and the trailers
// (Grpc-Status) reach the client, announced or not, and in trailers-only responses.
func TestGRPCStyleEndToEnd(t *testing.T) {
	routes := []struct {
		name   string
		tls    bool
		proto  proxy.Protocol
		server func(c *cluster, t *testing.T, h http.Handler) *tls.Config
	}{
		{"h2c to h2c", false, proxy.H2C, func(c *cluster, t *testing.T, h http.Handler) *tls.Config {
			c.h2cBackend(t, "10.0.0.1:80", h)
			return nil
		}},
		{"tls h2 to tls h2", true, proxy.HTTP2, func(c *cluster, t *testing.T, h http.Handler) *tls.Config {
			return c.tlsBackend(t, "10.0.0.1:80", h, true)
		}},
	}
	for _, rt := range routes {
		for _, mode := range []string{"announced", "unannounced", "trailers-only"} {
			t.Run(rt.name+"/"+mode, func(t *testing.T) {
				c := newCluster()
				tc := rt.server(c, t, grpcEcho(mode))
				pk := newPicker("10.0.0.1:80")
				p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Protocol: rt.proto, TLSClientConfig: tc}
				t.Cleanup(p.CloseIdleConnections)
				srv, client := frontend(t, p, rt.tls)

				pr, pw := io.Pipe()
				defer pw.Close()
				req, err := http.NewRequest("POST", srv.URL+"/echo.Echo/Stream", pr)
				require.NoError(t, err)
				req.Header.Set("Content-Type", "application/grpc")
				req.Header.Set("Te", "trailers")
				res, err := client.Do(req)
				require.NoError(t, err)
				defer res.Body.Close()
				require.Equal(t, 200, res.StatusCode)
				require.Equal(t, 2, res.ProtoMajor)

				if mode == "trailers-only" {
					pw.Close()
					b, err := io.ReadAll(res.Body)
					require.NoError(t, err)
					assert.Empty(t, b)
					assert.Equal(t, "5", res.Header.Get("Grpc-Status"), "a trailers-only status passes as a header")
					assert.Equal(t, "not found", res.Header.Get("Grpc-Message"))
					return
				}
				answers := bufio.NewReader(res.Body)
				for i := range 3 {
					_, err := fmt.Fprintf(pw, "message %d\n", i)
					require.NoError(t, err)
					line, err := readLine(answers, 10*time.Second)
					require.NoError(t, err, "the answer to message %d must arrive before the next is sent", i)
					assert.Equal(t, fmt.Sprintf("echo:message %d\n", i), line)
				}
				pw.Close()
				rest, err := io.ReadAll(answers)
				require.NoError(t, err)
				assert.Empty(t, rest)
				assert.Equal(t, "0", res.Trailer.Get("Grpc-Status"), "trailers must travel end to end")
				assert.Equal(t, "done", res.Trailer.Get("Grpc-Message"))
				d := pk.dones()
				require.Len(t, d, 1)
				assert.Equal(t, 200, d[0].Outcome.Status)
			})
		}
	}
}

// readLine reads one line, failing after timeout rather than hanging the test when a stream
// is held up somewhere.
func readLine(r *bufio.Reader, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := r.ReadString('\n')
		ch <- result{l, err}
	}()
	select {
	case res := <-ch:
		return res.line, res.err
	case <-time.After(timeout):
		return "", fmt.Errorf("no line within %v: the stream is buffered somewhere", timeout)
	}
}
