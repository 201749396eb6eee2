package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// A Limit is one token-bucket limit: Rate requests per second with bursts of up to Burst,
// counted per key.
type Limit struct {
	// Name names the limit's policy in the RateLimit-Policy and RateLimit header fields.
	// Names must be unique within a Limiter; an empty Name is "default".
	Name string

	// Rate is the sustained rate in requests per second; it must be > 0. It may be less
	// than one: 0.1 is one request every ten seconds, 1.0/60 one a minute. math.Inf(1)
	// means no limit: every request is admitted and reported as leaving a full bucket.
	Rate float64

	// Burst is the number of requests a key that has been idle may send at once; ≥ 1.
	Burst int

	// By says what requests are counted by. The zero value counts by client IP.
	By By

	// MaxKeys caps the number of keys that have a bucket of their own. Zero means 100,000:
	// a few tens of megabytes.
	MaxKeys int

	// Store keeps the buckets. Nil means a [MemoryStore] with Rate, Burst and MaxKeys.
	// Another Store must be made for the same Rate and Burst: the Limiter uses them only for
	// the RateLimit-Policy field and does not pass them to the Store.
	Store Store
}

// Options configures a [Limiter].
type Options struct {
	// Limits are the limits every request must pass; at least one. A request is admitted
	// only when each Limit that applies to it grants a token.
	Limits []Limit

	// TrustedProxies are the proxies whose X-Forwarded-For and Forwarded headers are
	// believed when finding the client IP. Nil trusts nobody: the key is the TCP peer.
	TrustedProxies *sluice.TrustedProxies

	// IPv4Prefix and IPv6Prefix group client addresses into networks before counting them.
	// Zero means 32 (each IPv4 address alone) and 64 (each IPv6 /64, which is what one
	// subscriber is usually given, so rotating addresses inside it gains nothing).
	IPv4Prefix, IPv6Prefix int

	// MaxDelay, when positive, holds a request whose token is due within MaxDelay until it
	// is due instead of refusing it, like NGINX limit_req without nodelay. Zero refuses every
	// request that has no token now.
	MaxDelay time.Duration

	// FailClosed says what to do with a request when a Limit's Store fails (Take returns an
	// error). False, the default, fails open: that Limit does not count the request, which
	// is admitted if the other Limits admit it. True fails closed: the request is refused
	// with 503 Service Unavailable and Retry-After: 1, never 429, since the client did
	// nothing wrong. A failure is logged either way; see "When the store fails" in the
	// package documentation. MemoryStore never fails.
	FailClosed bool

	// Logger receives store failures, at most one line a second (with the number of
	// failures left out since the last line), so that an outage of a shared store does not
	// flood the log. Nil means slog.Default().
	Logger *slog.Logger

	// Now returns the current time. Nil means time.Now; tests set a fake clock.
	Now func() time.Time

	// Hooks receive the Limiter's decisions (only Hooks.Decision applies); see [Hooks].
	Hooks Hooks
}

// Limiter is rate-limiting middleware. It is safe for concurrent use.
type Limiter struct {
	limits     []limit
	maxDelay   time.Duration
	failClosed bool
	logger     *slog.Logger // nil: slog.Default() when a line is written
	now        func() time.Time
	policy     []string // the RateLimit-Policy field value, built once
	onDecision func(DecisionEvent)

	// logNext is when the next store failure may be logged (Unix nanoseconds); logDropped
	// counts the failures not logged since the last line.
	logNext, logDropped atomic.Int64
}

// logEvery is the least time between two log lines about store failures.
const logEvery = time.Second

type limit struct {
	keyer
	plain    string // the policy name, for logs
	name     string // the policy name as an sf-string, quotes included
	store    Store
	mem      *MemoryStore // store, when it is a MemoryStore: called without the interface
	policy   string
	perToken time.Duration // how long the bucket takes to refill one token
}

// New returns a Limiter for opts. The error names the field that is wrong.
func New(opts Options) (*Limiter, error) {
	if len(opts.Limits) == 0 {
		return nil, fmt.Errorf("ratelimit: Limits must hold at least one Limit")
	}
	v4, v6, err := prefixes(opts.IPv4Prefix, opts.IPv6Prefix)
	if err != nil {
		return nil, err
	}
	if opts.MaxDelay < 0 {
		return nil, fmt.Errorf("ratelimit: MaxDelay must be ≥ 0, got %v", opts.MaxDelay)
	}
	l := &Limiter{maxDelay: opts.MaxDelay, failClosed: opts.FailClosed, logger: opts.Logger, now: opts.Now,
		onDecision: opts.Hooks.Decision}
	if l.now == nil {
		l.now = time.Now
	}
	seen := map[string]bool{}
	var policies []string
	for i, lim := range opts.Limits {
		name := lim.Name
		if name == "" {
			name = "default"
		}
		if seen[name] {
			return nil, fmt.Errorf("ratelimit: Limits[%d].Name %q is used twice", i, name)
		}
		seen[name] = true
		if !validPolicyName(name) {
			return nil, fmt.Errorf("ratelimit: Limits[%d].Name %q must be printable ASCII", i, name)
		}
		if err := validBy(lim.By); err != nil {
			return nil, fmt.Errorf("ratelimit: Limits[%d].By: %w", i, err)
		}
		if lim.MaxKeys == 0 {
			lim.MaxKeys = 100_000
		}
		store := lim.Store
		if store == nil {
			store, err = NewMemoryStore(lim.Rate, lim.Burst, lim.MaxKeys)
			if err != nil {
				return nil, fmt.Errorf("%w (Limits[%d])", err, i)
			}
		}
		if !(lim.Rate > 0) || lim.Burst < 1 { // NaN too
			return nil, fmt.Errorf("ratelimit: Limits[%d] needs Rate > 0 and Burst ≥ 1 for its headers, got %v and %d", i, lim.Rate, lim.Burst)
		}
		sf := `"` + name + `"`
		window := int64(float64(lim.Burst)/lim.Rate + 0.999999999)
		policy := sf + ";q=" + strconv.Itoa(lim.Burst) + ";w=" + strconv.FormatInt(max(window, 1), 10)
		policies = append(policies, policy)
		mem, _ := store.(*MemoryStore)
		l.limits = append(l.limits, limit{
			keyer: keyer{by: lim.By, trusted: opts.TrustedProxies, v4: v4, v6: v6},
			plain: name, name: sf, store: store, policy: policy, mem: mem,
			perToken: time.Duration(float64(time.Second) / lim.Rate),
		})
	}
	l.policy = []string{strings.Join(policies, ", ")}
	return l, nil
}

func prefixes(v4, v6 int) (int, int, error) {
	if v4 == 0 {
		v4 = 32
	}
	if v6 == 0 {
		v6 = 64
	}
	if v4 < 1 || v4 > 32 {
		return 0, 0, fmt.Errorf("ratelimit: IPv4Prefix must be in 1..32, got %d", v4)
	}
	if v6 < 1 || v6 > 128 {
		return 0, 0, fmt.Errorf("ratelimit: IPv6Prefix must be in 1..128, got %d", v6)
	}
	return v4, v6, nil
}

func validBy(b By) error {
	switch b.kind {
	case byHeader:
		if b.name == "" || strings.ContainsAny(b.name, " :\r\n") {
			return fmt.Errorf("header name %q is not a valid field name", b.name)
		}
	case byCookie:
		if !validCookieName(b.name) {
			return fmt.Errorf("cookie name %q is not a valid cookie name", b.name)
		}
	case byFunc:
		if b.fn == nil {
			return fmt.Errorf("ByFunc needs a non-nil func")
		}
	}
	return nil
}

// validPolicyName reports whether name can be written as a structured-field string without
// escapes.
func validPolicyName(name string) bool {
	for i := 0; i < len(name); i++ {
		if b := name[i]; b < 0x20 || b >= 0x7f || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// maxInline is how many limits a decision tracks without allocating.
const maxInline = 4

// decision is the outcome of every limit for one request. It holds no pointer into itself, so
// that it can live on the stack.
type decision struct {
	ok     bool
	failed bool          // refused because a store failed and FailClosed is set
	gone   bool          // refused because the client went away while a store decided
	delay  time.Duration // the longest wait any limit asks for
	retry  time.Duration // when refused, the longest RetryAfter of the refusing limits
	at     int           // the limit that refused, failed or asked for the delay; -1 for none
	err    error         // the first store error
	inline [maxInline]slot
	extra  []slot // the slots of limits past maxInline
}

// slot is one limit's part of a decision.
type slot struct {
	consulted bool // the limit applied, its store answered and no earlier limit refused
	key       Key
	d         Decision
}

func (d *decision) slot(i int) *slot {
	if i < maxInline {
		return &d.inline[i]
	}
	return &d.extra[i-maxInline]
}

// decide asks every limit about r at now. A limit that refuses undoes the tokens the earlier
// ones took, so that one limit's refusal does not use up another's budget; the later limits
// are not consulted, so they take nothing and report nothing. A limit whose store fails is
// skipped (fail open) or refuses (FailClosed).
func (l *Limiter) decide(r *http.Request, now time.Time, d *decision) {
	if n := len(l.limits); n > maxInline {
		d.extra = make([]slot, n-maxInline)
	}
	d.ok = true
	d.at = -1
	for i := range l.limits {
		lim := &l.limits[i]
		s := d.slot(i)
		if !lim.keyInto(r, &s.key) {
			continue
		}
		if lim.mem != nil {
			lim.mem.take(s.key, now, l.maxDelay, &s.d) // cannot fail
		} else {
			var err error
			if s.d, err = lim.store.Take(r.Context(), s.key, now, l.maxDelay); err != nil {
				if d.err == nil {
					d.at, d.err = i, err
				}
				if !l.storeFailed(r.Context(), d, lim, now, err) {
					s.d = Decision{}
					continue // fail open: this limit does not count the request
				}
				d.ok = false
				l.giveBack(r.Context(), d, i, now)
				return
			}
		}
		s.consulted = true
		if !s.d.OK {
			d.ok = false
			d.at = i
			d.retry = s.d.RetryAfter
			l.giveBack(r.Context(), d, i, now)
			return
		}
		if s.d.Delay > d.delay && d.err == nil {
			d.at = i
		}
		d.delay = max(d.delay, s.d.Delay)
	}
}

// storeFailed handles an error from lim's Take and reports whether the request is refused.
// A request whose client went away is refused, and its error is not the store's fault; any
// other error is logged, and refuses the request only with FailClosed.
func (l *Limiter) storeFailed(ctx context.Context, d *decision, lim *limit, now time.Time, err error) bool {
	if ctx.Err() != nil {
		d.gone = true
		return true
	}
	d.failed = l.failClosed
	action := "admitted"
	if l.failClosed {
		action = "refused"
	}
	l.logStoreError(ctx, now, lim, "Take", err, action)
	return l.failClosed
}

// giveBack cancels the tokens the limits before the i-th took for a request that will not be
// served, and corrects what the RateLimit field reports for them.
func (l *Limiter) giveBack(ctx context.Context, d *decision, i int, now time.Time) {
	for j := range i {
		if p := d.slot(j); p.consulted && p.d.OK {
			if l.cancelSlot(ctx, j, p, now) {
				p.d.Remaining++ // the token went back
				p.d.Reset = max(0, p.d.Reset-l.limits[j].perToken)
			}
		}
	}
}

// cancel gives back every token d holds.
func (l *Limiter) cancel(ctx context.Context, d *decision, now time.Time) {
	for i := range l.limits {
		if s := d.slot(i); s.consulted && s.d.OK {
			l.cancelSlot(ctx, i, s, now)
		}
	}
}

// cancelSlot gives back the token of the i-th limit and reports whether it went back. A
// client that has gone must not stop its tokens from going back, so a done ctx loses its
// cancellation (that allocates, but only then). A failure is only logged.
func (l *Limiter) cancelSlot(ctx context.Context, i int, s *slot, now time.Time) bool {
	lim := &l.limits[i]
	if ctx.Err() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	if err := lim.store.Cancel(ctx, s.key, s.d, now); err != nil {
		l.logStoreError(ctx, now, lim, "Cancel", err, "token not given back")
		return false
	}
	return true
}

// logStoreError logs a store failure unless one was logged less than logEvery ago, in which
// case it is only counted, and the next line reports how many were left out. A clock that
// went back by more than logEvery does not silence the log.
func (l *Limiter) logStoreError(ctx context.Context, now time.Time, lim *limit, op string, err error, action string) {
	t := now.UnixNano()
	next := l.logNext.Load()
	if (t < next && next-t <= int64(logEvery)) || !l.logNext.CompareAndSwap(next, t+int64(logEvery)) {
		l.logDropped.Add(1)
		return
	}
	logger := l.logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.LogAttrs(ctx, slog.LevelError, "ratelimit: store failed",
		slog.String("limit", lim.plain), slog.String("op", op), slog.Any("err", err),
		slog.String("action", action), slog.Int64("unlogged", l.logDropped.Swap(0)))
}

// Policy returns the RateLimit-Policy field value the Limiter sends with every response.
func (l *Limiter) Policy() string { return l.policy[0] }

// Handler returns middleware that passes the requests the limits admit to next, holds those
// that must wait (with MaxDelay), and answers the rest with 429 Too Many Requests, or 503
// Service Unavailable when a store failed and FailClosed is set.
func (l *Limiter) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := l.now()
		var d decision
		l.decide(r, now, &d)
		h := w.Header()
		h["Ratelimit-Policy"] = l.policy
		if v := l.rateLimitField(&d); v != "" {
			h["Ratelimit"] = []string{v}
		}
		if l.onDecision != nil {
			l.report(&d)
		}
		switch {
		case d.gone: // nobody reads this answer, but access logs do
			http.Error(w, "ratelimit: request cancelled", http.StatusServiceUnavailable)
			return
		case d.failed:
			h.Set("Retry-After", "1")
			http.Error(w, "ratelimit: rate limit store unavailable", http.StatusServiceUnavailable)
			return
		case !d.ok:
			h.Set("Retry-After", strconv.FormatInt(ceilSeconds(d.retry), 10))
			http.Error(w, "ratelimit: too many requests", http.StatusTooManyRequests)
			return
		}
		if d.delay > 0 {
			t := time.NewTimer(d.delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				l.cancel(r.Context(), &d, l.now())
				http.Error(w, "ratelimit: request cancelled while queued", http.StatusServiceUnavailable)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// report calls Hooks.Decision, which the caller has checked is set, for d.
func (l *Limiter) report(d *decision) {
	ev := DecisionEvent{Limit: d.at, Err: d.err}
	switch {
	case d.gone:
		ev.Result = Cancelled
	case d.failed:
		ev.Result = FailedClosed
	case !d.ok:
		ev.Result, ev.RetryAfter = Limited, d.retry
	case d.delay > 0:
		ev.Result, ev.Delay = Delayed, d.delay
	default:
		ev.Result = Allowed
	}
	if d.at >= 0 {
		ev.Name, ev.Key = l.limits[d.at].plain, d.slot(d.at).key
	}
	l.onDecision(ev)
}

// rateLimitField formats the RateLimit field: one member per limit that applied. It builds
// the value in a buffer on the stack, so that the string is the only allocation.
func (l *Limiter) rateLimitField(d *decision) string {
	var buf [128]byte
	b := buf[:0]
	for i := range l.limits {
		s := d.slot(i)
		if !s.consulted {
			continue
		}
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, l.limits[i].name...)
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, int64(s.d.Remaining), 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(s.d.Reset), 10)
	}
	return string(b)
}

// ceilSeconds rounds d up to whole seconds, as the delay-seconds of Retry-After and the
// RateLimit field are written; a positive wait never rounds to zero.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++ // adding a second less a nanosecond first would overflow near the longest Duration
	}
	return s
}
