package ratelimit

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/sluiceproxy/sluice"
)

// A Limit is one token-bucket limit: Rate requests per second with bursts of up to Burst,
// counted per key.
type Limit struct {
	// Name names the limit's policy in the RateLimit-Policy and RateLimit header fields.
	// Names must be unique within a Limiter; an empty Name is "default".
	Name string

	// Rate is the sustained rate in requests per second; it must be > 0. Use rate.Every to
	// write "one per 10s" as a Rate.
	Rate rate.Limit

	// Burst is the number of requests a key that has been idle may send at once; ≥ 1.
	Burst int

	// By says what requests are counted by. The zero value counts by client IP.
	By By

	// MaxKeys caps the number of keys that have a bucket of their own. Zero means 100,000:
	// a few tens of megabytes.
	MaxKeys int

	// Store keeps the buckets. Nil means a [MemoryStore] with Rate, Burst and MaxKeys.
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

	// Now returns the current time. Nil means time.Now; tests set a fake clock.
	Now func() time.Time
}

// Limiter is rate-limiting middleware. It is safe for concurrent use.
type Limiter struct {
	limits   []limit
	maxDelay time.Duration
	now      func() time.Time
	policy   []string // the RateLimit-Policy field value, built once
}

type limit struct {
	keyer
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
	l := &Limiter{maxDelay: opts.MaxDelay, now: opts.Now}
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
		if lim.Rate <= 0 || lim.Burst < 1 {
			return nil, fmt.Errorf("ratelimit: Limits[%d] needs Rate > 0 and Burst ≥ 1 for its headers, got %v and %d", i, float64(lim.Rate), lim.Burst)
		}
		sf := `"` + name + `"`
		window := int64(float64(lim.Burst)/float64(lim.Rate) + 0.999999999)
		policy := sf + ";q=" + strconv.Itoa(lim.Burst) + ";w=" + strconv.FormatInt(max(window, 1), 10)
		policies = append(policies, policy)
		mem, _ := store.(*MemoryStore)
		l.limits = append(l.limits, limit{
			keyer: keyer{by: lim.By, trusted: opts.TrustedProxies, v4: v4, v6: v6},
			name:  sf, store: store, policy: policy, mem: mem,
			perToken: time.Duration(float64(time.Second) / float64(lim.Rate)),
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
	delay  time.Duration // the longest wait any limit asks for
	retry  time.Duration // when refused, the longest RetryAfter of the refusing limits
	inline [maxInline]slot
	extra  []slot // the slots of limits past maxInline
}

// slot is one limit's part of a decision.
type slot struct {
	consulted bool // the limit applied and no earlier limit refused
	key       Key  // for Cancel; a MemoryStore finds the bucket from d and is not told
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
// are not consulted, so they take nothing and report nothing.
func (l *Limiter) decide(r *http.Request, now time.Time, d *decision) {
	if n := len(l.limits); n > maxInline {
		d.extra = make([]slot, n-maxInline)
	}
	d.ok = true
	for i := range l.limits {
		lim := &l.limits[i]
		var k Key
		if !lim.keyInto(r, &k) {
			continue
		}
		s := d.slot(i)
		s.consulted = true
		if lim.mem != nil {
			lim.mem.take(k, now, l.maxDelay, &s.d)
		} else {
			s.key = k
			s.d = lim.store.Take(k, now, l.maxDelay)
		}
		if !s.d.OK {
			d.ok = false
			d.retry = s.d.RetryAfter
			for j := range i {
				if p := d.slot(j); p.consulted && p.d.OK {
					l.limits[j].store.Cancel(p.key, p.d, now)
					// The token went back.
					p.d.Remaining++
					p.d.Reset = max(0, p.d.Reset-l.limits[j].perToken)
				}
			}
			return
		}
		d.delay = max(d.delay, s.d.Delay)
	}
}

// cancel gives back every token d holds.
func (l *Limiter) cancel(d *decision, now time.Time) {
	for i := range l.limits {
		if s := d.slot(i); s.consulted && s.d.OK {
			l.limits[i].store.Cancel(s.key, s.d, now)
		}
	}
}

// Policy returns the RateLimit-Policy field value the Limiter sends with every response.
func (l *Limiter) Policy() string { return l.policy[0] }

// Handler returns middleware that passes the requests the limits admit to next, holds those
// that must wait (with MaxDelay), and answers the rest with 429 Too Many Requests.
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
		if !d.ok {
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
				l.cancel(&d, l.now())
				http.Error(w, "ratelimit: request cancelled while queued", http.StatusServiceUnavailable)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
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
