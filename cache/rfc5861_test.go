package cache

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitRefreshes waits for background revalidations to finish. It waits on the cache's own
// WaitGroup, not on time.
func waitRefreshes(c *Cache) { c.wg.Wait() }

// RFC 5861 §3: stale-while-revalidate serves stale at once and refreshes in the background,
// once.
func TestStaleWhileRevalidate_RFC5861_3(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=10, stale-while-revalidate=60", "ETag", `"s"`))
	hs.get("/swr")
	hs.clock.Advance(30 * time.Second) // 20s stale, within the window

	r := hs.get("/swr")
	assert.Equal(t, "body 1", r.body, "the stale response is served at once")
	assert.Contains(t, r.header.Get("Cache-Status"), "detail=stale-while-revalidate")
	waitRefreshes(hs.cache)
	assert.EqualValues(t, 2, hs.hits.Load(), "one background refresh")
	assert.Equal(t, `"s"`, hs.last.Load().Header.Get("If-None-Match"), "the refresh is conditional")

	r = hs.get("/swr")
	assert.Equal(t, "body 2", r.body, "the refreshed response is stored")
	assert.Contains(t, r.header.Get("Cache-Status"), "hit")
	assert.EqualValues(t, 2, hs.hits.Load())

	hs.clock.Advance(200 * time.Second) // beyond the window: validate in the foreground
	r = hs.get("/swr")
	assert.Equal(t, "body 3", r.body)
	assert.Contains(t, r.header.Get("Cache-Status"), "fwd=stale")
}

// The refresh runs once however many stale hits arrive, and Close stops it.
func TestStaleWhileRevalidate_OnceAndClose(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	first := true
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		if !first {
			started <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		first = false
		_, _ = w.Write([]byte("x"))
	})
	hs.get("/o")
	hs.clock.Advance(20 * time.Second)
	for range 5 {
		assert.Equal(t, "x", hs.get("/o").body)
	}
	<-started
	assert.EqualValues(t, 2, hs.hits.Load(), "five stale hits, one refresh")
	require.NoError(t, hs.cache.Close(), "Close cancels the blocked refresh and waits for it")
	close(release)
	hs.get("/o")
	assert.Empty(t, started, "no refresh starts after Close")
}

// RFC 5861 §4: stale-if-error serves stale when the origin answers with an error.
func TestStaleIfError_RFC5861_4(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	fail := false
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if fail {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("origin down"))
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		_, _ = w.Write([]byte("good"))
	})
	hs.get("/sie")
	fail = true
	hs.clock.Advance(30 * time.Second)
	r := hs.get("/sie")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "good", r.body)
	assert.Contains(t, r.header.Get("Cache-Status"), "fwd-status=502")
	assert.Contains(t, r.header.Get("Cache-Status"), "detail=stale-if-error")

	hs.clock.Advance(60 * time.Second) // beyond the window
	r = hs.get("/sie")
	assert.Equal(t, http.StatusBadGateway, r.status)
	assert.Equal(t, "origin down", r.body)

	// The request can allow it too.
	r = hs.get("/sie", "Cache-Control", "stale-if-error=600")
	assert.Equal(t, "good", r.body)
}

// A dead origin (the reverse proxy answers 502) counts as an error.
func TestStaleIfError_OriginUnreachable(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=1, stale-if-error=600"))
	hs.get("/down")
	hs.origin.Close()
	hs.clock.Advance(10 * time.Second)
	r := hs.get("/down")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "body 1", r.body)
}

// At most MaxRefreshes background revalidations run at once; beyond that, stale hits are
// served without starting another.
func TestStaleWhileRevalidate_Bounded(t *testing.T) {
	hs := newHarness(t, Options{MaxRefreshes: 1}, nil)
	block := make(chan struct{})
	var refreshing atomic.Int32
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=600")
		if r.Header.Get("X-Setup") == "" {
			refreshing.Add(1)
			<-block
		}
		_, _ = w.Write([]byte("x"))
	})
	hs.get("/a", "X-Setup", "1")
	hs.get("/b", "X-Setup", "1")
	hs.clock.Advance(time.Minute)
	hs.get("/a") // starts the one allowed refresh, which blocks
	hs.get("/b") // served stale, no refresh: the bound is reached
	close(block)
	waitRefreshes(hs.cache)
	assert.EqualValues(t, 1, refreshing.Load(), "one refresh ran")
	assert.EqualValues(t, 3, hs.hits.Load())
}
