package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/sluiceproxy/sluice"
)

// benchLimiter returns a Limiter whose limits admit everything the benchmarks send, so that
// they measure the decision, not refusals.
func benchLimiter(tb testing.TB, limits ...Limit) *Limiter {
	if len(limits) == 0 {
		limits = []Limit{{Rate: 1e12, Burst: 1 << 30}}
	}
	l, err := New(Options{Limits: limits})
	require.NoError(tb, err)
	return l
}

func ipRequest(i int) *http.Request {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1234).String()
	return r
}

func TestDecisionDoesNotAllocate(t *testing.T) {
	login := ByFunc(func(r *http.Request) (string, bool) { return "login", r.URL.Path == "/" })
	for name, limits := range map[string][]Limit{
		"client ip":     {{Rate: 1e12, Burst: 1 << 30}},
		"ip and header": {{Name: "ip", Rate: 1e12, Burst: 1 << 30}, {Name: "key", Rate: 1e12, Burst: 1 << 30, By: ByHeader("X-Api-Key")}},
		"ip and route":  {{Name: "ip", Rate: 1e12, Burst: 1 << 30}, {Name: "route", Rate: 1e12, Burst: 1 << 30, By: login}},
		"cookie":        {{Rate: 1e12, Burst: 1 << 30, By: ByCookie("sid")}},
		"refused by second limit": {{Name: "ip", Rate: 1e12, Burst: 1 << 30},
			{Name: "tight", Rate: 1e-9, Burst: 1, By: Global()}},
	} {
		t.Run(name, func(t *testing.T) {
			l := benchLimiter(t, limits...)
			r := ipRequest(1)
			r.Header.Set("X-Api-Key", "key-1")
			r.Header.Set("Cookie", "a=b; sid=s1")
			now := time.Now()
			var d decision
			l.decide(r, now, &d) // the key's bucket exists from here on
			allocs := testing.AllocsPerRun(1000, func() {
				var d decision
				l.decide(r, now, &d)
			})
			assert.Zero(t, allocs, "a decision for an existing key must not allocate")
		})
	}
}

// BenchmarkDecision measures one rate-limit decision for keys that already have buckets,
// from parallel goroutines: key extraction (client IP from RemoteAddr, no proxies), the
// sharded LRU lookup and the token bucket. "keys=1" is every goroutine hitting one key, the
// worst case for lock contention; the baseline is a bare rate.Limiter.AllowN on one shared
// bucket. Like x/time/rate's own BenchmarkAllowN, the time is taken once outside the loop:
// the decision takes it as an argument. BenchmarkHandler measures the whole request,
// clock read included.
func BenchmarkDecision(b *testing.B) {
	b.Run("baseline=rate.Limiter.AllowN", func(b *testing.B) {
		lim := rate.NewLimiter(1e12, 1<<30)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			now := time.Now()
			for pb.Next() {
				lim.AllowN(now, 1)
			}
		})
	})
	for _, keys := range []int{1, 10, 1000, 10000} {
		b.Run("keys="+strconv.Itoa(keys), func(b *testing.B) {
			l := benchLimiter(b)
			reqs := make([]*http.Request, keys)
			for i := range reqs {
				reqs[i] = ipRequest(i)
				var d decision
				l.decide(reqs[i], time.Now(), &d)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(7919))
				now := time.Now()
				for pb.Next() {
					i++
					var d decision
					l.decide(reqs[i%keys], now, &d)
					if !d.ok {
						b.Error("refused")
					}
				}
			})
		})
	}
}

// BenchmarkHandler measures the whole middleware around a no-op handler, with each goroutine
// a client of its own: the clock read, the client IP, the decision and the RateLimit-Policy
// and RateLimit header fields. The baseline is a handler that asks one shared rate.Limiter
// with Allow, which reads the clock too, and writes no headers.
func BenchmarkHandler(b *testing.B) {
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	lim := rate.NewLimiter(1e12, 1<<30)
	baseline := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !lim.Allow() {
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		noop.ServeHTTP(w, r)
	})
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"baseline=rate.Limiter.Allow", baseline},
		{"ratelimit.Limiter", benchLimiter(b).Handler(noop)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := ipRequest(int(next.Add(1)))
				w := httptest.NewRecorder()
				for pb.Next() {
					clear(w.Header())
					bc.h.ServeHTTP(w, r)
				}
			})
		})
	}
}

func FuzzCookieValue(f *testing.F) {
	f.Add("sid=abc", "sid")
	f.Add(`a=1; sid="quoted"; b=2`, "sid")
	f.Add("sid=bad\\value; sid=good", "sid")
	f.Add(" sid = x ;sid=y", "sid")
	f.Add("sid", "sid")
	f.Add(`sid="`, "sid")
	f.Add("x=1;;;sid=;sid=2", "sid")
	f.Fuzz(func(t *testing.T, line, name string) {
		if !validCookieName(name) {
			return
		}
		got, found := cookieValue([]string{line}, name)
		if found && !validCookieValue(got) {
			t.Fatalf("cookieValue(%q, %q) = %q: not a valid cookie value", line, name, got)
		}
		r := &http.Request{Header: http.Header{"Cookie": {line}}}
		if c, err := r.Cookie(name); err == nil {
			if !found || got != c.Value {
				t.Fatalf("cookieValue(%q, %q) = %q, %v; net/http finds %q", line, name, got, found, c.Value)
			}
		}
	})
}

func FuzzKeyFromHeader(f *testing.F) {
	f.Add("k1", "1.2.3.4:5")
	f.Add("  spaced  ", "[2001:db8::1%eth0]:80")
	f.Add(string(make([]byte, 200)), "garbage")
	f.Fuzz(func(t *testing.T, value, remote string) {
		r := &http.Request{Header: http.Header{"X-Api-Key": {value}}, RemoteAddr: remote}
		hk := keyer{by: ByHeader("X-Api-Key"), v4: 32, v6: 64}
		k, ok := hk.key(r)
		if ok && (k.Str == "" || len(k.Str) > maxKeyLen+1) {
			t.Fatalf("header key %q for %q: empty or unbounded", k.Str, value)
		}
		ik := keyer{by: ByClientIP(), v4: 24, v6: 48}
		k, ok = ik.key(r)
		if !ok || k.Str != "" || k.Addr.Zone() != "" {
			t.Fatalf("client-IP key %v for %q", k, remote)
		}
		if k.Addr.IsValid() {
			p, _ := k.Addr.Prefix(map[bool]int{true: 24, false: 48}[k.Addr.Is4()])
			if p.Addr() != k.Addr {
				t.Fatalf("client-IP key %v for %q is not masked", k.Addr, remote)
			}
		}
	})
}

// FuzzBucketMatchesRateLimiter holds MemoryStore's token arithmetic to x/time/rate's: for
// any rate and burst and any sequence of takes at advancing times (with and without a
// MaxDelay, some given back at once as when another limit refuses), the store and a
// rate.Limiter admit the same requests, ask for the same waits and hold the same tokens. Both
// count tokens in floating point and rate.Limiter takes a refused token and puts it back, so
// answers may differ by rounding: a disagreement counts only when it is not at the boundary.
func FuzzBucketMatchesRateLimiter(f *testing.F) {
	f.Add(uint32(1000), uint8(3), []byte{0, 0, 0, 0, 32, 32, 16, 200, 0, 0, 0, 0})
	f.Add(uint32(100), uint8(1), []byte{1, 1, 1, 1, 5, 9, 13, 64, 2, 2, 2, 3})
	f.Add(uint32(333), uint8(7), []byte{3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 0, 0, 1, 1, 2, 2})
	f.Add(uint32(9_999_999), uint8(49), []byte{255, 254, 253, 252, 0, 1, 2, 3})
	f.Add(uint32(1), uint8(0), []byte{0, 1, 2, 3, 252, 253, 254, 255})
	f.Fuzz(func(t *testing.T, milli uint32, burst uint8, steps []byte) {
		r := rate.Limit(float64(1+milli%10_000_000) / 1000) // 0.001 to 10,000 a second
		b := 1 + int(burst%50)
		s, err := NewMemoryStore(float64(r), b, 1)
		require.NoError(t, err)
		lim := rate.NewLimiter(r, b)
		perToken := time.Duration(float64(time.Second) / float64(r))
		const tolerance = time.Microsecond
		key := Key{Str: "k"}
		now := time.Unix(1_700_000_000, 0)
		for i, step := range steps {
			now = now.Add(time.Duration(step>>2) * perToken / 16) // up to about 4 tokens
			var maxDelay time.Duration
			if step&1 != 0 {
				maxDelay = 2 * perToken
			}
			got, err := s.Take(t.Context(), key, now, maxDelay)
			require.NoError(t, err, "MemoryStore never fails")
			res := lim.ReserveN(now, 1)
			wait := res.DelayFrom(now)
			wantOK := wait <= maxDelay
			if !wantOK {
				res.CancelAt(now)
			}
			if got.OK != wantOK {
				edge := got.Delay
				if !got.OK {
					edge = got.RetryAfter
				}
				if (edge-maxDelay).Abs() > tolerance || (wait-maxDelay).Abs() > tolerance {
					t.Fatalf("step %d (%v after start): store OK=%v (delay %v, retry %v), rate.Limiter OK=%v (wait %v), MaxDelay %v",
						i, now.Sub(time.Unix(1_700_000_000, 0)), got.OK, got.Delay, got.RetryAfter, wantOK, wait, maxDelay)
				}
				return // rounding put them on opposite sides of the boundary; they now differ by a token
			}
			if got.OK && (got.Delay-wait).Abs() > tolerance {
				t.Fatalf("step %d: store delay %v, rate.Limiter %v", i, got.Delay, wait)
			}
			if !got.OK && (got.RetryAfter-wait).Abs() > tolerance {
				t.Fatalf("step %d: store retry after %v, rate.Limiter %v", i, got.RetryAfter, wait)
			}
			if left := lim.TokensAt(now); got.OK && got.Remaining != max(0, int(left)) && left-float64(int(left)) > 1e-6 {
				t.Fatalf("step %d: store reports %d left, rate.Limiter holds %v", i, got.Remaining, left)
			}
			if got.OK && step&2 != 0 {
				require.NoError(t, s.Cancel(t.Context(), key, got, now))
				res.CancelAt(now)
			}
			k := s.fold(key)
			bk, ok := s.shards[s.shard(k)].lru.Peek(k)
			require.True(t, ok, "the one key has a bucket")
			tokens, want := s.tokensAt(bk, now.UnixNano()), lim.TokensAt(now)
			if d := tokens - want; d > 1e-6 || d < -1e-6 {
				t.Fatalf("step %d: store holds %v tokens, rate.Limiter %v", i, tokens, want)
			}
		}
	})
}

// FuzzPeerIPv4 holds the IPv4 fast path of client-IP keys to sluice.PeerAddr: whatever it
// accepts, it must return the address PeerAddr finds.
func FuzzPeerIPv4(f *testing.F) {
	for _, s := range []string{"192.0.2.1:4242", "0.0.0.0:0", "255.255.255.255:65535", "1.2.3.4:65536",
		"01.2.3.4:1", "1.2.3:4", "1.2.3.4.5:6", "1.2.3.4:", "1.2.3.4:080", "1.2.3.4:123456", "[1.2.3.4]:5",
		"1.2.3.4:5]", "::ffff:1.2.3.4:5", "256.1.1.1:1", "1..2.3:4", "1.2.3.4", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, remote string) {
		got, ok := peerIPv4(remote)
		if !ok {
			return
		}
		if want := sluice.PeerAddr(&http.Request{RemoteAddr: remote}); got != want {
			t.Fatalf("peerIPv4(%q) = %v; sluice.PeerAddr finds %v", remote, got, want)
		}
		if _, err := netip.ParseAddrPort(remote); err != nil {
			t.Fatalf("peerIPv4 accepts %q, which netip.ParseAddrPort refuses: %v", remote, err)
		}
	})
}

func TestPeerIPv4TakesCommonAddresses(t *testing.T) {
	for _, s := range []string{"192.0.2.1:4242", "10.0.0.255:1", "0.0.0.0:0", "255.255.255.255:65535"} {
		a, ok := peerIPv4(s)
		assert.True(t, ok, "%q should take the fast path", s)
		assert.Equal(t, netip.MustParseAddrPort(s).Addr(), a)
	}
	for _, s := range []string{"[2001:db8::1]:80", "1.2.3.4", "01.2.3.4:1", "1.2.3.4:65536", "1.2.3.4.5:6"} {
		_, ok := peerIPv4(s)
		assert.False(t, ok, "%q must go the general way", s)
	}
}

// A Decision hook adds no allocation to a request through the Handler.
func TestDecisionHookDoesNotAllocate(t *testing.T) {
	measure := func(h Hooks) float64 {
		l, err := New(Options{Limits: []Limit{{Rate: 1e12, Burst: 1 << 30}}, Hooks: h})
		require.NoError(t, err)
		handler := l.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		r := ipRequest(1)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return testing.AllocsPerRun(1000, func() {
			clear(w.Header())
			handler.ServeHTTP(w, r)
		})
	}
	without := measure(Hooks{})
	with := measure(Hooks{Decision: func(DecisionEvent) {}})
	assert.Equal(t, without, with, "a hook costs no allocation")
}
