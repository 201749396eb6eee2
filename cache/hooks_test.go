package cache

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lookupRecorder collects LookupEvents; the hook may run after the client has its answer,
// so tests wait for each event.
type lookupRecorder chan LookupEvent

func (l lookupRecorder) hook(e LookupEvent) { l <- e }

func (l lookupRecorder) next(t *testing.T) LookupEvent {
	t.Helper()
	select {
	case e := <-l:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no Lookup event")
		return LookupEvent{}
	}
}

func TestHooks_Lookup(t *testing.T) {
	events := make(lookupRecorder, 16)
	hs := newHarness(t, Options{Hooks: Hooks{Lookup: events.hook}}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nostore":
			w.Header().Set("Cache-Control", "no-store")
		default:
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("ETag", `"v1"`)
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		_, _ = w.Write([]byte("hello"))
	})

	hs.get("/a")
	assert.Equal(t, LookupEvent{Outcome: Miss, Key: "1|http://" + hs.front.Listener.Addr().String() + "/a",
		Fwd: "uri-miss", FwdStatus: 200, Status: 200, Stored: true, Bytes: 5}, events.next(t), "a stored miss")

	hs.get("/a")
	e := events.next(t)
	assert.Equal(t, Hit, e.Outcome, "a hit")
	assert.Equal(t, 200, e.Status)
	assert.EqualValues(t, 5, e.Bytes, "the stored body's size")
	assert.Empty(t, e.Fwd, "a hit went nowhere")

	hs.get("/nostore")
	e = events.next(t)
	assert.Equal(t, Miss, e.Outcome)
	assert.False(t, e.Stored, "no-store is not stored")
	assert.Equal(t, "no-store", e.Detail, "and says why")

	hs.clock.Advance(61 * time.Second)
	hs.get("/a")
	e = events.next(t)
	assert.Equal(t, Revalidated, e.Outcome, "a stale response the origin confirmed")
	assert.Equal(t, "stale", e.Fwd)
	assert.Equal(t, 304, e.FwdStatus)
	assert.True(t, e.Stored, "stored again")

	hs.do(http.MethodPost, "/a")
	e = events.next(t)
	assert.Equal(t, Pass, e.Outcome, "POST is passed")
	assert.Equal(t, "method", e.Fwd)

	hs.get("/none", "Cache-Control", "only-if-cached")
	e = events.next(t)
	assert.Equal(t, Unavailable, e.Outcome, "only-if-cached with nothing stored")
	assert.Equal(t, "only-if-cached", e.Detail)
	assert.Empty(t, events, "one event per request")
}

func TestHooks_LookupStoreError(t *testing.T) {
	events := make(lookupRecorder, 16)
	hs, store, _ := storeHarness(t, Options{Hooks: Hooks{Lookup: events.hook}})
	hs.setHandler(hs.counter("Cache-Control", "max-age=600"))

	store.failSet(errDown)
	hs.get("/a")
	e := events.next(t)
	assert.Equal(t, Miss, e.Outcome)
	assert.False(t, e.Stored, "the store refused it")
	assert.Equal(t, "store-error", e.Detail)
	assert.ErrorIs(t, e.Err, errDown, "the Store's error")

	store.failSet(nil)
	store.failGet(errDown)
	hs.get("/a")
	e = events.next(t)
	assert.Equal(t, Miss, e.Outcome, "a failed lookup fails open")
	assert.Equal(t, "miss", e.Fwd)
	assert.ErrorIs(t, e.Err, errDown, "the Store's error")
}

func TestHooks_LookupCollapsed(t *testing.T) {
	events := make(lookupRecorder, 16)
	rig := newCollapseRigWith(t, Options{Hooks: Hooks{Lookup: events.hook}}, func(_ int64, h http.Header) {
		h.Set("Cache-Control", "max-age=60")
	})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			rig.h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://example.com/x", nil))
		})
	}
	<-rig.arrived
	rig.waitFollowers(t, "1|http://example.com/x", 1)
	close(rig.release)
	wg.Wait()
	got := map[Outcome]LookupEvent{}
	for range 2 {
		e := events.next(t)
		got[e.Outcome] = e
	}
	require.Contains(t, got, Miss, "the leader went to the origin")
	assert.True(t, got[Miss].Stored)
	require.Contains(t, got, Collapsed, "the follower was collapsed onto it")
	assert.Equal(t, "uri-miss", got[Collapsed].Fwd)
	assert.EqualValues(t, len("origin response 1"), got[Collapsed].Bytes)
}

func TestHooks_Evict(t *testing.T) {
	clock := newClock()
	var got []EvictEvent
	s, err := NewMemoryStore(MemoryOptions{MaxBytes: 2500, Now: clock.Now,
		Hooks: Hooks{Evict: func(e EvictEvent) { got = append(got, e) }}})
	require.NoError(t, err)
	ctx := context.Background()
	entry := func() *Entry { e := &Entry{Status: 200, Body: make([]byte, 600)}; e.prepare(); return e }
	require.NoError(t, s.Set(ctx, "a", entry(), time.Minute))
	sizeA := s.Bytes()
	require.NoError(t, s.Set(ctx, "b", entry(), time.Hour))
	require.NoError(t, s.Set(ctx, "c", entry(), time.Hour))
	require.Len(t, got, 1, "one entry evicted to make room")
	assert.Equal(t, EvictEvent{Reason: Capacity, Key: "a", Bytes: sizeA}, got[0], "the least recently used")

	require.NoError(t, s.Delete(ctx, "b"))
	assert.Len(t, got, 1, "a delete is not an eviction")

	clock.Advance(2 * time.Hour)
	e, err := s.Get(ctx, "c")
	require.NoError(t, err)
	assert.Nil(t, e)
	require.Len(t, got, 2)
	assert.Equal(t, Expired, got[1].Reason)
	assert.Equal(t, "c", got[1].Key)
	assert.Equal(t, int64(0), s.Bytes(), "the bytes freed")
}

// Options.Hooks.Evict reaches the default store.
func TestHooks_EvictThroughOptions(t *testing.T) {
	var n int
	c, err := New(Options{MaxBytes: 1, Hooks: Hooks{Evict: func(EvictEvent) { n++ }}})
	require.NoError(t, err)
	evict := c.store.(*MemoryStore).evict
	require.NotNil(t, evict, "the default store has the hook")
	evict(EvictEvent{})
	assert.Equal(t, 1, n)
}

func TestStats(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=60"))
	assert.Equal(t, Stats{}, hs.cache.Stats(), "empty")
	hs.get("/a")
	hs.get("/b")
	st := hs.cache.Stats()
	assert.Equal(t, 2, st.Entries)
	assert.Equal(t, hs.cache.store.(*MemoryStore).Bytes(), st.Bytes)
	assert.Positive(t, st.Bytes)

	ms, err := NewMemoryStore(MemoryOptions{})
	require.NoError(t, err)
	c, err := New(Options{Store: struct{ Store }{ms}})
	require.NoError(t, err)
	assert.Equal(t, Stats{Entries: -1, Bytes: -1}, c.Stats(), "a Store that is no Sizer: unknown")
}

func TestJoinHooks(t *testing.T) {
	var order []string
	h := JoinHooks(
		Hooks{Lookup: func(LookupEvent) { order = append(order, "a") }},
		Hooks{},
		Hooks{Lookup: func(LookupEvent) { order = append(order, "b") }, Evict: func(EvictEvent) { order = append(order, "e") }},
	)
	h.Lookup(LookupEvent{})
	h.Evict(EvictEvent{})
	assert.Equal(t, []string{"a", "b", "e"}, order, "every func, in order")
	assert.Nil(t, JoinHooks(Hooks{}).Lookup, "nothing to call stays nil, so it costs a nil check")
}

// A Lookup hook adds no allocation to a hit.
func TestHitAllocationsWithHook(t *testing.T) {
	c, err := New(Options{MaxBytes: 1 << 20, Hooks: Hooks{Lookup: func(LookupEvent) {}}})
	require.NoError(t, err)
	h := c.Handler(inProcessOrigin("max-age=3600"))
	req := httptest.NewRequest(http.MethodGet, "http://example.com/0", nil)
	w := &sinkWriter{h: http.Header{}}
	h.ServeHTTP(w, req)
	w.reset()
	h.ServeHTTP(w, req)
	require.Contains(t, w.h.Get("Cache-Status"), "hit", "warmed")
	allocs := testing.AllocsPerRun(1000, func() {
		w.reset()
		h.ServeHTTP(w, req)
	})
	assert.LessOrEqual(t, allocs, 2.0, "as many as without a hook")
}
