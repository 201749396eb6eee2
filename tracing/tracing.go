package tracing

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/textproto"
	"reflect"
	"strconv"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/proxy"
)

// scope is the instrumentation scope of every span: this package's import path.
const scope = "github.com/sluiceproxy/sluice/tracing"

// unset is OpenTelemetry's global TracerProvider before an application installs one: it
// makes no spans of its own. Package initialisation runs before any code that imports this
// package can call otel.SetTracerProvider, so this is that default provider; installing
// another replaces what otel.GetTracerProvider returns.
var unset = otel.GetTracerProvider()

// Options configure a Tracer. The zero value uses OpenTelemetry's global tracer provider and
// W3C trace context and baggage.
type Options struct {
	// TracerProvider makes the spans. Nil means the global one an application installs with
	// otel.SetTracerProvider, looked up at each request, so that a provider installed after
	// New is used from then on. Until one is installed, and with the no-op provider
	// (go.opentelemetry.io/otel/trace/noop), no span is started: the trace context and
	// baggage a client sent pass on to the endpoints as they came, without an allocation.
	TracerProvider trace.TracerProvider

	// Propagator reads trace context from requests and writes it to upstream requests. Nil
	// means W3C traceparent and tracestate, and W3C baggage.
	Propagator propagation.TextMapPropagator

	// Public says that requests come from clients that are not part of the application's
	// traces (the internet): each server span then starts a new trace, linked to the
	// context the client sent, rather than continuing it, so that no client decides what is
	// sampled or joins its spans to the application's traces. Baggage is still read and
	// passed on.
	Public bool
}

// Tracer makes the spans of a proxy: a server span per request with Handler, a client span
// per try with ProxyHooks. It is safe for concurrent use.
type Tracer struct {
	fixed  *binding                // Options.TracerProvider's, or nil: the global provider's
	global atomic.Pointer[binding] // the global provider's, as of the last request
	server []trace.SpanStartOption // built once: a slice per span would allocate
	client []trace.SpanStartOption
	prop   propagation.TextMapPropagator
	fields []string // prop's header fields, canonical: cleared before the proxy's request gets them
	// asIs says that, when no span is started, the headers of prop's fields can travel as
	// they came, as any header does: prop is the default W3C one and clients are not Public.
	asIs   bool
	public bool
	log    *accesslog.Log // hooks only: the response's status and route for the server span
}

// New returns a Tracer. It fails only if an option cannot work.
func New(opts Options) (*Tracer, error) {
	prop := opts.Propagator
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	t := &Tracer{
		prop: prop, public: opts.Public, asIs: opts.Propagator == nil && !opts.Public,
		server: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)},
		client: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)},
	}
	log, err := accesslog.New(accesslog.Options{Hooks: accesslog.Hooks{RequestDone: t.requestDone}})
	if err != nil {
		return nil, errors.Join(errors.New("tracing: the response recorder"), err)
	}
	t.log = log
	for _, f := range prop.Fields() {
		t.fields = append(t.fields, canonical(f))
	}
	if tp := opts.TracerProvider; tp != nil && tp != unset {
		t.fixed = bind(tp)
	}
	return t, nil
}

// binding is a TracerProvider and the tracer it gives this package.
type binding struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
	// noSpans says that the provider makes no spans of its own (OpenTelemetry's default and
	// its no-op provider): its Start gives back the parent's span context, or none. The
	// Tracer then starts nothing, and passes the parent's context on itself.
	noSpans bool
	// cached says that tp's type can be compared with ==, so that the binding can be kept
	// and found again.
	cached bool
}

func bind(tp trace.TracerProvider) *binding {
	b := &binding{tp: tp, tracer: tp.Tracer(scope), cached: canCompare(tp)}
	switch tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		b.noSpans = true
	default:
		b.noSpans = tp == unset
	}
	return b
}

// canCompare reports whether tp's type can be compared with ==: a provider may be a struct
// holding a slice or a map. (Comparing with a value of another type is always safe; == panics
// only on two values of one type that cannot be compared.)
func canCompare(tp trace.TracerProvider) bool {
	return reflect.TypeOf(tp).Comparable()
}

// binding returns the binding of the provider that makes this request's spans.
func (t *Tracer) binding() *binding {
	if t.fixed != nil {
		return t.fixed
	}
	tp := otel.GetTracerProvider()
	if b := t.global.Load(); b != nil && b.cached && b.tp == tp {
		return b
	}
	b := bind(tp)
	t.global.Store(b)
	return b
}

// carrier is a propagation.TextMapCarrier on an http.Header that names the W3C fields by
// their canonical keys without building them: http.Header's Get and Set canonicalise the
// key on every call, and "traceparent" becomes "Traceparent" in a new string each time.
type carrier http.Header

// canonical returns key as http.Header stores it.
func canonical(key string) string {
	switch key {
	case "traceparent":
		return "Traceparent"
	case "tracestate":
		return "Tracestate"
	case "baggage":
		return "Baggage"
	}
	return textproto.CanonicalMIMEHeaderKey(key)
}

// Get returns key's first value, or "".
func (c carrier) Get(key string) string {
	if v := c[canonical(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Values returns all of key's values (W3C baggage may come in several fields).
func (c carrier) Values(key string) []string { return c[canonical(key)] }

// Set replaces key's values with value.
func (c carrier) Set(key, value string) { c[canonical(key)] = []string{value} }

// Keys returns the header's keys.
func (c carrier) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

// passOn returns the context of a request that starts no span: the trace context and
// baggage the client sent, the trace context left out when clients are public. When the
// headers can travel as they came, it is r's own.
func (t *Tracer) passOn(r *http.Request) *http.Request {
	if t.asIs {
		return r
	}
	ctx := t.prop.Extract(r.Context(), carrier(r.Header))
	if t.public && trace.SpanContextFromContext(ctx).IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	}
	if ctx == r.Context() {
		return r
	}
	return r.WithContext(ctx)
}

// Handler returns next wrapped in a server span per request. Put it outermost, so that the
// span covers every middleware and every answer: a cache hit, a 429 and a router's 404 get
// spans as proxied requests do. The span is named for the method and the route a router
// recorded (sluice.RecordRoute), and carries the HTTP semantic conventions' attributes; a
// status of 500 or more marks it as an error. The ResponseWriter next gets hides nothing of
// the server's (see package accesslog, whose writer records the status).
func (t *Tracer) Handler(next http.Handler) http.Handler {
	inner := t.log.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := t.binding()
		if b.noSpans {
			next.ServeHTTP(w, t.passOn(r))
			return
		}
		ctx := t.prop.Extract(r.Context(), carrier(r.Header))
		opts := t.server
		if t.public {
			if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
				opts = append(opts[:len(opts):len(opts)], trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: sc}))
			}
		}
		ctx, span := b.tracer.Start(ctx, methodName(r.Method), opts...)
		defer span.End()
		if !span.IsRecording() {
			// Not sampled: nothing will read the span's attributes or status, so the
			// response needs no recording writer; the context still carries the trace on.
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		span.SetAttributes(serverAttributes(r)...)
		inner.ServeHTTP(w, r.WithContext(ctx))
	})
}

// requestDone finishes the server span's attributes from what the response was.
func (t *Tracer) requestDone(r *http.Request, e accesslog.Event) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", e.Status))
	if e.Route != "" {
		span.SetAttributes(attribute.String("http.route", e.Route))
		span.SetName(methodName(r.Method) + " " + e.Route)
	}
	if e.Status >= 500 {
		span.SetAttributes(attribute.String("error.type", strconv.Itoa(e.Status)))
		span.SetStatus(codes.Error, "")
	}
}

// ProxyHooks returns the hooks that give every try of a proxy.Proxy a client span, a child
// of the request's span, and send its trace context (and the request's baggage) to the
// endpoint: retries show as sibling spans of one request, with http.request.resend_count.
// Join them with other listeners' hooks with proxy.JoinHooks. They work with the proxy's
// default transports; no custom Transport is needed.
func (t *Tracer) ProxyHooks() proxy.Hooks {
	return proxy.Hooks{TryStart: t.tryStart}
}

func (t *Tracer) tryStart(out *http.Request, e proxy.TryStartEvent) func(proxy.TryEvent) {
	parent := out.Context()
	b := t.binding()
	if sc := trace.SpanContextFromContext(parent); b.noSpans || sc.IsValid() && !sc.IsSampled() {
		// No provider, or an unsampled trace (the server span was not sampled, or a client
		// said so): no span of it is ever exported, so the try makes none and passes the
		// request's context on as it is, as W3C trace context lets a participant that
		// records nothing do.
		if !b.noSpans || !t.asIs {
			t.inject(parent, out.Header)
		}
		return nil
	}
	ctx, span := b.tracer.Start(parent, methodName(out.Method), t.client...)
	if !span.SpanContext().IsValid() {
		return nil // a provider that made no span: no trace to pass on, nothing to end
	}
	t.inject(ctx, out.Header)
	if !span.IsRecording() {
		return func(proxy.TryEvent) { span.End() }
	}
	span.SetAttributes(clientAttributes(out, e)...)
	return func(te proxy.TryEvent) {
		o := te.Outcome
		if o.Failure == sluice.NoFailure {
			span.SetAttributes(attribute.Int("http.response.status_code", o.Status))
			if o.Status >= 400 {
				// Client spans mark 4xx too: the request the proxy sent failed.
				span.SetAttributes(attribute.String("error.type", strconv.Itoa(o.Status)))
				span.SetStatus(codes.Error, "")
			}
		} else {
			span.SetAttributes(attribute.String("error.type", o.Failure.String()))
			span.SetStatus(codes.Error, o.Failure.String())
		}
		if te.Retry != proxy.NoRetry {
			span.SetAttributes(attribute.String("sluice.retry_reason", te.Retry.String()))
		}
		span.End()
	}
}

// inject writes ctx's trace context and baggage into h, the header of a request the proxy
// sends, in place of what the client sent in those fields: a propagator writes no field it
// has nothing for, and a client's tracestate must not ride along with another trace's
// traceparent.
func (t *Tracer) inject(ctx context.Context, h http.Header) {
	for _, f := range t.fields {
		delete(h, f)
	}
	t.prop.Inject(ctx, carrier(h))
}

// methodName is the span name of a method, as the HTTP semantic conventions want it: the
// method when it is a known one, "HTTP" otherwise, so that made-up methods cannot grow the
// set of span names.
func methodName(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "HTTP"
}

// method is the value of http.request.method: the method when it is a known one, "_OTHER"
// otherwise.
func method(m string) attribute.KeyValue {
	if methodName(m) == "HTTP" {
		return attribute.String("http.request.method", "_OTHER")
	}
	return attribute.String("http.request.method", m)
}

func serverAttributes(r *http.Request) []attribute.KeyValue {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs := []attribute.KeyValue{
		method(r.Method),
		attribute.String("url.scheme", scheme),
		attribute.String("url.path", r.URL.Path),
		attribute.String("network.protocol.version", protocolVersion(r)),
	}
	if host, port, ok := hostPort(r.Host, scheme); ok {
		attrs = append(attrs, attribute.String("server.address", host), attribute.Int("server.port", port))
	}
	if a := sluice.PeerAddr(r); a.IsValid() {
		attrs = append(attrs, attribute.String("client.address", a.String()))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, attribute.String("user_agent.original", ua))
	}
	return attrs
}

func clientAttributes(out *http.Request, e proxy.TryStartEvent) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		method(out.Method),
		attribute.String("url.full", out.URL.String()),
		attribute.String("network.protocol.version", "1.1"),
	}
	if host, port, err := net.SplitHostPort(e.Endpoint.Addr); err == nil {
		attrs = append(attrs, attribute.String("server.address", host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, attribute.Int("server.port", p))
		}
	}
	if e.Attempt > 1 {
		attrs = append(attrs, attribute.Int("http.request.resend_count", e.Attempt-1))
	}
	return attrs
}

func protocolVersion(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "2"
	case 3:
		return "3"
	}
	if r.ProtoMinor == 0 {
		return "1.0"
	}
	return "1.1"
}

// hostPort splits a Host header into its host and port, the port defaulting to the scheme's.
func hostPort(hostport, scheme string) (string, int, bool) {
	if hostport == "" {
		return "", 0, false
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
		port = "80"
		if scheme == "https" {
			port = "443"
		}
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, false
	}
	return host, p, true
}
