// Package sluice is a library for building reverse proxies that live in Kubernetes.
//
// Sluice is not a proxy binary with a configuration language: it is a set of small packages
// that an embedder composes into an [net/http.Handler] and serves from its own
// [net/http.Server]. Each package does one job and they meet only through the small vocabulary
// declared here: [Endpoint], [Picker], [Outcome], [Observer], [ClientIP] and [RecordRoute].
//
// # Packages
//
//	sluice                    the shared vocabulary: Endpoint, Picker, Outcome, Observer,
//	                          ClientIP, RecordRoute
//	balancer                  picks an endpoint per try: round robin, least-request, peak-EWMA,
//	                          consistent hashing (Maglev), sticky sessions, client-IP
//	                          affinity, slow start, zones
//	discovery                 keeps endpoint sets current: static lists and DNS
//	discovery/endpointslices  Kubernetes EndpointSlices, read as kube-proxy reads them
//	healthcheck               active HTTP, TCP and gRPC probes; passive outlier detection
//	proxy                     the forwarding http.Handler: HTTP/1.1, HTTP/2, h2c, WebSocket,
//	                          streaming, retries, timeouts, X-Forwarded-*/Forwarded; NewServer,
//	                          the hardened http.Server to serve it from; Drain
//	proxy/route               virtual hosts, path rules, header and weight splits, mirroring
//	h1                        sluice's own HTTP/1.1 server for any http.Handler, in front of an
//	                          http.Server: less CPU and memory per connection
//	h2                        sluice's own HTTP/2 server, for the HTTP/2 connections h1 accepts:
//	                          half the CPU of net/http's per request
//	proxyproto                the PROXY protocol, v1 and v2: a strict parser, a Listener that
//	                          takes the client's address from trusted load balancers
//	proxy/middleware          header and path rewrites, redirects, IP lists, auth, CORS, limits
//	cache                     an RFC 9111 shared cache with request collapsing
//	accesslog                 the edge access log: one line (JSON or Common/Combined Log Format)
//	                          and one event per response of the whole handler chain
//	ratelimit                 per-client token buckets and concurrency limits
//	tls/certs                 certificates by SNI, reloaded from files; tls.Config builders
//	tls/secrets               certificates from Kubernetes Secrets
//	pool                      one backend's chain, wired: source → health → balancer → proxy
//	tcpproxy                  L4: TCP connections routed by SNI (TLS passthrough or
//	                          termination), ALPN or a default route, spliced to endpoints
//	udpproxy                  UDP forwarding to a Picker's endpoints, one flow per client
//	                          address: idle timeout, flow bound, re-pick on ICMP refusal
//	admin                     a read-only admin handler: JSON of routes, pools, endpoints,
//	                          certificates, cache and limiters, and a live dashboard
//	tracing                   OpenTelemetry: a server span per request, a client span per try,
//	                          W3C trace context and baggage sent to endpoints
//	metrics                   Prometheus metrics from the other packages' hooks and stats,
//	                          with bounded labels and native histograms
//	examples/...              runnable binaries: quickstart, service-proxy, gateway, lbsim,
//	                          ingress-controller, tcp-proxy, kube-proxy
//
// Packages are named for what they hold or read, so that none clashes with a package its users
// import beside it (crypto/tls, client-go's kubernetes) and none needs an import alias.
//
// # How they compose
//
// A discovery source pushes whole endpoint sets; the health checker marks the ones that should
// not get traffic; the balancer turns each set into an immutable snapshot it picks from without
// locks; the proxy asks the balancer for an endpoint on every try and reports each try's
// [Outcome] back, which is how load-aware policies and outlier detection learn. A
// [github.com/sluiceproxy/sluice/pool.Pool] is that chain for one backend service, started by
// one Run:
//
//	api, err := pool.New(pool.Options{
//		Source: &discovery.DNS{Name: "api.default.svc.cluster.local", Port: 8080},
//		Policy: balancer.PeakEWMA{},
//		Health: healthcheck.Options{Probe: &healthcheck.HTTP{Path: "/healthz"}},
//		Proxy:  &proxy.Proxy{Logger: slog.Default()}, // one access-log line per request
//	})
//	if err != nil {
//		return err // errors name the field that is wrong
//	}
//	go func() { errc <- api.Run(ctx) }() // the first real error of the source or the checker
//
// Middlewares wrap it as ordinary handlers, [github.com/sluiceproxy/sluice/proxy.NewServer]
// serves the result with header, idle and body timeouts and size limits against slow or
// oversized clients, and [github.com/sluiceproxy/sluice/h1.Server] and
// [github.com/sluiceproxy/sluice/h2.Server] serve its HTTP/1.1 and HTTP/2 at less cost per
// request and per idle connection than net/http's servers:
//
//	limiter, err := ratelimit.New(ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 100, Burst: 200}}})
//	...
//	c, err := cache.New(cache.Options{})
//	...
//	srv := proxy.NewServer(limiter.Handler(c.Handler(api)), proxy.ServerOptions{})
//	front := h1.New(srv)     // sluice's HTTP/1.1 server, with srv's settings
//	front.HTTP2 = h2.New(srv) // and its HTTP/2 server
//	ln, err := h1.ListenConfig().Listen(ctx, "tcp", ":8080")
//	...
//	go front.Serve(ln)
//	...
//	proxy.Drain(shutdownCtx, []proxy.Server{front}, api.Proxy()) // finish requests, close WebSockets
//
// The Example of package pool is the whole program — discovery, health checks, balancer, proxy,
// cache, rate limit, TLS, access log, hardened server and drain — and runs as it is;
// examples/service-proxy serves two hosts that way.
//
// Every piece stays usable alone: a [Picker] is any balancer, an [Observer] any sink of
// outcomes ([Observers] fans one out to several), and a discovery source any type with Watch.
//
// # One middleware shape
//
// Every middleware in sluice — accesslog.Log, cache.Cache, ratelimit.Limiter,
// ratelimit.Concurrency and those of proxy/middleware — is a value with the method
//
//	Handler(next http.Handler) http.Handler
//
// Middlewares hold state (buckets, stored responses, parsed rules) that must be built once and
// validated, so each is a value made by a New that names the field that is wrong, or a plain
// struct whose zero value is documented; the wrapping is then a method of that value. The
// method value x.Handler is a func(http.Handler) http.Handler, the shape chain libraries take,
// so nothing needs an adapter. The outermost middleware runs first.
//
// # The dependency rule
//
// Dependencies point one way, so that a newcomer knows where a piece lives from its name and a
// user who needs only the balancer compiles only the balancer. Each library package may
// import the standard library and exactly what this table lists for it (sluice is this
// package; a third-party entry stands for its module's packages):
//
//	sluice                    (nothing)
//	balancer                  sluice, internal/hookset
//	discovery                 sluice, internal/hookset, golang.org/x/net
//	discovery/endpointslices  sluice, discovery, k8s.io/api, k8s.io/apimachinery, k8s.io/client-go
//	healthcheck               sluice, internal/hookset
//	proxy                     sluice, proxyproto, golang.org/x/net
//	proxy/route               sluice, proxy
//	h1                        internal/serving, golang.org/x/net
//	h2                        internal/serving, golang.org/x/net
//	proxyproto                sluice
//	proxy/middleware          sluice, golang.org/x/crypto
//	cache                     internal/hookset, github.com/hashicorp/golang-lru/v2
//	accesslog                 sluice
//	ratelimit                 sluice, internal/hookset, github.com/hashicorp/golang-lru/v2
//	tls/certs                 internal/hookset, golang.org/x/crypto
//	tls/secrets               tls/certs, k8s.io/api, k8s.io/apimachinery, k8s.io/client-go
//	pool                      sluice, admin, balancer, discovery, healthcheck, proxy
//	tcpproxy                  sluice, proxyproto
//	udpproxy                  sluice
//	admin                     sluice
//	tracing                   sluice, accesslog, proxy, go.opentelemetry.io/otel
//	metrics                   sluice, accesslog, balancer, cache, discovery, healthcheck, proxy, ratelimit, tls/certs, github.com/prometheus/client_golang
//
// No package imports a sibling, with five exceptions that stand a floor above what they use:
// proxyproto is a leaf that proxy (and the TCP proxy) build on to send PROXY headers,
// proxy/route and proxy/middleware build on proxy, pool wires discovery, healthcheck,
// balancer and proxy together (and shows them to admin's dashboard), tracing turns the hooks of accesslog and proxy into
// OpenTelemetry spans, and metrics turns the hooks and stats of the packages it exports into
// Prometheus metrics; nothing imports pool, tracing or metrics, and only metrics imports
// client_golang. h1 and h2 share internal/serving, their accept loop, and the packages with
// hooks share internal/hookset, which joins them. Main packages (examples/...) and test
// harnesses (internal/...) may import anything.
//
// Tests may import what their package may, the package itself, sluice, testify
// (github.com/stretchr/testify) and the harnesses under internal/, and also:
//
//	accesslog                 h1, h2, proxy, proxy/route
//	cache                     proxy
//	discovery/endpointslices  balancer, proxy
//	h2                        h1, github.com/summerwind/h2spec
//	proxyproto                h1
//	pool                      cache, ratelimit, tls/certs
//	proxy                     balancer
//	ratelimit                 golang.org/x/time
//	tcpproxy                  balancer, tls/certs
//	udpproxy                  balancer
//	admin                     balancer, h1, healthcheck, proxy, github.com/chromedp/chromedp
//	tracing                   proxy/route
//	metrics                   proxy/route, github.com/prometheus/client_model, github.com/prometheus/common
//
// deps_test.go reads both tables from this comment and fails on any import they do not list,
// in library and test files alike, and on any entry that no file uses, so the tables cannot
// rot.
package sluice
