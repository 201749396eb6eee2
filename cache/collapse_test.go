package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// collapseRig is a real origin behind a reverse proxy behind the cache. Requests call the
// cache's handler directly so that a thousand of them need no thousand client connections.
type collapseRig struct {
	c       *Cache
	h       http.Handler
	hits    atomic.Int64
	arrived chan struct{}
	release chan struct{}
}

func newCollapseRig(t *testing.T, header ...string) *collapseRig {
	t.Helper()
	return newCollapseRigWith(t, Options{}, func(_ int64, h http.Header) {
		for i := 0; i+1 < len(header); i += 2 {
			h.Set(header[i], header[i+1])
		}
	})
}

// newCollapseRigWith builds a rig whose cache has opts and whose origin sets its header with
// set, given the number of the origin request (1 for the first).
func newCollapseRigWith(t *testing.T, opts Options, set func(n int64, h http.Header)) *collapseRig {
	t.Helper()
	rig := &collapseRig{arrived: make(chan struct{}, 10000), release: make(chan struct{})}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := rig.hits.Add(1)
		rig.arrived <- struct{}{}
		select {
		case <-rig.release:
		case <-r.Context().Done():
			return
		}
		set(n, w.Header())
		_, _ = io.WriteString(w, "origin response "+itoa(n))
	}))
	t.Cleanup(origin.Close)
	u, err := url.Parse(origin.URL)
	require.NoError(t, err)
	c, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	rig.c = c
	rig.h = c.Handler(httputil.NewSingleHostReverseProxy(u))
	return rig
}

// waitFollowers spins until n requests wait on the flight for key (no sleeping: it yields).
func (rig *collapseRig) waitFollowers(t *testing.T, key string, n int32) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rig.c.flights.mu.Lock()
		f := rig.c.flights.m[key]
		rig.c.flights.mu.Unlock()
		if f != nil && f.waiters.Load() >= n {
			return
		}
		require.True(t, time.Now().Before(deadline), "followers never arrived")
		runtime.Gosched()
	}
}

func (rig *collapseRig) serve(ctx context.Context, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://example.com/cold", nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	rig.h.ServeHTTP(rec, req)
	return rec
}

const coldKey = keyVersion + "http://example.com/cold"

// 1,000 concurrent misses for one cold key make exactly one origin request.
func TestCollapse_ThousandToOne(t *testing.T) {
	rig := newCollapseRig(t, "Cache-Control", "max-age=60")
	const n = 1000
	var wg sync.WaitGroup
	bodies := make([]string, n)
	statuses := make([]string, n)
	for i := range n {
		wg.Go(func() {
			rec := rig.serve(context.Background())
			bodies[i] = rec.Body.String()
			statuses[i] = rec.Header().Get("Cache-Status")
		})
	}
	<-rig.arrived
	rig.waitFollowers(t, coldKey, n-1)
	close(rig.release)
	wg.Wait()
	assert.EqualValues(t, 1, rig.hits.Load(), "exactly one origin request")
	collapsed := 0
	for i := range n {
		assert.Equal(t, "origin response 1", bodies[i])
		if assert.NotEmpty(t, statuses[i]) && contains(statuses[i], "collapsed") {
			collapsed++
		}
	}
	assert.Equal(t, n-1, collapsed, "every follower says it was collapsed")
}

// The leader's client going away does not cancel the followers: one of them fetches again.
func TestCollapse_LeaderCancelDoesNotCancelFollowers(t *testing.T) {
	rig := newCollapseRig(t, "Cache-Control", "max-age=60")
	ctx, cancel := context.WithCancel(context.Background())
	leaderDone := make(chan struct{})
	go func() {
		rig.serve(ctx)
		close(leaderDone)
	}()
	<-rig.arrived
	const n = 20
	var wg sync.WaitGroup
	bodies := make([]string, n)
	for i := range n {
		wg.Go(func() { bodies[i] = rig.serve(context.Background()).Body.String() })
	}
	rig.waitFollowers(t, coldKey, n)
	cancel()
	<-leaderDone
	<-rig.arrived // a follower took over
	close(rig.release)
	wg.Wait()
	assert.EqualValues(t, 2, rig.hits.Load(), "the cancelled fetch and one replacement")
	for _, b := range bodies {
		assert.Equal(t, "origin response 2", b)
	}
}

// When the response turns out uncacheable, followers go upstream themselves.
func TestCollapse_UncacheableReleasesFollowers(t *testing.T) {
	rig := newCollapseRig(t, "Cache-Control", "no-store")
	const n = 10
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			rec := rig.serve(context.Background())
			assert.Equal(t, http.StatusOK, rec.Code)
		})
	}
	<-rig.arrived
	rig.waitFollowers(t, coldKey, n-1)
	close(rig.release)
	wg.Wait()
	assert.EqualValues(t, n, rig.hits.Load(), "each request got its own uncacheable response")
}

// Requests with credentials are never collapsed.
func TestCollapse_NotWithCredentials(t *testing.T) {
	rig := newCollapseRig(t, "Cache-Control", "max-age=60")
	const n = 5
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { rig.serve(context.Background(), "Authorization", "Bearer secret") })
	}
	for range n {
		<-rig.arrived // all five reach the origin while none has been answered
	}
	close(rig.release)
	wg.Wait()
	assert.EqualValues(t, n, rig.hits.Load())
}

func contains(s, sub string) bool { return len(sub) == 0 || (len(s) >= len(sub) && index(s, sub) >= 0) }

func index(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// A follower waits at most CollapseTimeout, then fetches for itself.
func TestCollapse_FollowerWaitIsBounded(t *testing.T) {
	rig := newCollapseRig(t, "Cache-Control", "max-age=60")
	rig.c.collapse = 20 * time.Millisecond
	leaderDone := make(chan struct{})
	go func() {
		rig.serve(context.Background())
		close(leaderDone)
	}()
	<-rig.arrived
	followerDone := make(chan string)
	go func() { followerDone <- rig.serve(context.Background()).Body.String() }()
	<-rig.arrived // the follower gave up waiting and reached the origin itself
	close(rig.release)
	<-followerDone
	<-leaderDone
	assert.EqualValues(t, 2, rig.hits.Load())
}

// After a response could not be stored, requests for the URL go upstream at once for a
// while instead of queueing behind each other to learn it again.
func TestCollapse_HitForPass(t *testing.T) {
	rig := newCollapseRig(t, "Cache-Control", "no-store")
	done := make(chan struct{})
	go func() { rig.serve(context.Background()); close(done) }()
	<-rig.arrived
	rig.release <- struct{}{}
	<-done
	const n = 3
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { rig.serve(context.Background()) })
	}
	for range n {
		<-rig.arrived // all three reach the origin while none has been answered
	}
	close(rig.release)
	wg.Wait()
	assert.EqualValues(t, n+1, rig.hits.Load())
}
