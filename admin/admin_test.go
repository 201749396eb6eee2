package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/h1"
)

var (
	notBefore = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
)

// fullOptions configures every section with fixed values.
func fullOptions(t *testing.T) admin.Options {
	t.Helper()
	rec, err := admin.NewRecorder(admin.RecorderOptions{})
	require.NoError(t, err)
	rec.Record("api", "10.0.0.1:8080", 200, 3*time.Millisecond)
	return admin.Options{
		Routes: func() []admin.Route {
			return []admin.Route{{Name: "api", Hosts: []string{"api.example.com"}, Paths: []string{"prefix /"}, Pools: []string{"api"}}}
		},
		Pools: func() []admin.Pool {
			return []admin.Pool{{Name: "api", Policy: "round-robin", Endpoints: []admin.Endpoint{
				{Addr: "10.0.0.1:8080", Zone: "a", State: admin.StateReady, InFlight: 3, Latency: 1500 * time.Microsecond},
				{Addr: "10.0.0.2:8080", Zone: "b", State: admin.StateEjected, InFlight: -1, Ejections: []admin.Ejection{
					{At: notBefore, Reason: "consecutive 5xx", For: 30 * time.Second},
				}},
			}}}
		},
		Certificates: func() []admin.Certificate {
			return []admin.Certificate{{Names: []string{"api.example.com"}, Issuer: "test CA", NotBefore: notBefore, NotAfter: notAfter}}
		},
		Cache: func() admin.CacheSummary {
			return admin.CacheSummary{Entries: 2, Bytes: 2048, MaxBytes: 1 << 20, Hits: 5, Misses: 1}
		},
		Limiters: func() []admin.LimiterSummary {
			return []admin.LimiterSummary{{Name: "per-client", Keys: 7, MaxKeys: 100, Allowed: 70, Limited: 3}}
		},
		Recorder: rec,
	}
}

func serve(t *testing.T, opts admin.Options) *httptest.Server {
	t.Helper()
	h, err := admin.New(opts)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, body
}

func getJSON(t *testing.T, url string) any {
	t.Helper()
	res, body := get(t, url)
	require.Equal(t, http.StatusOK, res.StatusCode, "GET %s: %s", url, body)
	assert.Equal(t, "application/json", res.Header.Get("Content-Type"))
	var v any
	require.NoError(t, json.Unmarshal(body, &v), "GET %s answers JSON", url)
	return v
}

// TestJSONShapes pins the field names and units of every endpoint: the dashboard and any
// script an operator writes read them.
func TestJSONShapes(t *testing.T) {
	srv := serve(t, fullOptions(t))
	tests := []struct {
		path string
		want string // the JSON expected, compared after decoding
	}{
		{"/api/routes", `[{"name":"api","hosts":["api.example.com"],"paths":["prefix /"],"pools":["api"]}]`},
		{"/api/pools", `[{"name":"api","policy":"round-robin","endpoints":[
			{"addr":"10.0.0.1:8080","zone":"a","state":"ready","in_flight":3,"latency_ms":1.5,"ejections":[]},
			{"addr":"10.0.0.2:8080","zone":"b","state":"ejected","in_flight":null,"latency_ms":0,
			 "ejections":[{"at":"2026-01-01T00:00:00Z","reason":"consecutive 5xx","for_ms":30000}]}]}]`},
		{"/api/certificates", `[{"names":["api.example.com"],"issuer":"test CA",
			"not_before":"2026-01-01T00:00:00Z","not_after":"2026-04-01T00:00:00Z"}]`},
		{"/api/cache", `{"entries":2,"bytes":2048,"max_bytes":1048576,"hits":5,"misses":1,"stale":0,
			"collapsed":0,"stored":0,"evicted":0}`},
		{"/api/limiters", `[{"name":"per-client","keys":7,"max_keys":100,"allowed":70,"limited":3,"delayed":0}]`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var want any
			require.NoError(t, json.Unmarshal([]byte(tt.want), &want))
			assert.Equal(t, want, getJSON(t, srv.URL+tt.path))
		})
	}

	t.Run("/api/stats", func(t *testing.T) {
		stats := getJSON(t, srv.URL+"/api/stats").(map[string]any)
		for _, dim := range []string{"routes", "endpoints"} {
			series := stats[dim].([]any)
			require.Len(t, series, 1, "one %s recorded", dim)
			s := series[0].(map[string]any)
			for _, k := range []string{"name", "start", "requests", "errors", "p50_ms", "p99_ms"} {
				assert.Contains(t, s, k, "a series of %s has %q", dim, k)
			}
			assert.Len(t, s["requests"], 179, "three minutes of completed seconds")
		}
	})

	t.Run("/api/snapshot", func(t *testing.T) {
		snap := getJSON(t, srv.URL+"/api/snapshot").(map[string]any)
		assert.Equal(t, []any{"routes", "pools", "certificates", "cache", "limiters", "stats"}, snap["sections"])
		for _, k := range []string{"time", "interval_ms", "routes", "pools", "certificates", "cache", "limiters", "stats"} {
			assert.Contains(t, snap, k)
		}
	})
}

// TestAbsentSections checks that a nil source leaves its section out rather than showing it
// empty: an embedder without a cache gets no cache section.
func TestAbsentSections(t *testing.T) {
	srv := serve(t, admin.Options{Pools: func() []admin.Pool { return nil }})
	for _, path := range []string{"/api/routes", "/api/certificates", "/api/cache", "/api/limiters", "/api/stats"} {
		res, _ := get(t, srv.URL+path)
		assert.Equal(t, http.StatusNotFound, res.StatusCode, "GET %s without its source", path)
	}
	assert.Equal(t, []any{}, getJSON(t, srv.URL+"/api/pools"), "a nil slice is shown as []")
	snap := getJSON(t, srv.URL+"/api/snapshot").(map[string]any)
	assert.Equal(t, []any{"pools"}, snap["sections"])
	assert.NotContains(t, snap, "cache")
	assert.NotContains(t, snap, "stats")

	res, _ := get(t, srv.URL+"/nope")
	assert.Equal(t, http.StatusNotFound, res.StatusCode)
}

// TestReadOnly checks that anything but GET and HEAD is refused, on every path, known or not.
func TestReadOnly(t *testing.T) {
	srv := serve(t, fullOptions(t))
	for _, path := range []string{"/", "/api/pools", "/api/events", "/app.js", "/nope"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions, "PURGE"} {
			req, err := http.NewRequest(method, srv.URL+path, strings.NewReader("x"))
			require.NoError(t, err)
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusMethodNotAllowed, res.StatusCode, "%s %s", method, path)
			assert.Equal(t, "GET, HEAD", res.Header.Get("Allow"), "%s %s", method, path)
		}
	}
	for _, path := range []string{"/", "/api/pools"} {
		res, err := http.Head(srv.URL + path)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode, "HEAD %s", path)
	}
}

// TestSecurityHeaders checks the headers that keep the page's script its own, on the page, its
// assets, the JSON and the errors alike.
func TestSecurityHeaders(t *testing.T) {
	srv := serve(t, fullOptions(t))
	types := map[string]string{
		"/":          "text/html; charset=utf-8",
		"/app.js":    "text/javascript; charset=utf-8",
		"/app.css":   "text/css; charset=utf-8",
		"/api/pools": "application/json",
		"/nope":      "",
	}
	for path, ctype := range types {
		res, _ := get(t, srv.URL+path)
		h := res.Header
		csp := h.Get("Content-Security-Policy")
		assert.Contains(t, csp, "default-src 'none'", path)
		assert.Contains(t, csp, "script-src 'self'", path)
		assert.Contains(t, csp, "frame-ancestors 'none'", path)
		assert.NotContains(t, csp, "unsafe", "%s: no unsafe-inline or unsafe-eval", path)
		assert.NotContains(t, csp, "http", "%s: no third-party origin", path)
		assert.Equal(t, "nosniff", h.Get("X-Content-Type-Options"), path)
		assert.Equal(t, "DENY", h.Get("X-Frame-Options"), path)
		assert.Equal(t, "no-store", h.Get("Cache-Control"), path)
		if ctype != "" {
			assert.Equal(t, ctype, h.Get("Content-Type"), path)
		}
	}
}

// TestEscaping checks that a route named like markup reaches the page only as data: JSON
// escapes it, and the page never turns text into markup nor runs inline script.
func TestEscaping(t *testing.T) {
	const evil = `<img src=x onerror="alert(1)">&</script>`
	srv := serve(t, admin.Options{
		Routes: func() []admin.Route { return []admin.Route{{Name: evil, Hosts: []string{evil}}} },
	})
	_, body := get(t, srv.URL+"/api/routes")
	assert.NotContains(t, string(body), "<img", "JSON escapes < and >")
	assert.Contains(t, string(body), `\u003cimg src=x onerror=\"alert(1)\"\u003e\u0026\u003c/script\u003e`)
	var routes []admin.Route
	require.NoError(t, json.Unmarshal(body, &routes))
	assert.Equal(t, evil, routes[0].Name, "and the name survives the round trip")

	_, js := get(t, srv.URL+"/app.js")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		assert.False(t, strings.Contains(string(js), sink), "app.js uses %s: it must build the DOM from text nodes only", sink)
	}
	_, page := get(t, srv.URL+"/")
	assert.NotRegexp(t, `<script(?:\s[^>]*)?>[^<]`, string(page), "no inline script")
	assert.NotRegexp(t, `\son[a-z]+=`, string(page), "no inline event handler")
	assert.NotContains(t, string(page), "style=", "no inline style")
	assert.NotContains(t, string(page), "//", "nothing from another origin")
}

// readEvent reads one server-sent event: its name and data.
func readEvent(t *testing.T, r *bufio.Reader) (event, data string) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err, "reading the event stream")
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if event != "" || data != "" {
				return event, data
			}
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

// TestEvents reads the event stream over a real connection, served by net/http and by h1:
// a snapshot at once, then one per Interval, each with the last completed second of stats.
// A server with a WriteTimeout shorter than the stream's life must not cut it.
func TestEvents(t *testing.T) {
	servers := map[string]func(t *testing.T, h http.Handler) string{
		"net/http": func(t *testing.T, h http.Handler) string {
			srv := httptest.NewUnstartedServer(h)
			srv.Config.WriteTimeout = 50 * time.Millisecond
			srv.Start()
			t.Cleanup(srv.Close)
			return srv.URL
		},
		"h1": func(t *testing.T, h http.Handler) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			srv := h1.New(&http.Server{Handler: h, WriteTimeout: 50 * time.Millisecond})
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			return "http://" + ln.Addr().String()
		},
	}
	for name, start := range servers {
		t.Run(name, func(t *testing.T) {
			opts := fullOptions(t)
			opts.Interval = 20 * time.Millisecond
			var calls atomic.Int32
			pools := opts.Pools
			opts.Pools = func() []admin.Pool { calls.Add(1); return pools() }
			h, err := admin.New(opts)
			require.NoError(t, err)
			url := start(t, h)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/events", nil)
			require.NoError(t, err)
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			assert.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
			r := bufio.NewReader(res.Body)
			line, err := r.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "retry: 40\n", line, "EventSource is told to reconnect after two intervals")

			for i := range 6 { // 120ms: past the WriteTimeout
				event, data := readEvent(t, r)
				assert.Equal(t, "snapshot", event)
				var snap struct {
					Sections []string      `json:"sections"`
					Pools    []admin.Pool  `json:"pools"`
					Stats    *admin.Stats  `json:"stats"`
					Routes   []admin.Route `json:"routes"`
				}
				require.NoError(t, json.Unmarshal([]byte(data), &snap), "event %d is a JSON snapshot: %s", i, data)
				assert.Len(t, snap.Sections, 6)
				require.Len(t, snap.Pools, 1)
				assert.Len(t, snap.Pools[0].Endpoints, 2)
				require.NotNil(t, snap.Stats)
				require.Len(t, snap.Stats.Routes, 1)
				assert.Len(t, snap.Stats.Routes[0].Requests, 1, "an event carries only the last completed second")
			}
			assert.GreaterOrEqual(t, calls.Load(), int32(6), "every event reads the sources afresh")
		})
	}
}

// TestPrefix checks that the dashboard works mounted under a path prefix: its links are
// relative.
func TestPrefix(t *testing.T) {
	h, err := admin.New(fullOptions(t))
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	res, page := get(t, srv.URL+"/admin/")
	require.Equal(t, http.StatusOK, res.StatusCode)
	for _, link := range []string{`src="app.js"`, `href="app.css"`} {
		assert.Contains(t, string(page), link, "the page's links are relative")
	}
	_, js := get(t, srv.URL+"/admin/app.js")
	for _, url := range []string{`'api/snapshot'`, `'api/events'`} {
		assert.Contains(t, string(js), url, "the script's URLs are relative")
	}
	for _, path := range []string{"/admin/app.js", "/admin/app.css", "/admin/api/snapshot"} {
		res, _ := get(t, srv.URL+path)
		assert.Equal(t, http.StatusOK, res.StatusCode, path)
	}
}

// TestMaxStreams checks that event streams past the bound are refused, and that a stream's
// slot is given back when its client leaves.
func TestMaxStreams(t *testing.T) {
	opts := fullOptions(t)
	opts.MaxStreams = 1
	opts.Interval = time.Hour
	srv := serve(t, opts)

	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/events", nil)
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return res, cancel
	}
	first, cancel := open()
	require.Equal(t, http.StatusOK, first.StatusCode)
	_, _ = readEvent(t, bufio.NewReader(first.Body)) // the stream is being served

	second, cancel2 := open()
	assert.Equal(t, http.StatusServiceUnavailable, second.StatusCode, "a second stream over MaxStreams 1")
	second.Body.Close()
	cancel2()

	cancel()
	first.Body.Close()
	require.Eventually(t, func() bool {
		res, cancel := open()
		defer cancel()
		defer res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond, "the first stream's slot comes back once its client left")
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		opts admin.Options
		want string
	}{
		{admin.Options{Interval: -time.Second}, "admin: Interval must be ≥ 0, got -1s"},
		{admin.Options{MaxStreams: -1}, "admin: MaxStreams must be ≥ 0, got -1"},
	}
	for _, tt := range tests {
		_, err := admin.New(tt.opts)
		assert.EqualError(t, err, tt.want)
	}
}
