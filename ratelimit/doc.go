// Package ratelimit is HTTP middleware that gives each client a fair share of a service and
// keeps abusive clients away from the backends.
//
// # Token buckets
//
// A [Limit] is a token bucket (see [golang.org/x/time/rate]): a bucket holds at most Burst
// tokens, refills at Rate tokens per second, and every request takes one token. A client that
// has been idle may send Burst requests at once; after that it is held to Rate. Each Limit
// keeps one bucket per key, and the key says who is counted: the client IP (through
// [sluice.ClientIP], so X-Forwarded-For is believed only from trusted proxies, with IPv6
// addresses grouped by a prefix such as /64 because one subscriber usually holds a whole
// /64), a header such as an API key, a cookie, the request path, or any function of the
// request. Several Limits can apply to one request (per client and per route, say); the
// request is admitted only if every one of them has a token, and a request that one limit
// refuses gives back the tokens it took from the others.
//
// # Bounded memory
//
// Buckets live in a fixed number of LRU lists ([github.com/hashicorp/golang-lru/v2/simplelru],
// sharded by key hash so that parallel requests rarely contend on one lock) with a cap on
// their total size. A bucket is forgotten only when it is full again: a full bucket and no
// bucket at all behave the same, so forgetting it cannot give a client more than its limit.
// When the cap is reached and the least recently used buckets are still draining (an attacker
// rotating source addresses looks like this), a new key is not given a fresh bucket; it is
// counted in its shard's overflow bucket, which has the limit's own rate and burst and is
// shared by every key that did not fit. Memory never grows past the cap; a key with a bucket
// never gets more than its Limit; and the most any key can get beyond its Limit is one Burst,
// taken from the overflow bucket just before the key is given a bucket of its own (the
// overflow tokens are shared, so all the overflowing keys together get at most one Limit).
// The cost of a flood falls on the keys that are new during it, not on the clients already
// known.
//
// # Responses
//
// A refused request gets 429 Too Many Requests with Retry-After. Every response carries the
// RateLimit-Policy and RateLimit header fields of the IETF httpapi draft "RateLimit header
// fields for HTTP", one list member per Limit that applied: the policy advertises q=Burst
// requests per window w=Burst/Rate seconds (the time an empty bucket takes to refill), and
// RateLimit reports r, the whole tokens left, and t, the seconds until the bucket is full.
//
// With [Options.MaxDelay] set, a request that would have to wait for a token at most that
// long is held until its token is due instead of being refused, like NGINX limit_req without
// nodelay; a request whose context ends while it waits gives its tokens back.
//
// # Concurrency
//
// [Concurrency] caps the requests in flight per key (per client) or for a whole pool
// ([Global]), like NGINX limit_conn. It counts in memory and has no Store, so it cannot fail.
//
// # Hooks and Stats
//
// [Options.Hooks] report each request's decision (Hooks.Decision: allowed, delayed and for
// how long, limited, failed closed, or allowed despite a failed store), with the Limit that
// decided by index and Name (few values: a good metric label) and its Key (one per client:
// not a label). [ConcurrencyOptions.Hooks] report each admission or refusal of a
// [Concurrency] limiter (Hooks.Admission) with the requests in flight for its key. Hooks run
// synchronously on the request's goroutine, never under a lock: they must be safe for
// concurrent use and must not block. [JoinHooks] lets several listeners share them; an unset
// hook costs a nil check and a set one allocates nothing. [Limiter.Stats] and
// [Concurrency.Stats] are the gauges: keys held per Limit, and keys and requests in flight.
//
// # Distributed limits
//
// Each Limit stores its buckets in a [Store]. The default is the in-memory store described
// above; a Store shared between replicas (Redis, say) can replace it without changing the
// middleware. Store, [Key] and [Decision] have only exported parts, so such a Store lives in
// a package of its own, importing this one and its backend's client.
//
// # When the store fails
//
// A Store over the network can fail: its backend is down, failing over, or too slow for the
// store's own timeout. Its Take then returns an error, and the Limiter fails open by
// default: the Limit whose store failed does not count the request, which goes on if the
// other Limits admit it, and the RateLimit field leaves that Limit out. Envoy's rate limit
// filter does the same unless failure_mode_deny is set. A rate limit sheds the excess of a
// few clients; refusing every client because the counter is unreachable would turn a store
// outage into an outage of the whole service, a worse failure than the one the limit guards
// against. NGINX limit_req does refuse (with its limit_req_status, 503 by default) when it
// cannot count, but its counters live in shared memory that cannot be unreachable: it fails
// only when its zone is full of keys, a sign of a flood, which MemoryStore meets with its
// overflow bucket instead. To keep some protection while a shared store is down, give the
// Limiter a second, looser Limit of the same kind on the default in-memory store: it
// holds each replica to its share when the shared one cannot.
//
// With [Options.FailClosed] a failure refuses the request instead, with 503 Service
// Unavailable and Retry-After: 1 (never 429: the client did nothing wrong), for services
// where letting a flood through is worse than turning everyone away for a while. Either way
// the tokens that the other Limits took for a refused request are given back, and the
// failure is logged through [Options.Logger], at most one line a second with a count of the
// failures left out. A request whose client goes away while a store decides is not served
// and its error is not logged: the store is told through the request's context, which it
// must honour. When Cancel fails the error is only logged and the token stays taken.
// MemoryStore never fails, and its path allocates nothing.
package ratelimit
