package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// failures are the values of the failure label, indexed by sluice.Failure.
var failures = [...]string{"none", "connect", "connection", "timeout", "canceled", "client", "internal"}

// outcomes are the values of a try's outcome label: the status class of an answer, or the
// failure of a try that got none.
var outcomes = [len(classes) + len(failures) - 1]string{
	"other", "1xx", "2xx", "3xx", "4xx", "5xx",
	"connect", "connection", "timeout", "canceled", "client", "internal",
}

// outcome returns the index in outcomes of o.
func outcome(o sluice.Outcome) int {
	if o.Failure == sluice.NoFailure {
		return class(o.Status)
	}
	if int(o.Failure) < len(failures) {
		return len(classes) - 1 + int(o.Failure)
	}
	return 0
}

// retryReasons are the values of the reason label, indexed by proxy.RetryReason.
var retryReasons = [...]string{"none", "connect", "connection", "timeout", "status"}

// proxyMetrics are the metrics of a proxy.Proxy: requests, and each try.
type proxyMetrics struct {
	endpoints bool
	requests  *prometheus.CounterVec
	failures  *prometheus.CounterVec
	tries     *prometheus.CounterVec
	retries   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	routes    table[proxyRoute]
}

// proxyRoute holds one route's children. Its done is bound once, so that TryStart returns it
// without making a closure per try.
type proxyRoute struct {
	p        *proxyMetrics
	name     string
	requests [len(classes)]slot[prometheus.Counter]
	failures [len(failures)]slot[prometheus.Counter]
	retries  [len(retryReasons)]slot[prometheus.Counter]
	tries    tryMetrics        // without EndpointLabels
	byAddr   table[tryMetrics] // with EndpointLabels
	done     func(proxy.TryEvent)
}

// tryMetrics are the try counters and latency of a route, or of one endpoint of a route.
type tryMetrics struct {
	tries   [len(outcomes)]slot[prometheus.Counter]
	latency prometheus.Observer
	addr    string // the endpoint label's value
	byAddr  bool   // with EndpointLabels: the counters have an endpoint label
}

// counter returns the try counter of outcome oi, with the endpoint label when t has one.
func (t *tryMetrics) counter(vec *prometheus.CounterVec, route string, oi int) prometheus.Counter {
	return t.tries[oi].get(func() prometheus.Counter {
		if t.byAddr {
			return vec.WithLabelValues(route, outcomes[oi], t.addr)
		}
		return vec.WithLabelValues(route, outcomes[oi])
	})
}

func (p *proxyMetrics) init(m *Metrics) {
	p.endpoints = m.endpoints
	p.requests = m.counter("upstream_requests_total",
		"Requests a proxy handled, by route and the status class sent to the client.", "route", "class")
	p.failures = m.counter("upstream_failures_total",
		"Requests whose last try got no response, by route and failure.", "route", "failure")
	p.retries = m.counter("upstream_retries_total",
		"Tries followed by another, by route and the reason for retrying.", "route", "reason")
	tryLabels := []string{"route", "outcome"}
	latencyLabels := []string{"route"}
	if m.endpoints {
		tryLabels = append(tryLabels, "endpoint")
		latencyLabels = append(latencyLabels, "endpoint")
	}
	p.tries = m.counter("upstream_tries_total",
		"Tries sent to endpoints, by route and outcome: the status class of the answer, or the failure.", tryLabels...)
	p.latency = m.histogram("upstream_latency_seconds",
		"Time from sending each try to its response head or its failure, by route.", latencyLabels...)
	p.routes.make = func(route string) *proxyRoute {
		rt := &proxyRoute{p: p, name: route}
		rt.done = rt.tryDone
		if p.endpoints {
			rt.byAddr.make = func(addr string) *tryMetrics {
				return &tryMetrics{latency: p.latency.WithLabelValues(route, addr), addr: addr, byAddr: true}
			}
		} else {
			rt.tries = tryMetrics{latency: p.latency.WithLabelValues(route)}
		}
		return rt
	}
}

// Proxy returns the hooks of a proxy.Proxy:
//
//	SLUICE_upstream_requests_total{route,class}        counter
//	SLUICE_upstream_failures_total{route,failure}      counter  requests whose last try failed
//	SLUICE_upstream_tries_total{route,outcome}         counter
//	SLUICE_upstream_retries_total{route,reason}        counter
//	SLUICE_upstream_latency_seconds{route}             histogram, each try's time to its head
//
// route is the name set with proxy.WithRoute (by package proxy/route's Router), class the
// status class sent to the client, failure a sluice.Failure ("connect", "timeout", ...),
// outcome a try's status class or failure, and reason a proxy.RetryReason. With
// Options.EndpointLabels the tries and the latency also have an endpoint label.
func (m *Metrics) Proxy() proxy.Hooks {
	return proxy.Hooks{RequestDone: m.proxy.requestDone, TryStart: m.proxy.tryStart}
}

func (p *proxyMetrics) requestDone(_ *http.Request, e proxy.RequestEvent) {
	rt := p.routes.get(e.Route)
	ci := class(e.Status)
	rt.requests[ci].get(func() prometheus.Counter {
		return p.requests.WithLabelValues(rt.name, classes[ci])
	}).Inc()
	// Failure is the last try's: a request a retry answered counts no failure.
	if f := int(e.Failure); f > 0 && f < len(failures) {
		rt.failures[f].get(func() prometheus.Counter {
			return p.failures.WithLabelValues(rt.name, failures[f])
		}).Inc()
	}
}

func (p *proxyMetrics) tryStart(out *http.Request, _ proxy.TryStartEvent) func(proxy.TryEvent) {
	return p.routes.get(proxy.RouteFromContext(out.Context())).done
}

func (rt *proxyRoute) tryDone(e proxy.TryEvent) {
	t := &rt.tries
	if rt.p.endpoints {
		t = rt.byAddr.get(e.Endpoint.Addr)
	}
	t.counter(rt.p.tries, rt.name, outcome(e.Outcome)).Inc()
	t.latency.Observe(e.Outcome.Latency.Seconds())
	if r := int(e.Retry); r > 0 && r < len(retryReasons) {
		rt.retries[r].get(func() prometheus.Counter {
			return rt.p.retries.WithLabelValues(rt.name, retryReasons[r])
		}).Inc()
	}
}
