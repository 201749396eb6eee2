// Command ingress-controller is a Kubernetes Ingress controller built from sluice's packages.
//
// It serves the networking.k8s.io/v1 Ingresses whose IngressClass names the controller
// sluiceproxy.io/ingress-controller: hosts (wildcards included), Exact and Prefix paths,
// default backends, TLS by SNI from spec.tls Secrets, and the per-Ingress options of the
// sluiceproxy.io/ annotations (see README.md). Endpoints come from EndpointSlices, are health
// checked with passive outlier detection, and are balanced per Service port.
//
//	go run ./examples/ingress-controller -kubeconfig ~/.kube/config -http :8080 -https :8443
//
// With -enable-ssl-passthrough, the HTTPS port reads each connection's TLS server name first
// and passes the hosts of Ingresses annotated sluiceproxy.io/ssl-passthrough to their pods
// undecrypted, terminating the others as usual (passthrough.go). With -proxy-protocol-from,
// the load balancers in those networks must open each connection to the HTTP and HTTPS ports
// with a PROXY protocol header, whose client address then stands for the connection's peer.
//
// The admin listener serves /healthz, /readyz (ready after the first full sync, not ready
// while draining), /metrics and the live dashboard at /dashboard/. SIGTERM drains: listeners close, in-flight requests and
// upgraded connections finish, up to -drain.
//
// Several replicas may run: all serve traffic, and the one holding a Lease (client-go leader
// election, -election) writes Ingress status and Events.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/h2"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxyproto"
	"github.com/sluiceproxy/sluice/tcpproxy"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// config is everything run needs. Flags fill the exported-looking fields; tests also set
// Client, Dial and Listening.
type config struct {
	Kubeconfig     string
	Class          string
	Namespace      string
	HTTPAddr       string
	HTTPSAddr      string
	AdminAddr      string
	PublishService string
	PublishAddress string
	HealthPath     string
	AccessLog      bool
	Drain          time.Duration
	Debounce       time.Duration
	Coalesce       time.Duration
	// TunnelGrace is how long WebSockets to an endpoint that left its EndpointSlice stay open
	// (pool.Options.TunnelGrace: zero means 30s, negative never).
	TunnelGrace time.Duration
	// DefaultBackend, "namespace/name:port", serves the requests no Ingress rule or
	// spec.defaultBackend matches; empty means a 404. The port is a number or a name.
	DefaultBackend string
	// Server says who serves HTTP/1.1 and HTTP/2 on the HTTP and HTTPS ports: "sluice"
	// (packages h1 and h2, also when empty) or "net/http".
	Server string
	// SSLPassthrough puts an SNI-reading TCP proxy in front of the HTTPS port, so that the
	// hosts of Ingresses with the ssl-passthrough annotation reach their pods still encrypted
	// (passthrough.go). Off by default: every HTTPS connection then takes one more hop.
	SSLPassthrough bool
	// ProxyProtocolFrom lists the networks (CIDRs or addresses, comma-separated) whose
	// connections to the HTTP and HTTPS ports start with a PROXY protocol header naming the
	// client: the load balancers in front. Empty means no PROXY protocol.
	ProxyProtocolFrom string

	// Election, when true, lets only the replica holding the Lease ElectionID in
	// ElectionNamespace write status and Events (leader.go has the defaults of the others).
	Election          bool
	ElectionNamespace string
	ElectionID        string
	ElectionIdentity  string
	LeaseDuration     time.Duration
	RenewDeadline     time.Duration
	RetryPeriod       time.Duration

	// Client, when not nil, is used instead of one built from Kubeconfig.
	Client kubernetes.Interface
	// Dial, when not nil, opens the connections to backends (tests map pod IPs with it).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Listening, when not nil, is told the bound addresses once the listeners are open.
	Listening func(httpAddr, httpsAddr, adminAddr string)
	// Logger receives the controller's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// parseProxyProtocolFrom reads -proxy-protocol-from: comma-separated CIDRs or addresses;
// empty means nil, no PROXY protocol.
func parseProxyProtocolFrom(v string) (*sluice.TrustedProxies, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	cidrs := strings.Split(v, ",")
	for i := range cidrs {
		cidrs[i] = strings.TrimSpace(cidrs[i])
	}
	t, err := sluice.ParseTrustedProxies(cidrs...)
	if err != nil {
		return nil, fmt.Errorf("-proxy-protocol-from: %w", err)
	}
	return t, nil
}

// sluiceFront serves srv with sluice's HTTP/1.1 and HTTP/2 servers.
func sluiceFront(srv *http.Server) *h1.Server {
	f := h1.New(srv)
	f.HTTP2 = h2.New(srv)
	return f
}

// frontEnd serves a port: an *h1.Server or the *http.Server itself.
type frontEnd interface {
	proxy.Server
	Serve(net.Listener) error
	ServeTLS(ln net.Listener, certFile, keyFile string) error
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty means the in-cluster config")
	flag.StringVar(&cfg.Class, "class", "sluice", "IngressClass name to serve (its spec.controller must be "+controllerName+")")
	flag.StringVar(&cfg.Namespace, "namespace", "", "watch only this namespace; empty means all")
	flag.StringVar(&cfg.HTTPAddr, "http", ":8080", "HTTP listen address")
	flag.StringVar(&cfg.HTTPSAddr, "https", ":8443", "HTTPS listen address; empty disables HTTPS")
	flag.StringVar(&cfg.AdminAddr, "admin", ":9090", "listen address of /healthz, /readyz, /metrics and /dashboard/ (keep it private)")
	flag.StringVar(&cfg.PublishService, "publish-service", "", "namespace/name of the Service whose address is written to Ingress status")
	flag.StringVar(&cfg.PublishAddress, "publish-address", "", "comma-separated IPs or host names written to Ingress status (wins over -publish-service)")
	flag.StringVar(&cfg.HealthPath, "health-path", "", "path of an active HTTP health check on every endpoint; empty means passive checks only")
	flag.BoolVar(&cfg.AccessLog, "access-log", false, "log one line per request")
	flag.DurationVar(&cfg.Drain, "drain", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	flag.DurationVar(&cfg.Debounce, "debounce", 5*time.Millisecond, "how long a rebuild waits for more changes after the first")
	flag.DurationVar(&cfg.Coalesce, "coalesce", 50*time.Millisecond, "shortest time between two endpoint updates of one Service")
	flag.DurationVar(&cfg.TunnelGrace, "tunnel-grace", 30*time.Second, "how long WebSockets to an endpoint that left its Service's EndpointSlices stay open before they are closed; negative means until they end")
	flag.StringVar(&cfg.Server, "server", "sluice", "who serves HTTP/1.1 and HTTP/2: sluice (packages h1 and h2) or net/http")
	flag.StringVar(&cfg.DefaultBackend, "default-backend", "", "namespace/name:port of the Service that serves requests no Ingress matches; empty means 404")
	flag.BoolVar(&cfg.SSLPassthrough, "enable-ssl-passthrough", false, "pass the TLS connections for the hosts of Ingresses annotated "+annotationPrefix+"ssl-passthrough to their pods undecrypted; puts an SNI-reading hop in front of every HTTPS connection")
	flag.StringVar(&cfg.ProxyProtocolFrom, "proxy-protocol-from", "", "comma-separated CIDRs of the load balancers that send a PROXY protocol header (v1 or v2) on the HTTP and HTTPS ports, which must then send it; empty means none")
	flag.BoolVar(&cfg.Election, "election", true, "elect one replica, by a Lease, to write Ingress status and Events; false for a single replica")
	flag.StringVar(&cfg.ElectionNamespace, "election-namespace", "", "namespace of the Lease; empty means the pod's (or the kubeconfig context's)")
	flag.StringVar(&cfg.ElectionID, "election-id", "", "name of the Lease; empty means sluice-ingress-CLASS, so that two classes never share one")
	flag.StringVar(&cfg.ElectionIdentity, "election-identity", "", "this replica's name in the Lease; empty means $POD_NAME, else the host name")
	flag.DurationVar(&cfg.LeaseDuration, "lease-duration", 15*time.Second, "how long a Lease not renewed keeps other replicas from taking over")
	flag.DurationVar(&cfg.RenewDeadline, "renew-deadline", 10*time.Second, "how long the leader tries to renew before it stops writing (< -lease-duration)")
	flag.DurationVar(&cfg.RetryPeriod, "retry-period", 2*time.Second, "time between two tries to acquire or renew the Lease")
	flag.Parse()
	// client-go (leader election, informers) logs through klog: send it to the same structured
	// log as the controller's own lines.
	klog.SetLogger(logr.FromSlogHandler(slog.Default().Handler()))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, &cfg); err != nil {
		slog.Error("ingress-controller", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then drains. It returns nil after a clean drain.
func run(ctx context.Context, cfg *config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Class == "" {
		return errors.New("-class must not be empty")
	}
	if cfg.HTTPAddr == "" && cfg.HTTPSAddr == "" {
		return errors.New("-http and -https are both empty: nothing to serve")
	}
	if cfg.Server != "" && cfg.Server != "sluice" && cfg.Server != "net/http" {
		return fmt.Errorf("-server: want sluice or net/http, got %q", cfg.Server)
	}
	if cfg.SSLPassthrough && cfg.HTTPSAddr == "" {
		return errors.New("-enable-ssl-passthrough needs -https: passthrough happens on the HTTPS port")
	}
	trusted, err := parseProxyProtocolFrom(cfg.ProxyProtocolFrom)
	if err != nil {
		return err
	}
	client := cfg.Client
	if client == nil {
		rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	m, err := newControllerMetrics()
	if err != nil {
		return err
	}
	c, err := newController(cfg, client, m)
	if err != nil {
		return err
	}
	m.WatchKeyring("ingress", c.certs) // certificate expiry per host, read at each scrape
	defer c.cache.Close()
	if cfg.Election {
		if c.status.elector, err = newElector(cfg, client, c.changed); err != nil {
			return err
		}
	}

	var lns []net.Listener
	listen := func(addr string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		// No TCP keep-alive probes (IdleTimeout ends idle connections) and, on Linux,
		// accept once the first bytes are in: fewer system calls per connection.
		ln, err := h1.ListenConfig().Listen(ctx, "tcp", addr)
		if err == nil {
			lns = append(lns, ln)
		}
		return ln, err
	}
	httpLn, err1 := listen(cfg.HTTPAddr)
	httpsLn, err2 := listen(cfg.HTTPSAddr)
	adminLn, err3 := listen(cfg.AdminAddr)
	if err := errors.Join(err1, err2, err3); err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return err
	}
	if trusted != nil {
		// Behind a load balancer that speaks the PROXY protocol, each connection's address is
		// the client's, read from the header before anything else (before the ClientHello
		// too), so that access logs, X-Forwarded-For, rate limits and passthrough balancing
		// see the client. Anyone else sending a header is refused.
		for _, ln := range []*net.Listener{&httpLn, &httpsLn} {
			if *ln != nil {
				*ln = &proxyproto.Listener{Listener: *ln, Trusted: trusted}
			}
		}
	}
	// With passthrough the HTTPS server takes its connections from the SNI proxy, which
	// serves the HTTPS port.
	var httpsConns net.Listener = httpsLn
	if cfg.SSLPassthrough {
		if err := c.enablePassthrough(httpsLn.Addr()); err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return err
		}
		httpsConns = c.terminate
		m.passthrough = c.l4.Stats
	}

	var draining atomic.Bool
	admin := http.NewServeMux()
	admin.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	admin.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !c.Ready() || draining.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	admin.Handle("GET /metrics", m.Handler())
	// The dashboard: routes, pools with their endpoints' health, certificates and live
	// request, error and latency charts (package admin), under /dashboard/.
	dash, err := c.dashboardHandler(c.rec)
	if err != nil {
		return err
	}
	admin.Handle("/dashboard/", http.StripPrefix("/dashboard", dash))
	adminSrv := proxy.NewServer(admin, proxy.ServerOptions{})
	// The edge log sees every response, the cache's hits, the limiter's 429s, the redirects
	// and the router's 404s, which never reach a proxy: it counts them all, by route.
	edge, err := accesslog.New(accesslog.Options{Hooks: accesslog.JoinHooks(m.Edge(), recordEdge(c.rec))})
	if err != nil {
		return err
	}
	front := edge.Handler(c.router)
	httpSrv := proxy.NewServer(front, proxy.ServerOptions{})
	httpSrv.ErrorLog = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)
	var httpsSrv *http.Server
	if httpsLn != nil {
		tc, err := certs.ServerConfig(c.certs, certs.ServerOptions{})
		if err != nil {
			return err
		}
		httpsSrv = proxy.NewServer(front, proxy.ServerOptions{})
		httpsSrv.TLSConfig = tc
		httpsSrv.ErrorLog = httpSrv.ErrorLog
	}

	// The front ends: sluice's HTTP/1.1 server in front of each http.Server, handing HTTP/2
	// to sluice's HTTP/2 server; both take the http.Server's settings.
	var httpFront, httpsFront frontEnd = httpSrv, nil
	if httpsSrv != nil {
		httpsFront = httpsSrv
	}
	if cfg.Server != "net/http" {
		httpFront = sluiceFront(httpSrv)
		if httpsSrv != nil {
			httpsFront = sluiceFront(httpsSrv)
		}
	}

	ctrlCtx, stopCtrl := context.WithCancel(context.Background())
	defer stopCtrl()
	var wg sync.WaitGroup
	serveErr := make(chan error, 4)
	serve := func(f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, tcpproxy.ErrClosed) {
				serveErr <- err
			}
		})
	}
	wg.Go(func() { _ = c.Run(ctrlCtx) })
	// The election stops first when draining, so that another replica takes over the status
	// while this one finishes its requests.
	electCtx, stopElection := context.WithCancel(context.Background())
	defer stopElection()
	if el := c.status.elector; el != nil {
		wg.Go(func() { _ = el.Run(electCtx) })
	}
	if httpLn != nil {
		serve(func() error { return httpFront.Serve(httpLn) })
	}
	if httpsFront != nil {
		serve(func() error { return httpsFront.ServeTLS(httpsConns, "", "") })
	}
	if c.l4 != nil {
		serve(func() error { return c.l4.Serve(httpsLn) })
	}
	if adminLn != nil {
		serve(func() error { return adminSrv.Serve(adminLn) })
	}
	if cfg.Listening != nil {
		addr := func(ln net.Listener) string {
			if ln == nil {
				return ""
			}
			return ln.Addr().String()
		}
		cfg.Listening(addr(httpLn), addr(httpsLn), addr(adminLn))
	}
	cfg.Logger.Info("serving", "http", cfg.HTTPAddr, "https", cfg.HTTPSAddr, "admin", cfg.AdminAddr, "class", cfg.Class,
		"ssl_passthrough", cfg.SSLPassthrough, "proxy_protocol_from", cfg.ProxyProtocolFrom)

	var failed error
	select {
	case <-ctx.Done():
	case failed = <-serveErr:
	}
	// Drain: say not ready, stop accepting, let requests and upgraded connections finish.
	draining.Store(true)
	stopElection()
	cfg.Logger.Info("draining", "timeout", cfg.Drain)
	dctx, cancel := context.WithTimeout(context.Background(), cfg.Drain)
	defer cancel()
	servers := []proxy.Server{httpFront}
	if httpsFront != nil {
		servers = append(servers, httpsFront)
	}
	// The SNI proxy stops accepting at once and lets the connections it passed through
	// finish, alongside the servers' requests, within the same -drain.
	l4Drained := make(chan error, 1)
	if c.l4 != nil {
		go func() { l4Drained <- c.l4.Shutdown(dctx) }()
	} else {
		l4Drained <- nil
	}
	// Both servers first, then the proxies: a proxy's tunnels close only once neither server
	// has requests, and the list, taken when no request can start, has every proxy that
	// still holds requests or tunnels, those a route change retired included.
	drainErr := proxy.Drain(dctx, servers)
	if err := proxy.Drain(dctx, nil, c.Proxies()...); drainErr == nil {
		drainErr = err
	}
	if err := <-l4Drained; drainErr == nil {
		drainErr = err
	}
	stopCtrl()
	_ = adminSrv.Shutdown(dctx)
	wg.Wait()
	return errors.Join(failed, drainErr)
}
