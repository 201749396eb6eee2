package cache

import (
	"github.com/sluiceproxy/sluice/internal/hookset"
)

// Hooks are the cache's events, for metrics, logs and dashboards that would otherwise parse
// the Cache-Status field. Every field is optional: a nil one costs a nil check. Hooks are
// called synchronously, on the goroutine of the request (or of the background revalidation)
// where the event happens and never under one of the cache's locks, so they must be safe for
// concurrent use and must not block. Combine several with [JoinHooks].
type Hooks struct {
	// Lookup is called once per request the cache handles, when the cache is done with it:
	// after a hit is written, after a forwarded response's body has been copied (and stored,
	// or not), after a 503 or 504 of its own. A background revalidation for
	// stale-while-revalidate reports its own event, with Background set.
	Lookup func(LookupEvent)
	// Evict is called when a [MemoryStore] drops an entry to stay within MaxBytes or because
	// it expired. Deletions (invalidations, purges) and replacements are not evictions. A
	// Store of another kind reports nothing here.
	Evict func(EvictEvent)
}

// JoinHooks returns Hooks that call each of hs's non-nil funcs in order.
func JoinHooks(hs ...Hooks) Hooks {
	return Hooks{
		Lookup: hookset.Join(hs, func(h Hooks) func(LookupEvent) { return h.Lookup }),
		Evict:  hookset.Join(hs, func(h Hooks) func(EvictEvent) { return h.Evict }),
	}
}

// Outcome is what the cache did with a request, in the terms of RFC 9211's Cache-Status.
type Outcome uint8

const (
	// Hit is a fresh stored response served without contacting the origin ("hit").
	Hit Outcome = iota + 1
	// StaleHit is a stale stored response served: allowed by the request's max-stale,
	// under stale-while-revalidate (Detail "stale-while-revalidate", a background
	// revalidation started), or under stale-if-error (Detail "stale-if-error", the origin
	// having answered FwdStatus).
	StaleHit
	// Collapsed is a response served from what an identical request, which this one
	// waited for, stored ("collapsed").
	Collapsed
	// Revalidated is a stored response that the origin confirmed with a 304 and that was
	// served; Stored tells whether the updated response was stored again.
	Revalidated
	// Miss is a request forwarded to the origin, for the reason in Fwd; Stored tells
	// whether its response was stored, and Detail why not.
	Miss
	// Pass is a request the cache did not look up: a method it does not serve (Fwd
	// "method") or an Upgrade (Fwd "bypass").
	Pass
	// Unavailable is a request the cache answered itself with no stored response: a 504
	// for only-if-cached, a 503 when the Store failed and Options.FailClosed is set or the
	// client went away while the Store was asked; or a request whose client went away while
	// it waited for an identical one. Err says which when it is not only-if-cached.
	Unavailable
)

var outcomeNames = [...]string{"", "hit", "stale-hit", "collapsed", "revalidated", "miss", "pass", "unavailable"}

// String returns the outcome's name in lower case, as a metric label would have it.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// LookupEvent describes what the cache did with one request.
type LookupEvent struct {
	// Outcome is what the cache did.
	Outcome Outcome
	// Key is the request's cache key ("1|https://example.com/path?query"), already held
	// by the cache; empty for Pass with Fwd "method". Do not use it as a metric label: it has
	// a value per URL.
	Key string
	// Fwd is RFC 9211's fwd parameter for requests that went to the origin: "uri-miss",
	// "vary-miss", "stale", "request" (the request forced it), "miss" (the lookup failed),
	// "method" or "bypass". It is empty for hits.
	Fwd string
	// FwdStatus is the status the origin answered, or 0 if it was not asked.
	FwdStatus int
	// Status is the status of the response the cache served from (the stored one on a hit,
	// the origin's on a miss); the client may have received a 304, 206 or 416 built from
	// it. It is 0 for Unavailable.
	Status int
	// Stored reports that the response was stored (or, for Revalidated, stored again).
	Stored bool
	// Detail is RFC 9211's detail: why a response was not stored ("no-store", "private",
	// "set-cookie", "too-large", "stale-on-arrival", "store-error", "range", "incomplete",
	// ...) or how a stale response was served ("stale-while-revalidate",
	// "stale-if-error"), or "only-if-cached".
	Detail string
	// Bytes is the body's size: the stored body's on a hit, the bytes the origin sent on a
	// forward.
	Bytes int64
	// Err is the Store's error when a lookup or a store failed (the response was then
	// served from the origin, or refused), or the request context's error when its client
	// went away.
	Err error
	// Background reports a revalidation the cache made on its own for
	// stale-while-revalidate, after its client was answered.
	Background bool
}

// EvictReason is why a [MemoryStore] dropped an entry.
type EvictReason uint8

const (
	// Capacity is an entry evicted, least recently used first, to stay within MaxBytes.
	Capacity EvictReason = iota + 1
	// Expired is an entry found past its time to live.
	Expired
)

// String returns "capacity" or "expired".
func (r EvictReason) String() string {
	switch r {
	case Capacity:
		return "capacity"
	case Expired:
		return "expired"
	}
	return "unknown"
}

// EvictEvent describes an entry a [MemoryStore] dropped.
type EvictEvent struct {
	// Reason is why it was dropped.
	Reason EvictReason
	// Key is the entry's key, which the store held until now; a hook that keeps it keeps
	// up to a URL's length (tens of kilobytes for some) alive.
	Key string
	// Bytes is the memory freed, as MaxBytes counts it.
	Bytes int64
}

// Stats is a snapshot of a [Cache]'s state, for gauges.
type Stats struct {
	// Entries is the number of entries the Store holds (variant indexes included), or -1
	// when the Store does not say (it does not implement [Sizer]).
	Entries int
	// Bytes is the size of what the Store holds, as it accounts it, or -1 when it does not
	// say.
	Bytes int64
	// Refreshing is the number of background revalidations running.
	Refreshing int
}

// Sizer is implemented by a [Store] that can tell cheaply what it holds, as [MemoryStore]
// does; [Cache.Stats] reports it. A store across a network, which would have to ask, need
// not implement it. Both methods must be safe for concurrent use.
type Sizer interface {
	// Len returns the number of entries held.
	Len() int
	// Bytes returns the size of the entries held.
	Bytes() int64
}

// Stats returns a snapshot of the cache's state. It is cheap and safe for concurrent use.
func (c *Cache) Stats() Stats {
	st := Stats{Entries: -1, Bytes: -1, Refreshing: len(c.refreshes)}
	if s, ok := c.store.(Sizer); ok {
		st.Entries, st.Bytes = s.Len(), s.Bytes()
	}
	return st
}
