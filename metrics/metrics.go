package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configures New. The zero value registers everything in a new registry, under the
// namespace "sluice", with no endpoint labels and latency histograms both classic and native.
type Options struct {
	// Registerer receives the metrics. Nil means a new registry, which Metrics.Handler serves.
	// prometheus.DefaultRegisterer puts them beside the Go runtime's and the process's.
	Registerer prometheus.Registerer

	// Namespace is the first part of every metric name: letters, digits and underscores, not
	// starting with a digit. Empty means "sluice".
	Namespace string

	// EndpointLabels adds an endpoint label (the endpoint's address) to the proxy's try
	// counters and latency histogram. It is off by default because it makes a series per
	// endpoint, and in Kubernetes every new pod is a new address: the series of pods long
	// gone stay until the process restarts. Turn it on for pools of fixed addresses, or
	// when a scraper drops stale series anyway.
	EndpointLabels bool

	// Buckets are the upper bounds, in seconds, of the classic buckets of the latency
	// histograms, for scrapers that cannot read native histograms. Nil means
	// prometheus.DefBuckets (5ms to 10s).
	Buckets []float64

	// NativeHistogramBucketFactor is the growth factor between the buckets of the native
	// histograms, which a scraper asking for the protobuf format reads (Prometheus with
	// native histograms enabled): 1.1 keeps every quantile within 5%. Zero means 1.1; a
	// negative value turns native histograms off. Classic buckets are always exposed too.
	NativeHistogramBucketFactor float64

	// NativeHistogramMaxBuckets bounds the buckets of one native histogram; past it the
	// histogram halves its resolution. Zero means 100.
	NativeHistogramMaxBuckets uint32
}

// Metrics turns the events of sluice's packages into Prometheus metrics. Each method named
// for a package (Edge, Proxy, Cache, RateLimit, TLS, Discovery) returns that package's Hooks
// to set in its options, and the Watch methods add what is read at scrape time from a
// component's Stats. Make it with New; it is safe for concurrent use.
//
// Every label has a bounded set of values: route names, status classes, method names from a
// fixed list, outcomes, reasons, and names given in configuration. Paths, hosts, clients and
// cache keys never become labels, so that no request can make a series.
type Metrics struct {
	ns        string
	endpoints bool
	gatherer  prometheus.Gatherer
	histogram func(name, help string, labels ...string) *prometheus.HistogramVec
	counter   func(name, help string, labels ...string) *prometheus.CounterVec
	gauge     func(name, help string, labels ...string) *prometheus.GaugeVec
	collected []prometheus.Collector

	edge      edgeMetrics
	proxy     proxyMetrics
	cache     cacheMetrics
	ratelimit ratelimitMetrics
	tls       tlsMetrics
	discovery discoveryMetrics
	health    healthMetrics
	watched   watched
}

// New returns Metrics registered with opts.Registerer, or an error naming the option that is
// wrong or saying which metric could not be registered (the same names twice in one registry:
// give the second a Namespace of its own).
func New(opts Options) (*Metrics, error) {
	m := &Metrics{ns: opts.Namespace, endpoints: opts.EndpointLabels}
	if m.ns == "" {
		m.ns = "sluice"
	}
	if !validName(m.ns) {
		return nil, fmt.Errorf("metrics: Namespace must be letters, digits and underscores, not starting with a digit, got %q", m.ns)
	}
	reg := opts.Registerer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg = r
	}
	m.gatherer, _ = reg.(prometheus.Gatherer)
	buckets := opts.Buckets
	if buckets == nil {
		buckets = prometheus.DefBuckets
	}
	for i, b := range buckets {
		if i > 0 && b <= buckets[i-1] {
			return nil, fmt.Errorf("metrics: Buckets must increase, got %v after %v", b, buckets[i-1])
		}
	}
	factor := opts.NativeHistogramBucketFactor
	switch {
	case factor == 0:
		factor = 1.1
	case factor < 0:
		factor = 0 // client_golang's "no native histogram"
	case factor <= 1:
		return nil, fmt.Errorf("metrics: NativeHistogramBucketFactor must be > 1 (or ≤ 0 for none), got %v", factor)
	}
	maxBuckets := opts.NativeHistogramMaxBuckets
	if maxBuckets == 0 {
		maxBuckets = 100
	}

	m.counter = func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: m.ns, Name: name, Help: help}, labels)
		m.collected = append(m.collected, v)
		return v
	}
	m.gauge = func(name, help string, labels ...string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: m.ns, Name: name, Help: help}, labels)
		m.collected = append(m.collected, v)
		return v
	}
	m.histogram = func(name, help string, labels ...string) *prometheus.HistogramVec {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: m.ns, Name: name, Help: help,
			Buckets:                         buckets,
			NativeHistogramBucketFactor:     factor,
			NativeHistogramMaxBucketNumber:  maxBuckets,
			NativeHistogramMinResetDuration: time.Hour,
		}, labels)
		m.collected = append(m.collected, v)
		return v
	}
	m.edge.init(m)
	m.proxy.init(m)
	m.cache.init(m)
	m.ratelimit.init(m)
	m.tls.init(m)
	m.discovery.init(m)
	m.health.init(m)
	m.watched.init(m)
	m.collected = append(m.collected, &m.watched)

	var errs []error
	for _, c := range m.collected {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("metrics: registering in Registerer: %w", err)
	}
	return m, nil
}

// validName reports whether ns is a name every scraper accepts: client_golang would take any
// UTF-8, which older scrapers and query languages cannot.
func validName(ns string) bool {
	for i, c := range ns {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Handler serves the metrics in the exposition format the scraper asks for: the text format,
// OpenMetrics, or protobuf, which alone carries native histograms. It serves the registry New
// made, or Options.Registerer when that is also a prometheus.Gatherer (a *prometheus.Registry
// is, so DefaultRegisterer's Go and process metrics come along); with any other Registerer it
// answers 404, and the registry's owner serves it.
func (m *Metrics) Handler() http.Handler {
	if m.gatherer == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// slot holds a child metric resolved from its vector on first use, so that later uses cost an
// atomic load: WithLabelValues hashes the labels, takes a lock and allocates on every call.
type slot[T any] struct{ p atomic.Pointer[T] }

// get returns the child, calling resolve the first time. Two goroutines may both resolve it:
// the vector returns the same child to both.
func (s *slot[T]) get(resolve func() T) T {
	if p := s.p.Load(); p != nil {
		return *p
	}
	v := resolve()
	s.p.Store(&v)
	return v
}

// table maps a bounded set of names (routes, limits, endpoints) to the children resolved for
// each. Lookups read an immutable map through an atomic pointer, taking no lock and
// allocating nothing; a name seen for the first time copies the map under mu.
type table[V any] struct {
	mu   sync.Mutex // serializes additions
	m    atomic.Pointer[map[string]*V]
	make func(name string) *V
}

func (t *table[V]) get(name string) *V {
	if m := t.m.Load(); m != nil {
		if v, ok := (*m)[name]; ok {
			return v
		}
	}
	return t.add(name)
}

func (t *table[V]) add(name string) *V {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.m.Load()
	if old != nil {
		if v, ok := (*old)[name]; ok {
			return v
		}
	}
	m := make(map[string]*V, 1+lenOf(old))
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	name = strings.Clone(name) // it may share memory with a request
	v := t.make(name)
	m[name] = v
	t.m.Store(&m)
	return v
}

func lenOf[V any](m *map[string]*V) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// classes are the values of the class label: a status's hundreds, "other" for a status
// outside 100–599.
var classes = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// class returns the index in classes of status.
func class(status int) int {
	if c := status / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}
