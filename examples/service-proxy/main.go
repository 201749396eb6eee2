// Command service-proxy serves two hosts on one TLS listener, its certificate reloaded from files:
// a cached, rate-limited API over peak-EWMA pods found by DNS, and gRPC over h2c to health-checked
// backends. It logs requests to stdout as JSON, serves Prometheus metrics, drains on SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/cache"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/h2"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/metrics"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/route"
	"github.com/sluiceproxy/sluice/ratelimit"
	"github.com/sluiceproxy/sluice/tls/certs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "service-proxy:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends or a part fails, then drains. The log goes to stdout.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("service-proxy", flag.ContinueOnError)
	listen := fs.String("listen", ":8443", "`host:port` of the TLS listener")
	metricsAddr := fs.String("metrics", ":9090", "`host:port` serving Prometheus metrics")
	certFile := fs.String("cert", "tls.crt", "PEM certificate `file`, reloaded when it changes")
	keyFile := fs.String("key", "tls.key", "PEM key `file`, reloaded when it changes")
	reload := fs.Duration("reload", 10*time.Second, "how often the certificate files are read")
	apiHost := fs.String("api-host", "api.example.com", "host `name` of the API")
	apiDNS := fs.String("api-dns", "api.default.svc.cluster.local", "DNS `name` of the API pods")
	apiPort := fs.Int("api-port", 8080, "`port` of the API pods")
	dnsServers := fs.String("dns-server", "", "DNS servers, `ip:port ...` (default: /etc/resolv.conf)")
	rate := fs.Float64("rate", 50, "API requests per second per client IP")
	burst := fs.Int("burst", 100, "API requests a client IP may send at once")
	grpcHost := fs.String("grpc-host", "grpc.example.com", "host `name` of the gRPC service")
	grpcBackends := fs.String("grpc-backends", "127.0.0.1:9000", "gRPC backends, `host:port,...`")
	interval := fs.Duration("health-interval", 5*time.Second, "time between gRPC health checks")
	if err := fs.Parse(args); err != nil {
		return err
	}

	logger := slog.New(slog.NewJSONHandler(stdout, nil))
	m, err := metrics.New(metrics.Options{}) // a registry of its own, served by m.Handler
	if err != nil {
		return err
	}
	api, errAPI := pool.New(pool.Options{
		Source: &discovery.DNS{Name: *apiDNS, Port: *apiPort, Servers: strings.Fields(*dnsServers), Logger: logger,
			Hooks: m.Discovery()},
		Policy:   balancer.PeakEWMA{},
		Balancer: balancer.Options{Hooks: m.Balancer("api")},
		Proxy:    &proxy.Proxy{Logger: logger, Hooks: m.Proxy()},
	})
	grpcSource, errSource := discovery.ParseStatic(*grpcBackends)
	grpcSource.Hooks = m.Discovery()
	grpc, errGRPC := pool.New(pool.Options{
		Source:   grpcSource,
		Health:   healthcheck.Options{Probe: &healthcheck.GRPC{}, Interval: *interval, Logger: logger, Hooks: m.Health("grpc")},
		Balancer: balancer.Options{Hooks: m.Balancer("grpc")},
		Proxy:    &proxy.Proxy{Protocol: proxy.H2C, Logger: logger, Hooks: m.Proxy()},
	})
	limiter, errLimit := ratelimit.New(ratelimit.Options{Limits: []ratelimit.Limit{{Rate: *rate, Burst: *burst}},
		Hooks: m.RateLimit("api")})
	shared, errCache := cache.New(cache.Options{Logger: logger, Hooks: m.Cache("api")})
	edge, errEdge := accesslog.New(accesslog.Options{Hooks: m.Edge()}) // counts cache hits and 429s too
	files := &certs.Files{Keyring: &certs.Keyring{Hooks: m.TLS("front")}, Interval: *reload, Logger: logger,
		KeyPairs: []certs.KeyPair{{CertFile: *certFile, KeyFile: *keyFile}}}
	tlsConfig, errTLS := certs.ServerConfig(files.Keyring, certs.ServerOptions{})
	ln, errListen := h1.ListenConfig().Listen(ctx, "tcp", *listen)
	metricsLn, errMetrics := net.Listen("tcp", *metricsAddr)
	err = errors.Join(errAPI, errSource, errGRPC, errLimit, errCache, errEdge, errTLS, files.Load(), errListen, errMetrics)
	if err != nil {
		return err
	}
	defer shared.Close()
	m.WatchCache("api", shared)
	m.WatchLimiter("api", limiter)
	m.WatchKeyring("front", files.Keyring)
	m.WatchHealth("grpc", grpc.Checker())
	table, err := route.New([]route.Route{
		{Name: "api", Hosts: []string{*apiHost}, Backends: []route.Backend{{Handler: limiter.Handler(shared.Handler(api))}}},
		{Name: "grpc", Hosts: []string{*grpcHost}, Backends: []route.Backend{{Handler: grpc}}},
	}, route.Options{})
	if err != nil {
		return err
	}
	srv := proxy.NewServer(edge.Handler(route.NewRouter(table, route.RouterOptions{})), proxy.ServerOptions{Logger: logger})
	srv.TLSConfig = tlsConfig
	front := h1.New(srv)      // sluice's HTTP/1.1 server
	front.HTTP2 = h2.New(srv) // and its HTTP/2 server, for gRPC among others
	metricsSrv := proxy.NewServer(m.Handler(), proxy.ServerOptions{Logger: logger})
	logger.Info("serving", "listen", ln.Addr().String(), "metrics", metricsLn.Addr().String())

	parts, stop := context.WithCancel(context.WithoutCancel(ctx)) // outlives ctx until drained
	defer stop()
	errc := make(chan error, 5)
	go func() { errc <- api.Run(parts) }()
	go func() { errc <- grpc.Run(parts) }()
	go func() { errc <- files.Run(parts) }()
	go func() { errc <- front.ServeTLS(ln, "", "") }()
	go func() { errc <- metricsSrv.Serve(metricsLn) }()
	select {
	case err = <-errc: // until stopped, a part returns only when it fails
	case <-ctx.Done():
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(err, proxy.Drain(drainCtx, []proxy.Server{front, metricsSrv}, api.Proxy(), grpc.Proxy()))
}
