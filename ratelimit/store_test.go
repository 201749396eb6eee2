package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/ratelimit"
)

// fixedWindow is a Store written as one outside the package must be, from the exported parts
// of Key and Decision alone: at most n requests per key in each window of length w, the window
// starting at the key's first request. That it compiles here, in package ratelimit_test, is
// half of what TestStoreOutsideThePackage checks.
type fixedWindow struct {
	n int
	w time.Duration

	mu      sync.Mutex // mu protects windows and the windows in it
	windows map[ratelimit.Key]*window
}

type window struct {
	start time.Time
	count int
}

var _ ratelimit.Store = (*fixedWindow)(nil)

func newFixedWindow(n int, w time.Duration) *fixedWindow {
	return &fixedWindow{n: n, w: w, windows: map[ratelimit.Key]*window{}}
}

func (s *fixedWindow) Take(_ context.Context, k ratelimit.Key, now time.Time, _ time.Duration) (ratelimit.Decision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	win := s.windows[k]
	if win == nil || !now.Before(win.start.Add(s.w)) {
		win = &window{start: now}
		k.Str = strings.Clone(k.Str) // Str may share the request's memory
		s.windows[k] = win
	}
	reset := win.start.Add(s.w).Sub(now)
	if win.count >= s.n {
		return ratelimit.Decision{RetryAfter: reset, Reset: reset}, nil
	}
	win.count++
	// The window itself is the token: Cancel gives back to the window the token came from,
	// and a window that has since ended is out of the map, so giving back to it changes
	// nothing.
	return ratelimit.Decision{OK: true, Remaining: s.n - win.count, Reset: reset, Token: win}, nil
}

func (s *fixedWindow) Cancel(_ context.Context, _ ratelimit.Key, d ratelimit.Decision, _ time.Time) error {
	win, ok := d.Token.(*window)
	if !ok {
		return fmt.Errorf("fixedWindow: Cancel given a token of type %T", d.Token)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	win.count--
	return nil
}

func (s *fixedWindow) count(k ratelimit.Key) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if win := s.windows[k]; win != nil {
		return win.count
	}
	return 0
}

// get sends a GET for path to srv with the given headers and returns the response, its body
// read and closed.
func get(t *testing.T, srv *httptest.Server, path string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp
}

// TestStoreOutsideThePackage runs a Limiter on fixedWindow over a real server: the Limiter
// takes its answers, reports them in the headers and gives tokens back through Token.
func TestStoreOutsideThePackage(t *testing.T) {
	clk := newClock()
	fw := newFixedWindow(3, 10*time.Second)
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{
			{Name: "window", Rate: 0.3, Burst: 3, By: ratelimit.ByHeader("X-Api-Key"), Store: fw},
			{Name: "route", Rate: 1e-9, Burst: 1, By: ratelimit.ByFunc(func(r *http.Request) (string, bool) {
				return "once", r.URL.Path == "/once"
			})},
		},
		Now: clk.Now,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(l.Handler(ok))
	defer srv.Close()

	steps := []struct {
		advance    time.Duration
		path, key  string
		status     int
		rateLimit  string
		retryAfter string
	}{
		{0, "/", "k1", 200, `"window";r=2;t=10`, ""},
		{0, "/", "k1", 200, `"window";r=1;t=10`, ""},
		{0, "/", "k1", 200, `"window";r=0;t=10`, ""},
		{0, "/", "k1", 429, `"window";r=0;t=10`, "10"},
		{4 * time.Second, "/", "k1", 429, `"window";r=0;t=6`, "6"},
		{0, "/", "k2", 200, `"window";r=2;t=10`, ""}, // another key, its own window
		{6 * time.Second, "/", "k1", 200, `"window";r=2;t=10`, ""},
		{0, "/once", "k1", 200, `"window";r=1;t=10, "route";r=0;t=1000000000`, ""},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		resp := get(t, srv, s.path, "X-Api-Key", s.key)
		assert.Equal(t, s.status, resp.StatusCode, "step %d status", i)
		assert.Equal(t, s.rateLimit, resp.Header.Get("RateLimit"), "step %d RateLimit", i)
		assert.Equal(t, s.retryAfter, resp.Header.Get("Retry-After"), "step %d Retry-After", i)
	}

	k1 := ratelimit.Key{Str: "k1"}
	require.Equal(t, 2, fw.count(k1))
	resp := get(t, srv, "/once", "X-Api-Key", "k1")
	assert.Equal(t, 429, resp.StatusCode, "the route limit refuses a second /once")
	assert.Equal(t, 2, fw.count(k1), "the window's token went back through Cancel and Decision.Token")
	assert.Contains(t, resp.Header.Get("RateLimit"), `"window";r=1;`, "and the RateLimit field says so")
}

// errDown is what a store whose backend is unreachable returns.
var errDown = errors.New("redis: connection refused")

// downStore is a Store whose backend is down. The Decision it returns with its error would
// refuse the request, so a Limiter that used it would answer 429.
type downStore struct{ takes atomic.Int32 }

func (s *downStore) Take(context.Context, ratelimit.Key, time.Time, time.Duration) (ratelimit.Decision, error) {
	s.takes.Add(1)
	return ratelimit.Decision{RetryAfter: time.Hour}, errDown
}

func (s *downStore) Cancel(context.Context, ratelimit.Key, ratelimit.Decision, time.Time) error {
	return errDown
}

// logRecorder is a slog.Handler that keeps each record as its message and attributes.
type logRecorder struct {
	mu    sync.Mutex // mu protects lines
	lines []map[string]string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool {
		line[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines = append(h.lines, line)
	return nil
}

func (h *logRecorder) get() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]string(nil), h.lines...)
}

// TestStoreFailure checks what a Limiter does when a Limit's Store fails: by default the
// request is admitted past that limit and reaches the upstream; with FailClosed it is refused
// with 503 and the tokens the other limit took go back; either way the failure is logged, at
// most once a second.
func TestStoreFailure(t *testing.T) {
	for _, tc := range []struct {
		name       string
		failClosed bool
		status     int
		served     int32
		rateLimit  string // after the first request
		retryAfter string
		action     string
	}{
		{"fail open by default", false, 200, 1, `"local";r=9;t=1`, "", "admitted"},
		{"fail closed", true, 503, 0, `"local";r=10;t=0`, "1", "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			logs := &logRecorder{}
			down := &downStore{}
			l, err := ratelimit.New(ratelimit.Options{
				Limits: []ratelimit.Limit{
					{Name: "local", Rate: 1, Burst: 10},
					{Name: "shared", Rate: 1, Burst: 10, Store: down},
				},
				FailClosed: tc.failClosed,
				Logger:     slog.New(logs),
				Now:        clk.Now,
			})
			require.NoError(t, err)
			var served atomic.Int32
			srv := httptest.NewServer(l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				served.Add(1)
			})))
			defer srv.Close()

			resp := get(t, srv, "/")
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, tc.served, served.Load(), "requests the upstream saw")
			assert.Equal(t, `"local";q=10;w=10, "shared";q=10;w=10`, resp.Header.Get("RateLimit-Policy"))
			assert.Equal(t, tc.rateLimit, resp.Header.Get("RateLimit"),
				"the failed limit is left out; a refused request's local token goes back")
			assert.Equal(t, tc.retryAfter, resp.Header.Get("Retry-After"))
			assert.Equal(t, int32(1), down.takes.Load())
			assert.Equal(t, []map[string]string{{"msg": "ratelimit: store failed", "level": "ERROR",
				"limit": "shared", "op": "Take", "err": errDown.Error(), "action": tc.action, "unlogged": "0"}},
				logs.get(), "the failure reaches the logger")

			get(t, srv, "/")
			get(t, srv, "/")
			assert.Len(t, logs.get(), 1, "a second failure within a second is counted, not logged")
			clk.Advance(time.Second)
			get(t, srv, "/")
			lines := logs.get()
			require.Len(t, lines, 2, "a failure a second later is logged")
			assert.Equal(t, "2", lines[1]["unlogged"], "with the count of the failures left out")
			assert.Equal(t, 4*tc.served, served.Load())
		})
	}
}

// cancelDownStore grants tokens from a MemoryStore but cannot give them back.
type cancelDownStore struct{ *ratelimit.MemoryStore }

func (s cancelDownStore) Cancel(context.Context, ratelimit.Key, ratelimit.Decision, time.Time) error {
	return errDown
}

// TestCancelFailureIsOnlyLogged checks that a store failing to give a token back neither
// changes the answer (429 from the limit that refused, not 503) nor goes unnoticed.
func TestCancelFailureIsOnlyLogged(t *testing.T) {
	mem, err := ratelimit.NewMemoryStore(1, 5, 10)
	require.NoError(t, err)
	logs := &logRecorder{}
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{
			{Name: "shared", Rate: 1, Burst: 5, Store: cancelDownStore{mem}},
			{Name: "global", Rate: 1e-9, Burst: 1, By: ratelimit.Global()},
		},
		FailClosed: true,
		Logger:     slog.New(logs),
		Now:        newClock().Now,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(l.Handler(ok))
	defer srv.Close()
	assert.Equal(t, 200, get(t, srv, "/").StatusCode)
	resp := get(t, srv, "/")
	assert.Equal(t, 429, resp.StatusCode, "the global limit refused; the failed Cancel does not make it a 503")
	assert.Contains(t, resp.Header.Get("RateLimit"), `"shared";r=3;t=2`,
		"the token did not go back, and the RateLimit field does not pretend it did")
	lines := logs.get()
	require.Len(t, lines, 1)
	assert.Equal(t, "Cancel", lines[0]["op"])
	assert.Equal(t, "shared", lines[0]["limit"])
	assert.Equal(t, errDown.Error(), lines[0]["err"])
}

// blockingStore blocks its first Take until the request's context is done, as a store over a
// network that has stopped answering does when it honours ctx; later Takes grant at once.
// Closing release ends the block too, so that a test that fails does not hang.
type blockingStore struct {
	entered, release chan struct{}
	blocked          atomic.Bool
}

func (s *blockingStore) Take(ctx context.Context, _ ratelimit.Key, _ time.Time, _ time.Duration) (ratelimit.Decision, error) {
	if s.blocked.CompareAndSwap(false, true) {
		close(s.entered)
		select {
		case <-ctx.Done():
			return ratelimit.Decision{}, ctx.Err()
		case <-s.release:
			return ratelimit.Decision{}, errors.New("blockingStore: released by the test")
		}
	}
	return ratelimit.Decision{OK: true, Remaining: 1}, nil
}

func (s *blockingStore) Cancel(context.Context, ratelimit.Key, ratelimit.Decision, time.Time) error {
	return nil
}

// liveCtxStore is a MemoryStore that, like a store over the network, cannot give a token
// back under a context that is done.
type liveCtxStore struct{ *ratelimit.MemoryStore }

func (s liveCtxStore) Cancel(ctx context.Context, k ratelimit.Key, d ratelimit.Decision, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.MemoryStore.Cancel(ctx, k, d, now)
}

// TestBlockingStoreHonoursRequestContext checks that the Limiter gives a Store the request's
// context, so that a client going away ends a Take that hangs: the handler returns, the
// upstream never sees the request, nothing is logged as a store failure, and the token the
// other limit took goes back even though the context it was taken under is done.
func TestBlockingStoreHonoursRequestContext(t *testing.T) {
	store := &blockingStore{entered: make(chan struct{}), release: make(chan struct{})}
	mem, err := ratelimit.NewMemoryStore(1, 1, 10)
	require.NoError(t, err)
	logs := &logRecorder{}
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{
			{Name: "local", Rate: 1, Burst: 1, Store: liveCtxStore{mem}},
			{Name: "shared", Rate: 1, Burst: 1, Store: store},
		},
		Logger: slog.New(logs),
		Now:    newClock().Now,
	})
	require.NoError(t, err)
	var served atomic.Int32
	limited := l.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	returned := make(chan struct{}, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limited.ServeHTTP(w, r)
		returned <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(store.release) }) // cleanups run last first: before srv.Close

	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-store.entered
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	select {
	case <-returned:
	case <-time.After(10 * time.Second): // a bound, not a wait for behaviour: the hang is the bug
		t.Fatal("the handler still waits on a store whose client has gone")
	}
	assert.Zero(t, served.Load(), "a request whose client has gone is not passed on")
	assert.Empty(t, logs.get(), "a client going away is not a store failure")

	resp := get(t, srv, "/")
	assert.Equal(t, 200, resp.StatusCode, "the local token went back")
	assert.Equal(t, `"local";r=0;t=1, "shared";r=1;t=0`, resp.Header.Get("RateLimit"))
	assert.Equal(t, int32(1), served.Load())
}

// TestInfiniteRate checks that math.Inf(1) means no limit: every request is admitted and
// reported as leaving a full bucket.
func TestInfiniteRate(t *testing.T) {
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Rate: math.Inf(1), Burst: 2}},
		Now:    newClock().Now,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(l.Handler(ok))
	defer srv.Close()
	for i := range 5 {
		resp := get(t, srv, "/")
		assert.Equal(t, 200, resp.StatusCode, "request %d", i)
		assert.Equal(t, `"default";r=2;t=0`, resp.Header.Get("RateLimit"), "request %d", i)
	}
	assert.Equal(t, `"default";q=2;w=1`, l.Policy())
}
