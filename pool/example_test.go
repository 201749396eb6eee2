package pool_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/cache"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/ratelimit"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// The whole program: endpoints from a discovery source, active health checks, a peak-EWMA
// balancer and a proxy in one pool; a cache and a rate limit in front of it; TLS from files
// that are reloaded when they change; an access log; the hardened server; and a drain at the
// end. In a cluster the source would be a discovery.DNS name or an endpointslices.Source, and
// the listener ":443".
func Example() {
	// Two backends stand in for a service's pods.
	backends := discovery.Static{}
	for range 2 {
		b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=60")
			fmt.Fprintln(w, "hello from a pod")
		}))
		defer b.Close()
		backends.Endpoints = append(backends.Endpoints, sluice.Endpoint{Addr: b.Listener.Addr().String()})
	}

	ctx, stop := context.WithCancel(context.Background()) // signal.NotifyContext in a real main
	defer stop()
	errc := make(chan error, 3)

	// Discovery → health checks → balancer → proxy, started by one Run.
	api, err := pool.New(pool.Options{
		Source: backends,
		Policy: balancer.PeakEWMA{},
		Health: healthcheck.Options{Probe: &healthcheck.HTTP{Path: "/"}},
		Proxy:  &proxy.Proxy{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil))}, // access log
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { errc <- api.Run(ctx) }()

	// Middlewares: the outermost runs first.
	limiter, err := ratelimit.New(ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 100, Burst: 200}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	shared, err := cache.New(cache.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer shared.Close()
	handler := limiter.Handler(shared.Handler(api))

	// TLS: the files are polled and a renewed certificate is served on the next handshake.
	var ring certs.Keyring
	files := &certs.Files{Keyring: &ring, KeyPairs: []certs.KeyPair{{
		CertFile: "testdata/localhost.crt", KeyFile: "testdata/localhost.key",
	}}}
	if err := files.Load(); err != nil { // fail fast on a bad certificate
		fmt.Println(err)
		return
	}
	go func() { errc <- files.Run(ctx) }()
	tlsConfig, err := certs.ServerConfig(&ring, certs.ServerOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The hardened server: timeouts and size limits against slow or oversized clients.
	srv := proxy.NewServer(handler, proxy.ServerOptions{})
	srv.TLSConfig = tlsConfig
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	<-api.Synced()

	// A client that trusts the example's self-signed certificate asks twice.
	client := exampleClient("testdata/localhost.crt")
	for range 2 {
		res, err := client.Get("https://localhost:" + port(ln) + "/hello")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		hit := strings.Contains(res.Header.Get("Cache-Status"), "; hit")
		fmt.Printf("%s %d %s cache hit: %v\n", res.Proto, res.StatusCode, strings.TrimSpace(string(body)), hit)
	}

	// Shutdown: stop accepting, let requests finish, close tunnels, then stop the pool.
	drainCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := proxy.Drain(drainCtx, []proxy.Server{srv}, api.Proxy()); err != nil {
		fmt.Println(err)
	}
	stop()
	for range 3 {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
			fmt.Println(err)
		}
	}
	// Output:
	// HTTP/2.0 200 hello from a pod cache hit: false
	// HTTP/2.0 200 hello from a pod cache hit: true
}

// exampleClient returns an HTTP/2 client that trusts the PEM certificate in file.
func exampleClient(file string) *http.Client {
	pem, err := os.ReadFile(file)
	if err != nil {
		panic(err)
	}
	roots, err := certs.ParseCertPool(pem)
	if err != nil {
		panic(err)
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}
}

func port(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}
