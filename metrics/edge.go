package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice/accesslog"
)

// methods are the values of the method label: the methods of RFC 9110 and PATCH, and "other"
// for any other, so that a client inventing methods cannot make series.
var methods = [...]string{"other", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// method returns the index in methods of m.
func method(m string) int {
	switch m {
	case http.MethodGet:
		return 1
	case http.MethodHead:
		return 2
	case http.MethodPost:
		return 3
	case http.MethodPut:
		return 4
	case http.MethodDelete:
		return 5
	case http.MethodConnect:
		return 6
	case http.MethodOptions:
		return 7
	case http.MethodTrace:
		return 8
	case http.MethodPatch:
		return 9
	}
	return 0
}

// edgeMetrics are the metrics of an accesslog.Log: every response of the whole chain.
type edgeMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	routes   table[edgeRoute]
}

// edgeRoute holds one route's children, resolved on first use.
type edgeRoute struct {
	requests [len(methods)][len(classes)]slot[prometheus.Counter]
	duration prometheus.Observer
	bytes    prometheus.Counter
}

func (e *edgeMetrics) init(m *Metrics) {
	e.requests = m.counter("requests_total",
		"Responses sent to clients by the whole handler chain (cache hits, 429s, redirects and 404s included), by route, method and status class.",
		"route", "method", "class")
	e.duration = m.histogram("request_duration_seconds",
		"Time from receiving each request to the handler chain's return, by route.", "route")
	e.bytes = m.counter("response_bytes_total", "Response body bytes sent to clients, by route.", "route")
	e.routes.make = func(route string) *edgeRoute {
		return &edgeRoute{duration: e.duration.WithLabelValues(route), bytes: e.bytes.WithLabelValues(route)}
	}
}

// Edge returns the hooks of an edge access log (package accesslog), which sees every response
// of the chain it wraps, cache hits and 429s included:
//
//	SLUICE_requests_total{route,method,class}       counter
//	SLUICE_request_duration_seconds{route}          histogram
//	SLUICE_response_bytes_total{route}              counter
//
// where SLUICE is the Namespace, route is the name a router recorded with sluice.RecordRoute
// ("" when none did), method one of the methods of RFC 9110 or PATCH ("other" for the rest),
// and class the status class ("2xx"; "other" outside 100–599).
func (m *Metrics) Edge() accesslog.Hooks {
	return accesslog.Hooks{RequestDone: m.edge.requestDone}
}

func (e *edgeMetrics) requestDone(r *http.Request, ev accesslog.Event) {
	rt := e.routes.get(ev.Route)
	mi, ci := method(r.Method), class(ev.Status)
	rt.requests[mi][ci].get(func() prometheus.Counter {
		return e.requests.WithLabelValues(ev.Route, methods[mi], classes[ci])
	}).Inc()
	rt.duration.Observe(ev.Duration.Seconds())
	if ev.Bytes > 0 {
		rt.bytes.Add(float64(ev.Bytes))
	}
}
