package metrics_test

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/cache"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/metrics"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/ratelimit"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// hookCalls are one call of every per-request hook, with events as the packages make them, for
// the allocation test and the benchmarks.
func hookCalls(tb testing.TB, opts metrics.Options) map[string]func() {
	opts.Registerer = prometheus.NewRegistry()
	m, err := metrics.New(opts)
	require.NoError(tb, err)
	edge, px, c, rl, tl := m.Edge(), m.Proxy(), m.Cache("api"), m.RateLimit("edge"), m.TLS("front")
	hc, bl := m.Health("api"), m.Balancer("api")
	r := httptest.NewRequest(http.MethodGet, "/some/path", nil)
	out := r.WithContext(proxy.WithRoute(r.Context(), "api"))
	ep := sluice.Endpoint{Addr: "10.0.0.1:8080", Weight: 1}
	key := ratelimit.Key{Addr: netip.MustParseAddr("192.0.2.1")}
	return map[string]func(){
		"accesslog.RequestDone": func() {
			edge.RequestDone(r, accesslog.Event{Status: 200, Bytes: 1024, Duration: 3 * time.Millisecond, Route: "api"})
		},
		"proxy.RequestDone": func() {
			px.RequestDone(out, proxy.RequestEvent{Route: "api", Status: 502, Failure: sluice.ConnectFailure, Tries: 2,
				Duration: 3 * time.Millisecond, UpstreamLatency: 2 * time.Millisecond})
		},
		"proxy.TryStart+done": func() {
			done := px.TryStart(out, proxy.TryStartEvent{Endpoint: ep, Attempt: 1})
			done(proxy.TryEvent{Endpoint: ep, Attempt: 1, Retry: proxy.RetryConnect,
				Outcome: sluice.Outcome{Failure: sluice.ConnectFailure, Latency: 250 * time.Microsecond}})
		},
		"cache.Lookup": func() {
			c.Lookup(cache.LookupEvent{Outcome: cache.Miss, Fwd: "uri-miss", Status: 200, Stored: true, Bytes: 1024})
		},
		"cache.Evict": func() { c.Evict(cache.EvictEvent{Reason: cache.Capacity, Bytes: 4096}) },
		"ratelimit.Decision": func() {
			rl.Decision(ratelimit.DecisionEvent{Result: ratelimit.Limited, Limit: 0, Name: "per-client", Key: key})
		},
		"ratelimit.Admission": func() {
			rl.Admission(ratelimit.AdmissionEvent{Admitted: true, InFlight: 3, Key: key})
		},
		"certs.Handshake": func() {
			tl.Handshake(certs.HandshakeEvent{ServerName: "example.com", Version: tls.VersionTLS13, NegotiatedProtocol: "h2"})
		},
		"healthcheck.ProbeDone": func() {
			hc.ProbeDone(healthcheck.ProbeEvent{Endpoint: ep, Probe: "http", Result: healthcheck.ProbeTimeout, Latency: time.Second})
		},
		"balancer.Spill": func() {
			bl.Spill(balancer.SpillEvent{From: balancer.TierZone, Reason: balancer.SpillBusy, Endpoint: ep})
		},
		"discovery.Update": func() {
			m.Discovery().Update(discovery.UpdateEvent{Source: "dns", Name: "api.internal", Ready: 3, Changed: true, Synced: true})
		},
	}
}

// TestHooksAllocateNothing checks that, once a label combination was seen, a hook costs no
// allocation: the children resolved the first time are kept. Discovery updates, which come
// once in seconds, may allocate.
func TestHooksAllocateNothing(t *testing.T) {
	for _, endpointLabels := range []bool{false, true} {
		for name, call := range hookCalls(t, metrics.Options{EndpointLabels: endpointLabels}) {
			if name == "discovery.Update" {
				continue
			}
			call() // resolves the children
			assert.Zero(t, testing.AllocsPerRun(100, call), "%s with EndpointLabels=%v allocates", name, endpointLabels)
		}
	}
}

// TestHandshakeErrors checks the result label of failed handshakes.
func TestHandshakeErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registerer: reg})
	require.NoError(t, err)
	h := m.TLS("k")
	h.Handshake(certs.HandshakeEvent{Err: errors.Join(certs.ErrNoCertificate)})
	h.Handshake(certs.HandshakeEvent{Version: tls.VersionTLS12, Err: errors.New("bad client certificate")})
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "sluice_tls_handshakes_total" {
			continue
		}
		for _, m := range f.Metric {
			var k string
			for _, l := range m.Label {
				k += l.GetName() + "=" + l.GetValue() + " "
			}
			got[k] = m.Counter.GetValue()
		}
	}
	assert.Equal(t, map[string]float64{
		"keyring=k result=no_certificate version=none ": 1,
		"keyring=k result=failed version=1.2 ":          1,
	}, got)
}

// BenchmarkHooks measures each hook once its children are resolved, in parallel as requests
// call them.
//
//	go test -run '^$' -bench Hooks -benchmem ./metrics/
func BenchmarkHooks(b *testing.B) {
	for name, call := range hookCalls(b, metrics.Options{}) {
		b.Run(name, func(b *testing.B) {
			call()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
		})
	}
	// The baseline: the hand-written bridge this package replaces, resolving the child with
	// WithLabelValues on every request.
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total", Help: "h"}, []string{"route", "method", "class"})
	b.Run("baseline WithLabelValues", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				vec.WithLabelValues("api", http.MethodGet, "2xx").Inc()
			}
		})
	})
}
