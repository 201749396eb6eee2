package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// 10,000 uncacheable requests with 60 KB URLs once kept every URL in the hit-for-pass list,
// about 600 MB. The list holds fixed-size hashes within its byte budget instead.
func TestHitForPass_MemoryBounded(t *testing.T) {
	c, err := New(Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, "uncacheable")
	}))
	long := strings.Repeat("a", 60<<10)
	target := func(i int) string { return "http://example.com/p?" + long + strconv.Itoa(i) }

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 10000
	for i := range n {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, target(i), nil)
		require.NoError(t, err)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Contains(t, rec.Header().Get("Cache-Status"), "detail=no-store", "request %d was not stored", i)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	assert.Positive(t, c.passes.bytes(), "the list remembers uncacheable URLs")
	assert.LessOrEqual(t, c.passes.bytes(), int64(1<<20), "the list stays within HitForPassBytes' default")
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d KiB over %d uncacheable 60 KB URLs", grew>>10, n)
	assert.Less(t, grew, int64(32<<20), "the hit-for-pass list must not hold the URLs (600 MB of them)")

	// The list still works: the latest URLs are remembered, so they skip collapsing.
	for i := n - 10; i < n; i++ {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, target(i), nil)
		require.NoError(t, err)
		assert.True(t, c.passes.recent(requestKey(req), c.now()), "URL %d is remembered as uncacheable", i)
	}
	runtime.KeepAlive(c)
}

// The list remembers a URL for passTime, forgets it when a response is stored, evicts the
// mark that expires first from a full bucket, and never takes more than its budget.
func TestPassMemo(t *testing.T) {
	now := newClock().Now()
	t.Run("remembers for passTime", func(t *testing.T) {
		var p passMemo
		p.init(1 << 10)
		assert.False(t, p.recent("k", now), "nothing marked yet")
		assert.Zero(t, p.bytes(), "nothing allocated before the first mark")
		p.mark("k", now)
		assert.True(t, p.recent("k", now.Add(passTime-time.Nanosecond)))
		assert.False(t, p.recent("k", now.Add(passTime)), "the mark expires")
		assert.False(t, p.recent("other", now))
		assert.Equal(t, int64(1<<10), p.bytes())
	})
	t.Run("forget", func(t *testing.T) {
		var p passMemo
		p.init(1 << 10)
		p.mark("k", now)
		p.forget("k")
		assert.False(t, p.recent("k", now))
	})
	t.Run("one bucket evicts the mark that expires first", func(t *testing.T) {
		var p passMemo
		p.init(passWays * passSlotSize)
		for i := range passWays + 1 {
			p.mark("k"+strconv.Itoa(i), now.Add(time.Duration(i)*time.Second))
		}
		assert.False(t, p.recent("k0", now), "the oldest mark made room")
		for i := 1; i <= passWays; i++ {
			assert.True(t, p.recent("k"+strconv.Itoa(i), now.Add(passWays*time.Second)), "mark %d kept", i)
		}
		p.mark("k1", now.Add(5*time.Second)) // re-marking reuses the slot
		for i := 2; i <= passWays; i++ {
			assert.True(t, p.recent("k"+strconv.Itoa(i), now.Add(passWays*time.Second)), "mark %d kept", i)
		}
		assert.Equal(t, int64(passWays*passSlotSize), p.bytes())
	})
	t.Run("a budget under one bucket remembers nothing", func(t *testing.T) {
		var p passMemo
		p.init(passWays*passSlotSize - 1)
		p.mark("k", now)
		assert.False(t, p.recent("k", now))
		assert.Zero(t, p.bytes())
	})
	t.Run("the budget bounds the slots", func(t *testing.T) {
		var p passMemo
		p.init(10_000)
		for i := range 1000 {
			p.mark(strconv.Itoa(i), now)
		}
		assert.LessOrEqual(t, p.bytes(), int64(10_000))
		assert.Equal(t, int64(10_000/(passWays*passSlotSize)*passWays*passSlotSize), p.bytes())
	})
}

func TestNew_HitForPassBytes(t *testing.T) {
	_, err := New(Options{HitForPassBytes: -1})
	assert.ErrorContains(t, err, "HitForPassBytes")
	c, err := New(Options{HitForPassBytes: 1})
	require.NoError(t, err, "a budget too small for one bucket turns hit-for-pass off")
	c.passes.mark("k", c.now())
	assert.False(t, c.passes.recent("k", c.now()))
}
