package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sessionOrigin sets a cacheable header with a session cookie of its own for each request,
// as a login or tracking endpoint does.
func sessionOrigin(cc string) func(n int64, h http.Header) {
	return func(n int64, h http.Header) {
		h.Set("Cache-Control", cc)
		h.Set("Set-Cookie", "session=s"+itoa(n)+"; Path=/; HttpOnly")
	}
}

// Ten concurrent clients, collapsed onto one origin request, once all received the first
// client's session cookie. By default a response with Set-Cookie is not stored, and the
// followers go upstream for responses (and cookies) of their own.
func TestSetCookie_NotSharedWithCollapsedClients(t *testing.T) {
	rig := newCollapseRigWith(t, Options{}, sessionOrigin("max-age=60"))
	const n = 10
	var wg sync.WaitGroup
	cookies := make([][]string, n)
	for i := range n {
		wg.Go(func() { cookies[i] = rig.serve(context.Background()).Header().Values("Set-Cookie") })
	}
	<-rig.arrived
	rig.waitFollowers(t, coldKey, n-1) // nine followers wait on the leader's request
	close(rig.release)
	wg.Wait()

	clients := map[string]int{}
	for i, c := range cookies {
		assert.Len(t, c, 1, "client %d gets exactly one cookie, its own", i)
		for _, v := range c {
			clients[v]++
		}
	}
	for v, k := range clients {
		assert.Equal(t, 1, k, "cookie %q must reach one client, not %d", v, k)
	}
	assert.EqualValues(t, n, rig.hits.Load(), "every client's request reached the origin")

	later := rig.serve(context.Background())
	assert.NotContains(t, later.Header().Get("Cache-Status"), "hit", "nothing was stored")
	assert.Equal(t, []string{"session=s11; Path=/; HttpOnly"}, later.Header().Values("Set-Cookie"),
		"a later client gets its own cookie")
}

// no-cache="Set-Cookie" and private="Set-Cookie" (any case, alone or in a list, as a token or
// a quoted string, on any Cache-Control line) let the response be stored without the field;
// the client whose request fetched it still gets its cookie. Anything else that carries
// Set-Cookie is not stored.
func TestSetCookie_QualifiedForms(t *testing.T) {
	tests := []struct {
		name   string
		cc     []string
		stored bool
	}{
		{name: "no-cache", cc: []string{`max-age=60, no-cache="Set-Cookie"`}, stored: true},
		{name: "private", cc: []string{`max-age=60, private="Set-Cookie"`}, stored: true},
		{name: "private, lower case", cc: []string{`max-age=60, private="set-cookie"`}, stored: true},
		{name: "no-cache, upper case", cc: []string{`max-age=60, no-cache="SET-COOKIE"`}, stored: true},
		{name: "private list, first", cc: []string{`max-age=60, private="Set-Cookie, X-Foo"`}, stored: true},
		{name: "no-cache list, last", cc: []string{`max-age=60, no-cache="X-Foo,Set-Cookie"`}, stored: true},
		{name: "token form", cc: []string{`max-age=60, private=Set-Cookie`}, stored: true},
		{name: "second line", cc: []string{`max-age=60`, `no-cache="X-Foo"`, `private="Set-Cookie"`}, stored: true},
		{name: "s-maxage and public", cc: []string{`public, s-maxage=60, private="Set-Cookie"`}, stored: true},
		{name: "unqualified", cc: []string{`max-age=60`}},
		{name: "public does not qualify", cc: []string{`public, max-age=60`}},
		{name: "s-maxage does not qualify", cc: []string{`s-maxage=60`}},
		{name: "another field", cc: []string{`max-age=60, private="X-Foo"`}},
		{name: "a longer name", cc: []string{`max-age=60, no-cache="Set-Cookie2"`}},
		{name: "a prefix", cc: []string{`max-age=60, private="Set-Cook"`}},
		{name: "inside another directive", cc: []string{`max-age=60, x-ext="private=Set-Cookie"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Options{}, nil)
			hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
				for _, v := range tt.cc {
					w.Header().Add("Cache-Control", v)
				}
				w.Header().Set("Set-Cookie", "session=s"+itoa(hs.hits.Load()))
				w.Header().Set("X-Foo", "per-user")
				_, _ = w.Write([]byte("body " + itoa(hs.hits.Load())))
			})
			first := hs.get("/sc")
			assert.Equal(t, []string{"session=s1"}, first.header.Values("Set-Cookie"), "the first client gets its cookie")
			second := hs.get("/sc")
			if !tt.stored {
				assert.EqualValues(t, 2, hs.hits.Load(), "a response with Set-Cookie is not stored")
				assert.Equal(t, []string{"session=s2"}, second.header.Values("Set-Cookie"), "the second client gets its own cookie")
				assert.Contains(t, first.header.Get("Cache-Status"), "detail=set-cookie", "Cache-Status says why")
				return
			}
			assert.EqualValues(t, 1, hs.hits.Load(), "the response is stored")
			assert.Equal(t, "body 1", second.body)
			assert.Empty(t, second.header.Values("Set-Cookie"), "the stored response has no cookie")
			if strings.Contains(strings.Join(tt.cc, ","), "X-Foo") {
				assert.Empty(t, second.header.Values("X-Foo"), "every listed field is left out")
			}
		})
	}
}

// A 304 that carries Set-Cookie gives the cookie to the client that asked, and does not put
// it into the stored response.
func TestSetCookie_NotModifiedKeepsCookieOut(t *testing.T) {
	for _, tt := range []struct {
		name, cc string
		stored   bool // the 304's header may update the stored response
	}{
		{name: "unqualified", cc: "max-age=60"},
		{name: "private=Set-Cookie", cc: `max-age=60, private="Set-Cookie"`, stored: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Options{}, nil)
			hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("ETag", `"v1"`)
				if r.Header.Get("If-None-Match") == "" {
					w.Header().Set("Cache-Control", "max-age=1")
					_, _ = w.Write([]byte("shared body"))
					return
				}
				w.Header().Set("Cache-Control", tt.cc)
				w.Header().Set("Set-Cookie", "session=s"+itoa(hs.hits.Load()))
				w.WriteHeader(http.StatusNotModified)
			})
			first := hs.get("/nm")
			require.Empty(t, first.header.Values("Set-Cookie"))
			hs.clock.Advance(2 * time.Second)
			second := hs.get("/nm")
			assert.EqualValues(t, 2, hs.hits.Load(), "the stale response was validated")
			assert.Equal(t, "shared body", second.body)
			assert.Equal(t, []string{"session=s2"}, second.header.Values("Set-Cookie"), "the validating client gets its cookie")

			third := hs.get("/nm")
			assert.NotContains(t, third.header.Values("Set-Cookie"), "session=s2", "another client never gets that cookie")
			assert.Equal(t, "shared body", third.body)
			if tt.stored {
				assert.EqualValues(t, 2, hs.hits.Load(), "the 304 freshened the stored response")
				assert.Empty(t, third.header.Values("Set-Cookie"))
			} else {
				assert.EqualValues(t, 3, hs.hits.Load(), "the stored response stayed stale and was validated again")
				assert.Equal(t, []string{"session=s3"}, third.header.Values("Set-Cookie"), "with a cookie of its own")
			}
		})
	}
}

// Options.StoreSetCookie stores the field as RFC 9111 allows: every client then gets the
// cookie the origin set for the first, which is the danger its documentation states.
func TestSetCookie_StoreSetCookieOptIn(t *testing.T) {
	t.Run("stored", func(t *testing.T) {
		hs := newHarness(t, Options{StoreSetCookie: true}, nil)
		hs.setHandler(hs.counter("Cache-Control", "max-age=60", "Set-Cookie", "theme=dark"))
		first := hs.get("/o")
		second := hs.get("/o")
		assert.EqualValues(t, 1, hs.hits.Load(), "the response is stored")
		assert.Equal(t, first.body, second.body)
		assert.Equal(t, []string{"theme=dark"}, second.header.Values("Set-Cookie"), "with its cookie")
	})
	t.Run("collapsed", func(t *testing.T) {
		rig := newCollapseRigWith(t, Options{StoreSetCookie: true}, sessionOrigin("max-age=60"))
		const n = 10
		var wg sync.WaitGroup
		cookies := make([]string, n)
		for i := range n {
			wg.Go(func() { cookies[i] = rig.serve(context.Background()).Header().Get("Set-Cookie") })
		}
		<-rig.arrived
		rig.waitFollowers(t, coldKey, n-1)
		close(rig.release)
		wg.Wait()
		assert.EqualValues(t, 1, rig.hits.Load(), "the followers are answered from what the leader stored")
		for i, c := range cookies {
			assert.Equal(t, "session=s1; Path=/; HttpOnly", c, "client %d gets the stored cookie", i)
		}
	})
	t.Run("qualified forms still leave it out", func(t *testing.T) {
		hs := newHarness(t, Options{StoreSetCookie: true}, nil)
		hs.setHandler(hs.counter("Cache-Control", `max-age=60, private="Set-Cookie"`, "Set-Cookie", "session=s1"))
		hs.get("/q")
		second := hs.get("/q")
		assert.EqualValues(t, 1, hs.hits.Load())
		assert.Empty(t, second.header.Values("Set-Cookie"))
	})
}

// A 304 without Cache-Control keeps the stored private="Set-Cookie", which still keeps the
// 304's cookie out of the store.
func TestSetCookie_NotModifiedUnderStoredQualifier(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == "" {
			w.Header().Set("Cache-Control", `max-age=1, private="Set-Cookie"`)
			w.Header().Set("Set-Cookie", "session=s1")
			_, _ = w.Write([]byte("shared body"))
			return
		}
		w.Header().Set("Set-Cookie", "session=s"+itoa(hs.hits.Load()))
		w.WriteHeader(http.StatusNotModified)
	})
	hs.get("/u")
	hs.clock.Advance(2 * time.Second)
	second := hs.get("/u")
	assert.Equal(t, []string{"session=s2"}, second.header.Values("Set-Cookie"), "the validating client gets its cookie")
	hs.clock.Advance(2 * time.Second)
	third := hs.get("/u")
	assert.EqualValues(t, 3, hs.hits.Load(), "max-age=1 is stale again")
	assert.Equal(t, []string{"session=s3"}, third.header.Values("Set-Cookie"))
	fourth := hs.get("/u", "Cache-Control", "max-stale")
	assert.Contains(t, fourth.header.Get("Cache-Status"), "hit")
	assert.Empty(t, fourth.header.Values("Set-Cookie"), "the stored response never holds a cookie")
}

// A store shared with a replica that stores Set-Cookie (or filled by a release that did)
// may hold a response with a cookie; a cache without StoreSetCookie treats it as a miss.
func TestSetCookie_SharedStoreEntryIsAMiss(t *testing.T) {
	store, err := NewMemoryStore(MemoryOptions{})
	require.NoError(t, err)
	replica := func(opts Options, cookie string) (http.Handler, *atomic.Int64) {
		opts.Store = store
		c, err := New(opts)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		var hits atomic.Int64
		return c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Cache-Control", "max-age=60")
			if r.URL.Path == "/shared" {
				w.Header().Set("Vary", "Accept")
			}
			if cookie != "" {
				w.Header().Set("Set-Cookie", cookie)
			}
			_, _ = io.WriteString(w, "body")
		})), &hits
	}
	get := func(h http.Handler, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "http://example.com"+path, nil)
		req.Header.Set("Accept", "text/html")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	storing, storingHits := replica(Options{StoreSetCookie: true}, "session=s1")
	for _, path := range []string{"/shared", "/plain"} {
		get(storing, path)
		require.Equal(t, "session=s1", get(storing, path).Header().Get("Set-Cookie"),
			"%s: the opted-in replica serves what it stored", path)
	}
	require.EqualValues(t, 2, storingHits.Load(), "the opted-in replica stored both")

	safe, safeHits := replica(Options{}, "")
	for _, path := range []string{"/shared", "/plain"} {
		r := get(safe, path)
		assert.Empty(t, r.Header().Values("Set-Cookie"), "%s: the other replica's cookie is not served", path)
		assert.NotContains(t, r.Header().Get("Cache-Status"), "hit", "%s: a stored cookie is a miss", path)
	}
	assert.EqualValues(t, 2, safeHits.Load(), "both went to the origin")
	r := get(safe, "/plain")
	assert.Contains(t, r.Header().Get("Cache-Status"), "hit", "the cookie-free response replaced it")
}

// Trailers a handler sets after the body are not part of the header that was judged
// storable, so they are not stored as header fields: neither a per-request value nor a
// Set-Cookie that would otherwise reach other clients.
func TestStoredHeaderIgnoresTrailers(t *testing.T) {
	c, err := New(Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	var hits atomic.Int64
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Trailer", "X-Checksum, Set-Cookie")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "sum"+itoa(n))
		w.Header().Set("Set-Cookie", "session=s"+itoa(n))
	}))
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://example.com/t", nil))
		return rec
	}
	get()
	second := get()
	assert.EqualValues(t, 1, hits.Load(), "the response was stored")
	assert.Contains(t, second.Header().Get("Cache-Status"), "hit")
	assert.Empty(t, second.Header().Values("X-Checksum"), "a trailer is not stored as a header field")
	assert.Empty(t, second.Header().Values("Set-Cookie"), "nor is a cookie set in a trailer")
}
