package tracing_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/route"
	"github.com/sluiceproxy/sluice/tracing"
)

// newTracer returns a Tracer that records every span into rec.
func newTracer(t *testing.T, rec *tracetest.SpanRecorder, opts tracing.Options) *tracing.Tracer {
	t.Helper()
	opts.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr, err := tracing.New(opts)
	require.NoError(t, err)
	return tr
}

// ordered is a Picker that tries addrs in order, one per try.
func ordered(addrs ...string) sluice.Picker {
	return sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: addrs[min(len(info.Tried), len(addrs)-1)]}}, nil
	})
}

// hop is a sluice proxy, traced, in front of the endpoints addrs, behind a router with one
// route named name.
func hop(t *testing.T, tr *tracing.Tracer, name string, addrs ...string) *httptest.Server {
	t.Helper()
	p := &proxy.Proxy{Picker: ordered(addrs...), Hooks: tr.ProxyHooks(),
		Retry: proxy.Retry{RetryOn: []int{503}, Backoff: -1}}
	table, err := route.New([]route.Route{{Name: name, Backends: []route.Backend{{Handler: p}}}}, route.Options{})
	require.NoError(t, err)
	srv := httptest.NewServer(tr.Handler(route.NewRouter(table, route.RouterOptions{})))
	t.Cleanup(srv.Close)
	return srv
}

func host(t *testing.T, srv *httptest.Server) string {
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	return u.Host
}

func attr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// Two sluice hops in a row make one trace, each span the child of the one before it, and the
// endpoint gets the last try's trace context and the client's baggage.
func TestTwoHopsOneTrace(t *testing.T) {
	var got http.Header
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(t, rec, tracing.Options{})
	second := hop(t, tr, "inner", host(t, backend))
	first := hop(t, tr, "outer", host(t, second))

	req, err := http.NewRequest("GET", first.URL+"/a?b=c", nil)
	require.NoError(t, err)
	req.Header.Set("User-Agent", "tracing-test")
	bag, err := baggage.Parse("tenant=blue")
	require.NoError(t, err)
	ctx := baggage.ContextWithBaggage(context.Background(), bag)
	propagation.Baggage{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)

	spans := rec.Ended()
	require.Len(t, spans, 4, "server, client, server, client")
	// Spans end innermost first: the second hop's client span, its server span, then the
	// first hop's client and server spans.
	c2, s2, c1, s1 := spans[0], spans[1], spans[2], spans[3]
	assert.Equal(t, trace.SpanKindServer, s1.SpanKind())
	assert.Equal(t, trace.SpanKindClient, c1.SpanKind())
	assert.Equal(t, trace.SpanKindServer, s2.SpanKind())
	assert.Equal(t, trace.SpanKindClient, c2.SpanKind())
	tid := s1.SpanContext().TraceID()
	for _, s := range spans {
		assert.Equal(t, tid, s.SpanContext().TraceID(), "%s is in the one trace", s.Name())
	}
	assert.Equal(t, s1.SpanContext().SpanID(), c1.Parent().SpanID(), "a try is a child of its request")
	assert.Equal(t, c1.SpanContext().SpanID(), s2.Parent().SpanID(), "the next hop continues the try")
	assert.True(t, s2.Parent().IsRemote())
	assert.Equal(t, s2.SpanContext().SpanID(), c2.Parent().SpanID())

	assert.Equal(t, "GET outer", s1.Name())
	assert.Equal(t, "GET inner", s2.Name())
	assert.Equal(t, "GET", c1.Name())
	assert.Equal(t, "outer", attr(s1, "http.route").AsString())
	assert.Equal(t, "/a", attr(s1, "url.path").AsString())
	assert.Equal(t, "http", attr(s1, "url.scheme").AsString())
	assert.Equal(t, "GET", attr(s1, "http.request.method").AsString())
	assert.Equal(t, int64(200), attr(s1, "http.response.status_code").AsInt64())
	assert.Equal(t, "tracing-test", attr(s1, "user_agent.original").AsString())
	assert.Equal(t, "127.0.0.1", attr(s1, "client.address").AsString())
	assert.Equal(t, "1.1", attr(s1, "network.protocol.version").AsString())
	assert.Equal(t, int64(200), attr(c2, "http.response.status_code").AsInt64())
	assert.Equal(t, "127.0.0.1", attr(c2, "server.address").AsString())

	// What the endpoint got: the last try's context and the client's baggage.
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(got)))
	assert.Equal(t, tid, sc.TraceID())
	assert.Equal(t, c2.SpanContext().SpanID(), sc.SpanID(), "the endpoint's parent is the try that reached it")
	assert.Equal(t, "blue", baggage.FromContext(propagation.Baggage{}.Extract(context.Background(), propagation.HeaderCarrier(got))).Member("tenant").Value())
}

// Retries are sibling client spans under the request's span; the failed ones say why.
func TestRetriesAreSiblings(t *testing.T) {
	var calls atomic.Int32
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer flaky.Close()
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(t, rec, tracing.Options{})
	front := hop(t, tr, "api", host(t, flaky), host(t, flaky))

	res, err := http.Get(front.URL)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)

	spans := rec.Ended()
	require.Len(t, spans, 3)
	first, second, server := spans[0], spans[1], spans[2]
	for _, c := range []sdktrace.ReadOnlySpan{first, second} {
		assert.Equal(t, trace.SpanKindClient, c.SpanKind())
		assert.Equal(t, server.SpanContext().SpanID(), c.Parent().SpanID(), "tries are siblings")
	}
	assert.Equal(t, int64(503), attr(first, "http.response.status_code").AsInt64())
	assert.Equal(t, codes.Error, first.Status().Code)
	assert.Equal(t, "status", attr(first, "sluice.retry_reason").AsString())
	assert.False(t, attr(first, "http.request.resend_count").AsInt64() > 0)
	assert.Equal(t, int64(1), attr(second, "http.request.resend_count").AsInt64())
	assert.Equal(t, int64(200), attr(second, "http.response.status_code").AsInt64())
	assert.Equal(t, codes.Unset, second.Status().Code)
}

// A connect failure is the failed try's error.type; an answer no endpoint gave (a 503 with
// nobody up) marks the server span as an error.
func TestFailures(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	addr := host(t, dead)
	dead.Close()
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(t, rec, tracing.Options{})
	front := hop(t, tr, "api", addr)

	res, err := http.Get(front.URL)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 502, res.StatusCode)
	spans := rec.Ended()
	require.NotEmpty(t, spans)
	server := spans[len(spans)-1]
	assert.Equal(t, "502", attr(server, "error.type").AsString())
	assert.Equal(t, codes.Error, server.Status().Code)
	for _, c := range spans[:len(spans)-1] {
		assert.Equal(t, "connect", attr(c, "error.type").AsString())
	}
}

// A router's 404 gets its server span too: the Tracer wraps the whole chain.
func TestAnswersNoProxySaw(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(t, rec, tracing.Options{})
	srv := httptest.NewServer(tr.Handler(http.NotFoundHandler()))
	defer srv.Close()
	res, err := http.Post(srv.URL+"/nope", "text/plain", nil)
	require.NoError(t, err)
	res.Body.Close()
	spans := rec.Ended()
	require.Len(t, spans, 1)
	assert.Equal(t, "POST", spans[0].Name())
	assert.Equal(t, int64(404), attr(spans[0], "http.response.status_code").AsInt64())
	assert.Equal(t, codes.Unset, spans[0].Status().Code, "a 4xx is not a server span's error")
}

// With Public, a client's traceparent does not decide the trace: the server span starts a new
// one, linked to the client's.
func TestPublic(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(t, rec, tracing.Options{Public: true})
	srv := httptest.NewServer(tr.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	defer srv.Close()
	const client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Traceparent", client)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	spans := rec.Ended()
	require.Len(t, spans, 1)
	assert.NotEqual(t, "4bf92f3577b34da6a3ce929d0e0e4736", spans[0].SpanContext().TraceID().String())
	assert.False(t, spans[0].Parent().IsValid(), "a new root")
	require.Len(t, spans[0].Links(), 1)
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", spans[0].Links()[0].SpanContext.TraceID().String())
}

// Unknown methods cannot grow the set of span names.
func TestUnknownMethod(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(t, rec, tracing.Options{})
	srv := httptest.NewServer(tr.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	defer srv.Close()
	req, _ := http.NewRequest("PURGEALL", srv.URL, nil)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	spans := rec.Ended()
	require.Len(t, spans, 1)
	assert.Equal(t, "HTTP", spans[0].Name())
	assert.Equal(t, "_OTHER", attr(spans[0], "http.request.method").AsString())
}

// An unsampled trace makes no spans, but its context still reaches the endpoint, unsampled,
// so the services behind agree with the client's decision.
func TestUnsampledTracePassesOn(t *testing.T) {
	got := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	defer backend.Close()
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(t, rec, tracing.Options{}) // the SDK's default sampler follows the parent
	front := hop(t, tr, "api", host(t, backend))
	req, _ := http.NewRequest("GET", front.URL, nil)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	tp := <-got
	assert.Regexp(t, `^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-00$`, tp, "the trace goes on, unsampled")
	assert.Empty(t, rec.Ended(), "nothing is recorded")
}

// allocsPerRequest is what a Tracer's server span and one try cost in allocations, beyond
// the proxy's own (its outgoing request, r.Clone here), for a request with the headers h.
func allocsPerRequest(t *testing.T, tr *tracing.Tracer, h http.Header) float64 {
	t.Helper()
	hooks := tr.ProxyHooks()
	handler := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.Clone(r.Context())
		if try := hooks.TryStart(out, proxy.TryStartEvent{Attempt: 1}); try != nil {
			try(proxy.TryEvent{Attempt: 1})
		}
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header = h
	w := httptest.NewRecorder()
	base := testing.AllocsPerRun(200, func() { r.Clone(r.Context()) })
	return testing.AllocsPerRun(200, func() { handler.ServeHTTP(w, r) }) - base
}

// With no provider that makes spans (the no-op one, or OpenTelemetry's default), a Tracer
// allocates nothing; a client's trace context costs the request's new context. The SDK makes
// span IDs even when it samples nothing: the limit pins its figure so that it does not grow.
func TestAllocsWithoutExporter(t *testing.T) {
	traced := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	for _, tc := range []struct {
		name   string
		tp     trace.TracerProvider
		header http.Header
		max    float64
	}{
		{"no-op provider", noop.NewTracerProvider(), http.Header{}, 0},
		{"no-op provider, client's traceparent", noop.NewTracerProvider(), traced, 0},
		{"SDK, sampling off", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample())), http.Header{}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := tracing.New(tracing.Options{TracerProvider: tc.tp})
			require.NoError(t, err)
			allocs := allocsPerRequest(t, tr, tc.header)
			t.Logf("%s: %.0f allocations per request beyond the proxy's own", tc.name, allocs)
			assert.LessOrEqual(t, allocs, tc.max)
		})
	}
}

// The trace context and baggage a client sent reach the endpoint: as they came with the
// no-op provider (OpenTelemetry's no-op spans carry their parent's context), the trace
// continued with the SDK. With Public, the baggage does and the client's trace context does
// not, its tracestate included.
func TestClientContextPassesOn(t *testing.T) {
	got := make(chan http.Header, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	}))
	defer backend.Close()
	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	const client = "00-" + traceID + "-" + parent + "-01"
	for _, tc := range []struct {
		name   string
		tp     trace.TracerProvider
		public bool
	}{
		{"no-op", noop.NewTracerProvider(), false},
		{"no-op, public", noop.NewTracerProvider(), true},
		{"SDK", sdktrace.NewTracerProvider(), false},
		{"SDK, public", sdktrace.NewTracerProvider(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := tracing.New(tracing.Options{TracerProvider: tc.tp, Public: tc.public})
			require.NoError(t, err)
			front := hop(t, tr, "api", host(t, backend))
			req, _ := http.NewRequest("GET", front.URL, nil)
			req.Header.Set("Traceparent", client)
			req.Header.Set("Tracestate", "vendor=1")
			req.Header.Set("Baggage", "tenant=7")
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			res.Body.Close()
			h := <-got
			assert.Equal(t, "tenant=7", h.Get("Baggage"))
			_, sdk := tc.tp.(*sdktrace.TracerProvider)
			switch {
			case tc.public && sdk:
				assert.NotContains(t, h.Get("Traceparent"), traceID, "a public client's trace is not continued")
				assert.NotEmpty(t, h.Get("Traceparent"), "the proxy's own trace is")
				assert.Empty(t, h.Get("Tracestate"), "the client's tracestate is not the new trace's")
			case tc.public:
				assert.Empty(t, h.Get("Traceparent"), "a public client's trace is not continued")
				assert.Empty(t, h.Get("Tracestate"))
			case sdk:
				assert.Regexp(t, "^00-"+traceID+"-[0-9a-f]{16}-01$", h.Get("Traceparent"))
				assert.NotContains(t, h.Get("Traceparent"), parent, "the try's span is the parent")
				assert.Equal(t, "vendor=1", h.Get("Tracestate"))
			default:
				assert.Equal(t, client, h.Get("Traceparent"))
				assert.Equal(t, "vendor=1", h.Get("Tracestate"))
			}
		})
	}
}

// Options without a TracerProvider follow OpenTelemetry's global one: nothing is started (and
// nothing allocated) until an application installs a provider, and its spans from then on,
// without a new Tracer.
func TestGlobalProvider(t *testing.T) {
	if fmt.Sprintf("%T", otel.GetTracerProvider()) != "*global.tracerProvider" {
		t.Skip("a global provider is installed already: this process ran this test before (-count)")
	}
	tr, err := tracing.New(tracing.Options{})
	require.NoError(t, err)
	assert.Zero(t, allocsPerRequest(t, tr, http.Header{}), "before a provider is installed")

	got := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	defer backend.Close()
	front := hop(t, tr, "api", host(t, backend))
	get := func() {
		res, err := http.Get(front.URL)
		require.NoError(t, err)
		res.Body.Close()
	}
	get()
	assert.Empty(t, <-got, "no provider, no trace")

	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	get()
	assert.NotEmpty(t, <-got)
	assert.Len(t, rec.Ended(), 2, "a server and a client span, from the provider installed after New")
}
