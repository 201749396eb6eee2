package route

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bigTable builds n routes over n/10 hosts, each with prefix and exact paths.
func bigTable(tb testing.TB, n int) *Table {
	routes := make([]Route, 0, n)
	for i := range n {
		host := fmt.Sprintf("svc%d.example.com", i/10)
		rt := Route{Name: fmt.Sprint("r", i), Hosts: []string{host}, Path: fmt.Sprintf("/api/v%d/items", i%10), Backends: be("x")}
		if i%2 == 0 {
			rt.PathType = PathExact
		}
		if i%3 == 0 {
			rt.Headers = []HeaderMatch{{Name: "X-Env", Value: "canary"}}
		}
		routes = append(routes, rt)
	}
	tab, err := New(routes, Options{})
	require.NoError(tb, err)
	return tab
}

func matchRequest(n int) *http.Request {
	r := httptest.NewRequest("GET", "/api/v1/items/42?x=1", nil)
	r.Host = fmt.Sprintf("svc%d.example.com:443", (n-1)/10)
	return r
}

func TestMatchAllocs(t *testing.T) {
	for _, n := range []int{10, 1000, 10000} {
		tab := bigTable(t, n)
		r := matchRequest(n)
		allocs := testing.AllocsPerRun(1000, func() {
			p, _ := CleanPath(r.URL.Path)
			if tab.match(r, p) == nil {
				panic("no match")
			}
		})
		assert.Zero(t, allocs, "match at %d routes must not allocate", n)
	}
	tab, err := New([]Route{{Name: "split", Backends: []Backend{
		{Name: "stable", Handler: named("stable"), Weight: 95},
		{Name: "canary", Handler: named("canary"), Weight: 5},
	}}}, Options{})
	require.NoError(t, err)
	r := httptest.NewRequest("GET", "/", nil)
	e := tab.match(r, "/")
	require.NotNil(t, e)
	assert.Zero(t, testing.AllocsPerRun(1000, func() { e.pick(r) }), "choosing a weighted backend must not allocate")
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		tab := bigTable(b, n) // built once, outside the measured function
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := matchRequest(n)
				for pb.Next() {
					p, _ := CleanPath(r.URL.Path)
					if tab.match(r, p) == nil {
						b.Fatal("no match")
					}
				}
			})
		})
	}
	// Choosing among weighted backends: one atomic add on the route's
	// counter, contended by every goroutine serving the route.
	b.Run("pick-95/5", func(b *testing.B) {
		tab, err := New([]Route{{Name: "split", Backends: []Backend{
			{Name: "stable", Handler: named("stable"), Weight: 95},
			{Name: "canary", Handler: named("canary"), Weight: 5},
		}}}, Options{})
		require.NoError(b, err)
		e := tab.match(matchRequest(10), "/")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := matchRequest(10)
			for pb.Next() {
				e.pick(r)
			}
		})
	})
	// Baseline: the standard library's ServeMux pattern match on one route.
	b.Run("ServeMux-baseline", func(b *testing.B) {
		mux := http.NewServeMux()
		mux.Handle("/api/v1/items/", named("x"))
		r := matchRequest(10)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mux.Handler(r)
			}
		})
	})
}

func FuzzCleanPathAndMatch(f *testing.F) {
	for _, s := range []string{"/", "/public/a", "/public/../admin", "/public/%2e%2e/admin", "//admin",
		"/public/%2E%2e/%2fadmin", "/public/./../../admin/", "/public//..//admin", "/%2e", "", "a/../../b", "/public/..%2fadmin"} {
		f.Add(s)
	}
	tab, err := New([]Route{
		{Name: "public", Path: "/public", Backends: be("public")},
		{Name: "admin", Path: "/admin", Backends: be("admin")},
		{Name: "exact", Path: "/public/x", PathType: PathExact, Backends: be("exact")},
	}, Options{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse("http://h" + "/" + strings.TrimPrefix(raw, "/"))
		if err != nil {
			return
		}
		p, _ := CleanPath(u.Path)
		again, changed := CleanPath(p)
		if changed || again != p {
			t.Fatalf("CleanPath not idempotent: %q -> %q -> %q", u.Path, p, again)
		}
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("CleanPath(%q) = %q lacks a leading slash", u.Path, p)
		}
		want := path.Clean(u.Path)
		if strings.TrimSuffix(p, "/") != strings.TrimSuffix(want, "/") && !(p == "/" && want == "/") {
			t.Fatalf("CleanPath(%q) = %q, path.Clean says %q", u.Path, p, want)
		}
		for _, el := range strings.Split(p, "/") {
			if el == ".." || el == "." {
				t.Fatalf("CleanPath(%q) = %q keeps a dot element", u.Path, p)
			}
		}
		// The router must pick the route the clean path picks, whatever the
		// encoding of the request.
		req := httptest.NewRequest("GET", "http://h/", nil)
		req.URL = u
		w := httptest.NewRecorder()
		NewRouter(tab, RouterOptions{}).ServeHTTP(w, req)
		clean := httptest.NewRequest("GET", "http://h/", nil)
		clean.URL = &url.URL{Path: p}
		e := tab.match(clean, p)
		wantBody := ""
		if e != nil {
			wantBody = string(e.backends[0].Handler.(named))
		}
		if e != nil && w.Body.String() != wantBody {
			t.Fatalf("%q reached %q, clean path %q reaches %q", raw, w.Body.String(), p, wantBody)
		}
		if e == nil && w.Code != http.StatusNotFound {
			t.Fatalf("%q reached %q, clean path %q matches nothing", raw, w.Body.String(), p)
		}
		if strings.HasPrefix(p, "/public") && w.Body.String() == "admin" {
			t.Fatalf("%q escaped to admin", raw)
		}
	})
}
