package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a [Cache]. The zero value is a usable configuration.
type Options struct {
	// Store holds the entries. Nil means a [MemoryStore] of MaxBytes that expires entries on
	// the Now clock.
	Store Store
	// MaxBytes bounds the default store; see [MemoryOptions.MaxBytes]. Zero means 64 MiB.
	// It is ignored when Store is set.
	MaxBytes int64
	// MaxBodyBytes is the largest body the cache stores. Larger bodies stream to the client
	// uncached; the cache buffers at most this much of a body while it decides. Zero means
	// 1 MiB.
	MaxBodyBytes int64
	// Name identifies this cache in the Cache-Status field (RFC 9211). It must be a
	// structured-field token: a letter or "*", then token characters, ":" or "/". Empty
	// means "sluice".
	Name string
	// TagHeader names the response field that carries purge tags, separated by commas or
	// spaces (as Fastly's Surrogate-Key and Cloudflare's Cache-Tag do). Empty means
	// "Cache-Tag".
	TagHeader string
	// CollapseTimeout bounds how long a request waits for another, identical request that is
	// already fetching from the origin before it goes to the origin itself. Zero means 10s.
	CollapseTimeout time.Duration
	// StaleRetention is how long an entry is kept after it becomes stale (beyond its
	// stale-while-revalidate and stale-if-error windows) so that it can still be validated
	// with a conditional request or served to a request that allows max-stale. Zero means 1h.
	StaleRetention time.Duration
	// MaxRefreshes bounds the background revalidations that stale-while-revalidate starts;
	// when that many are running, a stale hit is served without starting another.
	// Zero means 16.
	MaxRefreshes int
	// HitForPassBytes bounds the memory of the list of URLs whose responses could not be
	// stored, which are not collapsed for 10 seconds (see "Request collapsing" in the package
	// documentation). The list keeps a 16-byte slot per URL, whatever the URL's length, so
	// the default of 1 MiB remembers 65,536 URLs; a budget under 64 bytes (one bucket of
	// four slots) turns hit-for-pass off. Zero means 1 MiB.
	HitForPassBytes int64
	// StoreSetCookie stores responses that carry Set-Cookie, with the field, as RFC 9111
	// allows. It is dangerous: every client that the stored response answers then receives
	// the cookie the origin set for the client whose request fetched it, typically that
	// user's session. Set it only when the cookies on cacheable responses are the same for
	// everyone. When it is false, as by default in Varnish, NGINX, Fastly and Cloudflare, a
	// response with Set-Cookie is not stored, unless its Cache-Control says
	// no-cache="Set-Cookie" or private="Set-Cookie": then it is stored without the field.
	StoreSetCookie bool
	// FailClosed answers 503 Service Unavailable, instead of forwarding the request to the
	// origin, when the Store fails to look a request up. Set it for origins that cannot bear
	// the load of every request a working cache would have answered. When it is false (fail
	// open), a failed lookup is taken as a miss and the request goes to the origin, without
	// waiting for identical requests. Either way, a failure to store or delete only logs: the
	// response is served and not stored. See "When the store fails" in the package
	// documentation.
	FailClosed bool
	// RefreshTimeout bounds a background revalidation (for stale-while-revalidate): its
	// request to the origin and its calls to the Store. Those run after the client that
	// started them has its answer, so they use a context of the cache's own, which
	// [Cache.Close] cancels and which this deadline bounds, so that a hung origin or store
	// never holds one of the MaxRefreshes for good. Zero means 30s.
	RefreshTimeout time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Logger receives failures of background revalidations and of the Store. Store failures
	// are logged at most once every 10 seconds (on the Now clock), each record counting the
	// failures left out since the last one, so that a store that is down does not flood the
	// log. Nil means slog.Default().
	Logger *slog.Logger
	// Hooks receive the cache's events (see [Hooks]). Evict reaches the default store only:
	// a [MemoryStore] passed as Store takes its own [MemoryOptions.Hooks].
	Hooks Hooks
}

// Cache is a shared HTTP cache (RFC 9111) in front of an http.Handler. Create one with [New]
// and wrap handlers with [Cache.Handler]; call [Cache.Close] to stop background
// revalidations.
type Cache struct {
	store     Store
	now       func() time.Time
	name      string
	tagHeader string
	maxObject int64
	setCookie bool // Options.StoreSetCookie
	failClose bool // Options.FailClosed
	collapse  time.Duration
	retention time.Duration
	refreshTO time.Duration
	log       *slog.Logger
	storeLog  logLimiter
	hooks     Hooks

	flights flightGroup
	passes  passMemo

	refreshes chan struct{} // a slot per running background revalidation
	ctx       context.Context
	cancel    context.CancelFunc
	mu        sync.Mutex // mu protects closed and orders wg.Add before wg.Wait
	closed    bool
	wg        sync.WaitGroup
}

// New returns a Cache configured by opts.
func New(opts Options) (*Cache, error) {
	switch {
	case opts.MaxBodyBytes < 0:
		return nil, fmt.Errorf("cache: MaxBodyBytes must be ≥ 0, got %d", opts.MaxBodyBytes)
	case opts.CollapseTimeout < 0:
		return nil, fmt.Errorf("cache: CollapseTimeout must be ≥ 0, got %v", opts.CollapseTimeout)
	case opts.StaleRetention < 0:
		return nil, fmt.Errorf("cache: StaleRetention must be ≥ 0, got %v", opts.StaleRetention)
	case opts.HitForPassBytes < 0:
		return nil, fmt.Errorf("cache: HitForPassBytes must be ≥ 0, got %d", opts.HitForPassBytes)
	case opts.MaxRefreshes < 0:
		return nil, fmt.Errorf("cache: MaxRefreshes must be ≥ 0, got %d", opts.MaxRefreshes)
	case opts.RefreshTimeout < 0:
		return nil, fmt.Errorf("cache: RefreshTimeout must be ≥ 0, got %v", opts.RefreshTimeout)
	case opts.Name != "" && !sfToken(opts.Name):
		return nil, fmt.Errorf("cache: Name must be a structured-field token (RFC 9211 §2), got %q", opts.Name)
	}
	c := &Cache{
		store:     opts.Store,
		now:       opts.Now,
		name:      cmp(opts.Name, "sluice"),
		tagHeader: http.CanonicalHeaderKey(cmp(opts.TagHeader, "Cache-Tag")),
		maxObject: opts.MaxBodyBytes,
		setCookie: opts.StoreSetCookie,
		failClose: opts.FailClosed,
		collapse:  opts.CollapseTimeout,
		retention: opts.StaleRetention,
		refreshTO: opts.RefreshTimeout,
		log:       opts.Logger,
		hooks:     opts.Hooks,
	}
	if opts.HitForPassBytes == 0 {
		opts.HitForPassBytes = 1 << 20
	}
	c.passes.init(opts.HitForPassBytes)
	if c.now == nil {
		c.now = time.Now
	}
	if c.maxObject == 0 {
		c.maxObject = 1 << 20
	}
	if c.collapse == 0 {
		c.collapse = 10 * time.Second
	}
	if c.retention == 0 {
		c.retention = time.Hour
	}
	if c.refreshTO == 0 {
		c.refreshTO = 30 * time.Second
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.store == nil {
		s, err := NewMemoryStore(MemoryOptions{MaxBytes: opts.MaxBytes, Now: c.now, Hooks: opts.Hooks})
		if err != nil {
			return nil, err
		}
		c.store = s
	}
	if opts.MaxRefreshes == 0 {
		opts.MaxRefreshes = 16
	}
	c.refreshes = make(chan struct{}, opts.MaxRefreshes)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// sfToken reports whether s is a token of RFC 8941 §3.3.4, the form a cache's name takes in
// Cache-Status: a letter or "*", then tchars, ":" and "/".
func sfToken(s string) bool {
	if s == "" || !(s[0] == '*' || 'a' <= s[0]|0x20 && s[0]|0x20 <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~:/", c) >= 0) {
			return false
		}
	}
	return true
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Close cancels running background revalidations, waits for them to return and stops new
// ones from starting. The cache keeps serving and storing in the foreground.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Handler returns a handler that answers from the cache where RFC 9111 allows and passes the
// rest to next, storing what it may.
func (c *Cache) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.serve(w, r, next)
	})
}

// Purge removes the stored responses for an absolute URL (every variant of it). It returns
// an error if rawURL is not absolute or the Store fails; ctx bounds the Store's work.
func (c *Cache) Purge(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("cache: purge: %w", err)
	}
	if u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("cache: purge: URL %q is not absolute", rawURL)
	}
	if err := c.store.Delete(ctx, keyOf(u.Scheme, u.Host, u.EscapedPath(), u.RawQuery)); err != nil {
		return fmt.Errorf("cache: purge %s: %w", rawURL, err)
	}
	return nil
}

// PurgePrefix removes every stored response whose URL starts with prefix, such as
// "https://example.com/static/". The scheme and host must be lower case. It returns how many
// entries it removed, and if the Store fails, how many it removed before it failed and the
// error.
func (c *Cache) PurgePrefix(ctx context.Context, prefix string) (int, error) {
	n, err := c.store.Purge(ctx, Selector{Prefix: keyVersion + prefix})
	if err != nil {
		return n, fmt.Errorf("cache: purge prefix %q: %w", prefix, err)
	}
	return n, nil
}

// PurgeTag removes every stored response the origin tagged with tag (see
// [Options.TagHeader]) and returns how many it removed, and if the Store fails, how many it
// removed before it failed and the error. An empty tag removes nothing.
func (c *Cache) PurgeTag(ctx context.Context, tag string) (int, error) {
	if tag == "" {
		return 0, nil
	}
	n, err := c.store.Purge(ctx, Selector{Tag: tag})
	if err != nil {
		return n, fmt.Errorf("cache: purge tag %q: %w", tag, err)
	}
	return n, nil
}

// keyVersion starts every key; change it when the key layout changes.
const keyVersion = "1|"

// keyOf builds the primary cache key: version, scheme, lower-cased host, path and query.
func keyOf(scheme, host, path, query string) string {
	host = strings.ToLower(withoutDefaultPort(scheme, host))
	if path == "" {
		path = "/"
	}
	if query == "" {
		return keyVersion + scheme + "://" + host + path
	}
	return keyVersion + scheme + "://" + host + path + "?" + query
}

// withoutDefaultPort drops a port that is the scheme's default, so that "example.com:80" and
// "example.com" name one origin (RFC 9110 §4.2.3).
func withoutDefaultPort(scheme, host string) string {
	switch {
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		return host[:len(host)-3]
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		return host[:len(host)-4]
	}
	return host
}

func requestScheme(r *http.Request) string {
	switch {
	case r.URL.Scheme != "":
		return strings.ToLower(r.URL.Scheme)
	case r.TLS != nil:
		return "https"
	}
	return "http"
}

func requestKey(r *http.Request) string {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	return keyOf(requestScheme(r), host, r.URL.EscapedPath(), r.URL.RawQuery)
}

func variantKey(key, generation, vary string) string {
	return key + "\x00" + generation + "\x00" + vary
}

// serve is the middleware.
func (c *Cache) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		c.forwardMethod(w, r, next)
		return
	}
	if _, ok := r.Header["Upgrade"]; ok {
		c.pass(w, r, next, "", "bypass", "upgrade", nil)
		return
	}
	reqCC := requestCacheControl(r.Header)
	key := requestKey(r)
	if reqCC.has(ccNoStore) && !reqCC.has(ccOnlyIfCached) {
		// Nothing of this exchange may be stored (§5.2.1.5); answering it from the cache is
		// allowed, but a client that says no-store wants the origin, as browsers do. With
		// only-if-cached it must not reach the origin at all (§5.2.1.7): the cache answers
		// below, or says 504, and stores nothing since it forwards nothing.
		c.fetch(w, r, next, key, nil, "request", reqCC, false)
		return
	}
	e, varyMiss, err := c.lookup(r.Context(), key, r)
	if err != nil {
		c.lookupFailed(w, r, next, key, reqCC, err)
		return
	}
	_, ranged := r.Header["Range"]
	if e != nil {
		u, age, fwdRequest := decide(e, reqCC, c.now())
		switch u {
		case useFresh, useStale:
			c.serveEntry(w, r, e, age, nil)
			if c.hooks.Lookup != nil {
				o := Hit
				if u == useStale {
					o = StaleHit
				}
				c.hooks.Lookup(LookupEvent{Outcome: o, Key: key, Status: e.Status, Bytes: int64(len(e.Body))})
			}
			return
		case useStaleAsync:
			if !reqCC.has(ccOnlyIfCached) { // only-if-cached: do not contact the origin at all
				c.refresh(key, r, e, next)
			}
			c.serveEntry(w, r, e, age, []string{c.statusValue(e, age, "hit", "", "stale-while-revalidate")})
			if c.hooks.Lookup != nil {
				c.hooks.Lookup(LookupEvent{Outcome: StaleHit, Key: key, Status: e.Status,
					Detail: "stale-while-revalidate", Bytes: int64(len(e.Body))})
			}
			return
		}
		if reqCC.has(ccOnlyIfCached) {
			c.gatewayTimeout(w, key, nil)
			return
		}
		reason := "stale"
		if fwdRequest {
			reason = "request"
		}
		if ranged {
			c.pass(w, r, next, key, reason, "range", nil)
			return
		}
		c.fetch(w, r, next, key, e, reason, reqCC, !fwdRequest && !credentialed(r) && !c.passes.recent(key, c.now()))
		return
	}
	if reqCC.has(ccOnlyIfCached) {
		c.gatewayTimeout(w, key, nil)
		return
	}
	reason := "uri-miss"
	if varyMiss {
		reason = "vary-miss"
	}
	if ranged {
		// A miss for a range is passed on as it is: fetching the whole representation to
		// answer a small range could cost far more than the range.
		c.pass(w, r, next, key, reason, "range", nil)
		return
	}
	collapse := !credentialed(r) && !reqCC.has(ccNoCache|ccNoStore) && !c.passes.recent(key, c.now())
	c.fetch(w, r, next, key, nil, reason, reqCC, collapse)
}

// credentialed reports whether a request carries credentials, which keeps it out of request
// collapsing: it neither waits for another request's response nor makes others wait for its
// own.
func credentialed(r *http.Request) bool {
	_, auth := r.Header["Authorization"]
	_, cookie := r.Header["Cookie"]
	return auth || cookie
}

// lookup finds the stored response for a request, following the variant index for responses
// with Vary. varyMiss reports that the URL has variants but none for this request.
//
// A stored response with Set-Cookie is a miss unless Options.StoreSetCookie is set: this
// cache does not store one, but a store shared with replicas that do, or filled by a release
// that stored Set-Cookie, may hold one, and it must not hand that cookie out.
//
// An error is the Store's, and comes with no entry.
func (c *Cache) lookup(ctx context.Context, key string, r *http.Request) (e *Entry, varyMiss bool, err error) {
	e, err = c.get(ctx, key)
	if e == nil || err != nil {
		return nil, false, err
	}
	if e.Status != 0 {
		if e.m.setCookie && !c.setCookie {
			return nil, false, nil
		}
		return e, false, nil
	}
	vk := varyKey(e.Vary, r.Header)
	v, err := c.get(ctx, variantKey(key, e.VaryKey, vk))
	if err != nil {
		return nil, false, err
	}
	if v == nil || v.Status == 0 || v.VaryKey != vk || v.m.setCookie && !c.setCookie {
		return nil, true, nil
	}
	return v, false, nil
}

// get asks the store for key. Bytes the store could not decode are a miss, as is an entry
// that could never be served; an entry the store built itself is prepared (as a copy).
func (c *Cache) get(ctx context.Context, key string) (*Entry, error) {
	e, err := c.store.Get(ctx, key)
	if err != nil {
		if errors.Is(err, ErrBadEntry) {
			return nil, nil
		}
		return nil, err
	}
	if e == nil {
		return nil, nil
	}
	return e.ready(), nil
}

// lookupFailed answers a request whose lookup failed with err: with a 504 if the client said
// only-if-cached, with a 503 under Options.FailClosed, and otherwise from the origin, as a
// miss that is neither collapsed nor stored. A request whose context ended while the store
// was asked is answered 503 without a word to the origin or the log: its client is gone, or
// its deadline has passed.
func (c *Cache) lookupFailed(w http.ResponseWriter, r *http.Request, next http.Handler, key string,
	reqCC cacheControl, err error) {
	if r.Context().Err() != nil {
		c.unavailable(w, key, err)
		return
	}
	c.storeFailed(r.Context(), "get", key, err)
	switch {
	case reqCC.has(ccOnlyIfCached):
		c.gatewayTimeout(w, key, err)
	case c.failClose:
		c.unavailable(w, key, err)
	default:
		// Collapsing would make this request wait for another's response to be stored and
		// then look it up in a store that has just failed; storing would add a second
		// failing call to its latency. It goes to the origin as it came.
		c.pass(w, r, next, key, "miss", "store-error", err)
	}
}

// unavailable answers 503 when the store failed and the request may not go to the origin.
// Like any response the cache makes up, it carries no Cache-Status member (RFC 9211 §2).
func (c *Cache) unavailable(w http.ResponseWriter, key string, err error) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte("cache: the cache store is unavailable\n"))
	if c.hooks.Lookup != nil {
		c.hooks.Lookup(LookupEvent{Outcome: Unavailable, Key: key, Detail: "store-error", Err: err})
	}
}

// storeLogInterval is the least time between two records of Store failures.
const storeLogInterval = 10 * time.Second

// logLimiter lets one record through per storeLogInterval and counts the rest. It is not
// touched while the store works.
type logLimiter struct {
	next       atomic.Int64 // Unix nanoseconds before which failures are only counted
	suppressed atomic.Int64 // failures counted since the last record
}

// storeFailed logs a Store failure, unless ctx has ended: then the error is the caller's
// deadline or departure, not the store's failure.
func (c *Cache) storeFailed(ctx context.Context, op, key string, err error) {
	if ctx.Err() != nil {
		return
	}
	now := c.now().UnixNano()
	next := c.storeLog.next.Load()
	if now < next || !c.storeLog.next.CompareAndSwap(next, now+int64(storeLogInterval)) {
		c.storeLog.suppressed.Add(1)
		return
	}
	c.log.Error("cache: store failed", "op", op, "key", key, "err", err,
		"suppressed", c.storeLog.suppressed.Swap(0))
}

// put stores a prepared response for the request that fetched it. It stops at the first
// Store error: a variant index without its variant selects nothing, so a failure part way
// leaves misses, never a wrong response.
func (c *Cache) put(ctx context.Context, key string, e *Entry) error {
	now := c.now()
	ttl := max(e.m.lifetime-e.currentAge(now), 0) + max(c.retention,
		seconds(e.m.cc.staleWhileRevalidate), seconds(e.m.cc.staleIfError))
	if len(e.Vary) == 0 {
		return c.store.Set(ctx, key, e, ttl)
	}
	idx, err := c.get(ctx, key)
	if err != nil {
		return err
	}
	if idx == nil || idx.Status != 0 || !slices.Equal(idx.Vary, e.Vary) {
		idx = &Entry{Vary: e.Vary, VaryKey: newGeneration()}
		idx.prepare()
	}
	if err := c.store.Set(ctx, key, idx, ttl+c.retention); err != nil {
		return err
	}
	return c.store.Set(ctx, variantKey(key, idx.VaryKey, e.VaryKey), e, ttl)
}

// delete removes key from the store, logging a failure: the stored response then stays
// until it expires or is purged.
func (c *Cache) delete(ctx context.Context, key string) {
	if err := c.store.Delete(ctx, key); err != nil {
		c.storeFailed(ctx, "delete", key, err)
	}
}

func newGeneration() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newEntry builds a prepared entry from a complete response to r, whose header as
// storedHeader left it is sh. It takes sh over.
func (c *Cache) newEntry(r *http.Request, status int, sh http.Header, body []byte, reqTime, respTime time.Time) *Entry {
	sh["Content-Length"] = []string{strconv.Itoa(len(body))}
	if _, ok := sh["Date"]; !ok {
		sh["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
	}
	e := &Entry{
		Status:       status,
		Header:       sh,
		Body:         body,
		RequestTime:  reqTime,
		ResponseTime: respTime,
		Tags:         tags(sh[c.tagHeader]),
	}
	if names := varyNames(sh); len(names) > 0 {
		e.Vary = names
		e.VaryKey = varyKey(names, r.Header)
	}
	e.prepare()
	return e
}

func tags(lines []string) []string {
	var out []string
	for _, l := range lines {
		out = append(out, strings.FieldsFunc(l, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })...)
	}
	return out
}

// serveEntry answers a request from a stored response. cacheStatus replaces the default
// "hit" Cache-Status value when it is not nil.
func (c *Cache) serveEntry(w http.ResponseWriter, r *http.Request, e *Entry, age time.Duration, cacheStatus []string) {
	h := w.Header()
	for k, v := range e.m.hitHeader {
		h[k] = v
	}
	ageValue, hit := e.hitHeaderValues(c.name, age)
	h["Age"] = ageValue
	if cacheStatus == nil {
		cacheStatus = hit
	}
	h["Cache-Status"] = cacheStatus

	if e.Status == http.StatusOK {
		_, rng := r.Header["Range"]
		_, im := r.Header["If-Match"]
		_, ius := r.Header["If-Unmodified-Since"]
		if rng || im || ius {
			// Ranges (single and multipart, 206 and 416) and the remaining preconditions are
			// what http.ServeContent implements; it sets Content-Length itself.
			delete(h, "Content-Length")
			http.ServeContent(w, r, "", e.m.lastModified, bytes.NewReader(e.Body))
			return
		}
	}
	if e.Status/100 == 2 {
		_, inm := r.Header["If-None-Match"]
		_, ims := r.Header["If-Modified-Since"]
		if inm || ims {
			lm := e.m.lastModified
			if lm.IsZero() {
				lm = e.m.date // RFC 9111 §4.3.2
			}
			if notModified(r, e.m.etag, lm) {
				writeNotModified(w)
				return
			}
		}
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.Body)
	}
}

// writeNotModified sends a 304 with the header already in w, less the fields that describe a
// body it does not have.
func writeNotModified(w http.ResponseWriter) {
	h := w.Header()
	delete(h, "Content-Length")
	delete(h, "Content-Type")
	delete(h, "Content-Encoding")
	w.WriteHeader(http.StatusNotModified)
}

// gatewayTimeout answers a request with only-if-cached that nothing stored can answer; err
// is the Store's error if the lookup failed.
func (c *Cache) gatewayTimeout(w http.ResponseWriter, key string, err error) {
	h := w.Header()
	h.Set("Cache-Status", c.name+"; detail=only-if-cached")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusGatewayTimeout)
	_, _ = w.Write([]byte("cache: only-if-cached and no stored response can be used\n"))
	if c.hooks.Lookup != nil {
		c.hooks.Lookup(LookupEvent{Outcome: Unavailable, Key: key, Detail: "only-if-cached", Err: err})
	}
}

// statusValue formats a Cache-Status value for a response built from e at age: the upstream
// members stored with e, then this cache's.
func (c *Cache) statusValue(e *Entry, age time.Duration, kind, fwdStatus, detail string) string {
	var b strings.Builder
	for _, v := range e.Header["Cache-Status"] {
		b.WriteString(v)
		b.WriteString(", ")
	}
	b.WriteString(c.name)
	b.WriteString("; ")
	b.WriteString(kind)
	if fwdStatus != "" {
		b.WriteString("; fwd-status=")
		b.WriteString(fwdStatus)
	}
	b.WriteString("; ttl=")
	b.WriteString(strconv.FormatInt(int64(e.m.lifetime/time.Second)-int64(age/time.Second), 10))
	if detail != "" {
		b.WriteString("; detail=")
		b.WriteString(detail)
	}
	return b.String()
}

// forwardValue formats this cache's Cache-Status member for a forwarded response.
func (c *Cache) forwardValue(reason string, status int, stored bool, detail string) string {
	s := c.name + "; fwd=" + reason + "; fwd-status=" + strconv.Itoa(status)
	if stored {
		s += "; stored"
	}
	if detail != "" {
		s += "; detail=" + detail
	}
	return s
}

// pass forwards a request without looking at or storing the response, adding Cache-Status.
// err is the Store's error that made the lookup a miss, if any.
func (c *Cache) pass(w http.ResponseWriter, r *http.Request, next http.Handler, key, reason, detail string, err error) {
	pw := &passWriter{ResponseWriter: w, c: c, reason: reason, detail: detail}
	next.ServeHTTP(pw, r)
	if c.hooks.Lookup != nil {
		o := Miss
		if reason == "bypass" {
			o = Pass
		}
		c.hooks.Lookup(LookupEvent{Outcome: o, Key: key, Fwd: reason, FwdStatus: pw.status, Status: pw.status,
			Detail: detail, Bytes: pw.written, Err: err})
	}
}

// forwardMethod passes on a request whose method the cache does not serve, and invalidates
// the stored responses an unsafe method may have changed (RFC 9111 §4.4).
func (c *Cache) forwardMethod(w http.ResponseWriter, r *http.Request, next http.Handler) {
	pw := &passWriter{ResponseWriter: w, c: c, reason: "method"}
	if isUnsafe(r.Method) {
		pw.onHeader = func(status int, h http.Header) {
			if status >= 200 && status < 400 {
				c.invalidate(r, h)
			}
		}
	}
	next.ServeHTTP(pw, r)
	_, upgrade := r.Header["Upgrade"]
	if !pw.wroteHeader && !upgrade && r.Method != http.MethodConnect {
		// The handler wrote nothing, which the server sends as a 200: that is a success
		// too, and invalidates like one. (A hijacked connection has no status to send.)
		pw.WriteHeader(http.StatusOK)
	}
	if c.hooks.Lookup != nil {
		c.hooks.Lookup(LookupEvent{Outcome: Pass, Fwd: "method", FwdStatus: pw.status, Status: pw.status, Bytes: pw.written})
	}
}

// invalidate removes the target URI and the same-origin Location and Content-Location
// targets of a successful unsafe request.
func (c *Cache) invalidate(r *http.Request, h http.Header) {
	c.delete(r.Context(), requestKey(r))
	scheme := requestScheme(r)
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	base := &url.URL{Scheme: scheme, Host: host, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	for _, name := range []string{"Location", "Content-Location"} {
		v := h.Get(name)
		if v == "" {
			continue
		}
		u, err := base.Parse(v)
		if err != nil || !strings.EqualFold(u.Scheme, scheme) ||
			!strings.EqualFold(withoutDefaultPort(scheme, u.Host), withoutDefaultPort(scheme, host)) {
			continue // only the same origin (§4.4), so one origin cannot purge another's
		}
		c.delete(r.Context(), keyOf(scheme, host, u.EscapedPath(), u.RawQuery))
	}
}

// fetch forwards a miss or a validation, collapsing it with identical ones when collapse is
// set. stale is the stored response to validate, or nil.
func (c *Cache) fetch(w http.ResponseWriter, r *http.Request, next http.Handler, key string, stale *Entry,
	reason string, reqCC cacheControl, collapse bool) {
	for attempt := 0; collapse && attempt < 3; attempt++ {
		f, leader := c.flights.join(key)
		if leader {
			defer c.flights.finish(key, f, flightIncomplete)
			// Another flight may have stored a response between our lookup and join. If the
			// store fails now, this request goes to the origin as it was about to anyway.
			if e, _, _ := c.lookup(r.Context(), key, r); e != nil && e != stale {
				if u, age, _ := decide(e, reqCC, c.now()); u == useFresh || u == useStale {
					c.flights.finish(key, f, flightStored)
					c.serveEntry(w, r, e, age, nil)
					if c.hooks.Lookup != nil {
						o := Hit
						if u == useStale {
							o = StaleHit
						}
						c.hooks.Lookup(LookupEvent{Outcome: o, Key: key, Status: e.Status, Bytes: int64(len(e.Body))})
					}
					return
				}
			}
			c.forward(w, r, next, key, stale, reason, reqCC, f)
			return
		}
		f.waiters.Add(1)
		timer := time.NewTimer(c.collapse)
		select {
		case <-f.done:
			timer.Stop()
			f.waiters.Add(-1)
		case <-timer.C:
			f.waiters.Add(-1)
			collapse = false
			continue
		case <-r.Context().Done():
			timer.Stop()
			f.waiters.Add(-1)
			if c.hooks.Lookup != nil {
				c.hooks.Lookup(LookupEvent{Outcome: Unavailable, Key: key, Fwd: reason, Err: r.Context().Err()})
			}
			return
		}
		switch f.result {
		case flightStored:
			e, _, err := c.lookup(r.Context(), key, r)
			if err != nil {
				c.lookupFailed(w, r, next, key, reqCC, err)
				return
			}
			if e != nil {
				if u, age, _ := decide(e, reqCC, c.now()); u == useFresh || u == useStale {
					c.serveEntry(w, r, e, age, []string{c.statusValue(e, age, "fwd="+reason, strconv.Itoa(e.Status)+"; collapsed", "")})
					if c.hooks.Lookup != nil {
						c.hooks.Lookup(LookupEvent{Outcome: Collapsed, Key: key, Fwd: reason, FwdStatus: e.Status, Status: e.Status,
							Bytes: int64(len(e.Body))})
					}
					return
				}
				stale = e
			}
			collapse = false
		case flightUncacheable:
			collapse = false
		case flightIncomplete:
			// The leader's client went away or its handler failed: try to lead or follow again.
		}
	}
	c.forward(w, r, next, key, stale, reason, reqCC, nil)
}

// forward sends the request upstream (as a GET, with the cache's own validators when stale
// is set) and streams the response to w, storing it when it may.
func (c *Cache) forward(w http.ResponseWriter, r *http.Request, next http.Handler, key string, stale *Entry,
	reason string, reqCC cacheControl, f *flight) {
	for {
		out := r.Clone(r.Context())
		out.Method = http.MethodGet // HEAD is answered from a GET, which can then be stored
		// The client's validators are answered here, against the full response.
		delete(out.Header, "If-None-Match")
		delete(out.Header, "If-Modified-Since")
		if stale != nil {
			if stale.m.etag != "" {
				out.Header["If-None-Match"] = []string{stale.m.etag}
			}
			if lm := stale.Header.Get("Last-Modified"); lm != "" {
				out.Header["If-Modified-Since"] = []string{lm}
			}
		}
		fw := &fetchWriter{
			c: c, client: w, req: r, out: out, key: key, stale: stale, reason: reason,
			reqCC: reqCC, flight: f, reqTime: c.now(), header: make(http.Header),
		}
		next.ServeHTTP(fw, out)
		if fw.finish() {
			return
		}
		stale = nil // a 304 that did not match what is stored: ask again, unconditionally
	}
}

// refresh starts a background revalidation of a stale entry for stale-while-revalidate,
// unless one is running for the key, MaxRefreshes are running, or the cache is closed.
func (c *Cache) refresh(key string, r *http.Request, stale *Entry, next http.Handler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	select {
	case c.refreshes <- struct{}{}:
	default:
		return
	}
	f, leader := c.flights.join(key)
	if !leader {
		<-c.refreshes
		return
	}
	// The refresh must outlive the client's request but not the cache, nor RefreshTimeout.
	ctx, cancel := context.WithTimeout(c.ctx, c.refreshTO)
	out := r.Clone(ctx)
	out.Method = http.MethodGet
	out.Body = http.NoBody
	for _, h := range []string{"Cache-Control", "Pragma", "If-None-Match", "If-Modified-Since", "If-Match",
		"If-Unmodified-Since", "Range", "If-Range"} {
		delete(out.Header, h)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		defer func() { <-c.refreshes }()
		defer c.flights.finish(key, f, flightIncomplete)
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				c.log.Error("cache: background revalidation panicked", "key", key, "panic", p)
			}
		}()
		c.forward(&discardWriter{h: make(http.Header)}, out, next, key, stale, "stale", cacheControl{}, f)
	}()
}

// discardWriter is the client of a background revalidation.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// passTime is how long the cache remembers that a URL's response could not be stored.
const passTime = 10 * time.Second

// passWays is the number of slots in a bucket of the hit-for-pass list: four 16-byte slots,
// one cache line.
const passWays = 4

// passSlotSize is the memory of one passSlot, for the byte budget.
const passSlotSize = 16

// passSlot remembers one URL: the hash of its key and when the memory expires.
type passSlot struct {
	hash  uint64
	until int64 // Unix nanoseconds; 0 marks an empty slot
}

// passMemo remembers, for a short while, URLs whose last response could not be stored
// (Varnish's "hit-for-pass"), so that requests for them go straight upstream instead of
// queueing behind one another to learn it again. It affects only collapsing: a response
// that has become storable is still stored.
//
// It holds a 64-bit hash of each key, never the key, so that its memory is a fixed number of
// bytes however long the URLs are (they can be tens of kilobytes each). The hash is keyed
// with a random seed per cache, so that nobody can choose URLs that collide. A collision
// makes two URLs share one mark, and a mark only decides whether a request waits for
// another one's response: at worst a request is not collapsed, or is collapsed and then
// sent upstream when the response proves unstorable. What is served is always looked up by
// the full key. The slots form a set-associative table of budget/64 buckets of passWays
// slots; a full bucket replaces the mark that expires first.
type passMemo struct {
	seed    maphash.Seed
	buckets uint64     // 0: the budget holds no bucket, and nothing is remembered
	mu      sync.Mutex // mu protects slots
	slots   []passSlot // buckets*passWays, allocated by the first mark
}

// init sizes the memo for a budget in bytes, before the cache is used.
func (p *passMemo) init(budget int64) {
	p.seed = maphash.MakeSeed()
	p.buckets = uint64(budget / (passWays * passSlotSize))
}

// bucket returns the slots where key's mark lives and the hash that identifies it there.
func (p *passMemo) bucket(key string) (b []passSlot, h uint64) {
	h = maphash.String(p.seed, key)
	i := h % p.buckets * passWays
	return p.slots[i : i+passWays : i+passWays], h
}

func (p *passMemo) recent(key string, now time.Time) bool {
	if p.buckets == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slots == nil {
		return false
	}
	b, h := p.bucket(key)
	for _, s := range b {
		if s.hash == h && s.until > now.UnixNano() {
			return true
		}
	}
	return false
}

func (p *passMemo) mark(key string, now time.Time) {
	if p.buckets == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slots == nil {
		p.slots = make([]passSlot, p.buckets*passWays)
	}
	b, h := p.bucket(key)
	victim := 0
	for i, s := range b {
		if s.hash == h && s.until != 0 {
			victim = i
			break
		}
		if s.until < b[victim].until {
			victim = i // empty (0) or expiring first
		}
	}
	b[victim] = passSlot{hash: h, until: now.Add(passTime).UnixNano()}
}

func (p *passMemo) forget(key string) {
	if p.buckets == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slots == nil {
		return
	}
	b, h := p.bucket(key)
	for i := range b {
		if b[i].hash == h {
			b[i] = passSlot{}
		}
	}
}

// bytes is the memory the slots take, which stays within the budget.
func (p *passMemo) bytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(cap(p.slots)) * passSlotSize
}

// flightGroup tracks the origin fetches in progress, by key, for request collapsing. Unlike
// singleflight, the leader's fetch belongs to the leader's request alone: if its client goes
// away, the followers are released with flightIncomplete and fetch for themselves rather than
// inheriting the cancellation.
type flightGroup struct {
	mu sync.Mutex // mu protects m
	m  map[string]*flight
}

type flightResult int

const (
	flightIncomplete  flightResult = iota // the fetch failed or was abandoned: try again
	flightStored                          // a response is stored: look it up
	flightUncacheable                     // the response may not be stored: go upstream
)

type flight struct {
	done    chan struct{}
	once    sync.Once
	result  flightResult // written before done is closed
	waiters atomic.Int32 // followers waiting, for tests and metrics
}

func (g *flightGroup) join(key string) (f *flight, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return f, false
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f = &flight{done: make(chan struct{})}
	g.m[key] = f
	return f, true
}

// finish ends a flight once; later calls do nothing.
func (g *flightGroup) finish(key string, f *flight, result flightResult) {
	if f == nil {
		return
	}
	f.once.Do(func() {
		g.mu.Lock()
		if g.m[key] == f {
			delete(g.m, key)
		}
		g.mu.Unlock()
		f.result = result
		close(f.done)
	})
}
