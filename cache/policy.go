package cache

import (
	"net/http"
	"strings"
	"time"
)

// This file holds the cache policy of RFC 9111 as pure functions of the request, the
// response and the time. Nothing here touches storage.

// heuristicallyCacheable reports whether a status code is cacheable by default
// (RFC 9110 §15.1), so that a response without explicit freshness may be stored and given
// a heuristic lifetime.
func heuristicallyCacheable(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understoodStatus reports whether this cache knows the caching requirements of a status
// code, for the must-understand directive (RFC 9111 §5.2.2.3): those RFC 9110 defines,
// except 206, whose partial content this cache never stores.
func understoodStatus(status int) bool {
	switch status {
	case 200, 201, 202, 203, 204, 205,
		300, 301, 302, 303, 307, 308,
		400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416,
		417, 421, 422, 426,
		500, 501, 502, 503, 504, 505:
		return true
	}
	return false
}

// storable decides whether a shared cache may store a response (RFC 9111 §3). It returns
// "" when it may, or a short reason (used in the Cache-Status detail) when it may not.
//
// A response with Set-Cookie is not stored unless storeSetCookie is set or a qualified
// no-cache or private directive lists the field, so that it is stored without it: RFC 9111
// allows storing the field, but the cookie the origin set for one client, often its session,
// would then go to every client, which is why Varnish, NGINX, Fastly and Cloudflare do not
// store such responses either.
func storable(req *http.Request, reqCC cacheControl, status int, h http.Header, cc cacheControl, storeSetCookie bool) string {
	switch {
	case req.Method != http.MethodGet:
		return "method"
	case status < 200 || status == http.StatusPartialContent || status == http.StatusNotModified:
		return "status"
	}
	if cc.has(ccMustUnderstand) {
		if !understoodStatus(status) {
			return "must-understand"
		}
		// §5.2.2.3: a cache that understands the status code ignores no-store.
	} else if cc.has(ccNoStore) {
		return "no-store"
	}
	switch {
	case cc.has(ccPrivate):
		return "private"
	case reqCC.has(ccNoStore):
		return "request-no-store"
	case req.Header.Get("Authorization") != "" && !cc.has(ccPublic|ccMustRevalidate|ccSMaxAge):
		return "authorization" // §3.5
	case varyStar(h):
		return "vary-star" // never matches (§4.1), so not worth storing
	case !storeSetCookie && hasField(h, "Set-Cookie") && !cc.omits("Set-Cookie"):
		return "set-cookie"
	}
	if cc.has(ccPublic|ccMaxAge|ccSMaxAge) || len(h["Expires"]) > 0 || heuristicallyCacheable(status) {
		return ""
	}
	return "no-freshness"
}

func varyStar(h http.Header) bool {
	for _, v := range h["Vary"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(f) == "*" {
				return true
			}
		}
	}
	return false
}

// freshnessLifetime is the freshness lifetime of a response in a shared cache
// (RFC 9111 §4.2.1 and §4.2.2): s-maxage, else max-age, else Expires minus Date, else 10% of
// the time since Last-Modified where a heuristic is allowed, else zero.
func freshnessLifetime(status int, h http.Header, cc cacheControl, date, lastModified time.Time) time.Duration {
	switch {
	case cc.has(ccSMaxAge):
		return seconds(cc.sMaxAge)
	case cc.has(ccMaxAge):
		return seconds(cc.maxAge)
	}
	if v := h["Expires"]; len(v) > 0 {
		exp, err := parseHTTPDate(v[0])
		if err != nil {
			return 0 // an invalid Expires, such as "0", means already expired (§5.3)
		}
		return max(exp.Sub(date), 0)
	}
	if !lastModified.IsZero() && (heuristicallyCacheable(status) || cc.has(ccPublic)) {
		if d := date.Sub(lastModified); d > 0 {
			return d / 10
		}
	}
	return 0
}

func seconds(s int64) time.Duration { return time.Duration(s) * time.Second }

// correctedInitialAge is corrected_initial_age of RFC 9111 §4.2.3: the larger of the apparent
// age (response time minus Date) and the upstream's Age plus the response delay.
func correctedInitialAge(h http.Header, date, requestTime, responseTime time.Time) time.Duration {
	apparent := max(responseTime.Sub(date), 0)
	var ageValue time.Duration
	if v := h["Age"]; len(v) > 0 {
		s := strings.TrimSpace(v[0])
		if i := strings.IndexByte(s, ','); i >= 0 {
			s = strings.TrimSpace(s[:i])
		}
		if n, ok := parseDelta(s, true); ok {
			ageValue = seconds(n)
		}
	}
	delay := max(responseTime.Sub(requestTime), 0)
	return max(apparent, ageValue+delay)
}

// use is what a stored response may do for a request.
type use int

const (
	useFresh      use = iota // fresh: serve it
	useStale                 // stale, but the request's max-stale allows it
	useStaleAsync            // stale within stale-while-revalidate: serve it and refresh
	useValidate              // forward a conditional request first
)

// decide applies RFC 9111 §4.2 and §5.2.1 and RFC 5861 to a stored response: can it answer
// this request at time now, and how? It returns the current age too. fwdRequest reports
// that the request's own directives force validation (for Cache-Status fwd=request).
func decide(e *Entry, reqCC cacheControl, now time.Time) (u use, age time.Duration, fwdRequest bool) {
	age = e.currentAge(now)
	if reqCC.has(ccNoCache) {
		return useValidate, age, true
	}
	if e.m.cc.has(ccNoCache) {
		return useValidate, age, false
	}
	if reqCC.has(ccMaxAge) && age > seconds(reqCC.maxAge) {
		return useValidate, age, true
	}
	lifetime := e.m.lifetime
	if lifetime > age {
		if reqCC.has(ccMinFresh) && lifetime-age < seconds(reqCC.minFresh) {
			return useValidate, age, true
		}
		return useFresh, age, false
	}
	if e.m.noStaleServe {
		return useValidate, age, false
	}
	staleness := age - lifetime
	if reqCC.has(ccMaxStaleAny) || (reqCC.has(ccMaxStale) && staleness <= seconds(reqCC.maxStale)) {
		return useStale, age, false
	}
	if e.m.cc.has(ccStaleWhileRevalidate) && staleness <= seconds(e.m.cc.staleWhileRevalidate) {
		return useStaleAsync, age, false
	}
	return useValidate, age, false
}

// staleIfError reports whether a stale response may answer a request whose validation failed
// with an error (RFC 5861 §4): the response or the request allows that much staleness, and
// neither the response nor the request forbids serving stale.
func staleIfError(e *Entry, reqCC cacheControl, now time.Time) bool {
	if e.m.noStaleServe || reqCC.has(ccNoCache) {
		return false
	}
	staleness := e.currentAge(now) - e.m.lifetime
	if e.m.cc.has(ccStaleIfError) && staleness <= seconds(e.m.cc.staleIfError) {
		return true
	}
	return reqCC.has(ccStaleIfError) && staleness <= seconds(reqCC.staleIfError)
}

// isServerError reports the statuses RFC 5861 counts as errors.
func isServerError(status int) bool {
	return status == 500 || status == 502 || status == 503 || status == 504
}

// varyNames returns the canonical names in the Vary fields, or nil.
func varyNames(h http.Header) []string {
	var names []string
	for _, v := range h["Vary"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				names = append(names, http.CanonicalHeaderKey(f))
			}
		}
	}
	return names
}

// varyKey normalises the request's values of the selecting header fields (RFC 9111 §4.1):
// lines are combined, whitespace around list members removed, and fields whose values are
// case-insensitive lowered. An absent field and an empty one differ.
func varyKey(names []string, h http.Header) string {
	var b strings.Builder
	for _, name := range names {
		b.WriteString(name)
		v, ok := h[name]
		if !ok {
			b.WriteByte('\x01') // absent
			continue
		}
		b.WriteByte('=')
		lower := caseInsensitiveField(name)
		first := true
		for _, line := range v {
			for m := range strings.SplitSeq(line, ",") {
				m = strings.TrimSpace(m)
				if m == "" {
					continue
				}
				if !first {
					b.WriteByte(',')
				}
				first = false
				if lower {
					m = strings.ToLower(m)
				}
				b.WriteString(m)
			}
		}
		b.WriteByte('\x00')
	}
	return b.String()
}

func caseInsensitiveField(name string) bool {
	switch name {
	case "Accept", "Accept-Encoding", "Accept-Language", "Accept-Charset":
		return true
	}
	return false
}

// Hop-by-hop fields a cache must not store (RFC 9111 §3.1, RFC 9110 §7.6.1).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization"}

// hasField reports whether h has the field name (canonical), under its canonical key or any
// other spelling a handler put in the map itself, which net/http sends all the same.
func hasField(h http.Header, name string) bool {
	if _, ok := h[name]; ok {
		return true
	}
	for k := range h {
		if fieldNameEqual(k, name) {
			return true
		}
	}
	return false
}

// delField deletes the field name from h under every spelling of its key.
func delField(h http.Header, name string) {
	for k := range h {
		if fieldNameEqual(k, name) {
			delete(h, k)
		}
	}
}

// forwardedHeader copies a response's header fields without the hop-by-hop ones: what a
// client may receive of it.
func forwardedHeader(h http.Header) http.Header {
	out := h.Clone()
	for _, c := range h["Connection"] {
		for f := range strings.SplitSeq(c, ",") {
			if f = strings.TrimSpace(f); f != "" {
				delField(out, f)
			}
		}
	}
	for _, f := range hopByHop {
		delField(out, f)
	}
	return out
}

// storedHeader copies the header fields a cache stores from a response: not the hop-by-hop
// ones, nor those a qualified no-cache or private directive lists.
func storedHeader(h http.Header) http.Header {
	out := forwardedHeader(h)
	for f := range parseCacheControl(h["Cache-Control"]).omitted() {
		delField(out, f)
	}
	return out
}

// updateHeader applies the header fields of a 304 or HEAD response received at respTime to
// a stored header (RFC 9111 §3.2): each field replaces the stored one, except hop-by-hop
// fields and Content-Length. The result is what the client that asked receives; storedHeader
// of it is what may be stored, since the fields the new Cache-Control lists, or the stored
// one if the new response has none, can come from either response. Age and Date describe the
// new response, not the stored one (§4.2.3): a stored Age the new response does not repeat
// is dropped, or the freshened response would start out as old as the first one, and a
// missing Date is the time the new response arrived.
func updateHeader(stored, fresh http.Header, respTime time.Time) http.Header {
	out := stored.Clone()
	delete(out, "Age")
	for k, v := range forwardedHeader(fresh) {
		if k == "Content-Length" {
			continue
		}
		out[k] = v
	}
	if _, ok := fresh["Date"]; !ok {
		out["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
	}
	return out
}

// etagMatchWeak reports whether an If-None-Match list matches an entity tag by the weak
// comparison (RFC 9110 §13.1.2 and §8.8.3.2).
func etagMatchWeak(list []string, etag string) bool {
	if etag == "" {
		return false
	}
	want := strings.TrimPrefix(etag, "W/")
	for _, line := range list {
		for t := range strings.SplitSeq(line, ",") {
			t = strings.TrimSpace(t)
			if t == "*" {
				return true
			}
			if strings.TrimPrefix(t, "W/") == want {
				return true
			}
		}
	}
	return false
}

// notModified evaluates a GET or HEAD request's If-None-Match and If-Modified-Since against a
// response (RFC 9110 §13.2.2, RFC 9111 §4.3.2): true means the answer is 304. lastModified
// is the response's Last-Modified, or its Date when it has none.
func notModified(req *http.Request, etag string, lastModified time.Time) bool {
	if inm, ok := req.Header["If-None-Match"]; ok {
		return etagMatchWeak(inm, etag)
	}
	if ims := req.Header.Get("If-Modified-Since"); ims != "" && !lastModified.IsZero() {
		t, err := parseHTTPDate(ims)
		return err == nil && !lastModified.Truncate(time.Second).After(t)
	}
	return false
}

// isUnsafe reports whether a method can change state at the origin (RFC 9110 §9.2.1).
func isUnsafe(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// worthStoring reports whether a storable response could ever answer a request without
// going back to the origin in full: it is fresh on arrival, or it has a validator to
// revalidate with, or it may be served stale for a while. The rest only churn the store.
func worthStoring(status int, h http.Header, cc cacheControl, reqTime, respTime time.Time) bool {
	if h.Get("Etag") != "" || h.Get("Last-Modified") != "" || cc.has(ccStaleWhileRevalidate|ccStaleIfError) {
		return true
	}
	date := respTime
	if d, err := parseHTTPDate(h.Get("Date")); err == nil {
		date = d
	}
	lifetime := freshnessLifetime(status, h, cc, date, time.Time{})
	return lifetime > correctedInitialAge(h, date, reqTime, respTime)
}
