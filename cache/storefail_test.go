package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errDown = errors.New("store is down")

// faultyStore is a MemoryStore whose methods fail on demand, as a store across a network
// does. It counts the calls that reach the MemoryStore.
type faultyStore struct {
	*MemoryStore
	mu                                  sync.Mutex // mu protects the errors
	getErr, setErr, deleteErr, purgeErr error
	sets                                atomic.Int64
}

func newFaultyStore(t *testing.T, clock *fakeClock) *faultyStore {
	ms, err := NewMemoryStore(MemoryOptions{Now: clock.Now})
	require.NoError(t, err)
	return &faultyStore{MemoryStore: ms}
}

func (s *faultyStore) failGet(err error) { s.mu.Lock(); s.getErr = err; s.mu.Unlock() }
func (s *faultyStore) failSet(err error) { s.mu.Lock(); s.setErr = err; s.mu.Unlock() }
func (s *faultyStore) failDelete(err error) {
	s.mu.Lock()
	s.deleteErr, s.purgeErr = err, err
	s.mu.Unlock()
}

func (s *faultyStore) errFor(p *error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *p
}

func (s *faultyStore) Get(ctx context.Context, key string) (*Entry, error) {
	if err := s.errFor(&s.getErr); err != nil {
		return nil, err
	}
	return s.MemoryStore.Get(ctx, key)
}

func (s *faultyStore) Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error {
	if err := s.errFor(&s.setErr); err != nil {
		return err
	}
	s.sets.Add(1)
	return s.MemoryStore.Set(ctx, key, e, ttl)
}

func (s *faultyStore) Delete(ctx context.Context, key string) error {
	if err := s.errFor(&s.deleteErr); err != nil {
		return err
	}
	return s.MemoryStore.Delete(ctx, key)
}

// Purge removes one matching entry, then fails if told to: a store that fails part way.
func (s *faultyStore) Purge(ctx context.Context, sel Selector) (int, error) {
	if err := s.errFor(&s.purgeErr); err != nil {
		s.MemoryStore.mu.Lock()
		defer s.MemoryStore.mu.Unlock()
		for _, k := range s.lru.Keys() {
			if it, ok := s.lru.Peek(k); ok && sel.Match(k, it.e) {
				s.lru.Remove(k)
				return 1, err
			}
		}
		return 0, err
	}
	return s.MemoryStore.Purge(ctx, sel)
}

// logRecorder is a slog.Handler that keeps the records, for tests that read the log.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.records = append(l.records, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// storeFailures returns the "op" and "suppressed" attributes of the store failures logged.
func (l *logRecorder) storeFailures() (ops []string, suppressed []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.records {
		if r.Message != "cache: store failed" {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "op":
				ops = append(ops, a.Value.String())
			case "suppressed":
				suppressed = append(suppressed, a.Value.Int64())
			}
			return true
		})
	}
	return ops, suppressed
}

// storeHarness is a harness whose cache uses a faultyStore and logs into a logRecorder.
func storeHarness(t *testing.T, opts Options) (*harness, *faultyStore, *logRecorder) {
	clock := newClock()
	store := newFaultyStore(t, clock)
	logs := &logRecorder{}
	opts.Store, opts.Now, opts.Logger = store, clock.Now, slog.New(logs)
	hs := newHarness(t, opts, nil)
	hs.clock = clock
	return hs, store, logs
}

// A lookup that fails is a miss: the origin answers, Cache-Status says why, nothing is
// stored, and the failures are logged without flooding.
func TestStoreFailure_GetFailsOpen(t *testing.T) {
	hs, store, logs := storeHarness(t, Options{})
	hs.setHandler(hs.counter("Cache-Control", "max-age=600"))
	require.Equal(t, "body 1", hs.get("/a").body)
	require.Contains(t, hs.get("/a").header.Get("Cache-Status"), "hit", "stored while the store worked")
	sets := store.sets.Load()

	store.failGet(errDown)
	for i, want := range []string{"body 2", "body 3"} {
		r := hs.get("/a")
		assert.Equal(t, http.StatusOK, r.status, "request %d", i)
		assert.Equal(t, want, r.body, "request %d is answered by the origin", i)
		assert.Equal(t, "sluice; fwd=miss; fwd-status=200; detail=store-error", r.header.Get("Cache-Status"),
			"request %d: a miss because the store failed", i)
	}
	assert.EqualValues(t, 3, hs.hits.Load())
	assert.Equal(t, sets, store.sets.Load(), "a response to a failed lookup is not stored")
	ops, _ := logs.storeFailures()
	assert.Equal(t, []string{"get"}, ops, "two failures within 10s make one record")

	hs.clock.Advance(storeLogInterval)
	hs.get("/a")
	ops, suppressed := logs.storeFailures()
	assert.Equal(t, []string{"get", "get"}, ops, "a record every 10s")
	assert.Equal(t, []int64{0, 1}, suppressed, "the second record counts the failure left out")

	store.failGet(nil)
	r := hs.get("/a")
	assert.Equal(t, "body 1", r.body, "the store works again: the stored response answers")
	assert.Contains(t, r.header.Get("Cache-Status"), "hit")
}

// A request whose lookup fails does not wait for an identical request that is fetching:
// the origin sees both at once. Were it collapsed, the first would wait for the second at
// the origin and the second for the first in the cache, until CollapseTimeout.
func TestStoreFailure_GetFailureIsNotCollapsed(t *testing.T) {
	hs, store, _ := storeHarness(t, Options{CollapseTimeout: time.Hour})
	first, release := make(chan struct{}), make(chan struct{})
	var arrivals atomic.Int32
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		switch arrivals.Add(1) {
		case 1:
			close(first)
			select {
			case <-release:
			case <-r.Context().Done(): // the test failed and ended
			}
		case 2:
			close(release)
		}
		_, _ = io.WriteString(w, "ok")
	})
	type answer struct {
		status int
		err    error
	}
	answers := make(chan answer, 2)
	get := func() {
		// t.Context ends when the test does, so that a failure does not leave the servers
		// waiting on these requests.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, hs.front.URL+"/c", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answers <- answer{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		answers <- answer{status: resp.StatusCode}
	}
	go get()
	<-first // the first request leads a fetch, and the origin holds it
	store.failGet(errDown)
	go get()
	for range 2 {
		select {
		case a := <-answers:
			require.NoError(t, a.err)
			assert.Equal(t, http.StatusOK, a.status)
		case <-time.After(10 * time.Second): // a guard against a hang, not a wait for behaviour
			t.Fatal("the request whose lookup failed waited for the other")
		}
	}
	assert.EqualValues(t, 2, arrivals.Load())
}

// FailClosed answers 503 without asking the origin; only-if-cached gets its 504 in either
// mode.
func TestStoreFailure_FailClosed(t *testing.T) {
	for _, tt := range []struct {
		name       string
		failClosed bool
		request    []string
		status     int
		hits       int64
	}{
		{"fail open", false, nil, http.StatusOK, 1},
		{"fail closed", true, nil, http.StatusServiceUnavailable, 0},
		{"fail open, only-if-cached", false, []string{"Cache-Control", "only-if-cached"}, http.StatusGatewayTimeout, 0},
		{"fail closed, only-if-cached", true, []string{"Cache-Control", "only-if-cached"}, http.StatusGatewayTimeout, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hs, store, logs := storeHarness(t, Options{FailClosed: tt.failClosed})
			hs.setHandler(hs.counter("Cache-Control", "max-age=60"))
			store.failGet(errDown)
			r := hs.get("/f", tt.request...)
			assert.Equal(t, tt.status, r.status)
			assert.Equal(t, tt.hits, hs.hits.Load(), "requests that reached the origin")
			if tt.status == http.StatusServiceUnavailable {
				assert.Contains(t, r.body, "store is unavailable", "the 503 says why")
				assert.Empty(t, r.header.Get("Cache-Status"), "a response the cache made up has no Cache-Status")
				assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
			}
			ops, _ := logs.storeFailures()
			assert.Equal(t, []string{"get"}, ops, "the failure is logged")
		})
	}
}

// When the store refuses a response, it is served all the same and not stored; a Vary'd
// response's index is not stored either.
func TestStoreFailure_SetFails(t *testing.T) {
	for _, vary := range []string{"", "Accept"} {
		t.Run("Vary="+vary, func(t *testing.T) {
			hs, store, logs := storeHarness(t, Options{})
			header := []string{"Cache-Control", "max-age=60"}
			if vary != "" {
				header = append(header, "Vary", vary)
			}
			hs.setHandler(hs.counter(header...))
			store.failSet(errDown)
			for i, want := range []string{"body 1", "body 2"} {
				r := hs.get("/s", "Accept", "text/html")
				assert.Equal(t, http.StatusOK, r.status)
				assert.Equal(t, want, r.body, "request %d is served from the origin", i)
			}
			assert.Zero(t, store.Len(), "nothing was stored")
			ops, _ := logs.storeFailures()
			assert.Equal(t, []string{"set"}, ops)

			store.failSet(nil)
			hs.get("/s", "Accept", "text/html")
			r := hs.get("/s", "Accept", "text/html")
			assert.Equal(t, "body 3", r.body, "stored once the store works")
			assert.Contains(t, r.header.Get("Cache-Status"), "hit")
		})
	}
}

// A failed invalidation still serves the unsafe request's response; a failed purge returns
// the error and what it removed before failing.
func TestStoreFailure_DeleteAndPurgeFail(t *testing.T) {
	hs, store, logs := storeHarness(t, Options{})
	hs.setHandler(hs.counter("Cache-Control", "max-age=60", "Cache-Tag", "t"))
	hs.get("/d")
	hs.get("/e")
	store.failDelete(errDown)

	r := hs.do(http.MethodPost, "/d")
	assert.Equal(t, http.StatusOK, r.status, "the POST is answered")
	assert.Equal(t, "body 3", r.body)
	ops, _ := logs.storeFailures()
	assert.Equal(t, []string{"delete"}, ops)
	assert.Contains(t, hs.get("/d").header.Get("Cache-Status"), "hit",
		"the stored response outlives a failed invalidation, until it expires or is purged")

	base := hs.front.URL
	ctx := t.Context()
	assert.ErrorIs(t, hs.cache.Purge(ctx, base+"/d"), errDown)
	n, err := hs.cache.PurgeTag(ctx, "t")
	assert.ErrorIs(t, err, errDown)
	assert.Equal(t, 1, n, "one entry went before the store failed")
	n, err = hs.cache.PurgePrefix(ctx, base+"/")
	assert.ErrorIs(t, err, errDown)
	assert.Equal(t, 1, n)
	assert.Zero(t, store.Len())
}

// blockingStore's Get waits until its context is done, as a store whose server has stopped
// answering does.
type blockingStore struct {
	*MemoryStore
	entered chan struct{} // receives once per blocked Get
}

func (s *blockingStore) Get(ctx context.Context, key string) (*Entry, error) {
	s.entered <- struct{}{}
	<-ctx.Done()
	return nil, fmt.Errorf("store: %w", ctx.Err())
}

// A lookup in a store that hangs ends with the request: a client that goes away, or a
// context cancelled by a middleware, ends the handler; nothing goes to the origin and
// nothing is logged as a store failure.
func TestStoreFailure_BlockingStoreHonoursContext(t *testing.T) {
	ms, err := NewMemoryStore(MemoryOptions{})
	require.NoError(t, err)
	store := &blockingStore{MemoryStore: ms, entered: make(chan struct{}, 1)}
	logs := &logRecorder{}
	c, err := New(Options{Store: store, Logger: slog.New(logs)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	var originHits atomic.Int64
	cached := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originHits.Add(1)
	}))
	returned := make(chan struct{}, 1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { returned <- struct{}{} }()
		if r.Header.Get("X-Cancel") == "server" {
			// A middleware's deadline, say: the context ends while the client waits.
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			go func() { <-store.entered; cancel() }()
			r = r.WithContext(ctx)
		}
		cached.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	guard := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second): // a guard against a hang, not a wait for behaviour
			t.Fatal(what)
		}
	}

	t.Run("client goes away", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/b", nil)
		require.NoError(t, err)
		errs := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_ = resp.Body.Close()
			}
			errs <- err
		}()
		guard(store.entered, "the lookup never reached the store")
		cancel()
		guard(returned, "the handler still waits on the store after the client left")
		assert.ErrorIs(t, <-errs, context.Canceled)
	})
	t.Run("context ends while the client waits", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, front.URL+"/b", nil)
		require.NoError(t, err)
		req.Header.Set("X-Cancel", "server")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		guard(returned, "the handler did not return")
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "neither the store nor the origin answered")
	})
	assert.Zero(t, originHits.Load(), "nothing went to the origin")
	ops, _ := logs.storeFailures()
	assert.Empty(t, ops, "the request's own end is not a store failure")
}

// setCall is what ctxStore saw of a Set's context, at the time of the call.
type setCall struct {
	err         error
	deadline    time.Time
	hasDeadline bool
}

// ctxStore records the context of each Set.
type ctxStore struct {
	*MemoryStore
	sets chan setCall
}

func (s *ctxStore) Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error {
	d, ok := ctx.Deadline()
	s.sets <- setCall{err: ctx.Err(), deadline: d, hasDeadline: ok}
	return s.MemoryStore.Set(ctx, key, e, ttl)
}

// A background revalidation stores its response with a context that its client's departure
// does not cancel, but that has a deadline.
func TestStaleWhileRevalidate_StoresWithItsOwnBoundedContext(t *testing.T) {
	clock := newClock()
	ms, err := NewMemoryStore(MemoryOptions{Now: clock.Now})
	require.NoError(t, err)
	store := &ctxStore{MemoryStore: ms, sets: make(chan setCall, 4)}
	c, err := New(Options{Store: store, Now: clock.Now, RefreshTimeout: time.Minute})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	clientDone := make(chan struct{})
	var hits atomic.Int64
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if n == 2 {
			<-clientDone // the refresh reaches the store only after its client's handler returned
		}
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
		w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
		_, _ = io.WriteString(w, "body "+itoa(n))
	}))
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel() // as a server does when the handler returns
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://example.com/r", nil).WithContext(ctx))
		return rec
	}
	get()
	<-store.sets // the first response is stored
	clock.Advance(5 * time.Second)
	stale := get()
	require.Contains(t, stale.Header().Get("Cache-Status"), "detail=stale-while-revalidate")
	close(clientDone)

	var call setCall
	select {
	case call = <-store.sets:
	case <-time.After(10 * time.Second): // a guard against a hang, not a wait for behaviour
		t.Fatal("the background revalidation never stored its response")
	}
	assert.NoError(t, call.err, "the refresh's context outlives its client's request")
	require.True(t, call.hasDeadline, "the refresh's context has a deadline")
	assert.WithinDuration(t, time.Now().Add(time.Minute), call.deadline, 10*time.Second, "RefreshTimeout bounds it")
	waitRefreshes(c)
	assert.Equal(t, "body 2", get().Body.String(), "the refreshed response was stored")
}

// Bytes that do not decode are a miss, not a failure, even under FailClosed.
func TestStoreFailure_BadEntryIsAMiss(t *testing.T) {
	hs, store, logs := storeHarness(t, Options{FailClosed: true})
	hs.setHandler(hs.counter("Cache-Control", "max-age=60"))
	store.failGet(fmt.Errorf("decoding: %w", ErrBadEntry))
	r := hs.get("/x")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "sluice; fwd=uri-miss; fwd-status=200; stored", r.header.Get("Cache-Status"))
	assert.Equal(t, 1, store.Len(), "and the entry is overwritten")
	ops, _ := logs.storeFailures()
	assert.Empty(t, ops)
}

// Store failures cost nothing while the store works: the hit path neither logs nor
// allocates more (TestHitAllocations), and the limiter lets one record through per interval
// however many goroutines fail at once.
func TestStoreFailure_LogLimiterUnderContention(t *testing.T) {
	clock := newClock()
	logs := &logRecorder{}
	c, err := New(Options{Now: clock.Now, Logger: slog.New(logs)})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.storeFailed(context.Background(), "get", "k", errDown)
			}
		})
	}
	wg.Wait()
	ops, _ := logs.storeFailures()
	assert.Len(t, ops, 1, "one record for 800 failures within the interval")
	clock.Advance(storeLogInterval)
	c.storeFailed(context.Background(), "get", "k", errDown)
	_, suppressed := logs.storeFailures()
	assert.Equal(t, []int64{0, 799}, suppressed)
}
