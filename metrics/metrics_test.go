package metrics_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/cache"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/metrics"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/route"
	"github.com/sluiceproxy/sluice/ratelimit"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// rig is a whole proxy wired to one Metrics: an edge log around a router over a cache, a
// limiter and two proxies, served over TLS from a keyring, with endpoints from a Static source.
type rig struct {
	reg     *prometheus.Registry
	m       *metrics.Metrics
	client  *http.Client
	front   string // https URL of the proxy
	scrape  string // http URL of the metrics handler
	cert    *testcert.Cert
	backend string // address of the live upstream
}

// deadAddr returns a loopback address nothing listens on, so that connecting to it is refused.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func newRig(t *testing.T, opts metrics.Options) *rig {
	t.Helper()
	r := &rig{reg: prometheus.NewRegistry()}
	opts.Registerer = r.reg
	m, err := metrics.New(opts)
	require.NoError(t, err)
	r.m = m

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/c/") {
			w.Header().Set("Cache-Control", "max-age=60")
			io.WriteString(w, strings.Repeat("x", 2000))
			return
		}
		io.WriteString(w, "hello")
	}))
	t.Cleanup(upstream.Close)
	r.backend = upstream.Listener.Addr().String()
	dead := deadAddr(t)

	// The api pool: the live upstream and a dead one, so that round robin retries.
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	synced := make(chan struct{})
	src := discovery.Static{
		Endpoints: []sluice.Endpoint{{Addr: r.backend, Weight: 1}, {Addr: dead, Weight: 1}},
		Hooks:     m.Discovery(),
	}
	done := make(chan error, 1)
	go func() {
		done <- src.Watch(ctx, func(eps []sluice.Endpoint) { bal.Update(eps); close(synced) })
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-synced
	api := &proxy.Proxy{Picker: bal, Hooks: m.Proxy()}

	// The down pool: only the dead endpoint.
	downBal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	downBal.Update([]sluice.Endpoint{{Addr: dead, Weight: 1}})
	down := &proxy.Proxy{Picker: downBal, Hooks: m.Proxy(), Retry: proxy.Retry{MaxTries: 1}}

	c, err := cache.New(cache.Options{MaxBytes: 3000, Hooks: m.Cache("api")})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	m.WatchCache("api", c)

	limiter, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Name: "per-client", Rate: 0.001, Burst: 3}},
		Hooks:  m.RateLimit("edge"),
	})
	require.NoError(t, err)
	m.WatchLimiter("edge", limiter)

	table, err := route.New([]route.Route{
		{Name: "api", Backends: []route.Backend{{Handler: c.Handler(api)}}},
		{Name: "limited", Path: "/limited", Backends: []route.Backend{{Handler: limiter.Handler(api)}}},
		{Name: "down", Path: "/down", Backends: []route.Backend{{Handler: down}}},
	}, route.Options{})
	require.NoError(t, err)
	edge, err := accesslog.New(accesslog.Options{Hooks: m.Edge()})
	require.NoError(t, err)

	ca := testcert.NewCA(t)
	r.cert = ca.Server(t, "example.com")
	keyring := &certs.Keyring{Hooks: m.TLS("front")}
	require.NoError(t, keyring.Set("example", &r.cert.TLS))
	m.WatchKeyring("front", keyring)
	tlsConfig, err := certs.ServerConfig(keyring, certs.ServerOptions{})
	require.NoError(t, err)

	front := httptest.NewUnstartedServer(edge.Handler(route.NewRouter(table, route.RouterOptions{})))
	front.TLS = tlsConfig
	front.StartTLS()
	t.Cleanup(front.Close)
	r.front = front.URL
	r.client = &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "example.com"},
	}}
	t.Cleanup(r.client.CloseIdleConnections)

	scrape := httptest.NewServer(m.Handler())
	t.Cleanup(scrape.Close)
	r.scrape = scrape.URL
	return r
}

// get sends a GET for path through the proxy and returns the status.
func (r *rig) get(t *testing.T, path string) int {
	t.Helper()
	res, err := r.client.Get(r.front + path)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, res.Body)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	return res.StatusCode
}

// families scrapes the metrics handler in the text format and parses what it serves.
func (r *rig) families(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.scrape, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/plain")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, res.Header.Get("Content-Type"), "text/plain")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	require.NoError(t, err, "the exposition must parse")
	return fams
}

// value returns the value of the series of fams[name] with exactly labels, and whether there
// is one.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		for _, l := range m.Label {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// series counts the series of every family.
func series(fams map[string]*dto.MetricFamily) int {
	n := 0
	for _, f := range fams {
		n += len(f.Metric)
	}
	return n
}

func TestRealComponents(t *testing.T) {
	r := newRig(t, metrics.Options{})

	// The api route: /c/ is cacheable, 2000 bytes a response in a cache of 3000 bytes.
	assert.Equal(t, 200, r.get(t, "/c/a"), "a miss")
	assert.Equal(t, 200, r.get(t, "/c/a"), "a hit")
	assert.Equal(t, 200, r.get(t, "/c/b"), "a miss that evicts /c/a")
	for range 3 {
		assert.Equal(t, 200, r.get(t, "/limited"), "within the burst")
	}
	assert.Equal(t, 429, r.get(t, "/limited"), "past the burst")
	assert.Equal(t, 502, r.get(t, "/down"), "the down pool refuses")

	fams := r.families(t)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		// The edge sees every response, the 429 and the cache hit included.
		{"sluice_requests_total", map[string]string{"route": "api", "method": "GET", "class": "2xx"}, 3},
		{"sluice_requests_total", map[string]string{"route": "limited", "method": "GET", "class": "2xx"}, 3},
		{"sluice_requests_total", map[string]string{"route": "limited", "method": "GET", "class": "4xx"}, 1},
		{"sluice_requests_total", map[string]string{"route": "down", "method": "GET", "class": "5xx"}, 1},
		{"sluice_request_duration_seconds", map[string]string{"route": "api"}, 3},
		{"sluice_response_bytes_total", map[string]string{"route": "api"}, 6000},
		// The proxies see what the cache and the limiter passed on: 2 misses and 3 admitted.
		{"sluice_upstream_requests_total", map[string]string{"route": "api", "class": "2xx"}, 2},
		{"sluice_upstream_requests_total", map[string]string{"route": "limited", "class": "2xx"}, 3},
		{"sluice_upstream_requests_total", map[string]string{"route": "down", "class": "5xx"}, 1},
		{"sluice_upstream_failures_total", map[string]string{"route": "down", "failure": "connect"}, 1},
		{"sluice_upstream_tries_total", map[string]string{"route": "down", "outcome": "connect"}, 1},
		{"sluice_upstream_latency_seconds", map[string]string{"route": "down"}, 1},
		// The cache, by RFC 9211 outcome, and its memory store's eviction.
		{"sluice_cache_lookups_total", map[string]string{"cache": "api", "outcome": "miss"}, 2},
		{"sluice_cache_lookups_total", map[string]string{"cache": "api", "outcome": "hit"}, 1},
		{"sluice_cache_lookups_total", map[string]string{"cache": "api", "outcome": "stale-hit"}, 0},
		{"sluice_cache_stores_total", map[string]string{"cache": "api"}, 2},
		{"sluice_cache_evictions_total", map[string]string{"cache": "api", "reason": "capacity"}, 1},
		{"sluice_cache_entries", map[string]string{"cache": "api"}, 1},
		// The limiter: three allowed by every limit, one limited by per-client.
		{"sluice_ratelimit_decisions_total", map[string]string{"limiter": "edge", "limit": "", "result": "allowed"}, 3},
		{"sluice_ratelimit_decisions_total", map[string]string{"limiter": "edge", "limit": "per-client", "result": "limited"}, 1},
		{"sluice_ratelimit_keys", map[string]string{"limiter": "edge", "limit": "per-client"}, 1},
		// TLS: the client's connections, and the certificate's expiry.
		{"sluice_tls_certificates", map[string]string{"keyring": "front"}, 1},
		{"sluice_tls_certificate_loads_total", map[string]string{"keyring": "front", "result": "stored"}, 1},
		{"sluice_tls_certificate_expiration_timestamp_seconds", map[string]string{"keyring": "front", "name": "example.com"},
			float64(r.cert.Leaf.NotAfter.Unix())},
		// Discovery: the Static source's one set.
		{"sluice_discovery_updates_total", map[string]string{"source": "static", "name": "", "result": "changed"}, 1},
		{"sluice_discovery_endpoints", map[string]string{"source": "static", "name": "", "state": "ready"}, 2},
		{"sluice_discovery_synced", map[string]string{"source": "static", "name": ""}, 1},
	} {
		got, ok := value(fams, c.name, c.labels)
		if assert.True(t, ok, "%s%v should be exposed", c.name, c.labels) {
			assert.Equal(t, c.want, got, "%s%v", c.name, c.labels)
		}
	}

	// Round robin over a live and a dead endpoint: of the five tries that reached the api
	// pool's live endpoint, some followed a refused connection, each a retry for "connect".
	ok2xx, _ := value(fams, "sluice_upstream_tries_total", map[string]string{"route": "api", "outcome": "2xx"})
	okLimited, _ := value(fams, "sluice_upstream_tries_total", map[string]string{"route": "limited", "outcome": "2xx"})
	assert.Equal(t, 5.0, ok2xx+okLimited, "every request that reached the api pool was answered")
	refusedAPI, _ := value(fams, "sluice_upstream_tries_total", map[string]string{"route": "api", "outcome": "connect"})
	refusedLimited, _ := value(fams, "sluice_upstream_tries_total", map[string]string{"route": "limited", "outcome": "connect"})
	retriedAPI, _ := value(fams, "sluice_upstream_retries_total", map[string]string{"route": "api", "reason": "connect"})
	retriedLimited, _ := value(fams, "sluice_upstream_retries_total", map[string]string{"route": "limited", "reason": "connect"})
	assert.Positive(t, refusedAPI+refusedLimited, "round robin sent some tries to the dead endpoint")
	assert.Equal(t, refusedAPI+refusedLimited, retriedAPI+retriedLimited, "each refused try was retried")

	handshakes := 0.0
	for _, m := range fams["sluice_tls_handshakes_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		assert.Equal(t, map[string]string{"keyring": "front", "version": "1.3", "result": "ok"}, labels)
		handshakes += m.Counter.GetValue()
	}
	assert.GreaterOrEqual(t, handshakes, 1.0, "the client's handshake was counted")

	for name, typ := range map[string]dto.MetricType{
		"sluice_requests_total":           dto.MetricType_COUNTER,
		"sluice_request_duration_seconds": dto.MetricType_HISTOGRAM,
		"sluice_upstream_latency_seconds": dto.MetricType_HISTOGRAM,
		"sluice_cache_size_bytes":         dto.MetricType_GAUGE,
	} {
		if assert.Contains(t, fams, name) {
			assert.Equal(t, typ, fams[name].GetType(), "type of %s", name)
		}
	}
	bytes, _ := value(fams, "sluice_cache_size_bytes", map[string]string{"cache": "api"})
	assert.Greater(t, bytes, 2000.0, "the cache holds one 2000-byte body")
}

// TestGatherAndCompare holds a few families to their exact exposition with client_golang's
// testutil, HELP and TYPE lines included, so that a renamed metric or label shows here.
func TestGatherAndCompare(t *testing.T) {
	r := newRig(t, metrics.Options{})
	assert.Equal(t, 200, r.get(t, "/limited"))
	assert.Equal(t, 502, r.get(t, "/down"))

	err := testutil.GatherAndCompare(r.reg, strings.NewReader(`
# HELP sluice_upstream_failures_total Requests whose last try got no response, by route and failure.
# TYPE sluice_upstream_failures_total counter
sluice_upstream_failures_total{failure="connect",route="down"} 1
# HELP sluice_ratelimit_decisions_total Requests a rate limiter decided on, by limiter, limit and result: allowed, delayed, limited, failed-closed, cancelled. limit names the Limit that refused or delayed the request, or is empty when every Limit admitted it at once.
# TYPE sluice_ratelimit_decisions_total counter
sluice_ratelimit_decisions_total{limit="",limiter="edge",result="allowed"} 1
sluice_ratelimit_decisions_total{limit="",limiter="edge",result="cancelled"} 0
sluice_ratelimit_decisions_total{limit="",limiter="edge",result="delayed"} 0
sluice_ratelimit_decisions_total{limit="",limiter="edge",result="failed-closed"} 0
sluice_ratelimit_decisions_total{limit="",limiter="edge",result="limited"} 0
# HELP sluice_discovery_endpoints Endpoints of the set a source has in force, by source kind, name and state: ready, terminating, unhealthy.
# TYPE sluice_discovery_endpoints gauge
sluice_discovery_endpoints{name="",source="static",state="ready"} 2
sluice_discovery_endpoints{name="",source="static",state="terminating"} 0
sluice_discovery_endpoints{name="",source="static",state="unhealthy"} 0
`), "sluice_upstream_failures_total", "sluice_ratelimit_decisions_total", "sluice_discovery_endpoints")
	assert.NoError(t, err)

	n, err := testutil.GatherAndCount(r.reg, "sluice_requests_total")
	require.NoError(t, err)
	assert.Equal(t, 2, n, "one series for the 200 of route limited, one for the 502 of route down")
}

// TestBoundedCardinality sends a thousand distinct paths, methods no RFC defines and odd
// statuses: none makes a series the first requests did not.
func TestBoundedCardinality(t *testing.T) {
	r := newRig(t, metrics.Options{})
	for i := range 10 {
		require.Equal(t, 200, r.get(t, fmt.Sprintf("/warm/%d", i)))
	}
	req, err := http.NewRequest("BREW", r.front+"/warm", nil)
	require.NoError(t, err)
	res, err := r.client.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	before := series(r.families(t))

	for i := range 1000 {
		require.Equal(t, 200, r.get(t, fmt.Sprintf("/path/%d?q=%d", i, i)))
	}
	for _, method := range []string{"PROPFIND", "X-ANYTHING", "brew"} {
		req, err := http.NewRequest(method, r.front+"/another", nil)
		require.NoError(t, err)
		res, err := r.client.Do(req)
		require.NoError(t, err)
		res.Body.Close()
	}
	fams := r.families(t)
	assert.Equal(t, before, series(fams), "a thousand paths and three new methods made no new series")
	n, _ := value(fams, "sluice_requests_total", map[string]string{"route": "api", "method": "GET", "class": "2xx"})
	assert.Equal(t, 1010.0, n, "yet every request was counted")
	other, _ := value(fams, "sluice_requests_total", map[string]string{"route": "api", "method": "other", "class": "2xx"})
	assert.Equal(t, 4.0, other, "unknown methods count as other")
}

// TestEndpointLabels checks that the endpoint label appears only when asked for.
func TestEndpointLabels(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint("EndpointLabels=", on), func(t *testing.T) {
			r := newRig(t, metrics.Options{EndpointLabels: on})
			for range 3 {
				require.Equal(t, 200, r.get(t, "/limited"))
			}
			fams := r.families(t)
			labels := map[string]string{"route": "limited", "outcome": "2xx"}
			if on {
				labels["endpoint"] = r.backend
			}
			n, ok := value(fams, "sluice_upstream_tries_total", labels)
			assert.True(t, ok, "tries labelled %v", labels)
			assert.Equal(t, 3.0, n, "three requests within the burst reached the live endpoint")
			delete(labels, "outcome")
			_, ok = value(fams, "sluice_upstream_latency_seconds", labels)
			assert.True(t, ok, "latency labelled %v", labels)
		})
	}
}

// TestNativeHistograms scrapes in protobuf, as Prometheus with native histograms does, and
// finds both the exponential buckets and the classic ones in the same histogram.
func TestNativeHistograms(t *testing.T) {
	for _, c := range []struct {
		factor float64
		native bool
	}{{0, true}, {-1, false}} {
		t.Run(fmt.Sprint("factor=", c.factor), func(t *testing.T) {
			r := newRig(t, metrics.Options{NativeHistogramBucketFactor: c.factor, Buckets: []float64{0.001, 0.1, 10}})
			require.Equal(t, 200, r.get(t, "/limited"))

			req, err := http.NewRequest(http.MethodGet, r.scrape, nil)
			require.NoError(t, err)
			req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			dec := expfmt.NewDecoder(res.Body, expfmt.ResponseFormat(res.Header))
			var h *dto.Histogram
			for {
				var f dto.MetricFamily
				if err := dec.Decode(&f); err != nil {
					require.ErrorIs(t, err, io.EOF)
					break
				}
				if f.GetName() == "sluice_request_duration_seconds" {
					h = f.Metric[0].Histogram
				}
			}
			require.NotNil(t, h, "the histogram was served")
			assert.Len(t, h.Bucket, 3, "the classic buckets asked for")
			assert.EqualValues(t, 1, h.GetSampleCount())
			if c.native {
				assert.Equal(t, int32(3), h.GetSchema(), "factor 1.1 is schema 3 (2^(1/8) = 1.09)")
				assert.NotEmpty(t, append(h.PositiveSpan, h.NegativeSpan...), "the one observation has a native bucket")
			} else {
				assert.Empty(t, h.PositiveSpan, "no native buckets")
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, c := range []struct {
		opts metrics.Options
		want string
	}{
		{metrics.Options{Buckets: []float64{1, 0.5}}, "metrics: Buckets must increase, got 0.5 after 1"},
		{metrics.Options{NativeHistogramBucketFactor: 1}, "metrics: NativeHistogramBucketFactor must be > 1 (or ≤ 0 for none), got 1"},
		{metrics.Options{Namespace: "no-dashes"}, `metrics: Namespace must be letters, digits and underscores, not starting with a digit, got "no-dashes"`},
	} {
		_, err := metrics.New(c.opts)
		if assert.Error(t, err, "%+v", c.opts) {
			assert.Contains(t, err.Error(), c.want)
		}
	}

	reg := prometheus.NewRegistry()
	_, err := metrics.New(metrics.Options{Registerer: reg})
	require.NoError(t, err)
	_, err = metrics.New(metrics.Options{Registerer: reg})
	assert.ErrorContains(t, err, "metrics: registering in Registerer", "the same names twice in one registry")
	_, err = metrics.New(metrics.Options{Registerer: reg, Namespace: "edge2"})
	assert.NoError(t, err, "another namespace registers beside")
}

// TestHandlerWithoutGatherer checks Handler's answer for a Registerer it cannot read.
func TestHandlerWithoutGatherer(t *testing.T) {
	m, err := metrics.New(metrics.Options{Registerer: prometheus.WrapRegistererWithPrefix("x_", prometheus.NewRegistry())})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	assert.Equal(t, http.StatusNotFound, rec.Code)
}

// TestWatchReplaces checks that watching a name again replaces what it watched, and nil
// removes it, so that a program rebuilding its caches keeps one series per name.
func TestWatchReplaces(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registerer: reg})
	require.NoError(t, err)
	a, err := cache.New(cache.Options{})
	require.NoError(t, err)
	defer a.Close()
	b, err := cache.New(cache.Options{})
	require.NoError(t, err)
	defer b.Close()
	m.WatchCache("c", a)
	m.WatchCache("c", b)
	n, err := testutil.GatherAndCount(reg, "sluice_cache_entries")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	m.WatchCache("c", nil)
	n, err = testutil.GatherAndCount(reg, "sluice_cache_entries")
	require.NoError(t, err)
	assert.Equal(t, 0, n)
}

// TestKeyringExpiryPerName checks that a name two certificates claim reports the one that
// expires last, the one the keyring serves, and that a failed handshake counts as such.
func TestKeyringExpiryPerName(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registerer: reg})
	require.NoError(t, err)
	ca := testcert.NewCA(t)
	now := time.Now().Truncate(time.Second)
	early := ca.Issue(t, testcert.Template{Names: []string{"a.example", "b.example"}, NotAfter: now.Add(24 * time.Hour)})
	late := ca.Issue(t, testcert.Template{Names: []string{"a.example"}, NotAfter: now.Add(48 * time.Hour)})
	k := &certs.Keyring{Hooks: m.TLS("k")}
	require.NoError(t, k.Set("early", &early.TLS))
	require.NoError(t, k.Set("late", &late.TLS))
	m.WatchKeyring("k", k)
	err = testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP sluice_tls_certificate_expiration_timestamp_seconds When the certificate a keyring serves for a server name expires, in seconds since 1970, by keyring and name (a DNS name of a certificate, "*.example.com" for a wildcard).
# TYPE sluice_tls_certificate_expiration_timestamp_seconds gauge
sluice_tls_certificate_expiration_timestamp_seconds{keyring="k",name="a.example"} %d
sluice_tls_certificate_expiration_timestamp_seconds{keyring="k",name="b.example"} %d
`, now.Add(48*time.Hour).Unix(), now.Add(24*time.Hour).Unix())), "sluice_tls_certificate_expiration_timestamp_seconds")
	assert.NoError(t, err)

	// An empty keyring has no default: the handshake fails for want of a certificate.
	empty := &certs.Keyring{Hooks: m.TLS("empty")}
	cfg, err := certs.ServerConfig(empty, certs.ServerOptions{})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = cfg
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshake
	srv.StartTLS()
	defer srv.Close()
	_, err = tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{ServerName: "nobody.example", InsecureSkipVerify: true})
	require.Error(t, err, "the handshake fails")
	srv.Close() // the server has reported the handshake once its connection is closed
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP sluice_tls_handshakes_total Server TLS handshakes, by keyring, version agreed ("none" when the handshake failed first) and result: ok, no_certificate, or failed (a client certificate that did not verify).
# TYPE sluice_tls_handshakes_total counter
sluice_tls_handshakes_total{keyring="empty",result="no_certificate",version="none"} 1
`), "sluice_tls_handshakes_total")
	assert.NoError(t, err)
}

// TestHealthAndBalancer drives a real Checker probing a live and a dead endpoint over TCP, and
// a real Balancer fed by it, which enters panic mode when the dead one is marked unhealthy.
func TestHealthAndBalancer(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registerer: reg})
	require.NoError(t, err)
	live := httptest.NewServer(http.NotFoundHandler())
	defer live.Close()
	dead := deadAddr(t)

	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{PanicThreshold: 0.6, Hooks: m.Balancer("api")})
	require.NoError(t, err)
	checker, err := healthcheck.New(healthcheck.Options{
		Probe: &healthcheck.TCP{}, Interval: 5 * time.Millisecond, UnhealthyThreshold: 1,
		Hooks: m.Health("api"),
	})
	require.NoError(t, err)
	m.WatchHealth("api", checker)
	checker.Update([]sluice.Endpoint{{Addr: live.Listener.Addr().String()}, {Addr: dead}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- checker.Run(ctx, bal.Update) }()
	defer func() { cancel(); <-done }()

	get := func(name string, labels map[string]string) float64 {
		fams, err := reg.Gather()
		require.NoError(t, err)
		byName := map[string]*dto.MetricFamily{}
		for _, f := range fams {
			byName[f.GetName()] = f
		}
		v, _ := value(byName, name, labels)
		return v
	}
	require.Eventually(t, func() bool {
		return get("sluice_health_changes_total", map[string]string{"pool": "api", "reason": "probe_failed"}) == 1 &&
			get("sluice_balancer_panic", map[string]string{"pool": "api"}) == 1
	}, 10*time.Second, 5*time.Millisecond, "the dead endpoint was found unhealthy and the balancer panicked")

	assert.Positive(t, get("sluice_health_probes_total", map[string]string{"pool": "api", "probe": "tcp", "result": "ok"}))
	assert.Positive(t, get("sluice_health_probes_total", map[string]string{"pool": "api", "probe": "tcp", "result": "unreachable"}))
	assert.Positive(t, get("sluice_health_probe_duration_seconds", map[string]string{"pool": "api"}))
	assert.Equal(t, 1.0, get("sluice_balancer_panics_total", map[string]string{"pool": "api"}))
	assert.Equal(t, 2.0, get("sluice_balancer_pickable_endpoints", map[string]string{"pool": "api"}), "in panic mode both are pickable")
	assert.Equal(t, 1.0, get("sluice_health_endpoints", map[string]string{"pool": "api", "state": "ready"}))
	assert.Equal(t, 1.0, get("sluice_health_endpoints", map[string]string{"pool": "api", "state": "unhealthy"}))
	assert.Equal(t, 0.0, get("sluice_health_ejected_endpoints", map[string]string{"pool": "api"}))
}
