package ratelimit

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"strings"
	"sync"

	"github.com/sluiceproxy/sluice"
)

// ConcurrencyOptions configures a [Concurrency] limiter.
type ConcurrencyOptions struct {
	// Max is the most requests in flight per key; ≥ 1.
	Max int

	// By says what requests are counted by. The zero value counts by client IP; [Global]
	// caps a whole pool, such as every request to one backend service.
	By By

	// TrustedProxies, IPv4Prefix and IPv6Prefix find and group client IPs as in [Options].
	TrustedProxies         *sluice.TrustedProxies
	IPv4Prefix, IPv6Prefix int

	// Hooks receive the limiter's admissions (only Hooks.Admission applies); see [Hooks].
	Hooks Hooks
}

// Concurrency is middleware that caps the requests in flight per key, like NGINX
// limit_conn. A request over the cap is refused at once: 429 Too Many Requests when requests
// are counted per client, 503 Service Unavailable for a [Global] pool, both with
// Retry-After: 1. Memory is bounded by the requests in flight: a key's counter is dropped
// when its last request finishes. It is safe for concurrent use.
type Concurrency struct {
	keyer
	max         int
	status      int
	onAdmission func(AdmissionEvent)
	seed        maphash.Seed
	shards      [numShards]concShard
}

type concShard struct {
	mu       sync.Mutex // mu protects inFlight
	inFlight map[Key]int
	_        [64]byte
}

// NewConcurrency returns a Concurrency limiter for opts. The error names the field that is
// wrong.
func NewConcurrency(opts ConcurrencyOptions) (*Concurrency, error) {
	if opts.Max < 1 {
		return nil, fmt.Errorf("ratelimit: Max must be ≥ 1, got %d", opts.Max)
	}
	v4, v6, err := prefixes(opts.IPv4Prefix, opts.IPv6Prefix)
	if err != nil {
		return nil, err
	}
	if err := validBy(opts.By); err != nil {
		return nil, fmt.Errorf("ratelimit: By: %w", err)
	}
	c := &Concurrency{
		keyer:       keyer{by: opts.By, trusted: opts.TrustedProxies, v4: v4, v6: v6},
		max:         opts.Max,
		status:      http.StatusTooManyRequests,
		seed:        maphash.MakeSeed(),
		onAdmission: opts.Hooks.Admission,
	}
	if opts.By.kind == byGlobal {
		c.status = http.StatusServiceUnavailable
	}
	for i := range c.shards {
		c.shards[i].inFlight = map[Key]int{}
	}
	return c, nil
}

// acquire counts a request for k in flight and reports true, or reports false when k already
// has Max in flight; n is the number in flight for k afterwards. Each true return must be
// matched by one release with the same key.
func (c *Concurrency) acquire(k Key) (ok bool, n int) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n = sh.inFlight[k]
	if n >= c.max {
		return false, n
	}
	if n == 0 {
		k.Str = strings.Clone(k.Str)
	}
	sh.inFlight[k] = n + 1
	return true, n + 1
}

// release ends one request for k counted by acquire.
func (c *Concurrency) release(k Key) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n := sh.inFlight[k]; n <= 1 {
		delete(sh.inFlight, k)
	} else {
		sh.inFlight[k] = n - 1
	}
}

// InFlight returns the number of requests in flight for r's key.
func (c *Concurrency) InFlight(r *http.Request) int {
	k, ok := c.key(r)
	if !ok {
		return 0
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.inFlight[k]
}

func (c *Concurrency) shard(k Key) *concShard {
	var h uint64
	if k.Str != "" {
		h = maphash.String(c.seed, k.Str)
	} else {
		a := k.Addr.As16()
		h = maphash.Bytes(c.seed, a[:])
	}
	return &c.shards[h%numShards]
}

// Handler returns middleware that passes requests to next while their key has fewer than Max
// requests in flight.
func (c *Concurrency) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, ok := c.key(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		ok, n := c.acquire(k)
		if c.onAdmission != nil {
			c.onAdmission(AdmissionEvent{Admitted: ok, InFlight: n, Key: k})
		}
		if !ok {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "ratelimit: too many requests in flight", c.status)
			return
		}
		defer c.release(k)
		next.ServeHTTP(w, r)
	})
}
