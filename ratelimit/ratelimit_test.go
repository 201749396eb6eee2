package ratelimit_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"net/netip"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/ratelimit"
)

// clock is a fake clock safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

// call sends one request through h from remote with the given headers.
func call(h http.Handler, remote, path string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "http://example.test"+path, nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestRateAndBurstOverRealServer(t *testing.T) {
	clk := newClock()
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Rate: 1, Burst: 3}},
		Now:    clk.Now,
	})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(l.Handler(ok))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	client := srv.Client()

	type want struct {
		advance    time.Duration
		status     int
		rateLimit  string
		retryAfter string
	}
	steps := []want{
		{0, 200, `"default";r=2;t=1`, ""},
		{0, 200, `"default";r=1;t=2`, ""},
		{0, 200, `"default";r=0;t=3`, ""},
		{0, 429, `"default";r=0;t=3`, "1"},
		{500 * time.Millisecond, 429, `"default";r=0;t=3`, "1"}, // half a token: still refused
		{500 * time.Millisecond, 200, `"default";r=0;t=3`, ""},  // one token refilled
		{0, 429, `"default";r=0;t=3`, "1"},
		{10 * time.Second, 200, `"default";r=2;t=1`, ""}, // idle: the burst is back, not more
		{0, 200, `"default";r=1;t=2`, ""},
		{0, 200, `"default";r=0;t=3`, ""},
		{0, 429, `"default";r=0;t=3`, "1"},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		resp, err := client.Get(srv.URL + "/")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 2, resp.ProtoMajor, "step %d: want HTTP/2", i)
		assert.Equal(t, s.status, resp.StatusCode, "step %d status", i)
		assert.Equal(t, `"default";q=3;w=3`, resp.Header.Get("RateLimit-Policy"), "step %d policy", i)
		assert.Equal(t, s.rateLimit, resp.Header.Get("RateLimit"), "step %d RateLimit", i)
		assert.Equal(t, s.retryAfter, resp.Header.Get("Retry-After"), "step %d Retry-After", i)
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	clk := newClock()
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Name: "slow", Rate: 0.1, Burst: 1}},
		Now:    clk.Now,
	})
	require.NoError(t, err)
	h := l.Handler(ok)
	assert.Equal(t, 200, call(h, "192.0.2.1:1", "/").Code)
	clk.Advance(2500 * time.Millisecond)
	w := call(h, "192.0.2.1:1", "/")
	assert.Equal(t, 429, w.Code)
	assert.Equal(t, "8", w.Header().Get("Retry-After"), "7.5s left must round up")
	assert.Equal(t, `"slow";q=1;w=10`, w.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"slow";r=0;t=8`, w.Header().Get("RateLimit"))
}

func TestClientIPGrouping(t *testing.T) {
	tests := []struct {
		name       string
		v4, v6     int
		first      string
		second     string
		sameBucket bool
	}{
		{"v6 same /64", 0, 0, "[2001:db8::1]:1", "[2001:db8::ffff:2]:2", true},
		{"v6 other /64", 0, 0, "[2001:db8::1]:1", "[2001:db8:0:1::1]:2", false},
		{"v6 /48 groups /64s", 0, 48, "[2001:db8::1]:1", "[2001:db8:0:1::1]:2", true},
		{"v6 /128 separates", 0, 128, "[2001:db8::1]:1", "[2001:db8::2]:2", false},
		{"v6 zone ignored", 0, 0, "[fe80::1%eth0]:1", "[fe80::2%eth1]:2", true},
		{"v4 /32 default", 0, 0, "192.0.2.1:1", "192.0.2.2:1", false},
		{"v4 /24", 24, 0, "192.0.2.1:1", "192.0.2.200:1", true},
		{"v4-mapped is v4", 0, 0, "[::ffff:192.0.2.1]:1", "192.0.2.1:2", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ratelimit.New(ratelimit.Options{
				Limits:     []ratelimit.Limit{{Rate: 1, Burst: 1}},
				IPv4Prefix: tt.v4, IPv6Prefix: tt.v6, Now: newClock().Now,
			})
			require.NoError(t, err)
			h := l.Handler(ok)
			require.Equal(t, 200, call(h, tt.first, "/").Code, "first request uses the burst")
			want := 200
			if tt.sameBucket {
				want = 429
			}
			assert.Equal(t, want, call(h, tt.second, "/").Code, "second client shares the bucket: %v", tt.sameBucket)
		})
	}
}

func TestTrustedProxies(t *testing.T) {
	trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8")
	require.NoError(t, err)
	l, err := ratelimit.New(ratelimit.Options{
		Limits:         []ratelimit.Limit{{Rate: 1, Burst: 1}},
		TrustedProxies: trusted, Now: newClock().Now,
	})
	require.NoError(t, err)
	h := l.Handler(ok)
	assert.Equal(t, 200, call(h, "10.0.0.1:1", "/", "X-Forwarded-For", "192.0.2.1").Code)
	assert.Equal(t, 429, call(h, "10.0.0.2:1", "/", "X-Forwarded-For", "192.0.2.1").Code,
		"same client through another trusted proxy")
	assert.Equal(t, 200, call(h, "10.0.0.1:1", "/", "X-Forwarded-For", "192.0.2.2").Code, "another client")
	// An untrusted peer cannot pick its key by forging the header.
	assert.Equal(t, 200, call(h, "198.51.100.1:1", "/", "X-Forwarded-For", "192.0.2.3").Code)
	assert.Equal(t, 429, call(h, "198.51.100.1:1", "/", "X-Forwarded-For", "192.0.2.4").Code,
		"a forged X-Forwarded-For must not buy a new bucket")
}

func TestKeysByHeaderCookiePathFunc(t *testing.T) {
	tests := []struct {
		name   string
		by     ratelimit.By
		a, b   []string // headers of two requests from the same IP
		path   [2]string
		shared bool // a and b share a bucket
		skip   bool // the limit does not apply to a
	}{
		{"header differs", ratelimit.ByHeader("x-api-key"), []string{"X-Api-Key", "k1"}, []string{"X-Api-Key", "k2"}, [2]string{"/", "/"}, false, false},
		{"header same", ratelimit.ByHeader("X-API-Key"), []string{"X-Api-Key", " k1 "}, []string{"X-Api-Key", "k1"}, [2]string{"/", "/"}, true, false},
		{"header missing", ratelimit.ByHeader("X-API-Key"), nil, nil, [2]string{"/", "/"}, false, true},
		{"long header values hashed", ratelimit.ByHeader("X-API-Key"), []string{"X-Api-Key", string(make([]byte, 0)) + longKey('a')}, []string{"X-Api-Key", longKey('b')}, [2]string{"/", "/"}, false, false},
		{"long header same", ratelimit.ByHeader("X-API-Key"), []string{"X-Api-Key", longKey('a')}, []string{"X-Api-Key", longKey('a')}, [2]string{"/", "/"}, true, false},
		{"cookie differs", ratelimit.ByCookie("sid"), []string{"Cookie", "a=1; sid=x"}, []string{"Cookie", "sid=y"}, [2]string{"/", "/"}, false, false},
		{"cookie same quoted", ratelimit.ByCookie("sid"), []string{"Cookie", `sid="x"`}, []string{"Cookie", "other=1; sid=x"}, [2]string{"/", "/"}, true, false},
		{"cookie missing", ratelimit.ByCookie("sid"), []string{"Cookie", "sidx=1"}, nil, [2]string{"/", "/"}, false, true},
		{"path differs", ratelimit.ByPath(), nil, nil, [2]string{"/a", "/b"}, false, false},
		{"path same", ratelimit.ByPath(), nil, nil, [2]string{"/a", "/a?q=1"}, true, false},
		{"global", ratelimit.Global(), nil, nil, [2]string{"/a", "/b"}, true, false},
		{"func route", ratelimit.ByFunc(func(r *http.Request) (string, bool) { return "login", r.URL.Path == "/login" }),
			nil, nil, [2]string{"/login", "/login"}, true, false},
		{"func not applying", ratelimit.ByFunc(func(r *http.Request) (string, bool) { return "login", r.URL.Path == "/login" }),
			nil, nil, [2]string{"/x", "/x"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ratelimit.New(ratelimit.Options{
				Limits: []ratelimit.Limit{{Rate: 1, Burst: 1, By: tt.by}}, Now: newClock().Now,
			})
			require.NoError(t, err)
			h := l.Handler(ok)
			w := call(h, "192.0.2.1:1", tt.path[0], tt.a...)
			require.Equal(t, 200, w.Code)
			if tt.skip {
				assert.Empty(t, w.Header().Get("RateLimit"), "a limit that does not apply reports nothing")
				assert.Equal(t, 200, call(h, "192.0.2.1:1", tt.path[0], tt.a...).Code, "not counted")
				return
			}
			assert.Equal(t, `"default";r=0;t=1`, w.Header().Get("RateLimit"))
			want := 200
			if tt.shared {
				want = 429
			}
			assert.Equal(t, want, call(h, "192.0.2.1:1", tt.path[1], tt.b...).Code, "shared bucket: %v", tt.shared)
		})
	}
}

func longKey(c byte) string {
	b := make([]byte, 300)
	for i := range b {
		b[i] = 'k'
	}
	b[299] = c
	return string(b)
}

// TestStrictestWinsAndRefusalTakesNothing checks that a request refused by one limit gives
// back what it took from the others, whichever order they are in.
func TestStrictestWinsAndRefusalTakesNothing(t *testing.T) {
	login := ratelimit.ByFunc(func(r *http.Request) (string, bool) { return "login", r.URL.Path == "/login" })
	for _, order := range []string{"ip first", "route first"} {
		t.Run(order, func(t *testing.T) {
			perIP := ratelimit.Limit{Name: "ip", Rate: 0.001, Burst: 5}
			route := ratelimit.Limit{Name: "login", Rate: 0.001, Burst: 2, By: login}
			limits := []ratelimit.Limit{perIP, route}
			if order == "route first" {
				limits = []ratelimit.Limit{route, perIP}
			}
			l, err := ratelimit.New(ratelimit.Options{Limits: limits, Now: newClock().Now})
			require.NoError(t, err)
			h := l.Handler(ok)
			var codes []int
			for range 4 {
				codes = append(codes, call(h, "192.0.2.1:1", "/login").Code)
			}
			assert.Equal(t, []int{200, 200, 429, 429}, codes, "the route limit is the strictest")
			codes = codes[:0]
			for range 4 {
				codes = append(codes, call(h, "192.0.2.1:1", "/other").Code)
			}
			assert.Equal(t, []int{200, 200, 200, 429}, codes,
				"refused /login requests must not have used the per-IP tokens")
			// Another client still has the route's tokens used up.
			assert.Equal(t, 429, call(h, "192.0.2.9:1", "/login").Code)
		})
	}
}

func TestHeadersForSeveralLimits(t *testing.T) {
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{
			{Name: "ip", Rate: 10, Burst: 100},
			{Name: "api", Rate: 2, Burst: 2, By: ratelimit.ByHeader("X-Api-Key")},
		},
		Now: newClock().Now,
	})
	require.NoError(t, err)
	h := l.Handler(ok)
	w := call(h, "192.0.2.1:1", "/", "X-Api-Key", "k")
	assert.Equal(t, `"ip";q=100;w=10, "api";q=2;w=1`, w.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"ip";r=99;t=1, "api";r=1;t=1`, w.Header().Get("RateLimit"))
	call(h, "192.0.2.1:1", "/", "X-Api-Key", "k")
	w = call(h, "192.0.2.1:1", "/", "X-Api-Key", "k")
	assert.Equal(t, 429, w.Code)
	assert.Equal(t, `"ip";r=98;t=1, "api";r=0;t=1`, w.Header().Get("RateLimit"),
		"the refused request's per-IP token is given back")
	w = call(h, "192.0.2.1:1", "/")
	assert.Equal(t, `"ip";r=97;t=1`, w.Header().Get("RateLimit"), "only the limits that apply are reported")
}

func TestDelayQueuesInsteadOfRefusing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, err := ratelimit.New(ratelimit.Options{
			Limits:   []ratelimit.Limit{{Rate: 1, Burst: 1}},
			MaxDelay: 2 * time.Second,
		})
		require.NoError(t, err)
		start := time.Now()
		var mu sync.Mutex
		served := map[int]time.Duration{}
		h := l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			served[len(served)] = time.Since(start)
		}))
		codes := make([]int, 4)
		for i := range 4 {
			go func() { codes[i] = call(h, "192.0.2.1:1", "/").Code }()
			synctest.Wait() // every request arrives at the same instant, in order
		}
		time.Sleep(3 * time.Second) // fake time inside the bubble
		synctest.Wait()
		assert.Equal(t, []int{200, 200, 200, 429}, codes, "wait up to 2s, refuse the one due in 3s")
		assert.Equal(t, map[int]time.Duration{0: 0, 1: time.Second, 2: 2 * time.Second}, served,
			"queued requests are paced at the rate")
	})
}

func TestDelayCancelledGivesTokenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, err := ratelimit.New(ratelimit.Options{
			Limits:   []ratelimit.Limit{{Rate: 1, Burst: 1}},
			MaxDelay: 5 * time.Second,
		})
		require.NoError(t, err)
		h := l.Handler(ok)
		require.Equal(t, 200, call(h, "192.0.2.1:1", "/").Code)
		ctx, cancel := context.WithCancel(context.Background())
		var code int
		go func() {
			r := httptest.NewRequestWithContext(ctx, "GET", "/", nil)
			r.RemoteAddr = "192.0.2.1:1"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			code = w.Code
		}()
		synctest.Wait()
		cancel()
		synctest.Wait()
		assert.Equal(t, http.StatusServiceUnavailable, code, "a cancelled wait is not served")
		time.Sleep(time.Second)
		w := call(h, "192.0.2.1:1", "/")
		assert.Equal(t, 200, w.Code)
		assert.Equal(t, `"default";r=0;t=1`, w.Header().Get("RateLimit"),
			"the cancelled request's token went back, so this one goes at once")
	})
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		opts ratelimit.Options
		want string
	}{
		{ratelimit.Options{}, "ratelimit: Limits must hold at least one Limit"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 0}}}, "ratelimit: Burst must be ≥ 1, got 0 (Limits[0])"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 0, Burst: 1}}}, "ratelimit: Rate must be > 0, got 0 (Limits[0])"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: math.NaN(), Burst: 1}}}, "ratelimit: Rate must be > 0, got NaN (Limits[0])"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: math.NaN(), Burst: 1, Store: &downStore{}}}}, "ratelimit: Limits[0] needs Rate > 0 and Burst ≥ 1 for its headers, got NaN and 1"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1}, {Rate: 1, Burst: 1}}}, `ratelimit: Limits[1].Name "default" is used twice`},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Name: `a"b`, Rate: 1, Burst: 1}}}, `ratelimit: Limits[0].Name "a\"b" must be printable ASCII`},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1, By: ratelimit.ByCookie("a b")}}}, `ratelimit: Limits[0].By: cookie name "a b" is not a valid cookie name`},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1, By: ratelimit.ByFunc(nil)}}}, `ratelimit: Limits[0].By: ByFunc needs a non-nil func`},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1}}, IPv6Prefix: 129}, "ratelimit: IPv6Prefix must be in 1..128, got 129"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1}}, IPv4Prefix: -1}, "ratelimit: IPv4Prefix must be in 1..32, got -1"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1, MaxKeys: -1}}}, "ratelimit: MaxKeys must be ≥ 1, got -1 (Limits[0])"},
		{ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1}}, MaxDelay: -1}, "ratelimit: MaxDelay must be ≥ 0, got -1ns"},
	}
	for _, tt := range tests {
		_, err := ratelimit.New(tt.opts)
		assert.EqualError(t, err, tt.want)
	}
	_, err := ratelimit.NewConcurrency(ratelimit.ConcurrencyOptions{})
	assert.EqualError(t, err, "ratelimit: Max must be ≥ 1, got 0")
}

func TestConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name   string
		by     ratelimit.By
		status int
	}{{"per client", ratelimit.ByClientIP(), 429}, {"pool", ratelimit.Global(), 503}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ratelimit.NewConcurrency(ratelimit.ConcurrencyOptions{Max: 2, By: tc.by})
			require.NoError(t, err)
			release := make(chan struct{})
			entered := make(chan struct{}, 4)
			h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-release
			}))
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() { assert.Equal(t, 200, call(h, "192.0.2.1:1", "/").Code) })
			}
			<-entered
			<-entered
			probe := httptest.NewRequest("GET", "/", nil)
			probe.RemoteAddr = "192.0.2.1:1"
			assert.Equal(t, 2, c.InFlight(probe))
			w := call(h, "192.0.2.1:1", "/")
			assert.Equal(t, tc.status, w.Code, "the third request in flight is refused")
			assert.Equal(t, "1", w.Header().Get("Retry-After"))
			if tc.status == 429 {
				go call(h, "192.0.2.2:1", "/") // another client is not affected
				<-entered
			}
			close(release)
			wg.Wait()
			assert.Eventually(t, func() bool { return c.InFlight(probe) == 0 }, time.Second, time.Millisecond)
			assert.Equal(t, 200, call(h, "192.0.2.1:1", "/").Code, "slots come back")
		})
	}
}

// TestFloodKeepsMemoryBoundedAndLimitHolds sends a million distinct client keys through one
// store while one hot client keeps asking, and checks that the store stays under its cap, the
// heap does not grow with the flood, and the hot client gets exactly its limit.
func TestFloodKeepsMemoryBoundedAndLimitHolds(t *testing.T) {
	const (
		maxKeys = 10_000
		flood   = 1_000_000
		burst   = 20
		perSec  = 10
	)
	s, err := ratelimit.NewMemoryStore(perSec, burst, maxKeys)
	require.NoError(t, err)
	clk := newClock()
	start := clk.Now()
	hot := ratelimit.Key{Addr: netip.MustParseAddr("2001:db8::1")}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	admitted := 0
	for i := range flood {
		// Each flood request comes from a new address; fake time runs 2µs per request, so
		// the flood lasts two seconds.
		clk.Advance(2 * time.Microsecond)
		k := ratelimit.Key{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
		take(t, s, k, clk.Now())
		if i%1000 == 0 {
			if take(t, s, hot, clk.Now()).OK {
				admitted++
			}
		}
		if i == flood/2 {
			assert.LessOrEqual(t, s.Len(), maxKeys, "the store stays under its cap during the flood")
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	elapsed := clk.Now().Sub(start).Seconds()
	allowed := burst + int(perSec*elapsed)

	assert.LessOrEqual(t, s.Len(), maxKeys)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d bytes for %d keys (%d bytes a key); hot key admitted %d of 1000, allowed %d",
		grown, s.Len(), grown/int64(max(1, s.Len())), admitted, allowed)
	assert.Less(t, grown, int64(maxKeys*500), "the heap holds about cap buckets, not one per flooding key")
	assert.LessOrEqual(t, admitted, allowed, "the hot key never gets more than its limit")
	assert.GreaterOrEqual(t, admitted, allowed-1, "the flood does not starve the hot key")
	runtime.KeepAlive(s)
}

// TestEvictsOnlyRefilledBuckets checks that a key pushed out by other keys comes back with no
// more than it had: its bucket is forgotten only once full.
func TestEvictsOnlyRefilledBuckets(t *testing.T) {
	s, err := ratelimit.NewMemoryStore(1, 3, 1) // one key fits
	require.NoError(t, err)
	clk := newClock()
	a := ratelimit.Key{Str: "a"}
	b := ratelimit.Key{Str: "b"}
	for range 3 {
		require.True(t, take(t, s, a, clk.Now()).OK)
	}
	// b does not fit while a is draining: it shares the overflow bucket.
	assert.True(t, take(t, s, b, clk.Now()).OK, "overflow bucket has its burst")
	assert.False(t, take(t, s, a, clk.Now()).OK, "a keeps its drained bucket: no fresh burst")
	clk.Advance(3 * time.Second) // a is full again, so it may be forgotten
	assert.True(t, take(t, s, b, clk.Now()).OK)
	assert.Equal(t, 1, s.Len())
	for range 3 {
		assert.True(t, take(t, s, a, clk.Now()).OK, "a forgotten full bucket behaves as a full one")
	}
	assert.False(t, take(t, s, a, clk.Now()).OK, "and no more than full")
}

// TestManyLimits covers more limits than a decision tracks inline.
func TestManyLimits(t *testing.T) {
	var limits []ratelimit.Limit
	for i, burst := range []int{9, 8, 7, 6, 3, 5} {
		limits = append(limits, ratelimit.Limit{Name: string(rune('a' + i)), Rate: 0.001, Burst: burst})
	}
	l, err := ratelimit.New(ratelimit.Options{Limits: limits, Now: newClock().Now})
	require.NoError(t, err)
	h := l.Handler(ok)
	var codes []int
	for range 4 {
		codes = append(codes, call(h, "192.0.2.1:1", "/").Code)
	}
	assert.Equal(t, []int{200, 200, 200, 429}, codes, "the fifth limit (burst 3) is the strictest")
	w := call(h, "192.0.2.1:1", "/")
	assert.Equal(t, `"a";r=6;t=3000, "b";r=5;t=3000, "c";r=4;t=3000, "d";r=3;t=3000, "e";r=0;t=3000`,
		w.Header().Get("RateLimit"), "refusals took nothing from a-d and f was not consulted")
}

// TestKeysKeepTheirOwnBuckets checks that the in-memory store never lets two different keys
// share a bucket: addresses of either family, an address and the same text as a string key,
// and string keys that differ only in the address they carry.
func TestKeysKeepTheirOwnBuckets(t *testing.T) {
	s, err := ratelimit.NewMemoryStore(1e-9, 1, 1000)
	require.NoError(t, err)
	now := newClock().Now()
	keys := []ratelimit.Key{
		{Addr: netip.MustParseAddr("10.0.0.1")},
		{Addr: netip.MustParseAddr("10.0.0.2")},
		{Addr: netip.MustParseAddr("2001:db8::1")},
		{Addr: netip.MustParseAddr("2001:db8::2")},
		{Str: "10.0.0.1"},
		{Str: "a"},
		{Str: "b"},
		{Str: "a", Addr: netip.MustParseAddr("10.0.0.1")},
		{Str: longKey('a')},
		{},
	}
	for _, k := range keys {
		assert.True(t, take(t, s, k, now).OK, "key %+v has its own full bucket", k)
	}
	for _, k := range keys {
		assert.False(t, take(t, s, k, now).OK, "key %+v used its one token", k)
	}
	assert.Equal(t, len(keys), s.Len())
}

// TestGlacialRateDoesNotOverflow checks that a wait longer than a Duration can hold is
// reported as the longest Duration, not as a negative one.
func TestGlacialRateDoesNotOverflow(t *testing.T) {
	s, err := ratelimit.NewMemoryStore(1e-12, 5, 10)
	require.NoError(t, err)
	now := newClock().Now()
	k := ratelimit.Key{Str: "k"}
	for range 5 {
		require.True(t, take(t, s, k, now).OK)
	}
	d := take(t, s, k, now)
	assert.False(t, d.OK)
	assert.Equal(t, time.Duration(math.MaxInt64), d.RetryAfter, "a wait of 31,700 years does not fit")
	assert.Equal(t, time.Duration(math.MaxInt64), d.Reset)
}

func TestGlacialRateHeaders(t *testing.T) {
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Rate: 1e-12, Burst: 1}},
		Now:    newClock().Now,
	})
	require.NoError(t, err)
	h := l.Handler(ok)
	require.Equal(t, 200, call(h, "192.0.2.1:1", "/").Code)
	w := call(h, "192.0.2.1:1", "/")
	assert.Equal(t, 429, w.Code)
	assert.Equal(t, "9223372037", w.Header().Get("Retry-After"), "the longest Duration, rounded up, never negative")
}

// take asks s for one token with no MaxDelay. It is cheap enough for a loop of a million.
func take(t *testing.T, s *ratelimit.MemoryStore, k ratelimit.Key, now time.Time) ratelimit.Decision {
	d, err := s.Take(context.Background(), k, now, 0)
	if err != nil {
		t.Fatalf("MemoryStore never fails; Take: %v", err)
	}
	return d
}

// keyedStore is a Store over a MemoryStore that records the keys it is given, as a shared
// store (Redis, say) would need them.
type keyedStore struct {
	*ratelimit.MemoryStore
	mu              sync.Mutex
	taken, returned []ratelimit.Key
}

func (s *keyedStore) Take(ctx context.Context, k ratelimit.Key, now time.Time, maxDelay time.Duration) (ratelimit.Decision, error) {
	s.mu.Lock()
	s.taken = append(s.taken, k)
	s.mu.Unlock()
	return s.MemoryStore.Take(ctx, k, now, maxDelay)
}

func (s *keyedStore) Cancel(ctx context.Context, k ratelimit.Key, d ratelimit.Decision, now time.Time) error {
	s.mu.Lock()
	s.returned = append(s.returned, k)
	s.mu.Unlock()
	return s.MemoryStore.Cancel(ctx, k, d, now)
}

// TestCustomStoreGetsKeys checks that a Store other than the built-in one is asked with the
// request's key and, when another limit refuses, is given the token back under that key.
func TestCustomStoreGetsKeys(t *testing.T) {
	mem, err := ratelimit.NewMemoryStore(1, 5, 100)
	require.NoError(t, err)
	store := &keyedStore{MemoryStore: mem}
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{
			{Name: "api", Rate: 1, Burst: 5, By: ratelimit.ByHeader("X-Api-Key"), Store: store},
			{Name: "global", Rate: 1, Burst: 1, By: ratelimit.Global()},
		},
		Now: newClock().Now,
	})
	require.NoError(t, err)
	h := l.Handler(ok)
	assert.Equal(t, 200, call(h, "192.0.2.1:1", "/", "X-Api-Key", "k1").Code)
	w := call(h, "192.0.2.1:1", "/", "X-Api-Key", "k1")
	assert.Equal(t, 429, w.Code, "the global limit refuses the second request")
	assert.Equal(t, `"api";r=4;t=1, "global";r=0;t=1`, w.Header().Get("RateLimit"), "the api token went back")
	k1 := ratelimit.Key{Str: "k1"}
	assert.Equal(t, []ratelimit.Key{k1, k1}, store.taken)
	assert.Equal(t, []ratelimit.Key{k1}, store.returned, "the refused request's token is returned under its key")
}
