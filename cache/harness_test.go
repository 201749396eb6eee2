package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}}

// fakeClock is the injectable clock: tests move it instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// harness is a real origin server behind a reverse proxy behind the cache, served by a real
// front server that tests reach with a real client.
type harness struct {
	t      *testing.T
	clock  *fakeClock
	cache  *Cache
	origin *httptest.Server
	front  *httptest.Server
	hits   atomic.Int64
	last   atomic.Pointer[http.Request] // the last request the origin saw

	mu      sync.Mutex
	handler http.HandlerFunc
}

func newHarness(t *testing.T, opts Options, h http.HandlerFunc) *harness {
	t.Helper()
	hs := &harness{t: t, clock: newClock(), handler: h}
	if opts.Now == nil {
		opts.Now = hs.clock.Now
	}
	c, err := New(opts)
	require.NoError(t, err, "New")
	hs.cache = c
	hs.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.hits.Add(1)
		hs.last.Store(r)
		// The origin shares the fake clock, as a real origin shares real time.
		w.Header().Set("Date", hs.clock.Now().Format(http.TimeFormat))
		hs.mu.Lock()
		h := hs.handler
		hs.mu.Unlock()
		h(w, r)
	}))
	u, err := url.Parse(hs.origin.URL)
	require.NoError(t, err)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host }}
	hs.front = httptest.NewServer(c.Handler(rp))
	t.Cleanup(func() {
		hs.front.Close()
		hs.origin.Close()
		_ = c.Close()
	})
	return hs
}

func (hs *harness) setHandler(h http.HandlerFunc) {
	hs.mu.Lock()
	hs.handler = h
	hs.mu.Unlock()
}

type result struct {
	status int
	header http.Header
	body   string
}

// do sends a request through the cache; header is pairs of name, value.
func (hs *harness) do(method, path string, header ...string) result {
	hs.t.Helper()
	req, err := http.NewRequest(method, hs.front.URL+path, nil)
	require.NoError(hs.t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := noRedirects.Do(req)
	require.NoError(hs.t, err, "request through the cache")
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(hs.t, err)
	return result{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (hs *harness) get(path string, header ...string) result {
	hs.t.Helper()
	return hs.do(http.MethodGet, path, header...)
}

// counter returns an origin handler that sets the given header pairs and answers with a
// body that counts the origin's requests, so tests can tell a stored body from a fresh one.
func (hs *harness) counter(header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Add(header[i], header[i+1])
		}
		_, _ = io.WriteString(w, "body "+itoa(hs.hits.Load()))
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// httpDate formats a time relative to the fake clock.
func (hs *harness) httpDate(d time.Duration) string {
	return hs.clock.Now().Add(d).Format(http.TimeFormat)
}
