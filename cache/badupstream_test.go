package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/upstreamtest"
	"github.com/sluiceproxy/sluice/proxy"
)

// These tests put the cache in front of a real sluice proxy whose one endpoint is a scripted
// upstream (internal/upstreamtest) that misbehaves: bodies cut short, stalled, followed by
// bytes nobody asked for. The cache sees exactly what a real proxy hands it, panics and
// aborts included, and must neither store nor serve anything the client could take for a
// whole response that was not one.

// badRig is a scripted upstream behind a sluice proxy behind the cache, served by a real
// front server that the test reaches with a real client.
type badRig struct {
	t      *testing.T
	up     *upstreamtest.Server
	cache  *Cache
	front  *httptest.Server
	client *http.Client
	n      atomic.Int64 // requests the upstream has read
}

// answer writes the response to the n-th request the upstream read (counted from 1) and
// reports whether the script should go on reading requests on the connection.
type answer func(c *upstreamtest.Conn, n int64, req *upstreamtest.Request) bool

func newBadRig(t *testing.T, opts Options, p *proxy.Proxy, a answer) *badRig {
	t.Helper()
	rig := &badRig{t: t}
	rig.up = upstreamtest.Start(t, func(c *upstreamtest.Conn) {
		for {
			req, err := c.ReadRequest()
			if err != nil {
				return
			}
			if !a(c, rig.n.Add(1), req) {
				return
			}
		}
	})
	addr := rig.up.Addr()
	p.Picker = sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
		return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: addr}}, nil
	})
	c, err := New(opts)
	require.NoError(t, err, "New")
	rig.cache = c
	rig.front = httptest.NewServer(c.Handler(p))
	tr := &http.Transport{}
	rig.client = &http.Client{Transport: tr, Timeout: 15 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		rig.front.Close()
		_ = c.Close()
	})
	return rig
}

type badResult struct {
	status int
	header http.Header
	body   string
	err    error // from the request or from reading the body
}

// get sends a GET through the cache; header is pairs of name, value.
func (rig *badRig) get(path string, header ...string) badResult {
	req, err := http.NewRequest(http.MethodGet, rig.front.URL+path, nil)
	if err != nil {
		return badResult{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := rig.client.Do(req)
	if err != nil {
		return badResult{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return badResult{status: res.StatusCode, header: res.Header, body: string(b), err: err}
}

// key is the cache key of path on the front server.
func (rig *badRig) key(path string) string {
	u, err := url.Parse(rig.front.URL)
	require.NoError(rig.t, err)
	return keyOf("http", u.Host, path, "")
}

// waitWaiters polls, with a deadline, until n requests wait on the flight for key.
func (rig *badRig) waitWaiters(key string, n int32) {
	rig.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rig.cache.flights.mu.Lock()
		f := rig.cache.flights.m[key]
		rig.cache.flights.mu.Unlock()
		if f != nil && f.waiters.Load() >= n {
			return
		}
		require.True(rig.t, time.Now().Before(deadline), "%d followers never waited on %s", n, key)
		runtime.Gosched()
	}
}

// response is a whole HTTP/1.1 200 response with Content-Length, Cache-Control: max-age=60
// and the given extra field lines ("Name: value").
func response(body string, fields ...string) string {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\nCache-Control: max-age=60\r\n")
	for _, f := range fields {
		b.WriteString(f)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String()
}

const wholeBody = "the whole body, as the origin meant it"

// A response cut short — Content-Length 100 with 10 bytes, or chunked without its last
// chunk — then closed or reset, is neither stored nor served to anyone as complete: the
// client that asked sees its connection aborted, and the next request goes upstream and gets
// (and stores) the whole response.
func TestBadUpstream_TruncatedBodyNotStored(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raw   string
		reset bool
	}{
		{
			name: "Content-Length 100, 10 bytes, close",
			raw:  "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nCache-Control: max-age=60\r\n\r\n0123456789",
		},
		{
			name:  "Content-Length 100, 10 bytes, reset",
			raw:   "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nCache-Control: max-age=60\r\n\r\n0123456789",
			reset: true,
		},
		{
			name: "chunked without the last chunk, close",
			raw:  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\na\r\n0123456789\r\n",
		},
		{
			name:  "chunked without the last chunk, reset",
			raw:   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\na\r\n0123456789\r\n",
			reset: true,
		},
		{
			name: "chunked, cut inside a chunk, close",
			raw:  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n64\r\n0123456789",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newBadRig(t, Options{}, &proxy.Proxy{}, func(c *upstreamtest.Conn, n int64, _ *upstreamtest.Request) bool {
				if n == 1 {
					_ = c.Write(tc.raw)
					if tc.reset {
						_ = c.Reset()
					}
					return false
				}
				return c.Write(response(wholeBody)) == nil
			})

			first := rig.get("/page")
			require.Error(t, first.err, "a truncated body must reach the client as an error, not as a whole response (got %d %q)",
				first.status, first.body)
			assert.NotEqual(t, wholeBody, first.body)

			second := rig.get("/page")
			require.NoError(t, second.err, "the next request")
			assert.Equal(t, http.StatusOK, second.status)
			assert.Equal(t, wholeBody, second.body, "the next request must not get the truncated body")
			assert.Contains(t, second.header.Get("Cache-Status"), "fwd=uri-miss",
				"the truncated response must not have been stored")
			assert.EqualValues(t, 2, rig.n.Load(), "the second request went upstream")

			third := rig.get("/page")
			require.NoError(t, third.err)
			assert.Equal(t, wholeBody, third.body, "the whole response is what was stored")
			assert.Contains(t, third.header.Get("Cache-Status"), "hit")
			assert.EqualValues(t, 2, rig.n.Load(), "the third request was a hit")
		})
	}
}

const poison = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nCache-Control: max-age=600\r\n\r\nPOISON"

// A cacheable response followed by a whole second response nobody asked for: those bytes
// must never become the answer to a later request, for the same URL or another, nor be
// stored. The stray bytes come either in the same write as the response (the proxy finds
// them buffered when the body ends) or once the client has its response (they arrive on a
// connection the proxy may already hold idle).
func TestBadUpstream_StrayBytesDoNotPoison(t *testing.T) {
	for _, tc := range []struct {
		name  string
		later bool
	}{
		{name: "in the same write as the response"},
		{name: "after the client has its response", later: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			strayNow := make(chan struct{})
			strayWritten := make(chan struct{})
			rig := newBadRig(t, Options{}, &proxy.Proxy{}, func(c *upstreamtest.Conn, n int64, req *upstreamtest.Request) bool {
				if n > 1 {
					return c.Write(response("fresh "+req.Target)) == nil
				}
				if !tc.later {
					return c.Write(response("first /a")+poison) == nil
				}
				if c.Write(response("first /a")) != nil {
					return false
				}
				select {
				case <-strayNow:
				case <-c.Done():
					return false
				}
				err := c.Write(poison)
				close(strayWritten)
				return err == nil
			})

			a := rig.get("/a")
			require.NoError(t, a.err)
			require.Equal(t, "first /a", a.body)
			if tc.later {
				close(strayNow)
				<-strayWritten
			}
			for i, path := range []string{"/b", "/a", "/b", "/c", "/a"} {
				r := rig.get(path)
				require.NoError(t, r.err, "request %d for %s", i, path)
				assert.Equal(t, http.StatusOK, r.status, "request %d for %s", i, path)
				assert.NotContains(t, r.body, "POISON", "request %d for %s got the stray response", i, path)
				want := "fresh " + path
				if path == "/a" {
					want = "first /a"
				}
				assert.Equal(t, want, r.body, "request %d for %s", i, path)
			}
			var targets []string
			for _, r := range rig.up.Requests() {
				targets = append(targets, r.Target)
			}
			assert.Equal(t, []string{"/a", "/b", "/c"}, targets, "each URL went upstream once, and was then a hit")
		})
	}
}

// An upstream that sends a head and a little of the body, then nothing: the proxy's
// ResponseBodyTimeout aborts the leader's response, the cache stores nothing, and the
// requests collapsed onto that fetch are released — each gets an error or a whole response
// fetched anew, never a hang and never a truncated 200. A later request is served whole.
func TestBadUpstream_StalledBodyReleasesFollowers(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	rig := newBadRig(t, Options{}, &proxy.Proxy{ResponseBodyTimeout: 200 * time.Millisecond},
		func(c *upstreamtest.Conn, n int64, _ *upstreamtest.Request) bool {
			if n > 1 {
				return c.Write(response(wholeBody)) == nil
			}
			close(arrived)
			select {
			case <-release:
			case <-c.Done():
				return false
			}
			// The head is sent only once the followers wait, so that the body timeout cannot
			// fire before they joined.
			_ = c.Write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nCache-Control: max-age=60\r\n\r\n0123456789")
			c.Stall()
			return false
		})

	leader := make(chan badResult, 1)
	go func() { leader <- rig.get("/slow") }()
	<-arrived
	const followers = 4
	results := make(chan badResult, followers)
	for range followers {
		go func() { results <- rig.get("/slow") }()
	}
	rig.waitWaiters(rig.key("/slow"), followers)
	start := time.Now()
	close(release)

	bound := time.After(10 * time.Second)
	select {
	case l := <-leader:
		require.Error(t, l.err, "the stalled response must reach its client as an error (got %d %q)", l.status, l.body)
	case <-bound:
		require.FailNow(t, "the leader's request hung past the body timeout")
	}
	whole := 0
	for i := range followers {
		select {
		case r := <-results:
			if r.err == nil && r.body == wholeBody {
				whole++
			}
			if r.err == nil {
				assert.Equal(t, http.StatusOK, r.status, "follower %d", i)
				assert.Equal(t, wholeBody, r.body, "follower %d got a truncated or wrong body", i)
			}
		case <-bound:
			require.FailNow(t, "a follower hung", "follower %d still waiting %v after the stall began", i, time.Since(start))
		}
	}
	assert.LessOrEqual(t, rig.n.Load(), int64(1+followers), "at most one upstream request per client")
	t.Logf("%d of %d followers got the whole response; the upstream read %d requests", whole, followers, rig.n.Load())

	later := rig.get("/slow")
	require.NoError(t, later.err)
	assert.Equal(t, http.StatusOK, later.status)
	assert.Equal(t, wholeBody, later.body, "a later request is served whole")
}

// A 304 to the cache's own revalidation that carries a body, or is followed by a whole stray
// response, must be taken for what it is: the stored body is served, and the extra bytes
// answer no later request and are never stored.
func TestBadUpstream_NotModifiedWithBody(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
	}{
		{
			name: "304 with a Content-Length body",
			raw:  "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: no-cache\r\nContent-Length: 6\r\n\r\nPOISON",
		},
		{
			name: "304 with a chunked body",
			raw:  "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nPOISON\r\n0\r\n\r\n",
		},
		{
			name: "304 followed by a whole stray response",
			raw:  "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: no-cache\r\n\r\n" + poison,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const v1 = "version 1"
			rig := newBadRig(t, Options{}, &proxy.Proxy{}, func(c *upstreamtest.Conn, n int64, req *upstreamtest.Request) bool {
				switch {
				case req.Target != "/r":
					return c.Write(response("fresh "+req.Target)) == nil
				case req.Header.Get("If-None-Match") == `"v1"`:
					return c.Write(tc.raw) == nil
				}
				return c.Write("HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nCache-Control: no-cache\r\nContent-Length: 9\r\n\r\n"+v1) == nil
			})

			first := rig.get("/r")
			require.NoError(t, first.err)
			require.Equal(t, v1, first.body)
			for i, path := range []string{"/r", "/other", "/r", "/r", "/another"} {
				r := rig.get(path)
				require.NoError(t, r.err, "request %d for %s", i, path)
				assert.Equal(t, http.StatusOK, r.status, "request %d for %s", i, path)
				assert.NotContains(t, r.body, "POISON", "request %d for %s got the 304's extra bytes", i, path)
				if path == "/r" {
					assert.Equal(t, v1, r.body, "request %d: the 304 revalidates the stored body", i)
					assert.Contains(t, r.header.Get("Cache-Status"), "fwd-status=304", "request %d revalidated", i)
				} else {
					assert.Equal(t, "fresh "+path, r.body, "request %d for %s", i, path)
				}
			}
			var conditional int
			for _, r := range rig.up.Requests() {
				if r.Target == "/r" && r.Header.Get("If-None-Match") == `"v1"` {
					conditional++
				}
			}
			assert.Equal(t, 3, conditional, "every later /r was a revalidation")
		})
	}
}

// A cacheable response with Set-Cookie reaches only the client it was made for: it is not
// stored, later clients get their own, and requests collapsed onto its fetch go upstream
// themselves rather than share the leader's cookie.
func TestBadUpstream_SetCookieServedToOneClient(t *testing.T) {
	arrived := make(chan struct{}, 16)
	var holdOnce sync.Once
	release := make(chan struct{})
	rig := newBadRig(t, Options{}, &proxy.Proxy{}, func(c *upstreamtest.Conn, n int64, req *upstreamtest.Request) bool {
		if req.Target == "/collapsed" {
			first := false
			holdOnce.Do(func() { first = true })
			if first {
				arrived <- struct{}{}
				select {
				case <-release:
				case <-c.Done():
					return false
				}
			}
		}
		return c.Write(response("page", "Set-Cookie: session=s"+strconv.FormatInt(n, 10)+"; HttpOnly")) == nil
	})

	seen := map[string]bool{}
	for i := range 3 {
		r := rig.get("/account")
		require.NoError(t, r.err)
		cookie := r.header.Get("Set-Cookie")
		require.NotEmpty(t, cookie, "request %d gets a cookie of its own", i)
		assert.False(t, seen[cookie], "request %d got %q, which another client already had", i, cookie)
		seen[cookie] = true
		assert.Contains(t, r.header.Get("Cache-Status"), "detail=set-cookie", "request %d", i)
		assert.NotContains(t, r.header.Get("Cache-Status"), "hit", "request %d", i)
	}
	assert.EqualValues(t, 3, rig.n.Load(), "every request went upstream")

	leader := make(chan badResult, 1)
	go func() { leader <- rig.get("/collapsed") }()
	<-arrived
	const followers = 4
	results := make(chan badResult, followers)
	for range followers {
		go func() { results <- rig.get("/collapsed") }()
	}
	rig.waitWaiters(rig.key("/collapsed"), followers)
	close(release)
	all := []badResult{<-leader}
	for range followers {
		all = append(all, <-results)
	}
	for i, r := range all {
		require.NoError(t, r.err, "client %d", i)
		cookie := r.header.Get("Set-Cookie")
		require.NotEmpty(t, cookie, "client %d gets a cookie of its own", i)
		assert.False(t, seen[cookie], "client %d got %q, which another client already had", i, cookie)
		seen[cookie] = true
	}
	assert.EqualValues(t, 3+1+followers, rig.n.Load(), "each collapsed client went upstream itself")
}
