// Package tracing gives a proxy OpenTelemetry traces: a server span for every request that
// reaches the handler chain, and a client span for every try the proxy makes, with the trace
// context sent on to the endpoint so that its spans join the same trace.
//
//	tr, err := tracing.New(tracing.Options{}) // the global TracerProvider, W3C propagation
//	...
//	p := &proxy.Proxy{Picker: bal, Hooks: tr.ProxyHooks()}
//	srv := proxy.NewServer(tr.Handler(limiter.Handler(c.Handler(router))), proxy.ServerOptions{})
//
// # Spans
//
// Handler starts a span of kind server for each request, continuing the trace its
// traceparent names (or, with Options.Public, starting a new one linked to it), and ends it
// when the handler chain returns. It follows the HTTP semantic conventions: the span is named
// for the method, and for the route when a router recorded one ("GET api"), and carries
// http.request.method, url.scheme, url.path, server.address, server.port, client.address,
// network.protocol.version, user_agent.original, http.response.status_code and http.route;
// a status of 500 or more sets error.type and marks the span as an error. Every answer gets
// its span, a cache hit, a 429 or a router's 404 as much as a proxied response.
//
// ProxyHooks gives each try a span of kind client, a child of the request's span: a request
// retried twice has three client spans side by side under one server span, the second and
// third with http.request.resend_count, each ending as its try ends, with the status the
// endpoint answered or the failure (connect, connection, timeout...) as error.type, and the
// reason the proxy tried again as sluice.retry_reason. The try's traceparent, tracestate and
// the request's baggage go to the endpoint in the headers of the request the proxy sends,
// whichever of the proxy's default transports carries it: no custom Transport is needed.
// Two sluice proxies in a row thus make one trace: server, client, server, client.
//
// # Cost
//
// Until an application installs a TracerProvider (OpenTelemetry's default makes no spans),
// and with the no-op provider, a Tracer starts nothing and allocates nothing: the trace
// context and baggage a client sent travel on to the endpoint as its other headers do
// (TestAllocsWithoutExporter measures 0 allocations per request, with and without a
// client's traceparent). Options.TracerProvider left nil follows the global provider at
// each request, so one installed later is used at once. A provider that samples nothing
// still makes span IDs, and the trace context sent on: 6 allocations per request with the
// SDK's NeverSample, and no attribute built, since no span records.
package tracing
