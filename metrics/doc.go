// Package metrics exports what sluice's packages report to Prometheus, through
// github.com/prometheus/client_golang, the one package of sluice that imports it.
//
// Each package that does something worth counting reports it through a struct of optional
// funcs named Hooks (accesslog, proxy, cache, ratelimit, tls/certs, discovery, healthcheck,
// balancer), and each stateful one says what it holds through a Stats, Endpoints or
// Certificates method. A Metrics turns both
// into metrics: a method per package returns the Hooks to set, and the Watch methods read the
// state at every scrape, so that gauges are never stale and cost nothing between scrapes.
//
//	m, err := metrics.New(metrics.Options{})
//	...
//	edge, err := accesslog.New(accesslog.Options{Logger: logger, Hooks: m.Edge()})
//	c, err := cache.New(cache.Options{Hooks: m.Cache("api")})
//	m.WatchCache("api", c)
//	p := &proxy.Proxy{Picker: bal, Hooks: m.Proxy()}
//	...
//	mux.Handle("GET /metrics", m.Handler()) // on a private listener
//
// Hooks of several listeners (metrics, a tracer, the admin dashboard) combine with each
// package's JoinHooks.
//
// # Names
//
// Names follow the Prometheus naming guide: a namespace (Options.Namespace, "sluice" by
// default), the subsystem (cache, ratelimit, tls, discovery, upstream for the proxy's view of
// its endpoints), base units (seconds, bytes), _total for counters, _timestamp_seconds for
// points in time. The edge's requests_total counts what clients got, which only an edge log
// wrapping the whole chain sees (cache hits, 429s, redirects); upstream_requests_total counts
// what reached a proxy. Each method's documentation lists its metrics.
//
// # Labels
//
// A label whose values a client could choose would let every request make a series, and a
// Prometheus server holds every series it ever saw until it ages out. So no label here carries
// a path, a host, a client address or a cache key: routes are the names routers record, which
// configuration bounds; methods are those of RFC 9110 and PATCH, the rest "other"; statuses
// are classes ("2xx"); outcomes, failures and reasons come from small fixed sets; caches,
// limiters and keyrings carry the names they were given. Endpoint addresses are a label only
// with Options.EndpointLabels, since pods come and go with new addresses.
//
// # Histograms
//
// Latencies (the edge's request duration, each try's time to its response head) are
// histograms in seconds, exposed both ways: classic buckets (Options.Buckets) for every
// scraper, and native histograms, of exponential buckets with a growth factor of 1.1, for a
// scraper that asks for the protobuf format (Prometheus with native histograms on), whose
// quantiles are then within 5% whatever the latency.
//
// # Cost
//
// A hook's first event for a new label combination resolves its child metric from the vector
// and keeps it, in an immutable table read through an atomic pointer; every later event is a
// table lookup, an atomic load and an atomic add, with no lock and no allocation
// (TestHooksAllocateNothing; BenchmarkHooks gives the time of each).
package metrics
