package route

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// named is a backend that answers with its name.
type named string

func (n named) ServeHTTP(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, string(n)) }

func be(name string) []Backend { return []Backend{{Name: name, Handler: named(name)}} }

func serve(t *testing.T, h http.Handler, method, target string, hdr map[string]string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestPrecedence(t *testing.T) {
	routes := []Route{
		{Name: "default", Backends: be("default")},
		{Name: "foo-prefix", Hosts: []string{"a.example.com"}, Path: "/foo", Backends: be("foo-prefix")},
		{Name: "foo-exact", Hosts: []string{"a.example.com"}, Path: "/foo", PathType: PathExact, Backends: be("foo-exact")},
		{Name: "foo-bar", Hosts: []string{"a.example.com"}, Path: "/foo/bar", Backends: be("foo-bar")},
		{Name: "a-root", Hosts: []string{"a.example.com"}, Path: "/", Backends: be("a-root")},
		{Name: "wild", Hosts: []string{"*.example.com"}, Path: "/", Backends: be("wild")},
		{Name: "api", Hosts: []string{"api.test"}, Path: "/api", Backends: be("api")},
		{Name: "api-post", Hosts: []string{"api.test"}, Path: "/api", Method: "POST", Backends: be("api-post")},
		{Name: "api-h1", Hosts: []string{"api.test"}, Path: "/api", Headers: []HeaderMatch{{Name: "x-env", Value: "canary"}}, Backends: be("api-h1")},
		{Name: "api-h2", Hosts: []string{"api.test"}, Path: "/api", Headers: []HeaderMatch{{Name: "X-Env", Value: "canary"}, {Name: "X-User", Type: MatchPresent}}, Backends: be("api-h2")},
		{Name: "api-hre", Hosts: []string{"api.test"}, Path: "/api", Headers: []HeaderMatch{{Name: "X-Ver", Value: "v[0-9]+", Type: MatchRegex}}, Backends: be("api-hre")},
		{Name: "api-q1", Hosts: []string{"api.test"}, Path: "/api", Query: []QueryMatch{{Name: "v", Value: "2"}}, Backends: be("api-q1")},
		{Name: "api-q2", Hosts: []string{"api.test"}, Path: "/api", Query: []QueryMatch{{Name: "v", Value: "2"}, {Name: "debug", Type: MatchPresent}}, Backends: be("api-q2")},
		{Name: "api-h-vs-q", Hosts: []string{"api.test"}, Path: "/api", Headers: []HeaderMatch{{Name: "X-Tie", Value: "1"}}, Backends: be("api-h-vs-q")},
		{Name: "api-q-vs-h", Hosts: []string{"api.test"}, Path: "/api", Query: []QueryMatch{{Name: "tie", Value: "1"}}, Backends: be("api-q-vs-h")},
		{Name: "first", Hosts: []string{"order.test"}, Path: "/", Backends: be("first")},
		{Name: "second", Hosts: []string{"order.test"}, Path: "/", Backends: be("second")},
		{Name: "re", Hosts: []string{"re.test"}, Path: "/v[0-9]+/.*", PathType: PathRegex, Backends: be("re")},
		{Name: "re-root", Hosts: []string{"re.test"}, Path: "/", Backends: be("re-root")},
	}
	tab, err := New(routes, Options{})
	require.NoError(t, err)
	rt := NewRouter(tab, RouterOptions{})
	cases := []struct {
		name, method, target string
		hdr                  map[string]string
		want                 string
	}{
		{"unknown host uses default", "GET", "/foo", map[string]string{"Host": "other.test"}, "default"},
		{"exact beats prefix", "GET", "/foo", map[string]string{"Host": "a.example.com"}, "foo-exact"},
		{"prefix with trailing slash", "GET", "/foo/", map[string]string{"Host": "a.example.com"}, "foo-prefix"},
		{"prefix by element", "GET", "/foo/baz", map[string]string{"Host": "a.example.com"}, "foo-prefix"},
		{"never /foobar", "GET", "/foobar", map[string]string{"Host": "a.example.com"}, "a-root"},
		{"longest prefix wins", "GET", "/foo/bar/baz", map[string]string{"Host": "a.example.com"}, "foo-bar"},
		{"host case-insensitive without port", "GET", "/foo", map[string]string{"Host": "A.Example.COM:8443"}, "foo-exact"},
		{"exact host beats wildcard", "GET", "/x", map[string]string{"Host": "a.example.com"}, "a-root"},
		{"wildcard one label", "GET", "/x", map[string]string{"Host": "b.example.com"}, "wild"},
		{"wildcard not two labels", "GET", "/x", map[string]string{"Host": "c.b.example.com"}, "default"},
		{"wildcard not the bare suffix", "GET", "/x", map[string]string{"Host": "example.com"}, "default"},
		{"plain", "GET", "/api", map[string]string{"Host": "api.test"}, "api"},
		{"method beats headers", "POST", "/api", map[string]string{"Host": "api.test", "X-Env": "canary", "X-User": "u"}, "api-post"},
		{"one header", "GET", "/api", map[string]string{"Host": "api.test", "X-Env": "canary"}, "api-h1"},
		{"more headers win", "GET", "/api", map[string]string{"Host": "api.test", "X-Env": "canary", "X-User": "u"}, "api-h2"},
		{"header value mismatch", "GET", "/api", map[string]string{"Host": "api.test", "X-Env": "prod"}, "api"},
		{"header regex", "GET", "/api", map[string]string{"Host": "api.test", "X-Ver": "v12"}, "api-hre"},
		{"header regex whole value", "GET", "/api", map[string]string{"Host": "api.test", "X-Ver": "v12x"}, "api"},
		{"one query", "GET", "/api?v=2", map[string]string{"Host": "api.test"}, "api-q1"},
		{"more query wins", "GET", "/api?debug&v=2", map[string]string{"Host": "api.test"}, "api-q2"},
		{"escaped query", "GET", "/api?%76=%32", map[string]string{"Host": "api.test"}, "api-q1"},
		{"header beats query", "GET", "/api?tie=1", map[string]string{"Host": "api.test", "X-Tie": "1"}, "api-h-vs-q"},
		{"query when header absent", "GET", "/api?tie=1", map[string]string{"Host": "api.test"}, "api-q-vs-h"},
		{"table order breaks ties", "GET", "/", map[string]string{"Host": "order.test"}, "first"},
		{"regex beats prefix", "GET", "/v2/x", map[string]string{"Host": "re.test"}, "re"},
		{"regex is anchored", "GET", "/a/v2/x", map[string]string{"Host": "re.test"}, "re-root"},
		{"dotdot cleaned", "GET", "/x/../foo", map[string]string{"Host": "a.example.com"}, "foo-exact"},
		{"double slash cleaned", "GET", "//foo", map[string]string{"Host": "a.example.com"}, "foo-exact"},
		{"encoded dotdot cleaned", "GET", "/foo/bar/%2e%2e", map[string]string{"Host": "a.example.com"}, "foo-exact"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := serve(t, rt, c.method, c.target, c.hdr)
			assert.Equal(t, 200, code)
			assert.Equal(t, c.want, body, "route for %s %s %v", c.method, c.target, c.hdr)
		})
	}
}

func TestNotFound(t *testing.T) {
	tab, err := New([]Route{{Name: "a", Hosts: []string{"a.test"}, Backends: be("a")}}, Options{})
	require.NoError(t, err)
	code, _ := serve(t, NewRouter(tab, RouterOptions{}), "GET", "/", map[string]string{"Host": "b.test"})
	assert.Equal(t, http.StatusNotFound, code)
}

func TestForwardsCleanPath(t *testing.T) {
	var got string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.URL.Path + " " + r.RequestURI })
	tab, err := New([]Route{{Name: "pub", Path: "/public", Backends: []Backend{{Handler: h}}}}, Options{})
	require.NoError(t, err)
	code, _ := serve(t, NewRouter(tab, RouterOptions{}), "GET", "/public/%2e%2e/public//a?q=1", nil)
	assert.Equal(t, 200, code)
	assert.Equal(t, "/public/a /public/a?q=1", got, "upstream must see the path that was matched")
	code, _ = serve(t, NewRouter(tab, RouterOptions{}), "GET", "/public/%2e%2e/admin", nil)
	assert.Equal(t, 404, code, "a traversal must not escape /public")
}

func TestValidation(t *testing.T) {
	ok := be("x")
	cases := []struct {
		routes []Route
		want   string
	}{
		{[]Route{{Backends: ok}}, `routes[0] "": Name is required`},
		{[]Route{{Name: "a", Backends: ok}, {Name: "a", Backends: ok}}, `routes[1] "a": Name is not unique`},
		{[]Route{{Name: "a", Path: "foo", Backends: ok}}, `Path must start with "/"`},
		{[]Route{{Name: "a", Path: "/a/../b", Backends: ok}}, `Path "/a/../b" is not clean`},
		{[]Route{{Name: "a", Path: "(", PathType: PathRegex, Backends: ok}}, `routes[0] "a": Path: error parsing regexp`},
		{[]Route{{Name: "a"}}, `Backends must not be empty`},
		{[]Route{{Name: "a", Backends: []Backend{{Name: "b"}}}}, `Backends[0].Handler is nil`},
		{[]Route{{Name: "a", Backends: []Backend{{Handler: named("x"), Weight: -1}}}}, `Backends[0].Weight must be ≥ 0 and the total ≤ 2147483647, got -1`},
		{[]Route{{Name: "a", Backends: []Backend{{Handler: named("x"), Weight: 1 << 30}, {Handler: named("y"), Weight: 1 << 30}}}}, `Backends[1].Weight must be ≥ 0 and the total ≤ 2147483647`},
		{[]Route{{Name: "a", Backends: []Backend{{Handler: named("x")}, {Handler: named("y")}}}}, `total weight must be > 0`},
		{[]Route{{Name: "a", Hosts: []string{"a.test:80"}, Backends: ok}}, `Hosts[0]: host "a.test:80"`},
		{[]Route{{Name: "a", Hosts: []string{"*.*.test"}, Backends: ok}}, `Hosts[0]`},
		{[]Route{{Name: "a", Headers: []HeaderMatch{{Name: "bad name"}}, Backends: ok}}, `Headers[0].Name "bad name"`},
		{[]Route{{Name: "a", Headers: []HeaderMatch{{Name: "X", Value: "(", Type: MatchRegex}}, Backends: ok}}, `Headers[0].Value`},
		{[]Route{{Name: "a", Query: []QueryMatch{{}}, Backends: ok}}, `Query[0].Name is required`},
		{[]Route{{Name: "a", Pins: []Pin{{Header: "X", Backend: "nope"}}, Backends: ok}}, `Pins[0].Backend "nope" names no backend`},
		{[]Route{{Name: "a", Pins: []Pin{{Backend: "x"}}, Backends: ok}}, `Pins[0]: exactly one of Header and Cookie`},
		{[]Route{{Name: "a", Method: "GE T", Backends: ok}}, `Method "GE T"`},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			tab, err := New(c.routes, Options{})
			require.Error(t, err)
			assert.Nil(t, tab, "an invalid table is rejected as a whole")
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestWeights(t *testing.T) {
	var stable, canary atomic.Int64
	count := func(c *atomic.Int64) http.Handler {
		return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { c.Add(1) })
	}
	tab, err := New([]Route{{Name: "app", Backends: []Backend{
		{Name: "stable", Handler: count(&stable), Weight: 95},
		{Name: "canary", Handler: count(&canary), Weight: 5},
	}}}, Options{})
	require.NoError(t, err)
	rt := NewRouter(tab, RouterOptions{})
	const n = 20000
	for range n {
		rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	share := float64(canary.Load()) / n
	assert.InDelta(t, 0.05, share, 0.01, "canary share over %d requests", n)
	assert.Equal(t, int64(n/20), canary.Load(), "the schedule gives the canary exactly 5 of every 100")
	assert.Equal(t, int64(n), stable.Load()+canary.Load())

	t.Run("spread within a period", func(t *testing.T) {
		var picks []string
		rec := func(name string) http.Handler {
			return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { picks = append(picks, name) })
		}
		tab, err := New([]Route{{Name: "app", Backends: []Backend{
			{Name: "a", Handler: rec("a"), Weight: 3},
			{Name: "b", Handler: rec("b"), Weight: 1},
			{Name: "c", Handler: rec("c"), Weight: 4},
		}}}, Options{})
		require.NoError(t, err)
		rt := NewRouter(tab, RouterOptions{})
		for range 16 {
			rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		}
		for i := 0; i < 16; i += 8 {
			count := map[string]int{}
			for _, p := range picks[i : i+8] {
				count[p]++
			}
			assert.Equal(t, map[string]int{"a": 3, "b": 1, "c": 4}, count, "every period of 8 requests follows the weights: %v", picks)
		}
		runs := 1
		for i := 1; i < len(picks); i++ {
			if picks[i] == picks[i-1] {
				runs++
				assert.Less(t, runs, 4, "a backend's slots are spread, not consecutive: %v", picks)
			} else {
				runs = 1
			}
		}
	})

	t.Run("blue/green 0/100", func(t *testing.T) {
		tab, err := New([]Route{{Name: "app", Backends: []Backend{
			{Name: "blue", Handler: named("blue"), Weight: 0},
			{Name: "green", Handler: named("green"), Weight: 100},
		}}}, Options{})
		require.NoError(t, err)
		for range 200 {
			_, body := serve(t, NewRouter(tab, RouterOptions{}), "GET", "/", nil)
			require.Equal(t, "green", body, "weight 0 takes no traffic")
		}
	})
}

func TestPins(t *testing.T) {
	tab, err := New([]Route{{Name: "app", Backends: []Backend{
		{Name: "stable", Handler: named("stable"), Weight: 100},
		{Name: "canary", Handler: named("canary"), Weight: 0},
	}, Pins: []Pin{{Header: "x-canary", Value: "always", Backend: "canary"}, {Cookie: "ab", Value: "b", Backend: "canary"}}}}, Options{})
	require.NoError(t, err)
	rt := NewRouter(tab, RouterOptions{})
	_, body := serve(t, rt, "GET", "/", map[string]string{"X-Canary": "always"})
	assert.Equal(t, "canary", body, "header pin")
	_, body = serve(t, rt, "GET", "/", map[string]string{"Cookie": "a=1; ab=b"})
	assert.Equal(t, "canary", body, "cookie pin")
	_, body = serve(t, rt, "GET", "/", map[string]string{"Cookie": "ab=a"})
	assert.Equal(t, "stable", body, "other cookie value")
}

func TestSwapUnderLoad(t *testing.T) {
	mk := func(v string) *Table {
		tab, err := New([]Route{{Name: "app", Hosts: []string{"app.test"}, Backends: be(v)}}, Options{})
		require.NoError(t, err)
		return tab
	}
	rt := NewRouter(mk("v0"), RouterOptions{})
	srv := httptest.NewServer(rt)
	defer srv.Close()
	var failed atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sent atomic.Int64
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", srv.URL+"/", nil)
				req.Host = "app.test"
				resp, err := srv.Client().Do(req)
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "v") {
					failed.Add(1)
				}
			}
		})
	}
	for i := range 200 {
		rt.Store(mk(fmt.Sprint("v", i+1)))
	}
	for sent.Load() < 500 {
		rt.Store(mk("vlast"))
	}
	close(stop)
	wg.Wait()
	assert.Zero(t, failed.Load(), "requests lost while swapping tables (of %d)", sent.Load())
	t.Logf("%d requests over 8 clients during %d+ table swaps, %d failed", sent.Load(), 200, failed.Load())
	_, body := serve(t, rt, "GET", "/", map[string]string{"Host": "app.test"})
	assert.Equal(t, "vlast", body, "the next request sees the new table")
}

func TestMirror(t *testing.T) {
	got := make(chan string, 1)
	shadow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.URL.Path + " " + string(b)
	})
	primary := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	tab, err := New([]Route{{Name: "app", Backends: []Backend{{Handler: primary}}, Mirror: shadow}}, Options{MirrorMaxBodyBytes: 8})
	require.NoError(t, err)
	rt := NewRouter(tab, RouterOptions{MirrorQueue: 1, MirrorWorkers: 1})

	// Without Run, the queue fills and further copies are dropped; the
	// primary is served regardless.
	for i := range 3 {
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, httptest.NewRequest("POST", "/m", strings.NewReader("body")))
		assert.Equal(t, "body", w.Body.String(), "primary %d gets the whole body", i)
	}
	assert.Equal(t, int64(2), rt.MirrorsDropped())

	// A body over MirrorMaxBodyBytes is not mirrored but reaches the primary whole.
	w := httptest.NewRecorder()
	rt.ServeHTTP(w, httptest.NewRequest("POST", "/m", strings.NewReader("0123456789abcdef")))
	assert.Equal(t, "0123456789abcdef", w.Body.String())

	ctx, cancel := contextWithCancel()
	done := make(chan error)
	go func() { done <- rt.Run(ctx) }()
	assert.Equal(t, "POST /m body", <-got, "the queued copy is sent by Run")
	cancel()
	assert.ErrorIs(t, <-done, errCanceled)
}
