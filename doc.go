// Package sluice is a library for building reverse proxies that live in Kubernetes.
//
// Sluice is not a proxy binary with a configuration language: it is a set of small packages
// that an embedder composes into an [net/http.Handler] and serves from its own
// [net/http.Server]. Each package does one job and they meet only through the small vocabulary
// declared here.
//
// # Packages
//
//	sluice                 Endpoint, Picker, Outcome, Observer, ClientIP: the shared vocabulary
//	balancer               picks an endpoint per try: round robin, least-request, peak-EWMA,
//	                       consistent hashing, sticky sessions, slow start, zone preference
//	discovery              keeps endpoint sets current: static lists and DNS
//	discovery/kubernetes   EndpointSlices through client-go informers
//	healthcheck            active probes and passive outlier detection
//	proxy                  the forwarding http.Handler: HTTP/1.1, HTTP/2, h2c, WebSocket,
//	                       streaming, retries, timeouts, X-Forwarded-*/Forwarded
//	proxy/route            host and path routing, traffic splits, transformation, access control
//	cache                  an RFC 9111 shared cache middleware with request collapsing
//	ratelimit              per-client token buckets and concurrency limits
//	tls                    certificates by SNI with rotation; tls/kubernetes for Secrets
//	examples/...           runnable binaries: quickstart, gateway, lbsim, ingress-controller
//
// # How they compose
//
// A discovery source pushes whole endpoint sets; the health checker marks the ones that should
// not get traffic; the balancer turns each set into an immutable snapshot it picks from without
// locks; the proxy asks the balancer for an endpoint on every try and reports each try's
// [Outcome] back, which is how load-aware policies and outlier detection learn. Middlewares
// (cache, rate limiting, access control) wrap the proxy as ordinary handlers:
//
//	bal, err := balancer.New(balancer.PeakEWMA{}, balancer.Options{})
//	if err != nil {
//		return err // errors name the field that is wrong
//	}
//	hc, err := healthcheck.New(healthcheck.Options{Probe: &healthcheck.HTTP{Path: "/healthz"}})
//	if err != nil {
//		return err
//	}
//	src := discovery.Static{Endpoints: eps} // or discovery.DNS, or discovery/kubernetes
//	go src.Watch(ctx, hc.Update)            // sources push whole sets
//	go hc.Run(ctx, bal.Update)              // health marks them; the balancer rebuilds its snapshot
//	p := &proxy.Proxy{Picker: bal, Observer: hc} // every try's outcome feeds outlier detection
//	// ratelimit and cache wrap the proxy; NewServer adds header, idle and body timeouts and
//	// size limits against slow or oversized clients, and speaks HTTP/1.1 and h2c.
//	srv := proxy.NewServer(limiter.Handler(c.Handler(p)), proxy.ServerOptions{})
//	srv.Addr = ":8080"
//	go srv.ListenAndServe()
//	<-ctx.Done()
//	proxy.Drain(shutdownCtx, []*http.Server{srv}, p) // finish requests, then close WebSockets
//
// examples/quickstart is this wiring as a program, with a static source and round robin.
//
// # The dependency rule
//
// Dependencies point one way, so that a newcomer knows where a piece lives from its name and a
// user who needs only the balancer compiles only the balancer:
//
//	sluice (this package)   standard library only
//	balancer                sluice
//	discovery               sluice, golang.org/x/net
//	discovery/kubernetes    sluice, discovery, client-go
//	healthcheck             sluice (never balancer or proxy)
//	proxy, proxy/...        sluice, golang.org/x/net (never balancer: it takes any Picker)
//	cache, ratelimit        sluice and their third-party libraries (never proxy)
//	tls, tls/kubernetes     sluice, tls, client-go
//	examples/..., internal  anything
//
// Library packages never import one another sideways; only main packages and tests wire them
// together. deps_test.go enforces this table.
package sluice
