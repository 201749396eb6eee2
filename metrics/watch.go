package metrics

import (
	"maps"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice/cache"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/ratelimit"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// watched is the collector of what is read at scrape time: the Stats of caches and limiters
// and the certificates of keyrings, each under the name it was watched with.
type watched struct {
	cacheEntries, cacheBytes, cacheRefreshing *prometheus.Desc
	limitKeys, concurrencyKeys, inFlight      *prometheus.Desc
	certificates, expiry                      *prometheus.Desc
	healthEndpoints, ejected                  *prometheus.Desc

	mu          sync.Mutex // protects the maps
	caches      map[string]*cache.Cache
	limiters    map[string]*ratelimit.Limiter
	concurrency map[string]*ratelimit.Concurrency
	keyrings    map[string]*certs.Keyring
	checkers    map[string]*healthcheck.Checker
}

func (w *watched) init(m *Metrics) {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(m.ns, "", name), help, labels, nil)
	}
	w.cacheEntries = desc("cache_entries", "Entries a cache's Store holds, variant indexes included, by cache.", "cache")
	w.cacheBytes = desc("cache_size_bytes", "Size of what a cache's Store holds, as it accounts it, by cache.", "cache")
	w.cacheRefreshing = desc("cache_refreshes_running", "Background revalidations running, by cache.", "cache")
	w.limitKeys = desc("ratelimit_keys", "Keys (clients, mostly) with a token bucket of their own, by limiter and limit.", "limiter", "limit")
	w.concurrencyKeys = desc("ratelimit_concurrency_keys", "Keys with requests in flight in a concurrency limiter, by limiter.", "limiter")
	w.inFlight = desc("ratelimit_concurrency_requests", "Requests in flight that a concurrency limiter counts, by limiter.", "limiter")
	w.certificates = desc("tls_certificates", "Certificates a keyring holds, by keyring.", "keyring")
	w.expiry = desc("tls_certificate_expiration_timestamp_seconds",
		"When the certificate a keyring serves for a server name expires, in seconds since 1970, by keyring and name (a DNS name of a certificate, \"*.example.com\" for a wildcard).",
		"keyring", "name")
	w.healthEndpoints = desc("health_endpoints",
		"Endpoints of a health checker's set, by pool and the state it reports: ready, unhealthy, terminating.", "pool", "state")
	w.ejected = desc("health_ejected_endpoints", "Endpoints outlier detection holds out now, by pool.", "pool")
	w.caches = map[string]*cache.Cache{}
	w.checkers = map[string]*healthcheck.Checker{}
	w.limiters = map[string]*ratelimit.Limiter{}
	w.concurrency = map[string]*ratelimit.Concurrency{}
	w.keyrings = map[string]*certs.Keyring{}
}

// watch sets or, with a nil v, deletes m[name] under w.mu.
func watch[V any](w *watched, m map[string]*V, name string, v *V) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v == nil {
		delete(m, name)
	} else {
		m[name] = v
	}
}

// WatchCache reads c.Stats at every scrape, under the label cache="name":
//
//	SLUICE_cache_entries{cache}             gauge (absent when the Store does not say)
//	SLUICE_cache_size_bytes{cache}          gauge (absent when the Store does not say)
//	SLUICE_cache_refreshes_running{cache}   gauge
//
// Watching a name again replaces the cache watched under it; a nil c stops watching it.
func (m *Metrics) WatchCache(name string, c *cache.Cache) {
	watch(&m.watched, m.watched.caches, name, c)
}

// WatchLimiter reads l.Stats at every scrape, under the label limiter="name":
//
//	SLUICE_ratelimit_keys{limiter,limit}   gauge, keys with a bucket of their own
//
// Watching a name again replaces the limiter watched under it; a nil l stops watching it.
func (m *Metrics) WatchLimiter(name string, l *ratelimit.Limiter) {
	watch(&m.watched, m.watched.limiters, name, l)
}

// WatchConcurrency reads c.Stats at every scrape, under the label limiter="name":
//
//	SLUICE_ratelimit_concurrency_keys{limiter}       gauge
//	SLUICE_ratelimit_concurrency_requests{limiter}   gauge, requests in flight
//
// Watching a name again replaces the limiter watched under it; a nil c stops watching it.
func (m *Metrics) WatchConcurrency(name string, c *ratelimit.Concurrency) {
	watch(&m.watched, m.watched.concurrency, name, c)
}

// WatchKeyring reads k.Certificates at every scrape, under the label keyring="name":
//
//	SLUICE_tls_certificates{keyring}                                  gauge
//	SLUICE_tls_certificate_expiration_timestamp_seconds{keyring,name} gauge, Unix seconds
//
// A server name claimed by several certificates reports the one that expires last, which is
// the one the keyring serves. Alert on expiry - time() < 7 * 86400, say.
// Watching a name again replaces the keyring watched under it; a nil k stops watching it.
func (m *Metrics) WatchKeyring(name string, k *certs.Keyring) {
	watch(&m.watched, m.watched.keyrings, name, k)
}

// WatchHealth reads c.Endpoints at every scrape, under the label pool="name":
//
//	SLUICE_health_endpoints{pool,state}     gauge, state "ready", "unhealthy", "terminating"
//	SLUICE_health_ejected_endpoints{pool}   gauge
//
// Watching a name again replaces the checker watched under it; a nil c stops watching it.
func (m *Metrics) WatchHealth(name string, c *healthcheck.Checker) {
	watch(&m.watched, m.watched.checkers, name, c)
}

// Describe implements prometheus.Collector.
func (w *watched) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{w.cacheEntries, w.cacheBytes, w.cacheRefreshing,
		w.limitKeys, w.concurrencyKeys, w.inFlight, w.certificates, w.expiry, w.healthEndpoints, w.ejected} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It copies the maps, then reads the Stats with no
// lock of its own held.
func (w *watched) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	caches, limiters := maps.Clone(w.caches), maps.Clone(w.limiters)
	concurrency, keyrings := maps.Clone(w.concurrency), maps.Clone(w.keyrings)
	checkers := maps.Clone(w.checkers)
	w.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for name, c := range caches {
		st := c.Stats()
		if st.Entries >= 0 {
			gauge(w.cacheEntries, float64(st.Entries), name)
		}
		if st.Bytes >= 0 {
			gauge(w.cacheBytes, float64(st.Bytes), name)
		}
		gauge(w.cacheRefreshing, float64(st.Refreshing), name)
	}
	for name, l := range limiters {
		for _, ls := range l.Stats().Limits {
			if ls.Keys >= 0 {
				gauge(w.limitKeys, float64(ls.Keys), name, ls.Name)
			}
		}
	}
	for name, c := range concurrency {
		st := c.Stats()
		gauge(w.concurrencyKeys, float64(st.Keys), name)
		gauge(w.inFlight, float64(st.InFlight), name)
	}
	for name, k := range keyrings {
		infos := k.Certificates()
		gauge(w.certificates, float64(len(infos)), name)
		latest := map[string]float64{}
		for _, info := range infos {
			t := float64(info.NotAfter.UnixMilli()) / 1e3
			for _, n := range info.Names {
				if old, ok := latest[n]; !ok || t > old {
					latest[n] = t
				}
			}
		}
		for n, t := range latest {
			gauge(w.expiry, t, name, n)
		}
	}
	for name, c := range checkers {
		var states [len(healthStates)]int
		ejected := 0
		for _, st := range c.Endpoints() {
			for i, s := range healthStates {
				if st.State == s {
					states[i]++
				}
			}
			if st.Ejected {
				ejected++
			}
		}
		for i, s := range healthStates {
			gauge(w.healthEndpoints, float64(states[i]), name, s.String())
		}
		gauge(w.ejected, float64(ejected), name)
	}
}
