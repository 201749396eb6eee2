// Command quickstart runs a sluice reverse proxy in front of three demo backends, round robin.
// No cluster and no flags are needed:
//
//	go run ./examples/quickstart
//	curl http://127.0.0.1:8080/hello
//
// Each demo backend answers with its name, so repeated requests show the rotation. The proxy
// speaks HTTP/1.1 and h2c (curl --http2-prior-knowledge), or HTTPS with -tls-cert and -tls-key,
// logs one line per request, and on SIGINT or SIGTERM lets in-flight requests finish and closes
// WebSockets before it exits.
//
// Flags:
//
//	-listen host:port          where the proxy listens (default 127.0.0.1:8080)
//	-backends host:port,...    forward to these servers instead of the demo backends
//	-access-log=false          no access log (for benchmarks)
//	-server net/http           serve HTTP/1.1 and HTTP/2 with net/http's servers instead of sluice's (h1, h2)
//	-tls-cert file             serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM chain
//	-tls-key file              and this PEM private key
//	-admin host:port           serve Prometheus /metrics and the live dashboard (/dashboard/) here
//	-tracing                   OpenTelemetry spans per request and per try, trace context sent on
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/h2"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/metrics"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/tracing"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// A proxy's live heap is a few MiB, so at Go's default target (100%) the collector
		// runs every few thousand requests; at 400% it takes far less CPU for a few MiB more
		// (scripts/bench-process.sh measures both). GOGC in the environment still wins.
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run serves the proxy until ctx ends, then drains it. It writes the proxy's URL, a curl line
// and the access log to stdout.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(stdout)
	listen := fs.String("listen", "127.0.0.1:8080", "`host:port` the proxy listens on")
	backends := fs.String("backends", "", "comma-separated `host:port` list of backends (default: three demo backends)")
	accessLog := fs.Bool("access-log", true, "log one line per request")
	front := fs.String("server", "sluice", "who serves HTTP/1.1 and HTTP/2: `sluice` (packages h1 and h2) or net/http")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with the PEM certificate chain in `file`")
	tlsKey := fs.String("tls-key", "", "PEM private key of -tls-cert")
	adminAddr := fs.String("admin", "", "serve Prometheus /metrics and the dashboard /dashboard/ on `host:port` (keep it private)")
	tracingOn := fs.Bool("tracing", false, "OpenTelemetry spans for every request and try, with W3C trace context sent to the backends; sampled only when the client's traceparent says so, exported nowhere (a real program adds an exporter)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *front != "sluice" && *front != "net/http" {
		return fmt.Errorf("-server: want sluice or net/http, got %q", *front)
	}
	var tlsConfig *tls.Config
	if *tlsCert != "" || *tlsKey != "" {
		if *tlsCert == "" || *tlsKey == "" {
			return errors.New("-tls-cert and -tls-key: give both or neither")
		}
		// Loaded here, not by ServeTLS, so that a bad file fails before the URL is printed.
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("-tls-cert, -tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}

	var endpoints []sluice.Endpoint
	if *backends == "" {
		for _, name := range []string{"demo-1", "demo-2", "demo-3"} {
			addr, stopDemo, err := startDemoBackend(name)
			if err != nil {
				return err
			}
			defer stopDemo()
			endpoints = append(endpoints, sluice.Endpoint{Addr: addr})
		}
	} else {
		src, err := discovery.ParseStatic(*backends)
		if err != nil {
			return fmt.Errorf("-backends: %w", err)
		}
		endpoints = src.Endpoints
	}

	// A pool wires a discovery source to a balancer (round robin unless Policy says otherwise)
	// and a proxy; health checks and other policies are fields of pool.Options.
	p := &proxy.Proxy{}
	if *accessLog {
		p.Logger = slog.New(slog.NewTextHandler(stdout, nil))
	}
	popts := pool.Options{Source: discovery.Static{Endpoints: endpoints}, Proxy: p}
	// Observability: every part reports through its hooks. Metrics count at the edge (every
	// answer) and per try; the dashboard's charts are fed by the same hooks; tracing makes a
	// server span per request and a client span per try.
	var edgeHooks accesslog.Hooks
	var m *metrics.Metrics
	var rec *admin.Recorder
	if *adminAddr != "" {
		var err error
		if m, err = metrics.New(metrics.Options{}); err != nil {
			return err
		}
		if rec, err = admin.NewRecorder(admin.RecorderOptions{}); err != nil {
			return err
		}
		p.Hooks = proxy.JoinHooks(p.Hooks, m.Proxy(), proxy.Hooks{RequestDone: func(_ *http.Request, e proxy.RequestEvent) {
			rec.Record("", e.Endpoint, e.Status, e.Duration)
		}})
		edgeHooks = accesslog.JoinHooks(m.Edge(), accesslog.Hooks{RequestDone: func(_ *http.Request, e accesslog.Event) {
			rec.Record("backends", "", e.Status, e.Duration)
		}})
		popts.Balancer = balancer.Options{Hooks: m.Balancer("backends")}
		popts.Health = healthcheck.Options{Hooks: m.Health("backends")}
	}
	var tracer *tracing.Tracer
	if *tracingOn {
		var err error
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
		if tracer, err = tracing.New(tracing.Options{TracerProvider: tp}); err != nil {
			return err
		}
		p.Hooks = proxy.JoinHooks(p.Hooks, tracer.ProxyHooks())
	}
	backendPool, err := pool.New(popts)
	if err != nil {
		return err
	}
	var handler http.Handler = backendPool
	if edgeHooks.RequestDone != nil {
		edge, err := accesslog.New(accesslog.Options{Hooks: edgeHooks})
		if err != nil {
			return err
		}
		handler = edge.Handler(handler)
	}
	if tracer != nil {
		handler = tracer.Handler(handler)
	}
	poolCtx, stopPool := context.WithCancel(context.Background()) // outlives ctx while draining
	defer stopPool()
	pooled := make(chan error, 1)
	go func() { pooled <- backendPool.Run(poolCtx) }()
	// Until the balancer has the endpoints every request would get a 503: take none before.
	select {
	case <-backendPool.Synced():
	case err := <-pooled:
		return err
	}

	// No TCP keep-alive probes (IdleTimeout ends idle connections) and, on Linux, accept
	// once the first bytes are in: fewer system calls per connection.
	ln, err := h1.ListenConfig().Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	// Header, idle and body timeouts and size limits against slow or oversized clients;
	// HTTP/1.1 and h2c, or over TLS HTTP/1.1 and HTTP/2 (ServeTLS offers both by ALPN).
	srv := proxy.NewServer(handler, proxy.ServerOptions{})
	srv.TLSConfig = tlsConfig
	// sluice's HTTP/1.1 server takes srv's settings and hands the h2c and h2 connections to
	// sluice's HTTP/2 server, which takes srv's settings too.
	var server interface {
		proxy.Server
		Serve(net.Listener) error
		ServeTLS(ln net.Listener, certFile, keyFile string) error
	} = srv
	if *front == "sluice" {
		f := h1.New(srv)
		f.HTTP2 = h2.New(srv)
		server = f
	}
	if *adminAddr != "" {
		dash, err := admin.New(admin.Options{
			Pools:    func() []admin.Pool { return []admin.Pool{backendPool.Admin("backends")} },
			Recorder: rec,
		})
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		mux.Handle("/dashboard/", http.StripPrefix("/dashboard", dash))
		aln, err := net.Listen("tcp", *adminAddr)
		if err != nil {
			return fmt.Errorf("-admin: %w", err)
		}
		asrv := proxy.NewServer(mux, proxy.ServerOptions{})
		go asrv.Serve(aln)
		defer asrv.Close()
		fmt.Fprintf(stdout, "metrics: http://%s/metrics, dashboard: http://%s/dashboard/\n", aln.Addr(), aln.Addr())
	}
	url := "http://" + ln.Addr().String()
	if tlsConfig != nil {
		url = "https://" + ln.Addr().String()
	}
	fmt.Fprintf(stdout, "sluice is proxying %s to %d backends, round robin\n", url, len(endpoints))
	fmt.Fprintf(stdout, "try: curl %s/hello\n", url)

	served := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			served <- server.ServeTLS(ln, "", "")
			return
		}
		served <- server.Serve(ln)
	}()
	select {
	case err := <-served:
		return err
	case err := <-pooled:
		return err
	case <-ctx.Done():
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := proxy.Drain(drainCtx, []proxy.Server{server}, p); err != nil {
		return fmt.Errorf("draining: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startDemoBackend starts a backend on a free local port that answers every request with a
// small JSON document naming itself. It returns the backend's address and a func that stops it.
func startDemoBackend(name string) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("starting demo backend %s: %w", name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"backend": name, "method": r.Method, "path": r.URL.Path,
			"forwarded": r.Header.Get("Forwarded"),
		})
	})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}
