package cache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sinkWriter is a reusable ResponseWriter, so that measurements count the cache's
// allocations rather than a recorder's.
type sinkWriter struct {
	h      http.Header
	status int
	n      int
}

func (s *sinkWriter) Header() http.Header         { return s.h }
func (s *sinkWriter) WriteHeader(code int)        { s.status = code }
func (s *sinkWriter) Write(p []byte) (int, error) { s.n += len(p); return len(p), nil }
func (s *sinkWriter) reset()                      { clear(s.h); s.status, s.n = 0, 0 }

// inProcessOrigin answers every request with a 1 KiB body and the given Cache-Control.
func inProcessOrigin(cc string) http.Handler {
	body := []byte(strings.Repeat("x", 1024))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", cc)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("ETag", `"abc"`)
		_, _ = w.Write(body)
	})
}

// warm returns a handler with n stored URLs, /0 … /n-1.
func warm(tb testing.TB, n int) (http.Handler, *Cache) {
	c, err := New(Options{MaxBytes: 1 << 30})
	require.NoError(tb, err)
	h := c.Handler(inProcessOrigin("max-age=3600"))
	w := &sinkWriter{h: http.Header{}}
	for i := range n {
		w.reset()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://example.com/"+fmt.Sprint(i), nil))
	}
	return h, c
}

// The hit path allocates little: the key and nothing per header field.
func TestHitAllocations(t *testing.T) {
	h, _ := warm(t, 1)
	req := httptest.NewRequest(http.MethodGet, "http://example.com/0", nil)
	w := &sinkWriter{h: http.Header{}}
	h.ServeHTTP(w, req)
	require.Contains(t, w.h.Get("Cache-Status"), "hit", "warmed")
	allocs := testing.AllocsPerRun(1000, func() {
		w.reset()
		h.ServeHTTP(w, req)
	})
	assert.Equal(t, 1024, w.n)
	assert.LessOrEqual(t, allocs, 2.0, "a hit allocates the key and little else")
	t.Logf("allocs per hit: %v", allocs)
}

// BenchmarkHit measures a hit served by the cache, at several store sizes, against the
// same request proxied to a real origin (a miss every time, as with no cache).
func BenchmarkHit(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			h, _ := warm(b, n)
			reqs := make([]*http.Request, 64)
			for i := range reqs {
				reqs[i] = httptest.NewRequest(http.MethodGet, "http://example.com/"+fmt.Sprint(i%n), nil)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := &sinkWriter{h: http.Header{}}
				i := 0
				for pb.Next() {
					w.reset()
					h.ServeHTTP(w, reqs[i%len(reqs)])
					i++
				}
			})
		})
	}
}

// BenchmarkProxiedMiss is the baseline: an uncacheable response proxied through the cache
// to a real origin, and the same without the cache.
func BenchmarkProxiedMiss(b *testing.B) {
	origin := httptest.NewServer(inProcessOrigin("no-store"))
	defer origin.Close()
	u, _ := url.Parse(origin.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	c, err := New(Options{})
	require.NoError(b, err)
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{{"cache", c.Handler(rp)}, {"no-cache", rp}} {
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "http://example.com/miss", nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &sinkWriter{h: http.Header{}}
				for pb.Next() {
					w.reset()
					tc.h.ServeHTTP(w, req)
				}
			})
		})
	}
}

// BenchmarkMemoryPerEntry reports the heap held per stored 1 KiB response at 100,000
// entries (the "bytes/entry" metric).
func BenchmarkMemoryPerEntry(b *testing.B) {
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h, c := warm(b, 100_000)
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := c.store.(*MemoryStore)
		require.Equal(b, 100_000, st.Len())
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/100_000, "bytes/entry")
		b.ReportMetric(float64(st.Bytes())/100_000, "accounted-bytes/entry")
		runtime.KeepAlive(h)
	}
}

// Keep io imported for helpers shared with other tests.
var _ = io.Discard
