package metrics

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice/cache"
)

// cacheOutcomes and evictReasons are the last values of cache.Outcome and cache.EvictReason.
const (
	cacheOutcomes = int(cache.Unavailable)
	evictReasons  = int(cache.Expired)
)

// cacheMetrics are the metrics of caches (package cache), one set of children per cache name.
type cacheMetrics struct {
	lookups, refreshes, stores, errors *prometheus.CounterVec
	evictions, evicted                 *prometheus.CounterVec
	names                              table[cacheChildren]
}

type cacheChildren struct {
	lookups            [cacheOutcomes + 1]prometheus.Counter
	refreshes          prometheus.Counter
	stores, errors     prometheus.Counter
	evictions, evicted [evictReasons + 1]prometheus.Counter
}

func (c *cacheMetrics) init(m *Metrics) {
	c.lookups = m.counter("cache_lookups_total",
		"Requests a cache handled, by cache and outcome as RFC 9211's Cache-Status says it: hit, stale-hit, collapsed, revalidated, miss, pass, unavailable.",
		"cache", "outcome")
	c.refreshes = m.counter("cache_refreshes_total",
		"Background revalidations (stale-while-revalidate), by cache.", "cache")
	c.stores = m.counter("cache_stores_total", "Responses stored (or stored again after revalidation), by cache.", "cache")
	c.errors = m.counter("cache_errors_total",
		"Lookups and stores the Store failed, by cache; the response was served from the origin, or refused.", "cache")
	c.evictions = m.counter("cache_evictions_total",
		"Entries the memory store dropped, by cache and reason: capacity (least recently used) or expired.", "cache", "reason")
	c.evicted = m.counter("cache_evicted_bytes_total",
		"Bytes the memory store freed by dropping entries, by cache and reason.", "cache", "reason")
	c.names.make = func(name string) *cacheChildren {
		ch := &cacheChildren{
			refreshes: c.refreshes.WithLabelValues(name),
			stores:    c.stores.WithLabelValues(name),
			errors:    c.errors.WithLabelValues(name),
		}
		for o := cache.Hit; int(o) <= cacheOutcomes; o++ {
			ch.lookups[o] = c.lookups.WithLabelValues(name, o.String())
		}
		for r := cache.Capacity; int(r) <= evictReasons; r++ {
			ch.evictions[r] = c.evictions.WithLabelValues(name, r.String())
			ch.evicted[r] = c.evicted.WithLabelValues(name, r.String())
		}
		return ch
	}
}

// Cache returns the hooks of the cache named name (a label value; "" will do for one cache),
// for cache.Options.Hooks or, for a MemoryStore of one's own, its MemoryOptions.Hooks:
//
//	SLUICE_cache_lookups_total{cache,outcome}         counter, outcome as cache.Outcome.String
//	SLUICE_cache_refreshes_total{cache}               counter, background revalidations
//	SLUICE_cache_stores_total{cache}                  counter
//	SLUICE_cache_errors_total{cache}                  counter, Store failures
//	SLUICE_cache_evictions_total{cache,reason}        counter, reason "capacity" or "expired"
//	SLUICE_cache_evicted_bytes_total{cache,reason}    counter
//
// WatchCache adds the gauges of what it holds.
func (m *Metrics) Cache(name string) cache.Hooks {
	ch := m.cache.names.get(name)
	return cache.Hooks{Lookup: ch.lookup, Evict: ch.evict}
}

func (ch *cacheChildren) lookup(e cache.LookupEvent) {
	if e.Background {
		ch.refreshes.Inc()
	} else if int(e.Outcome) <= cacheOutcomes && e.Outcome > 0 {
		ch.lookups[e.Outcome].Inc()
	}
	if e.Stored {
		ch.stores.Inc()
	}
	if e.Err != nil && !errors.Is(e.Err, context.Canceled) && !errors.Is(e.Err, context.DeadlineExceeded) {
		ch.errors.Inc()
	}
}

func (ch *cacheChildren) evict(e cache.EvictEvent) {
	if r := int(e.Reason); r > 0 && r <= evictReasons {
		ch.evictions[r].Inc()
		ch.evicted[r].Add(float64(e.Bytes))
	}
}
