package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluiceproxy/sluice/internal/dnstest"
	"github.com/sluiceproxy/sluice/internal/logbuf"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

const (
	apiHost  = "api.example.com"
	grpcHost = "grpc.example.com"
	podsName = "api.pods.test." // what the test's DNS server answers for
	wait     = 15 * time.Second // for Eventually: generous for a loaded 2-core machine
	tick     = 20 * time.Millisecond
)

// world is what the proxy stands in front of: a CA and the certificate files it issued, a
// DNS server naming two HTTP API backends on one port, and two gRPC backends.
type world struct {
	ca                *testcert.CA
	certFile, keyFile string

	dnsAddr string
	apiPort int
	apiHits [2]atomic.Int64 // requests seen by the API backends on 127.0.0.1 and 127.0.0.2
	cached  atomic.Int64    // requests for /cached, over both API backends

	grpcAddrs  [2]string         // "a" and "b"
	grpcHealth [2]*health.Server // their standard health services
}

func newWorld(t *testing.T) *world {
	w := &world{ca: testcert.NewCA(t)}
	dir := t.TempDir()
	w.certFile, w.keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	w.writeCert(t)
	w.startAPI(t)
	dns := dnstest.Start(t)
	dns.Set(dnstest.Addr(podsName, "127.0.0.1", 60), dnstest.Addr(podsName, "127.0.0.2", 60))
	w.dnsAddr = dns.Addr
	for i, name := range []string{"a", "b"} {
		w.grpcAddrs[i], w.grpcHealth[i] = startGRPC(t, name)
	}
	return w
}

// writeCert issues a new certificate for both hosts and writes it as a rotation would:
// each file to a temporary name, then renamed over the old one. It returns the new serial.
func (w *world) writeCert(t *testing.T) string {
	cert := w.ca.Server(t, apiHost, grpcHost)
	for file, data := range map[string][]byte{w.certFile: cert.CertPEM, w.keyFile: cert.KeyPEM} {
		require.NoError(t, os.WriteFile(file+".tmp", data, 0o600))
		require.NoError(t, os.Rename(file+".tmp", file))
	}
	return cert.Leaf.SerialNumber.String()
}

// startAPI starts two HTTP backends on 127.0.0.1:P and 127.0.0.2:P, one port for both, as
// pods behind one DNS name are. /cached may be cached for a minute; nothing else may be.
func (w *world) startAPI(t *testing.T) {
	var lns [2]net.Listener
	for range 10 { // the port free on 127.0.0.1 may be taken on 127.0.0.2: try another
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		w.apiPort = ln.Addr().(*net.TCPAddr).Port
		ln2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(w.apiPort)))
		if err == nil {
			lns = [2]net.Listener{ln, ln2}
			break
		}
		ln.Close()
	}
	require.NotNil(t, lns[1], "listening on 127.0.0.2 on the port of 127.0.0.1")
	for i, ln := range lns {
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			w.apiHits[i].Add(1)
			if r.URL.Path == "/cached" {
				w.cached.Add(1)
				rw.Header().Set("Cache-Control", "max-age=60")
			} else {
				rw.Header().Set("Cache-Control", "no-store")
			}
			fmt.Fprintf(rw, "%s from backend %d\n", r.URL.Path, i)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
}

// whoService is a one-method gRPC service, written out by hand instead of generated: Name
// answers with the name the server was registered with, so a client sees which backend
// served its call.
var whoService = grpc.ServiceDesc{
	ServiceName: "sluice.test.Who",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Name",
		Handler: func(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(emptypb.Empty)); err != nil {
				return nil, err
			}
			return wrapperspb.String(srv.(string)), nil
		},
	}},
}

// startGRPC starts a grpc-go server, which speaks h2c to clients that know it does, with the
// standard health service (SERVING) and whoService answering name.
func startGRPC(t *testing.T, name string) (string, *health.Server) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	srv.RegisterService(&whoService, name)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

// proxyRun is one run of the command.
type proxyRun struct {
	addr, metrics string        // where the proxy and its metrics listen
	out           logbuf.Buffer // stdout: the JSON log
	done          chan error    // run's result
	http          *http.Client  // trusts the world's CA and reaches the proxy whatever the host
}

// start runs the command against w with args added, until ctx ends.
func start(t *testing.T, ctx context.Context, w *world, args ...string) *proxyRun {
	t.Helper()
	p := &proxyRun{done: make(chan error, 1)}
	args = append([]string{
		"-listen", "127.0.0.1:0", "-metrics", "127.0.0.1:0",
		"-cert", w.certFile, "-key", w.keyFile,
		"-api-host", apiHost, "-api-dns", podsName, "-api-port", strconv.Itoa(w.apiPort), "-dns-server", w.dnsAddr,
		"-grpc-host", grpcHost, "-grpc-backends", w.grpcAddrs[0] + "," + w.grpcAddrs[1],
	}, args...)
	go func() { p.done <- run(ctx, args, &p.out) }()
	var err error
	require.Eventually(t, func() bool {
		select {
		case err = <-p.done:
			return true
		default:
		}
		for _, line := range p.out.Lines(t) {
			if line["msg"] == "serving" {
				p.addr, p.metrics = line["listen"].(string), line["metrics"].(string)
				return true
			}
		}
		return false
	}, wait, tick, "run logs where it serves")
	require.NotEmpty(t, p.addr, "run ended before serving: %v\n%s", err, p.out.String())
	p.http = &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: w.ca.Pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, p.addr)
		},
	}}
	t.Cleanup(p.http.CloseIdleConnections)
	return p
}

// get sends GET https://host/path through the proxy and returns the response, its body read.
func (p *proxyRun) get(t *testing.T, host, path string) (*http.Response, string) {
	t.Helper()
	res, body, err := p.tryGet(host, path)
	require.NoError(t, err)
	return res, body
}

// tryGet is get for conditions of require.Eventually, which must not stop the test.
func (p *proxyRun) tryGet(host, path string) (*http.Response, string, error) {
	_, port, _ := net.SplitHostPort(p.addr)
	res, err := p.http.Get("https://" + host + ":" + port + path)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res, string(body), err
}

// serial returns the serial number of the certificate the proxy presents for host, or the
// handshake's error.
func (p *proxyRun) serial(w *world, host string) string {
	conn, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: w.ca.Pool, ServerName: host})
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestServiceProxy(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := start(t, ctx, w, "-reload", "20ms", "-health-interval", "50ms")

	t.Run("API over both pods found by DNS", func(t *testing.T) {
		require.Eventually(t, func() bool {
			res, body, err := p.tryGet(apiHost, "/hello")
			return err == nil && res.StatusCode == http.StatusOK && strings.HasPrefix(body, "/hello from backend") &&
				w.apiHits[0].Load() > 0 && w.apiHits[1].Load() > 0
		}, wait, tick, "both API backends, 127.0.0.1 and 127.0.0.2, get requests")
		assert.Equal(t, "HTTP/2.0", func() string { res, _ := p.get(t, apiHost, "/hello"); return res.Proto }(),
			"the client speaks HTTP/2 to the proxy")
	})

	t.Run("cache", func(t *testing.T) {
		res, body := p.get(t, apiHost, "/cached")
		require.Equal(t, http.StatusOK, res.StatusCode)
		assert.NotContains(t, res.Header.Get("Cache-Status"), "; hit", "the first GET is a miss")
		res, body2 := p.get(t, apiHost, "/cached")
		require.Equal(t, http.StatusOK, res.StatusCode)
		assert.Contains(t, res.Header.Get("Cache-Status"), "; hit", "the second GET is a hit")
		assert.Equal(t, body, body2, "the hit is the stored response")
		assert.Equal(t, int64(1), w.cached.Load(), "the backends saw /cached once")
	})

	t.Run("unknown host", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(p.addr)
		req, err := http.NewRequest(http.MethodGet, "https://"+apiHost+":"+port+"/hello", nil)
		require.NoError(t, err)
		req.Host = "other.example.com" // over the API host's TLS connection
		res, err := p.http.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusNotFound, res.StatusCode, "no route for the host")
	})

	t.Run("gRPC health checks", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///"+p.addr,
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: w.ca.Pool, ServerName: grpcHost})),
			grpc.WithAuthority(grpcHost))
		require.NoError(t, err)
		defer conn.Close()
		// calls makes n calls and counts the answers by backend name, or by error.
		calls := func(n int) map[string]int {
			seen := map[string]int{}
			for range n {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var name wrapperspb.StringValue
				if err := conn.Invoke(ctx, "/sluice.test.Who/Name", &emptypb.Empty{}, &name); err != nil {
					seen[err.Error()]++
				} else {
					seen[name.GetValue()]++
				}
				cancel()
			}
			return seen
		}

		require.Eventually(t, func() bool { c := calls(4); return c["a"] > 0 && c["b"] > 0 }, wait, tick,
			"calls reach both gRPC backends while both are SERVING")

		w.grpcHealth[0].SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		require.Eventually(t, func() bool { return calls(4)["b"] == 4 }, wait, tick,
			"the health check takes the NOT_SERVING backend out")
		assert.Equal(t, map[string]int{"b": 20}, calls(20), "every call lands on the SERVING backend")

		w.grpcHealth[0].SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		require.Eventually(t, func() bool { return calls(4)["a"] > 0 }, wait, tick,
			"the backend gets calls again once it is SERVING")
	})

	t.Run("certificate reloaded from files", func(t *testing.T) {
		old := p.serial(w, apiHost)
		serial := w.writeCert(t)
		require.NotEqual(t, old, serial)
		require.Eventually(t, func() bool { return p.serial(w, apiHost) == serial }, wait, tick,
			"the rewritten certificate is served")
		assert.Equal(t, serial, p.serial(w, grpcHost), "for both hosts")
		res, _ := p.get(t, apiHost, "/hello")
		assert.Equal(t, http.StatusOK, res.StatusCode, "requests go on over the new certificate")
	})

	t.Run("access log", func(t *testing.T) {
		routes := map[string]bool{}
		for _, line := range p.out.Lines(t) {
			if line["msg"] == "proxy" && line["status"] == float64(200) {
				routes[line["route"].(string)] = true
				assert.Regexp(t, `^(api|grpc)\.example\.com(:\d+)?$`, line["host"], "the log names the host")
			}
		}
		assert.Equal(t, map[string]bool{"api": true, "grpc": true}, routes,
			"JSON lines on stdout name both routes with status 200")
	})

	t.Run("Prometheus metrics", func(t *testing.T) {
		res, err := http.Get("http://" + p.metrics + "/metrics")
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		for _, route := range []string{"api", "grpc"} {
			m := regexp.MustCompile(`(?m)^sluice_requests_total\{class="2xx",method="(?:GET|POST)",route="` + route + `"\} (\d+)$`).FindSubmatch(body)
			if assert.NotNil(t, m, "a 2xx counter for route %s in\n%s", route, body) {
				assert.NotEqual(t, "0", string(m[1]), "route %s counted its requests", route)
			}
			m = regexp.MustCompile(`(?m)^sluice_upstream_requests_total\{class="2xx",route="` + route + `"\} (\d+)$`).FindSubmatch(body)
			if assert.NotNil(t, m, "a 2xx counter of the proxy for route %s", route) {
				assert.NotEqual(t, "0", string(m[1]), "route %s's proxy counted its requests", route)
			}
		}
		assert.Regexp(t, `(?m)^sluice_request_duration_seconds_count\{route="api"\} [1-9]`, string(body),
			"the api route's requests are timed")
		assert.Regexp(t, `(?m)^sluice_tls_certificate_expiration_timestamp_seconds\{keyring="front",name="[^"]+"\} \d`, string(body),
			"the certificate's expiry is exported")
	})

	t.Run("drain", func(t *testing.T) {
		cancel()
		select {
		case err := <-p.done:
			assert.NoError(t, err, "run returns nil after draining")
		case <-time.After(wait):
			t.Fatal("run did not return after ctx ended")
		}
		_, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: w.ca.Pool, ServerName: apiHost})
		assert.Error(t, err, "the listener is closed")
	})
}

func TestRateLimit(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// One request a minute after a burst of 5: the sixth request has no token, however slowly
	// the machine sends the first five.
	p := start(t, ctx, w, "-rate", strconv.FormatFloat(1.0/60, 'g', -1, 64), "-burst", "5")

	// Every request takes a token, even one answered 503 before DNS has answered: count the
	// requests the limiter let through before its first 429.
	admitted := 0
	for {
		res, _ := p.get(t, apiHost, "/hello")
		if res.StatusCode == http.StatusTooManyRequests {
			assert.NotEmpty(t, res.Header.Get("Retry-After"), "a 429 says when to retry")
			break
		}
		admitted++
		require.LessOrEqual(t, admitted, 5, "no more than the burst passes")
	}
	assert.Equal(t, 5, admitted, "the burst passes")
	res, _ := p.get(t, apiHost, "/hello")
	assert.Equal(t, http.StatusTooManyRequests, res.StatusCode, "and the next request is refused too")

	res, _ = p.get(t, grpcHost, "/hello")
	assert.NotEqual(t, http.StatusTooManyRequests, res.StatusCode, "the limit is the API host's only")

	cancel()
	assert.NoError(t, <-p.done)
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	err := run(context.Background(), []string{
		"-listen", "127.0.0.1:0", "-metrics", "127.0.0.1:0",
		"-cert", filepath.Join(dir, "missing.crt"), "-key", filepath.Join(dir, "missing.key"),
		"-burst", "0", "-grpc-backends", "no-port",
	}, io.Discard)
	require.Error(t, err, "run refuses a bad configuration before serving")
	for _, want := range []string{"missing.crt", "Burst", "no-port"} {
		assert.ErrorContains(t, err, want, "one error names every mistake")
	}
}
