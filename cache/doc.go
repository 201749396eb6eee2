// Package cache is a shared HTTP cache (RFC 9111) for sluice, as a middleware: it answers
// requests from stored responses where the RFC allows and forwards the rest, storing what it
// may. It collapses concurrent misses for one URL into one origin request.
//
//	c, err := cache.New(cache.Options{MaxBytes: 256 << 20})
//	...
//	defer c.Close()
//	http.ListenAndServe(":8080", c.Handler(proxy))
//
// # What it stores
//
// Responses to GET (a HEAD is fetched as a GET, so it can fill the cache too) whose status is
// final, that carry no no-store (unless must-understand and the status is understood) and
// no private, and that have explicit freshness (s-maxage, max-age, Expires, public) or a
// status cacheable by default (RFC 9111 §3). A request with Authorization is stored only when
// the response says public, s-maxage or must-revalidate (§3.5). Vary selects variants; header
// values are normalised (lines combined, list whitespace removed, the Accept family lower
// cased) and Vary: * is never stored. Hop-by-hop fields, and the fields that the qualified
// forms no-cache="..." and private="..." list, are not stored; the rest of such a response
// is. A response that is stale on arrival and has no validator is not stored, since it
// could never be reused. A request with no-store goes to the origin and nothing of it is
// stored. Bodies larger than Options.MaxBodyBytes stream to the client and are not stored:
// the cache copies at most that many bytes while it decides, never a whole large body.
//
// A response with Set-Cookie is not stored, although RFC 9111 allows it, because the cookie
// the origin set for one client (often its session) would go to every client the stored
// response answers; Varnish, NGINX, Fastly and Cloudflare refuse them too. Where the origin
// says no-cache="Set-Cookie" or private="Set-Cookie" (the name in any case, alone or in a
// list), the response is stored without the field, and the client whose request fetched it
// still receives its cookie, as does a client whose revalidation a 304 answers.
// Options.StoreSetCookie stores the field as the RFC allows: it is dangerous, and meant for
// origins whose cookies on cacheable responses are the same for everyone. Without it, a
// stored response that has Set-Cookie anyway (in a store shared with a replica that set it,
// or written by an older release) is a miss.
//
// # Freshness and age
//
// The freshness lifetime is s-maxage, else max-age, else Expires minus Date, else (for
// statuses cacheable by default, or public) 10% of the time since Last-Modified (§4.2). The
// dates (Expires, Date, Last-Modified, If-Modified-Since) are read strictly as RFC 9110
// §5.6.7 HTTP-dates, so an invalid Expires means already expired (§5.3). The age is
// RFC 9111 §4.2.3's current_age: the larger of the apparent age and the upstream's Age plus
// the response delay, plus the time resident. Hits carry that Age. The request's
// no-cache (or Pragma: no-cache without Cache-Control), max-age, max-stale, min-fresh and
// only-if-cached (a 504 when nothing stored can be used) are honoured (§5.2.1).
//
// # Validation and stale responses
//
// A stale response with a validator is revalidated with If-None-Match and If-Modified-Since;
// a 304 updates the stored header (§4.3.4, Content-Length excepted; its Age and Date, or
// their absence, replace the stored ones) and the stored body is served. A 304 that makes
// the response unstorable (no-store, private) removes it. must-revalidate, proxy-revalidate, s-maxage and no-cache forbid serving stale.
// Clients' own conditional requests are answered from the cache with 304 where they match.
// RFC 5861's stale-while-revalidate serves a stale response at once and refreshes it in the
// background, at most once per URL and at most Options.MaxRefreshes at a time;
// stale-if-error serves it when the origin answers 500, 502, 503 or 504.
//
// # Invalidation and purging
//
// A successful unsafe request (POST, PUT, DELETE, ...) removes the stored responses for its
// URL and for same-origin Location and Content-Location URLs (§4.4). [Cache.Purge],
// [Cache.PurgePrefix] and [Cache.PurgeTag] remove entries on demand; tags come from a
// response field (Options.TagHeader, "Cache-Tag" by default).
//
// # Ranges and HEAD
//
// A HEAD is answered from a stored GET. A Range request is answered from a complete stored
// 200 (206, multipart 206 or 416, with If-Range); a Range miss is forwarded unchanged and not
// stored.
//
// # Request collapsing
//
// While one request fetches a URL, identical requests wait (at most Options.CollapseTimeout)
// and are answered from what it stores. If the response turns out not storable they go to
// the origin themselves, so a follower never receives the Set-Cookie of the request it
// waited on but a response, and a cookie, of its own, as in Varnish and NGINX. If the first
// request's client goes away, they do not inherit its cancellation: one of them fetches
// again. Requests with Authorization or Cookie are never collapsed. Collapsing is by URL: a
// follower whose Vary'd headers select another variant fetches its own. A URL whose
// response could not be stored is not collapsed for the next 10 seconds ("hit-for-pass"),
// so its requests do not queue to learn that again. That list
// is bounded in bytes, Options.HitForPassBytes (1 MiB, 65,536 URLs, by default): it keeps a
// 16-byte slot per URL, a 64-bit hash of the key under a random per-cache seed, never the
// URL itself, and a full bucket of four forgets the mark that expires first. Two URLs whose
// hashes collide share a mark, which costs at most a request that is not collapsed: the
// list only decides whether to wait for another request, never what is served.
//
// # Cache-Status
//
// Every response carries an RFC 9211 Cache-Status member after any from upstream caches:
// "sluice; hit; ttl=42", "sluice; fwd=uri-miss; fwd-status=200; stored",
// "sluice; fwd=stale; fwd-status=304; ttl=60", "sluice; fwd=vary-miss; ...",
// "sluice; fwd=request; ..." when the request forced validation, "fwd=method" for methods
// the cache does not serve, "collapsed" on answers to followers, and a detail such as
// stale-while-revalidate, stale-if-error, no-store, set-cookie or too-large.
//
// # Storage
//
// Entries live behind the four-method [Store]; the default [MemoryStore] is an LRU bounded
// by bytes. Keys are "1|" + scheme + "://" + host (lower case, without a default port) +
// path and query (the prefix is the key format's version) and entries encode with
// [Entry.MarshalBinary] (a version byte, then a length-prefixed layout), so a store shared
// by several replicas, such as Redis, can hold them. Store methods take the request's
// context, so a client that goes away or a deadline that passes ends a store call too; a
// background revalidation uses a context of the cache's own instead, bounded by
// Options.RefreshTimeout and cancelled by [Cache.Close], since its client has already been
// answered.
//
// # When the store fails
//
// A store across a network can fail. The cache then never serves what it could not read
// whole and never panics; what it does depends on the call:
//
//   - A failed lookup fails open by default: the request is a miss and goes to the origin,
//     with "fwd=miss; detail=store-error" in its Cache-Status. It is not collapsed with
//     identical requests, which would wait for a response to be stored in a store that has
//     just failed, and its response is not stored, which would add a second failing call to
//     its latency. With Options.FailClosed the cache answers 503 Service Unavailable
//     instead, for origins that cannot bear the load of every request the cache would have
//     answered. A request with only-if-cached gets its 504 either way.
//   - A failed store (Set) serves the response all the same and does not store it; requests
//     collapsed onto it go to the origin themselves. Its Cache-Status, sent before the body
//     was stored, still says "stored".
//   - A failed delete (an invalidation after an unsafe method, or the removal of a response
//     the origin has made unstorable) serves the response; the old stored response stays
//     until it expires or is purged. [Cache.Purge], [Cache.PurgePrefix] and [Cache.PurgeTag]
//     return the error.
//   - A lookup cut short by the request's own context (its client gone, its deadline
//     passed) is answered 503 without going to the origin, and is not logged as a failure.
//
// Entries that do not decode ([ErrBadEntry]: written by another release, say) are misses,
// not failures, and are overwritten. Failures are logged through Options.Logger at most once
// every 10 seconds, each record counting the failures left out since the one before; while
// the store works, nothing is logged and nothing allocated.
//
// # Hooks and Stats
//
// [Options.Hooks] receive the cache's events, so metrics need not parse Cache-Status:
// Hooks.Lookup once per request, with its [Outcome] (hit, stale hit, collapsed,
// revalidated, miss, pass, unavailable), the fwd reason, whether the response was stored
// and, if not, why, its size and any Store error; Hooks.Evict for each entry a
// [MemoryStore] drops to stay within its bytes or because it expired. Hooks run
// synchronously on the goroutine where the event happens, never under the cache's locks:
// they must be safe for concurrent use and must not block. [JoinHooks] lets several
// listeners share them. An unset hook costs a nil check. [Cache.Stats] is the pull side:
// the entries and bytes held, when the Store can tell ([Sizer]), and the background
// revalidations running.
//
// # Cost of a hit
//
// Everything a hit needs (parsed Cache-Control, freshness lifetime, corrected initial age,
// the header to copy) is computed when a response is stored; a hit builds its key, takes the
// store's lock for an LRU touch, copies header slices (shared, clipped) into the client's
// map and writes the body: about one allocation.
package cache
