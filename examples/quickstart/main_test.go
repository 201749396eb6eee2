package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
)

// quickstart is one run of the command, on a free port.
type quickstart struct {
	url  string
	done chan error // run's result

	mu  sync.Mutex // mu guards out
	out []string   // lines written to stdout
}

// start runs the command with args (plus -listen on a free port) until the test ends.
func start(t *testing.T, ctx context.Context, args ...string) *quickstart {
	t.Helper()
	pr, pw := io.Pipe()
	q := &quickstart{done: make(chan error, 1)}
	go func() {
		q.done <- run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), pw)
		pw.Close()
	}()
	urls := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(pr)
		for s.Scan() {
			line := s.Text()
			q.mu.Lock()
			q.out = append(q.out, line)
			q.mu.Unlock()
			if u := regexp.MustCompile(`^sluice is proxying (https?://\S+)`).FindStringSubmatch(line); u != nil {
				urls <- u[1]
			}
		}
	}()
	select {
	case q.url = <-urls:
	case err := <-q.done:
		t.Fatalf("run ended before serving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("run printed no URL within 10s")
	}
	return q
}

func (q *quickstart) output() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.Join(q.out, "\n")
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	res, err := c.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}

func TestDemoBackendsRoundRobin(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	q := start(t, ctx)

	seen := map[string]int{}
	for range 6 {
		res, body := get(t, http.DefaultClient, q.url+"/hello")
		require.Equal(t, http.StatusOK, res.StatusCode, body)
		var doc map[string]string
		require.NoError(t, json.Unmarshal([]byte(body), &doc), "a demo backend answers with JSON")
		assert.Equal(t, "/hello", doc["path"])
		assert.Contains(t, doc["forwarded"], "for=127.0.0.1", "the proxy sets Forwarded")
		seen[doc["backend"]]++
	}
	assert.Equal(t, map[string]int{"demo-1": 2, "demo-2": 2, "demo-3": 2}, seen,
		"round robin sends two of six requests to each demo backend")

	// h2c with prior knowledge, as gRPC clients in a cluster speak it.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protos}}
	res, body := get(t, h2c, q.url+"/h2c")
	assert.Equal(t, 2, res.ProtoMajor, "the proxy must accept h2c")
	assert.Contains(t, body, `"path":"/h2c"`)

	assert.Contains(t, q.output(), "curl "+q.url+"/hello", "the curl line is printed")
	assert.Regexp(t, `msg=proxy method=GET .*path=/hello .*status=200`, q.output(), "one access-log line per request")

	cancel()
	require.NoError(t, <-q.done, "run drains and returns nil on cancel")
}

func TestRealBackendsAndDrain(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		io.WriteString(w, "real backend\n")
	}))
	defer slow.Close()
	ctx, cancel := context.WithCancel(context.Background())
	q := start(t, ctx, "-backends", strings.TrimPrefix(slow.URL, "http://"), "-access-log=false")

	_, body := get(t, http.DefaultClient, q.url+"/")
	assert.Equal(t, "real backend\n", body, "-backends replaces the demo backends")

	type result struct {
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		res, err := http.Get(q.url + "/slow")
		if err != nil {
			inflight <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		inflight <- result{string(b), err}
	}()
	<-arrived
	cancel() // SIGTERM while a request is in flight
	hostport := strings.TrimPrefix(q.url, "http://")
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", hostport, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 5*time.Millisecond, "a draining proxy stops accepting connections")
	select {
	case err := <-q.done:
		t.Fatalf("run returned (%v) before the in-flight request finished", err)
	default:
	}
	close(release)
	r := <-inflight
	require.NoError(t, r.err, "the in-flight request completes during the drain")
	assert.Equal(t, "real backend\n", r.body)
	require.NoError(t, <-q.done)
	assert.NotContains(t, q.output(), "msg=proxy", "-access-log=false logs nothing")
}

// -tls-cert and -tls-key turn the listener into HTTPS that offers HTTP/2 and HTTP/1.1 by ALPN,
// whichever server serves HTTP/1.1.
func TestTLS(t *testing.T) {
	ca := testcert.NewCA(t)
	cert := ca.Server(t, "127.0.0.1")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certFile, cert.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, cert.KeyPEM, 0o600))

	for _, front := range []string{"sluice", "net/http"} {
		t.Run(front, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			q := start(t, ctx, "-server", front, "-tls-cert", certFile, "-tls-key", keyFile, "-access-log=false")
			require.True(t, strings.HasPrefix(q.url, "https://"), "the printed URL is https, got %s", q.url)

			for _, tc := range []struct {
				name      string
				h2        bool
				wantMajor int
			}{
				{"h2", true, 2},
				{"http/1.1", false, 1},
			} {
				var protos http.Protocols
				protos.SetHTTP1(true)
				protos.SetHTTP2(tc.h2)
				c := &http.Client{Transport: &http.Transport{
					TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
					Protocols:       &protos,
				}}
				res, body := get(t, c, q.url+"/tls")
				c.CloseIdleConnections()
				require.Equal(t, http.StatusOK, res.StatusCode, body)
				assert.Equal(t, tc.wantMajor, res.ProtoMajor, "%s: the client's best protocol is served", tc.name)
				if tc.h2 {
					assert.Equal(t, "h2", res.TLS.NegotiatedProtocol, "HTTP/2 is chosen by ALPN")
				}
				assert.Contains(t, body, `"path":"/tls"`, "%s: a demo backend answers through the TLS listener", tc.name)
			}

			cancel()
			require.NoError(t, <-q.done, "run drains and returns nil on cancel")
		})
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-backends", "localhost"}, "-backends"},
		{[]string{"-backends", "127.0.0.1:1,"}, "-backends"},
		{[]string{"-listen", "no-port"}, "-listen"},
		{[]string{"-tls-cert", "tls.crt"}, "-tls-key"},
		{[]string{"-tls-cert", "/nonexistent/tls.crt", "-tls-key", "/nonexistent/tls.key"}, "-tls-cert"},
		{[]string{"-nosuchflag"}, "nosuchflag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want, "the error names the bad flag")
		})
	}
}

// A WebSocket open at shutdown does not hold the drain to its deadline: once requests are
// done the tunnel is closed, both of its ends see it, and run returns nil (exit status 0).
func TestDrainWithWebSocket(t *testing.T) {
	ended := make(chan struct{})
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer close(ended)
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for { // echo lines until the proxy closes the tunnel
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(line)
			brw.Flush()
		}
	}))
	defer ws.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := start(t, ctx, "-backends", strings.TrimPrefix(ws.URL, "http://"), "-access-log=false")

	conn, err := net.Dial("tcp", strings.TrimPrefix(q.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n"+
		"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
	_, err = io.WriteString(conn, "ping\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ping\n", line, "the tunnel works before shutdown")

	cancel() // SIGTERM with the tunnel open
	select {
	case err := <-q.done:
		require.NoError(t, err, "a drain that closed the tunnel is clean")
	case <-time.After(10 * time.Second):
		t.Fatal("run waited for the open tunnel instead of closing it")
	}
	_, err = br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the client's side of the tunnel is closed")
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's side of the tunnel was not closed")
	}
}

// -admin serves Prometheus metrics and the dashboard; -tracing sends trace context on, and a
// client's sampled traceparent continues through the proxy.
func TestAdminAndTracing(t *testing.T) {
	got := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	ctx, cancel := context.WithCancel(context.Background())
	q := start(t, ctx, "-admin", "127.0.0.1:0", "-tracing", "-backends", strings.TrimPrefix(backend.URL, "http://"))
	m := regexp.MustCompile(`metrics: (http://\S+)/metrics, dashboard: (http://\S+/dashboard/)`).FindStringSubmatch(q.output())
	require.NotNil(t, m, "the admin URLs are printed: %s", q.output())

	req, err := http.NewRequest("GET", q.url+"/traced", nil)
	require.NoError(t, err)
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req.Header.Set("Traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	tp := <-got
	assert.Contains(t, tp, trace, "the backend's request continues the client's trace")
	assert.NotContains(t, tp, "00f067aa0ba902b7", "with a span of the proxy's in between")

	_, metricsText := get(t, http.DefaultClient, m[1]+"/metrics")
	assert.Regexp(t, `sluice_requests_total\{[^}]*class="2xx"[^}]*\} 1`, metricsText, "the edge counted the request")
	assert.Contains(t, metricsText, "sluice_upstream_latency_seconds")
	_, pools := get(t, http.DefaultClient, m[2]+"api/pools")
	assert.Contains(t, pools, strings.TrimPrefix(backend.URL, "http://"), "the dashboard lists the backend")
	res, page := get(t, http.DefaultClient, m[2])
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.NotEmpty(t, page)

	cancel()
	require.NoError(t, <-q.done)
}
