package cache

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// §3: which responses a shared cache stores. Each case sends two identical requests; the
// second is a hit exactly when the response was stored.
func TestStorable_RFC9111_3(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		header  []string
		request []string
		method  string
		stored  bool
	}{
		{name: "max-age", header: []string{"Cache-Control", "max-age=60"}, stored: true},
		{name: "s-maxage", header: []string{"Cache-Control", "s-maxage=60"}, stored: true},
		{name: "Expires in the future", header: []string{"Expires", "+60s"}, stored: true},
		{name: "no explicit freshness, 200 with Last-Modified (heuristic)", header: []string{"Last-Modified", "-100h"}, stored: true},
		{name: "no-store", header: []string{"Cache-Control", "max-age=60, no-store"}, stored: false},
		{name: "private in a shared cache", header: []string{"Cache-Control", "private, max-age=60"}, stored: false},
		{name: "qualified private stores the rest", header: []string{"Cache-Control", `private="Set-Cookie", max-age=60`}, stored: true},
		{name: "must-understand overrides no-store for a known status", header: []string{"Cache-Control", "must-understand, no-store, max-age=60"}, stored: true},
		{name: "must-understand with an unknown status", status: 299, header: []string{"Cache-Control", "must-understand, no-store, max-age=60"}, stored: false},
		{name: "302 without explicit freshness", status: 302, header: []string{"Location", "/x"}, stored: false},
		{name: "302 with max-age", status: 302, header: []string{"Location", "/x", "Cache-Control", "max-age=60"}, stored: true},
		{name: "404 heuristic", status: 404, header: []string{"Last-Modified", "-100h"}, stored: true},
		{name: "500 without freshness", status: 500, stored: false},
		{name: "Authorization without public", header: []string{"Cache-Control", "max-age=60"}, request: []string{"Authorization", "Bearer x"}, stored: false},
		{name: "Authorization with public", header: []string{"Cache-Control", "public, max-age=60"}, request: []string{"Authorization", "Bearer x"}, stored: true},
		{name: "Authorization with s-maxage", header: []string{"Cache-Control", "s-maxage=60"}, request: []string{"Authorization", "Bearer x"}, stored: true},
		{name: "Authorization with must-revalidate", header: []string{"Cache-Control", "must-revalidate, max-age=60"}, request: []string{"Authorization", "Bearer x"}, stored: true},
		{name: "request no-store", header: []string{"Cache-Control", "max-age=60"}, request: []string{"Cache-Control", "no-store"}, stored: false},
		{name: "Vary: *", header: []string{"Cache-Control", "max-age=60", "Vary", "*"}, stored: false},
		{name: "POST", method: http.MethodPost, header: []string{"Cache-Control", "max-age=60"}, stored: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Options{}, nil)
			hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i+1 < len(tt.header); i += 2 {
					v := tt.header[i+1]
					if d, err := time.ParseDuration(v); err == nil && (v[0] == '+' || v[0] == '-') {
						v = hs.httpDate(d)
					}
					w.Header().Set(tt.header[i], v)
				}
				w.WriteHeader(max(tt.status, 200))
				_, _ = w.Write([]byte("body " + itoa(hs.hits.Load())))
			})
			method := cmp(tt.method, http.MethodGet)
			first := hs.do(method, "/r", tt.request...)
			second := hs.do(method, "/r", tt.request...)
			assert.Equal(t, first.status, max(tt.status, 200))
			if tt.stored {
				assert.EqualValues(t, 1, hs.hits.Load(), "a stored response answers the second request")
				assert.Equal(t, first.body, second.body)
				assert.Contains(t, second.header.Get("Cache-Status"), "sluice; hit")
			} else {
				assert.EqualValues(t, 2, hs.hits.Load(), "an unstorable response is not reused")
				assert.NotContains(t, second.header.Get("Cache-Status"), "hit")
			}
		})
	}
}

// §4.2.1: freshness lifetime from s-maxage, max-age, Expires and the heuristic.
func TestFreshness_RFC9111_4_2(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		fresh  time.Duration // still fresh after this long
		stale  time.Duration // stale after this long
	}{
		{name: "max-age", header: []string{"Cache-Control", "max-age=60"}, fresh: 59 * time.Second, stale: 61 * time.Second},
		{name: "s-maxage beats max-age", header: []string{"Cache-Control", "max-age=600, s-maxage=60"}, fresh: 59 * time.Second, stale: 61 * time.Second},
		{name: "max-age beats Expires", header: []string{"Cache-Control", "max-age=60", "Expires", "+3600"}, fresh: 59 * time.Second, stale: 61 * time.Second},
		{name: "Expires", header: []string{"Expires", "+60"}, fresh: 59 * time.Second, stale: 61 * time.Second},
		{name: "heuristic is 10% of Last-Modified age", header: []string{"Last-Modified", "-1000"}, fresh: 99 * time.Second, stale: 101 * time.Second},
		{name: "upstream Age counts", header: []string{"Cache-Control", "max-age=60", "Age", "30"}, fresh: 29 * time.Second, stale: 31 * time.Second},
		{name: "quoted max-age", header: []string{"Cache-Control", `max-age="60"`}, fresh: 59 * time.Second, stale: 61 * time.Second},
		{name: "first max-age wins", header: []string{"Cache-Control", "max-age=60, max-age=3600"}, fresh: 59 * time.Second, stale: 61 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Options{}, nil)
			hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i+1 < len(tt.header); i += 2 {
					v := tt.header[i+1]
					if v[0] == '+' || v[0] == '-' {
						d, err := time.ParseDuration(v + "s")
						require.NoError(t, err)
						v = hs.httpDate(d)
					}
					w.Header().Set(tt.header[i], v)
				}
				// An ETag-less, Last-Modified-less response cannot be validated: a stale one
				// is fetched again in full.
				_, _ = w.Write([]byte("body " + itoa(hs.hits.Load())))
			})
			hs.get("/f")
			hs.clock.Advance(tt.fresh)
			r := hs.get("/f")
			assert.EqualValues(t, 1, hs.hits.Load(), "fresh after %v", tt.fresh)
			assert.Contains(t, r.header.Get("Cache-Status"), "hit")
			hs.clock.Advance(tt.stale - tt.fresh)
			r = hs.get("/f")
			assert.EqualValues(t, 2, hs.hits.Load(), "stale after %v", tt.stale)
			assert.Contains(t, r.header.Get("Cache-Status"), "fwd=stale")
		})
	}
}

// Invalid freshness information means stale at once (§4.2.1, §5.3).
func TestFreshness_Invalid(t *testing.T) {
	for _, h := range [][]string{
		{"Expires", "0"}, {"Cache-Control", "max-age = 3600"}, {"Cache-Control", "max-age=3600.0"},
		{"Cache-Control", "max-age='3600'"}, {"Cache-Control", "max-age=-1"}, {"Cache-Control", "max-age=a100"},
	} {
		t.Run(h[0]+": "+h[1], func(t *testing.T) {
			hs := newHarness(t, Options{}, nil)
			hs.setHandler(hs.counter(h...))
			hs.get("/e")
			hs.get("/e")
			assert.EqualValues(t, 2, hs.hits.Load(), "%s: %s is already stale", h[0], h[1])
		})
	}
}

// §4.2.3: the Age of a hit is the corrected initial age plus the time resident, including
// the upstream's Age and the response delay.
func TestAge_RFC9111_4_2_3(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=600", "Age", "100"))
	first := hs.get("/a")
	assert.Equal(t, "100", first.header.Get("Age"), "a miss passes the upstream Age on")
	hs.clock.Advance(10 * time.Second)
	r := hs.get("/a")
	assert.Equal(t, "110", r.header.Get("Age"))
	assert.Contains(t, r.header.Get("Cache-Status"), "hit; ttl=490")

	// Apparent age: a Date in the past counts even without Age.
	hs2 := newHarness(t, Options{}, nil)
	hs2.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Date", hs2.httpDate(-50*time.Second))
		_, _ = w.Write([]byte("x"))
	})
	hs2.get("/a")
	assert.Equal(t, "50", hs2.get("/a").header.Get("Age"))
}

func TestAge_ResponseDelay(t *testing.T) {
	// Unit level: the delay between sending the request and receiving the response is
	// added to the upstream's Age.
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := http.Header{"Age": {"10"}}
	got := correctedInitialAge(h, now.Add(5*time.Second), now, now.Add(5*time.Second))
	assert.Equal(t, 15*time.Second, got)
}

// §4.1: Vary selects variants; values are normalised; Vary: * never matches.
func TestVary_RFC9111_4_1(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding, X-Lang")
		_, _ = w.Write([]byte(r.Header.Get("Accept-Encoding") + "|" + r.Header.Get("X-Lang")))
	})
	a := hs.get("/v", "Accept-Encoding", "gzip, br")
	b := hs.get("/v", "Accept-Encoding", "identity")
	assert.EqualValues(t, 2, hs.hits.Load(), "two variants, two fetches")
	assert.Equal(t, "gzip, br|", a.body)
	assert.Equal(t, "identity|", b.body)

	a2 := hs.get("/v", "Accept-Encoding", "GZIP,br")
	assert.EqualValues(t, 2, hs.hits.Load(), "normalised values select the stored variant")
	assert.Equal(t, "gzip, br|", a2.body)
	b2 := hs.get("/v", "Accept-Encoding", "identity")
	assert.Equal(t, "identity|", b2.body, "both variants are kept")
	assert.EqualValues(t, 2, hs.hits.Load())

	c := hs.get("/v", "Accept-Encoding", "identity", "X-Lang", "fr")
	assert.EqualValues(t, 3, hs.hits.Load(), "a different value of any selecting field misses")
	assert.Contains(t, c.header.Get("Cache-Status"), "fwd=vary-miss")
}

// §5.2.1: request directives.
func TestRequestDirectives_RFC9111_5_2_1(t *testing.T) {
	setup := func(t *testing.T) *harness {
		hs := newHarness(t, Options{}, nil)
		hs.setHandler(hs.counter("Cache-Control", "max-age=100", "ETag", `"v1"`))
		hs.get("/q")
		hs.clock.Advance(50 * time.Second) // age 50, 50 left
		return hs
	}
	t.Run("no-cache validates", func(t *testing.T) {
		hs := setup(t)
		r := hs.get("/q", "Cache-Control", "no-cache")
		assert.EqualValues(t, 2, hs.hits.Load())
		assert.Equal(t, `"v1"`, hs.last.Load().Header.Get("If-None-Match"), "validation is conditional")
		assert.Contains(t, r.header.Get("Cache-Status"), "fwd=request")
	})
	t.Run("Pragma no-cache without Cache-Control", func(t *testing.T) {
		hs := setup(t)
		hs.get("/q", "Pragma", "no-cache")
		assert.EqualValues(t, 2, hs.hits.Load())
	})
	t.Run("Pragma ignored with Cache-Control", func(t *testing.T) {
		hs := setup(t)
		hs.get("/q", "Pragma", "no-cache", "Cache-Control", "max-stale=1")
		assert.EqualValues(t, 1, hs.hits.Load())
	})
	t.Run("max-age below the age", func(t *testing.T) {
		hs := setup(t)
		hs.get("/q", "Cache-Control", "max-age=40")
		assert.EqualValues(t, 2, hs.hits.Load())
	})
	t.Run("max-age above the age", func(t *testing.T) {
		hs := setup(t)
		hs.get("/q", "Cache-Control", "max-age=60")
		assert.EqualValues(t, 1, hs.hits.Load())
	})
	t.Run("min-fresh", func(t *testing.T) {
		hs := setup(t)
		hs.get("/q", "Cache-Control", "min-fresh=40")
		assert.EqualValues(t, 1, hs.hits.Load(), "50s left satisfies min-fresh=40")
		hs.get("/q", "Cache-Control", "min-fresh=60")
		assert.EqualValues(t, 2, hs.hits.Load(), "50s left does not satisfy min-fresh=60")
	})
	t.Run("max-stale", func(t *testing.T) {
		hs := setup(t)
		hs.clock.Advance(70 * time.Second) // 20s stale
		hs.get("/q", "Cache-Control", "max-stale=30")
		assert.EqualValues(t, 1, hs.hits.Load(), "20s stale is within max-stale=30")
		hs.get("/q", "Cache-Control", "max-stale")
		assert.EqualValues(t, 1, hs.hits.Load(), "max-stale without a value accepts any staleness")
		hs.get("/q", "Cache-Control", "max-stale=10")
		assert.EqualValues(t, 2, hs.hits.Load())
	})
	t.Run("only-if-cached", func(t *testing.T) {
		hs := setup(t)
		r := hs.get("/q", "Cache-Control", "only-if-cached")
		assert.Equal(t, 200, r.status)
		r = hs.get("/other", "Cache-Control", "only-if-cached")
		assert.Equal(t, http.StatusGatewayTimeout, r.status)
		assert.EqualValues(t, 1, hs.hits.Load(), "only-if-cached never goes upstream")
		assert.NotEmpty(t, r.header.Get("Cache-Status"))
	})
}

// §4.3: validation upstream, §4.3.4 header update, and client conditionals from cache.
func TestValidation_RFC9111_4_3(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Last-Modified", hs.httpDate(-time.Hour))
		w.Header().Set("Cache-Control", "max-age=10")
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.Header().Set("X-Updated", "yes")
			w.Header().Set("Content-Length", "999") // must not replace the stored length
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("original body"))
	})
	hs.get("/val")
	hs.clock.Advance(20 * time.Second)
	r := hs.get("/val")
	assert.EqualValues(t, 2, hs.hits.Load())
	assert.Equal(t, `"v1"`, hs.last.Load().Header.Get("If-None-Match"))
	assert.NotEmpty(t, hs.last.Load().Header.Get("If-Modified-Since"))
	assert.Equal(t, 200, r.status)
	assert.Equal(t, "original body", r.body, "a 304 reuses the stored body")
	assert.Equal(t, "yes", r.header.Get("X-Updated"), "a 304 updates the stored header")
	assert.Contains(t, r.header.Get("Cache-Status"), "fwd=stale; fwd-status=304")

	r = hs.get("/val")
	assert.EqualValues(t, 2, hs.hits.Load(), "the 304 made the response fresh again")
	assert.Equal(t, "yes", r.header.Get("X-Updated"))
	assert.Equal(t, "original body", r.body)

	// Client conditionals answered from the cache.
	r = hs.get("/val", "If-None-Match", `"x", W/"v1"`)
	assert.Equal(t, http.StatusNotModified, r.status)
	assert.Equal(t, `"v1"`, r.header.Get("ETag"))
	r = hs.get("/val", "If-None-Match", `"other"`)
	assert.Equal(t, http.StatusOK, r.status)
	r = hs.get("/val", "If-Modified-Since", hs.httpDate(0))
	assert.Equal(t, http.StatusNotModified, r.status)
	r = hs.get("/val", "If-Modified-Since", hs.httpDate(-2*time.Hour))
	assert.Equal(t, http.StatusOK, r.status)
	assert.EqualValues(t, 2, hs.hits.Load(), "conditionals never went upstream")
}

// A client conditional on a miss is answered from the full response the cache fetched.
func TestValidation_ClientConditionalOnMiss(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=60", "ETag", `"e"`))
	r := hs.get("/c", "If-None-Match", `"e"`)
	assert.Equal(t, http.StatusNotModified, r.status)
	assert.Empty(t, hs.last.Load().Header.Get("If-None-Match"), "the cache fetches the full response")
	r = hs.get("/c")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "body 1", r.body, "the response behind the 304 was stored")
}

// must-revalidate, proxy-revalidate, s-maxage and no-cache forbid serving stale.
func TestValidation_NoStaleWhenForbidden(t *testing.T) {
	for _, cc := range []string{"max-age=10, must-revalidate", "max-age=10, proxy-revalidate", "s-maxage=10",
		"no-cache"} {
		t.Run(cc, func(t *testing.T) {
			hs := newHarness(t, Options{}, nil)
			fail := false
			hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", cc+", stale-if-error=600, stale-while-revalidate=600")
				w.Header().Set("ETag", `"a"`)
				if fail {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				_, _ = w.Write([]byte("ok"))
			})
			hs.get("/m")
			hs.clock.Advance(20 * time.Second)
			fail = true
			r := hs.get("/m", "Cache-Control", "max-stale=600")
			assert.Equal(t, http.StatusServiceUnavailable, r.status, "no stale response may be served")
			assert.EqualValues(t, 2, hs.hits.Load())
		})
	}
}

// no-cache responses are stored but validated on every use.
func TestValidation_NoCacheResponse(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600, no-cache")
		w.Header().Set("ETag", `"n"`)
		if r.Header.Get("If-None-Match") == `"n"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write([]byte("stored"))
	})
	hs.get("/n")
	r := hs.get("/n")
	assert.EqualValues(t, 2, hs.hits.Load(), "every use is validated")
	assert.Equal(t, `"n"`, hs.last.Load().Header.Get("If-None-Match"))
	assert.Equal(t, "stored", r.body)
}

// §4.4: unsafe methods invalidate the target and same-origin Location/Content-Location.
func TestInvalidation_RFC9111_4_4(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			w.Header().Set("Location", "/loc")
			w.Header().Set("Content-Location", "http://other.example/cl")
			w.WriteHeader(http.StatusCreated)
		case http.MethodDelete:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set("Cache-Control", "max-age=600")
			_, _ = w.Write([]byte("body " + itoa(hs.hits.Load())))
		}
	})
	for _, p := range []string{"/target", "/loc"} {
		hs.get(p)
	}
	require.EqualValues(t, 2, hs.hits.Load())
	r := hs.do(http.MethodPost, "/target")
	assert.Contains(t, r.header.Get("Cache-Status"), "fwd=method")
	hs.get("/target")
	hs.get("/loc")
	assert.EqualValues(t, 5, hs.hits.Load(), "the target and Location were invalidated")

	hs.do(http.MethodDelete, "/target")
	hs.get("/target")
	assert.EqualValues(t, 6, hs.hits.Load(), "an error response invalidates nothing")
}

func TestInvalidation_OtherOriginIgnored(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			w.Header().Set("Location", "http://evil.example/victim")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte("v"))
	})
	hs.get("/victim")
	hs.do(http.MethodPut, "/put")
	hs.get("/victim")
	assert.EqualValues(t, 2, hs.hits.Load(), "a Location on another origin is not invalidated")
}

// HEAD is answered from a stored GET; a HEAD miss fills the cache for GET.
func TestHEAD(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=60", "X-A", "1"))
	r := hs.do(http.MethodHead, "/h")
	assert.Equal(t, 200, r.status)
	assert.Empty(t, r.body)
	assert.Equal(t, http.MethodGet, hs.last.Load().Method, "a HEAD miss is fetched as a GET")
	r = hs.get("/h")
	assert.Equal(t, "body 1", r.body)
	r = hs.do(http.MethodHead, "/h")
	assert.Equal(t, "1", r.header.Get("X-A"))
	assert.Equal(t, "6", r.header.Get("Content-Length"))
	assert.EqualValues(t, 1, hs.hits.Load())
}

// Range requests are answered from a complete stored 200.
func TestRange(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("ETag", `"r"`)
		_, _ = w.Write([]byte("0123456789"))
	})
	r := hs.get("/rng", "Range", "bytes=0-3")
	assert.EqualValues(t, 1, hs.hits.Load())
	assert.Equal(t, "bytes=0-3", hs.last.Load().Header.Get("Range"), "a range miss is passed on")
	hs.get("/rng")
	require.EqualValues(t, 2, hs.hits.Load())

	r = hs.get("/rng", "Range", "bytes=2-4")
	assert.Equal(t, http.StatusPartialContent, r.status)
	assert.Equal(t, "234", r.body)
	assert.Equal(t, "bytes 2-4/10", r.header.Get("Content-Range"))
	r = hs.get("/rng", "Range", "bytes=0-0,8-9")
	assert.Equal(t, http.StatusPartialContent, r.status)
	assert.Contains(t, r.header.Get("Content-Type"), "multipart/byteranges")
	r = hs.get("/rng", "Range", "bytes=20-30")
	assert.Equal(t, http.StatusRequestedRangeNotSatisfiable, r.status)
	r = hs.get("/rng", "Range", "bytes=0-1", "If-Range", `"other"`)
	assert.Equal(t, http.StatusOK, r.status, "If-Range that does not match gets the whole")
	assert.Equal(t, "0123456789", r.body)
	assert.EqualValues(t, 2, hs.hits.Load(), "ranges were served from the cache")
}

// Cache-Status (RFC 9211) on every response, after the upstream's members.
func TestCacheStatus_RFC9211(t *testing.T) {
	hs := newHarness(t, Options{Name: "edge"}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=60", "Cache-Status", "origin-cache; hit"))
	r := hs.get("/s")
	assert.Equal(t, []string{"origin-cache; hit", "edge; fwd=uri-miss; fwd-status=200; stored"}, r.header.Values("Cache-Status"))
	r = hs.get("/s")
	assert.Equal(t, "origin-cache; hit, edge; hit; ttl=60", r.header.Get("Cache-Status"))
	r = hs.do(http.MethodPost, "/s")
	assert.Contains(t, r.header.Values("Cache-Status"), "edge; fwd=method; fwd-status=200")

	hs.setHandler(hs.counter("Cache-Control", "no-store"))
	r = hs.get("/ns")
	assert.Equal(t, "edge; fwd=uri-miss; fwd-status=200; detail=no-store", r.header.Get("Cache-Status"))
}

// Purge by URL, by prefix and by tag.
func TestPurge(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		if strings.HasPrefix(r.URL.Path, "/img/") {
			w.Header().Set("Cache-Tag", "images, all")
		}
		_, _ = w.Write([]byte("x"))
	})
	paths := []string{"/a", "/img/1", "/img/2", "/b"}
	for _, p := range paths {
		hs.get(p)
	}
	require.EqualValues(t, 4, hs.hits.Load())
	base := "http://" + strings.TrimPrefix(hs.front.URL, "http://")

	ctx := t.Context()
	require.NoError(t, hs.cache.Purge(ctx, base+"/a"))
	hs.get("/a")
	assert.EqualValues(t, 5, hs.hits.Load(), "purged by URL")

	n, err := hs.cache.PurgeTag(ctx, "images")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	hs.get("/img/1")
	assert.EqualValues(t, 6, hs.hits.Load(), "purged by tag")

	n, err = hs.cache.PurgePrefix(ctx, base+"/img/")
	require.NoError(t, err)
	assert.Equal(t, 1, n, "only /img/1 is stored again")
	n, err = hs.cache.PurgePrefix(ctx, base+"/")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, 2)
	hs.get("/b")
	assert.EqualValues(t, 7, hs.hits.Load(), "purged by prefix")
	assert.Error(t, hs.cache.Purge(ctx, "/relative"))
	n, err = hs.cache.PurgeTag(ctx, "")
	assert.NoError(t, err)
	assert.Zero(t, n, "an empty tag purges nothing")
}

// Bodies larger than MaxBodyBytes stream through and are not stored.
func TestLargeBodyStreamsThrough(t *testing.T) {
	hs := newHarness(t, Options{MaxBodyBytes: 1000}, nil)
	big := strings.Repeat("x", 5000)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		// No Content-Length: written in chunks, so the cache must give up mid-stream.
		for i := 0; i < 5; i++ {
			_, _ = w.Write([]byte(big[:1000]))
			w.(http.Flusher).Flush()
		}
	})
	r := hs.get("/big")
	assert.Equal(t, big, r.body, "the whole body reaches the client")
	hs.get("/big")
	assert.EqualValues(t, 2, hs.hits.Load(), "a body over MaxBodyBytes is not stored")

	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "5000")
		_, _ = w.Write([]byte(big))
	})
	r = hs.get("/big2")
	assert.Contains(t, r.header.Get("Cache-Status"), "detail=too-large")
	assert.Len(t, r.body, 5000)
}

func TestNew_Validation(t *testing.T) {
	_, err := New(Options{MaxBodyBytes: -1})
	assert.ErrorContains(t, err, "MaxBodyBytes")
	_, err = New(Options{Name: "a b"})
	assert.ErrorContains(t, err, "Name")
	_, err = New(Options{MaxBytes: -1})
	assert.ErrorContains(t, err, "MaxBytes")
}

// A newer response that may not be stored replaces the stored one.
func TestNoStoreReplacesStored(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=600"))
	hs.get("/ns")
	hs.setHandler(hs.counter("Cache-Control", "no-store"))
	r := hs.get("/ns", "Cache-Control", "no-cache")
	assert.Equal(t, "body 2", r.body)
	r = hs.get("/ns")
	assert.Equal(t, "body 3", r.body, "the old response was dropped")
}

// §5.2.1.5: a request with no-store goes to the origin and nothing is stored.
func TestRequestNoStore(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=600"))
	hs.get("/rns")
	r := hs.get("/rns", "Cache-Control", "no-store")
	assert.Equal(t, "body 2", r.body, "the origin answers")
	r = hs.get("/rns")
	assert.Equal(t, "body 1", r.body, "the response to the no-store request was not stored")
}

// §5.2.2.4 and §5.2.2.7: the qualified forms of no-cache and private keep the listed fields
// out of the store, and the rest of the response is reused.
func TestQualifiedNoCacheAndPrivate(t *testing.T) {
	hs := newHarness(t, Options{}, nil)
	hs.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Cache-Control", `no-cache="a, b", private="Set-Cookie"`)
		w.Header().Add("Cache-Control", "max-age=3600")
		w.Header().Set("A", "1")
		w.Header().Set("B", "2")
		w.Header().Set("C", "3")
		w.Header().Set("Set-Cookie", "session=alice")
		_, _ = w.Write([]byte("x"))
	})
	first := hs.get("/q")
	assert.Equal(t, "session=alice", first.header.Get("Set-Cookie"), "the first client gets everything")
	r := hs.get("/q")
	assert.EqualValues(t, 1, hs.hits.Load(), "the response is reused")
	assert.Equal(t, "3", r.header.Get("C"))
	assert.Empty(t, r.header.Get("A"))
	assert.Empty(t, r.header.Get("B"))
	assert.Empty(t, r.header.Get("Set-Cookie"), "private fields are never served from a shared cache")
}

// Connection-listed fields are not stored.
func TestConnectionListedNotStored(t *testing.T) {
	h := storedHeader(http.Header{"Connection": {"a, b"}, "A": {"1"}, "B": {"2"}, "C": {"3"}, "Keep-Alive": {"x"}})
	assert.Equal(t, http.Header{"C": {"3"}}, h)
}
