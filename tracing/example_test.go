package tracing_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/tracing"
)

// A traced proxy: a server span for the request, a client span for the try, and the trace
// context sent on to the endpoint.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("endpoint got a traceparent:", r.Header.Get("Traceparent") != "")
	}))
	defer backend.Close()
	u, _ := url.Parse(backend.URL)

	rec := tracetest.NewSpanRecorder() // in a real program, an exporter's span processor
	tr, err := tracing.New(tracing.Options{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	if err != nil {
		panic(err)
	}
	p := &proxy.Proxy{
		Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
			return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: u.Host}}, nil
		}),
		Hooks: tr.ProxyHooks(),
	}
	front := httptest.NewServer(tr.Handler(p))
	defer front.Close()

	res, err := http.Get(front.URL)
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	for _, s := range rec.Ended() {
		fmt.Println(s.SpanKind(), s.Name())
	}
	// Output:
	// endpoint got a traceparent: true
	// client GET
	// server GET
}
