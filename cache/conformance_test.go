package cache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file is a conformance table in the manner of the HTTP caching test suite
// (cache-tests.fyi): each case is a sequence of exchanges with a real origin, and each
// exchange says what the cache must have done with it. The cases are written from the RFC
// text (RFC 9111, RFC 9110 for dates and conditionals, RFC 5861, RFC 9211); each name
// starts with the section it checks.

// exchange is one client request, what the origin answers while it is in flight, and what
// the cache must do with it.
type exchange struct {
	method  string
	path    string        // "/c" when empty
	request []string      // request header pairs
	advance time.Duration // the clock moves this much before the request

	status   int      // the origin's status; 200 when zero; -1 writes nothing at all
	response []string // origin header pairs; a value "date(N)" is an HTTP-date N seconds from now
	body     string   // the origin's body; "body N" (N counts origin requests) when empty
	delay    time.Duration
	noDate   bool // the origin sends no Date (only with direct, as net/http adds one)

	want expect
}

// expect is what the client must see. kind is one of
//
//	cached         the origin saw nothing
//	not_cached     the origin saw the request
//	etag_validated the origin saw it with If-None-Match
//	lm_validated   the origin saw it with If-Modified-Since
//
// or empty for no check of the origin.
type expect struct {
	kind    string
	status  int      // 0: not checked
	header  []string // pairs that must be present with exactly these values
	missing []string // fields that must be absent
	body    string   // checked when not empty
	sent    []string // pairs the origin must have received (on the last request it saw)
}

type conformanceCase struct {
	name  string
	steps []exchange
	// direct puts the origin handler right behind the cache instead of behind a reverse
	// proxy, for fields a reverse proxy would strip before the cache could see them.
	direct bool
	// opts configures the cache; its clock is always the rig's.
	opts Options
}

// conformanceRig runs the exchanges: a real origin server (or handler, for direct cases),
// the cache in front of it, a real front server, and a fake clock they all share.
type conformanceRig struct {
	t     *testing.T
	clock *fakeClock
	cache *Cache
	front *httptest.Server

	mu   sync.Mutex // mu protects cur, n and last
	cur  *exchange
	n    int
	last http.Header
}

func newConformanceRig(t *testing.T, direct bool, opts Options) *conformanceRig {
	t.Helper()
	rg := &conformanceRig{t: t, clock: newClock()}
	opts.Now = rg.clock.Now
	c, err := New(opts)
	require.NoError(t, err)
	rg.cache = c
	var next http.Handler = http.HandlerFunc(rg.origin)
	if !direct {
		origin := httptest.NewServer(next)
		t.Cleanup(origin.Close)
		u, err := url.Parse(origin.URL)
		require.NoError(t, err)
		next = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host }}
	}
	rg.front = httptest.NewServer(c.Handler(next))
	t.Cleanup(func() {
		rg.front.Close()
		_ = c.Close()
	})
	return rg
}

// expand turns "date(N)" into the HTTP-date N seconds from the clock's now.
func (rg *conformanceRig) expand(v string) string {
	if s, ok := strings.CutPrefix(v, "date("); ok && strings.HasSuffix(s, ")") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, ")"))
		require.NoError(rg.t, err, "date(N) in the table")
		return rg.clock.Now().Add(time.Duration(n) * time.Second).Format(http.TimeFormat)
	}
	return v
}

// origin answers as the current exchange says. Like the suite's server, it answers a
// conditional request whose validator matches its response with a 304.
func (rg *conformanceRig) origin(w http.ResponseWriter, r *http.Request) {
	rg.mu.Lock()
	ex := rg.cur
	rg.n++
	n := rg.n
	rg.last = r.Header.Clone()
	rg.mu.Unlock()
	rg.clock.Advance(ex.delay)
	if ex.status < 0 {
		return // nothing written: the server sends a 200
	}

	h := w.Header()
	if !ex.noDate {
		h.Set("Date", rg.clock.Now().Format(http.TimeFormat))
	}
	for i := 0; i+1 < len(ex.response); i += 2 {
		k, v := ex.response[i], rg.expand(ex.response[i+1])
		if k == "Date" {
			h.Set(k, v)
		} else {
			h.Add(k, v)
		}
	}
	status := cmpInt(ex.status, http.StatusOK)
	if status == http.StatusOK && originNotModified(r, h) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, cmp(ex.body, "body "+strconv.Itoa(n)))
	}
}

func cmpInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func originNotModified(r *http.Request, h http.Header) bool {
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		return etagMatchWeak([]string{inm}, h.Get("Etag"))
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" && h.Get("Last-Modified") != "" {
		t, err1 := http.ParseTime(ims)
		lm, err2 := http.ParseTime(h.Get("Last-Modified"))
		return err1 == nil && err2 == nil && !lm.After(t)
	}
	return false
}

func (rg *conformanceRig) run(steps []exchange) {
	t := rg.t
	for i := range steps {
		ex := &steps[i]
		rg.clock.Advance(ex.advance)
		rg.mu.Lock()
		rg.cur, rg.last = ex, nil
		before := rg.n
		rg.mu.Unlock()

		req, err := http.NewRequest(cmp(ex.method, http.MethodGet), rg.front.URL+cmp(ex.path, "/c"), nil)
		require.NoError(t, err)
		for j := 0; j+1 < len(ex.request); j += 2 {
			req.Header.Add(ex.request[j], rg.expand(ex.request[j+1]))
		}
		resp, err := noRedirects.Do(req)
		require.NoError(t, err, "exchange %d", i+1)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		rg.cache.wg.Wait() // a background revalidation belongs to this exchange

		rg.mu.Lock()
		saw, last := rg.n-before, rg.last
		rg.mu.Unlock()
		msg := fmt.Sprintf("exchange %d (%s %s), Cache-Status %q", i+1, req.Method, req.URL.Path,
			resp.Header.Values("Cache-Status"))
		w := ex.want
		switch w.kind {
		case "cached":
			assert.Zero(t, saw, "%s: the stored response must answer, without the origin", msg)
		case "not_cached":
			assert.NotZero(t, saw, "%s: the origin must be asked", msg)
		case "etag_validated", "lm_validated":
			require.NotZero(t, saw, "%s: the origin must be asked to validate", msg)
			field := map[string]string{"etag_validated": "If-None-Match", "lm_validated": "If-Modified-Since"}[w.kind]
			assert.NotEmpty(t, last.Get(field), "%s: the request upstream must carry %s", msg, field)
		case "":
		default:
			t.Fatalf("unknown kind %q", w.kind)
		}
		if w.status != 0 {
			assert.Equal(t, w.status, resp.StatusCode, "%s: status", msg)
		}
		for j := 0; j+1 < len(w.header); j += 2 {
			assert.Equal(t, rg.expand(w.header[j+1]), strings.Join(resp.Header.Values(w.header[j]), ", "),
				"%s: field %s", msg, w.header[j])
		}
		for _, f := range w.missing {
			assert.Empty(t, resp.Header.Values(f), "%s: field %s must be absent", msg, f)
		}
		if w.body != "" {
			assert.Equal(t, w.body, string(body), "%s: body", msg)
		}
		for j := 0; j+1 < len(w.sent); j += 2 {
			require.NotNil(t, last, "%s: the origin must be asked", msg)
			assert.Equal(t, w.sent[j+1], last.Get(w.sent[j]), "%s: request field %s upstream", msg, w.sent[j])
		}
		for _, v := range resp.Header.Values("Cache-Status") {
			assert.NoError(t, checkCacheStatus(v), "%s: Cache-Status syntax (RFC 9211)", msg)
		}
	}
}

// twice is the commonest case: a response is fetched, the clock moves, and the same request
// comes again.
func twice(response []string, advance time.Duration, kind string) []exchange {
	return []exchange{{response: response}, {advance: advance, want: expect{kind: kind}}}
}

func withStatus(status int, steps []exchange) []exchange {
	for i := range steps {
		steps[i].status = status
	}
	return steps
}

// Templates after the suite's: a response fresh for a long time, and one stale on arrival
// that has a validator.
var (
	freshResponse = []string{"Expires", "date(100000)", "Cache-Control", "max-age=100000", "Last-Modified", "date(0)"}
	staleResponse = []string{"Expires", "date(-5000)", "Last-Modified", "date(-100000)"}
)

const pause = 3 * time.Second

func TestConformance(t *testing.T) {
	var cases []conformanceCase
	add := func(name string, steps []exchange) { cases = append(cases, conformanceCase{name: name, steps: steps}) }
	addDirect := func(name string, steps []exchange) {
		cases = append(cases, conformanceCase{name: name, steps: steps, direct: true})
	}
	// RFC 9111 stores Set-Cookie like any other field; sluice does only when told to.
	addStoringCookies := func(name string, steps []exchange) {
		cases = append(cases, conformanceCase{name: name, steps: steps, opts: Options{StoreSetCookie: true}})
	}

	// §5.2 Cache-Control parsing (response directives, §5.2.2, and §4.2.1 on conflicts).
	add("§5.2 max-age reuses", twice([]string{"Cache-Control", "max-age=3600"}, pause, "cached"))
	add("§5.2 quoted max-age", twice([]string{"Cache-Control", `max-age="3600"`}, pause, "cached"))
	add("§5.2 max-age with leading zeros", twice([]string{"Cache-Control", "max-age=003600"}, pause, "cached"))
	add("§5.2 directive names are case-insensitive", twice([]string{"Cache-Control", "MaX-aGe=3600"}, pause, "cached"))
	add("§5.2 unknown extension ignored", twice([]string{"Cache-Control", "foobar, max-age=3600"}, pause, "cached"))
	add("§5.2 max-age inside a quoted extension is not max-age", twice([]string{"Cache-Control", `extension="max-age=100", max-age=1`}, pause, "not_cached"))
	add("§5.2 max-age inside a quoted extension after the real one", twice([]string{"Cache-Control", `max-age=1, extension="max-age=100"`}, pause, "not_cached"))
	add("§5.2 quoted extension and quoted max-age", twice([]string{"Cache-Control", `extension="max-age=100", max-age="1"`}, pause, "not_cached"))
	add("§5.2 quoted max-age then quoted extension", twice([]string{"Cache-Control", `max-age="1", extension="max-age=100"`}, pause, "not_cached"))
	add("§5.2 quoted comma in an extension", twice([]string{"Cache-Control", `foo="a, max-age=100", max-age=1`}, pause, "not_cached"))
	add("§1.2.2 space before = is invalid", twice([]string{"Cache-Control", "max-age =100"}, pause, "not_cached"))
	add("§1.2.2 space after = is invalid", twice([]string{"Cache-Control", "max-age= 100"}, pause, "not_cached"))
	add("§1.2.2 single-quoted max-age is invalid", twice([]string{"Cache-Control", "max-age='3600'"}, pause, "not_cached"))
	add("§1.2.2 max-age=0", twice([]string{"Cache-Control", "max-age=0"}, 0, "not_cached"))
	add("§1.2.2 max-age=-1 is invalid", twice([]string{"Cache-Control", "max-age=-1"}, 0, "not_cached"))
	add("§1.2.2 max-age=a100 is invalid", twice([]string{"Cache-Control", "max-age=a100"}, 0, "not_cached"))
	add("§1.2.2 max-age=100a is invalid", twice([]string{"Cache-Control", "max-age=100a"}, 0, "not_cached"))
	add("§4.2.1 non-integer max-age is stale", twice([]string{"Cache-Control", "max-age=3600.5"}, 0, "not_cached"))
	add("§1.2.2 max-age=2147483648", twice([]string{"Cache-Control", "max-age=2147483648"}, 24*time.Hour, "cached"))
	add("§1.2.2 max-age beyond 2^31 saturates", twice([]string{"Cache-Control", "max-age=99999999999"}, 24*time.Hour, "cached"))
	add("§4.2.1 first of two max-age wins (fresh, stale)", twice([]string{"Cache-Control", "max-age=1800, max-age=1"}, pause, "cached"))
	add("§4.2.1 first of two max-age wins (stale, fresh)", twice([]string{"Cache-Control", "max-age=1, max-age=1800"}, pause, "not_cached"))
	add("§4.2.1 first of two max-age lines wins", twice([]string{"Cache-Control", "max-age=5", "Cache-Control", "max-age=3600"}, 10*time.Second, "not_cached"))
	add("§4.2.1 max-age beats a past Expires", twice([]string{"Cache-Control", "max-age=3600", "Expires", "date(-10000)"}, pause, "cached"))
	add("§4.2.1 max-age beats an invalid Expires", twice([]string{"Cache-Control", "max-age=3600", "Expires", "0"}, pause, "cached"))
	add("§4.2.1 max-age=0 beats a future Expires", twice([]string{"Cache-Control", "max-age=0", "Expires", "date(10000)"}, 0, "not_cached"))
	add("§5.2.2.10 s-maxage in a shared cache", twice([]string{"Cache-Control", "s-maxage=3600"}, pause, "cached"))
	add("§5.2.2.10 s-maxage beats a longer max-age", twice([]string{"Cache-Control", "max-age=3600, s-maxage=1"}, pause, "not_cached"))
	add("§5.2.2.10 s-maxage beats a longer max-age (reversed)", twice([]string{"Cache-Control", "s-maxage=1, max-age=3600"}, pause, "not_cached"))
	add("§5.2.2.10 s-maxage beats a longer max-age (two lines)", twice([]string{"Cache-Control", "max-age=3600", "Cache-Control", "s-maxage=1"}, pause, "not_cached"))
	add("§5.2.2.10 s-maxage beats a shorter max-age", twice([]string{"Cache-Control", "max-age=1, s-maxage=3600"}, pause, "cached"))
	add("§5.2.2.5 no-store", twice([]string{"Cache-Control", "no-store"}, 0, "not_cached"))
	add("§5.2.2.5 no-store, any case", twice([]string{"Cache-Control", "No-StOrE"}, 0, "not_cached"))
	add("§5.2.2.5 no-store beats max-age and Expires", twice([]string{"Cache-Control", "max-age=10000, no-store", "Expires", "date(10000)"}, 0, "not_cached"))
	add("§5.2.2.7 private is not stored by a shared cache", twice([]string{"Cache-Control", "private, max-age=3600"}, 0, "not_cached"))
	add("§5.2.2.7 PRIVATE, any case", twice([]string{"Cache-Control", "PRIVATE, max-age=3600"}, 0, "not_cached"))
	add("§5.2.2.4 no-cache with max-age and Expires is validated", twice([]string{"Cache-Control", "max-age=10000, no-cache", "Expires", "date(10000)", "ETag", `"abcd"`}, 0, "etag_validated"))
	add("§5.2.2.4 No-CaChE, any case", twice([]string{"Cache-Control", "max-age=10000, No-CaChE", "ETag", `"abcd"`}, 0, "etag_validated"))
	add("§5.2.2.4 no-cache without freshness is stored and validated", twice([]string{"Cache-Control", "no-cache", "ETag", `"abcd"`}, 0, "etag_validated"))
	add("§5.2.2.2 must-revalidate while fresh", twice([]string{"Cache-Control", "max-age=10000, must-revalidate", "ETag", `"abcd"`}, pause, "cached"))
	add("§5.2.2.2 must-revalidate once stale", twice([]string{"Cache-Control", "max-age=2, must-revalidate", "ETag", `"abcd"`}, pause, "etag_validated"))

	// §5.3 Expires, with RFC 9110 §5.6.7 dates.
	add("§5.3 future Expires", twice([]string{"Expires", "date(2592000)"}, pause, "cached"))
	add("§5.3 past Expires", twice([]string{"Expires", "date(-2592000)"}, 0, "not_cached"))
	add("§5.3 Expires equal to Date", twice([]string{"Expires", "date(0)"}, 0, "not_cached"))
	add("§5.3 Expires before Date, both ahead", twice([]string{"Expires", "date(300)", "Date", "date(400)"}, 0, "not_cached"))
	add("§5.3 Expires with an invalid Date", twice([]string{"Date", "foo", "Expires", "date(10)"}, 0, "cached"))
	for _, bad := range []string{
		"0", "Thu, 18 Aug 2050 02:01:18 UTC", "Thu, 18 Aug 50 02:01:18 GMT", "Thu 18 Aug 2050 02:01:18 GMT",
		"Thu, 18  Aug  2050 02:01:18 GMT", "Thu, 18-Aug-2050 02:01:18 GMT", "Thu, 18 Aug 2050 02.01.18 GMT",
		"Thu, 18 Aug 2050 2:01:18 GMT", "Thu, 31 Feb 2050 02:01:18 GMT", "Thu, 18 Aug 2050 24:01:18 GMT",
	} {
		add("§5.3 invalid Expires is in the past: "+bad, twice([]string{"Expires", bad}, 0, "not_cached"))
	}
	for _, good := range []string{
		"Thu, 18 Aug 2050 02:01:18 GMT", "Thursday, 18-Aug-50 02:01:18 GMT", "Thu Aug 18 02:01:18 2050",
		"Thu Aug  8 02:01:18 2050", "THU, 18 Aug 2050 02:01:18 GMT", "Thu, 18 AUG 2050 02:01:18 GMT",
		"Thu, 18 Aug 2050 02:01:18 gMT",
	} {
		add("§5.3 Expires in a form RFC 9110 §5.6.7 accepts: "+good, twice([]string{"Expires", good}, pause, "cached"))
	}

	// §4.2.3 Age.
	add("§4.2.3 Age beyond max-age is stale", twice([]string{"Cache-Control", "max-age=10", "Age", "15"}, 0, "not_cached"))
	add("§4.2.3 Age beyond Expires minus a slow Date", twice([]string{"Date", "date(-10)", "Expires", "date(10)", "Age", "25"}, 0, "not_cached"))
	add("§4.2.3 Age beyond Expires minus a fast Date", twice([]string{"Date", "date(10)", "Expires", "date(20)", "Age", "15"}, 0, "not_cached"))
	add("§4.2.3 invalid Age is ignored", twice([]string{"Cache-Control", "max-age=3600", "Age", "abc"}, pause, "cached"))
	add("§4.2.3 negative Age is ignored", twice([]string{"Cache-Control", "max-age=3600", "Age", "-7200"}, pause, "cached"))
	add("§5.1 hit generates Age", []exchange{
		{response: []string{"Expires", "date(2592000)"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"Age", "3"}}},
	})
	add("§5.1 hit adds to the upstream Age (Expires)", []exchange{
		{response: []string{"Expires", "date(2592000)", "Age", "30"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"Age", "33"}}},
	})
	add("§5.1 hit adds to the upstream Age (max-age)", []exchange{
		{response: []string{"Cache-Control", "max-age=600", "Age", "30"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"Age", "33"}}},
	})
	add("§4.2.3 response delay counts with the upstream Age", []exchange{
		{delay: 5 * time.Second, response: []string{"Cache-Control", "max-age=600", "Age", "10"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"Age", "18"}}},
	})
	add("§4.2.3 apparent age from a Date in the past", []exchange{
		{response: []string{"Cache-Control", "max-age=600", "Date", "date(-50)"}},
		{want: expect{kind: "cached", header: []string{"Age", "50"}}},
	})
	add("§4 a hit keeps the stored Date", []exchange{
		{response: []string{"Expires", "date(2592000)"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"Date", "date(-3)"}}},
	})

	// §4.2.2 heuristic freshness: Last-Modified a day ago gives 2.4 hours.
	lastModifiedDay := []string{"Last-Modified", "date(-86400)"}
	for _, status := range []int{200, 203, 204, 404, 405, 410, 414, 501} {
		add(fmt.Sprintf("§4.2.2 heuristic for a %d (cacheable by default)", status),
			withStatus(status, twice(lastModifiedDay, time.Hour, "cached")))
	}
	for _, status := range []int{201, 202, 403, 502, 503, 504, 599} {
		add(fmt.Sprintf("§4.2.2 no heuristic for a %d", status), withStatus(status, twice(lastModifiedDay, 0, "not_cached")))
	}
	add("§4.2.2 heuristic for an unknown status with public", withStatus(599,
		twice([]string{"Last-Modified", "date(-86400)", "Cache-Control", "public"}, time.Hour, "cached")))
	add("§4.2.2 10% of the Last-Modified age, then stale", twice([]string{"Last-Modified", "date(-1000)"}, 101*time.Second, "lm_validated"))
	add("§4.2.2 no heuristic beside an invalid Expires", twice([]string{"Last-Modified", "date(-86400)", "Expires", "0"}, 0, "lm_validated"))

	// §3 storing by status: explicit freshness makes any final status storable; a stale
	// stored response is not reused.
	for _, status := range []int{200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599} {
		add(fmt.Sprintf("§3 fresh %d with explicit freshness is reused", status), withStatus(status, twice(freshResponse, pause, "cached")))
		add(fmt.Sprintf("§4.2 stale %d is not reused", status), withStatus(status, twice(staleResponse, 0, "not_cached")))
	}

	// §3 and §5.2.2.3 must-understand.
	add("§5.2.2.3 must-understand overrides no-store for an understood status",
		twice([]string{"Cache-Control", "must-understand, no-store, max-age=3600"}, pause, "cached"))
	add("§5.2.2.3 must-understand with an unknown status is not stored",
		withStatus(299, twice([]string{"Cache-Control", "must-understand, no-store, max-age=3600"}, 0, "not_cached")))
	add("§5.2.2.3 must-understand without no-store, unknown status",
		withStatus(599, twice([]string{"Cache-Control", "must-understand, max-age=3600"}, 0, "not_cached")))

	// §3.5 Authorization.
	auth := []string{"Authorization", "FOO"}
	add("§3.5 Authorization without public is not stored", []exchange{
		{request: auth, response: []string{"Expires", "date(2592000)"}, want: expect{sent: auth}},
		{advance: pause, want: expect{kind: "not_cached"}},
	})
	for _, cc := range []string{"max-age=3600, public", "max-age=3600, must-revalidate", "s-maxage=3600"} {
		add("§3.5 Authorization with "+cc+" is stored", []exchange{
			{request: auth, response: []string{"Cache-Control", cc}},
			{advance: pause, want: expect{kind: "cached"}},
		})
	}

	// §3.1 storing header fields.
	for _, f := range [][]string{{"Test-Header", "v"}, {"X-Frame-Options", "deny"}, {"Set-Cookie", "a=b"},
		{"WWW-Authenticate", "Basic"}, {"Content-Type", "text/plain"}, {"Clear-Site-Data", `"cookies"`},
		{"Strict-Transport-Security", "max-age=1"}} {
		addTo, name := add, "§3.1 "+f[0]+" is stored"
		if f[0] == "Set-Cookie" {
			addTo, name = addStoringCookies, name+" with StoreSetCookie"
		}
		addTo(name, []exchange{
			{response: append([]string{"Cache-Control", "max-age=3600"}, f...)},
			{advance: pause, want: expect{kind: "cached", header: f}},
		})
	}
	addDirect("§3.1 Connection and the fields it lists are not stored", []exchange{
		{response: []string{"Cache-Control", "max-age=3600", "Connection", "a, b", "A", "1", "B", "2", "C", "3"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"C", "3"}, missing: []string{"Connection", "A", "B"}}},
	})
	addDirect("§3.1 proxy-specific fields are not stored", []exchange{
		{response: []string{"Cache-Control", "max-age=3600", "Proxy-Authenticate", "Basic", "Proxy-Authentication-Info", "x",
			"Keep-Alive", "timeout=5", "Proxy-Connection", "keep-alive"}},
		{advance: pause, want: expect{kind: "cached",
			missing: []string{"Proxy-Authenticate", "Proxy-Authentication-Info", "Keep-Alive", "Proxy-Connection"}}},
	})
	add("sluice: a response with Set-Cookie is not stored by default", []exchange{
		{response: []string{"Cache-Control", "max-age=3600", "Set-Cookie", "a=b"}},
		{advance: pause, response: []string{"Cache-Control", "max-age=3600", "Set-Cookie", "a=c"},
			want: expect{kind: "not_cached", header: []string{"Set-Cookie", "a=c"}}},
	})
	add("§5.2.2.7 private=\"Set-Cookie\" stores the response without it", []exchange{
		{response: []string{"Cache-Control", `max-age=3600, private="Set-Cookie"`, "Set-Cookie", "a=b"},
			want: expect{header: []string{"Set-Cookie", "a=b"}}},
		{advance: pause, want: expect{kind: "cached", missing: []string{"Set-Cookie"}}},
	})
	add("§5.2.2.4 qualified no-cache omits the field", []exchange{
		{response: []string{"Cache-Control", `no-cache="a"`, "Cache-Control", "max-age=3600", "A", "1", "B", "2"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"B", "2"}, missing: []string{"A"}}},
	})
	add("§5.2.2.4 qualified no-cache omits every listed field", []exchange{
		{response: []string{"Cache-Control", `no-cache="a, b"`, "Cache-Control", "max-age=3600", "A", "1", "B", "2", "C", "3"}},
		{advance: pause, want: expect{kind: "cached", header: []string{"C", "3"}, missing: []string{"A", "B"}}},
	})

	// §3.2 and §4.3.4: freshening with a 304.
	add("§4.3.4 a 304 that omits a field keeps the stored one", []exchange{
		{response: []string{"Cache-Control", "max-age=2", "Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT", "Test-Header", "A"}},
		{advance: pause, response: []string{"Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"},
			want: expect{kind: "lm_validated", status: 200, header: []string{"Test-Header", "A"}, body: "body 1"}},
	})
	for _, f := range [][]string{
		{"Test-Header", "A", "B"}, {"X-Test-Header", "A", "B"}, {"Content-Foo", "A", "B"}, {"X-Content-Foo", "A", "B"},
		{"Content-Type", "text/plain", "text/plain;charset=utf-8"}, {"Content-Location", "/foo", "/bar"},
		{"Content-Security-Policy", "default-src 'self'", "default-src 'self' cdn.example.com"},
		{"X-Frame-Options", "deny", "sameorigin"}, {"Set-Cookie", "a=b", "a=c"}, {"Clear-Site-Data", `"cache"`, `"cookies"`},
		{"Expires", "Fri, 01 Jan 2038 01:01:01 GMT", "Mon, 11 Jan 2038 11:11:11 GMT"},
	} {
		resp := func(v string) []string {
			return []string{"Cache-Control", "max-age=2", "ETag", `"e1"`, f[0], v}
		}
		// net/http drops Content-Type from a 304 it sends, so that case skips the server.
		addTo := add
		switch f[0] {
		case "Content-Type":
			addTo = addDirect
		case "Set-Cookie":
			addTo = addStoringCookies
		}
		addTo("§3.2 a 304 updates "+f[0], []exchange{
			{response: resp(f[1])},
			{advance: pause, response: resp(f[2]), want: expect{kind: "etag_validated", status: 200, header: []string{f[0], f[2]}, body: "body 1"}},
			{response: resp(f[2]), want: expect{kind: "cached", header: []string{f[0], f[2]}, body: "body 1"}},
		})
	}
	add("§3.2 a 304 updates Cache-Control", []exchange{
		{response: []string{"Cache-Control", "max-age=1", "ETag", `"e1"`}},
		{advance: pause, response: []string{"Cache-Control", "max-age=3600", "ETag", `"e1"`},
			want: expect{kind: "etag_validated", header: []string{"Cache-Control", "max-age=3600"}}},
		{advance: pause, want: expect{kind: "cached", header: []string{"Cache-Control", "max-age=3600"}}},
	})
	addDirect("§3.2 a 304 does not update Content-Length", []exchange{
		{response: []string{"Cache-Control", "max-age=2", "ETag", `"e1"`}, body: "12345"},
		{advance: pause, response: []string{"Cache-Control", "max-age=3600", "ETag", `"e1"`, "Content-Length", "10"},
			want: expect{kind: "etag_validated", status: 200, header: []string{"Content-Length", "5"}, body: "12345"}},
		{want: expect{kind: "cached", header: []string{"Content-Length", "5"}, body: "12345"}},
	})
	add("§4.2.3 a 304 without Age does not keep the stored Age", []exchange{
		{response: []string{"Cache-Control", "max-age=60", "Age", "100", "ETag", `"e1"`}},
		{response: []string{"Cache-Control", "max-age=60", "ETag", `"e1"`}, want: expect{kind: "etag_validated"}},
		{advance: 10 * time.Second, want: expect{kind: "cached", header: []string{"Age", "10"}}},
	})
	addDirect("§4.3.4 a 304 without Date is dated when received", []exchange{
		{response: []string{"Cache-Control", "max-age=60", "ETag", `"e1"`}},
		{advance: 100 * time.Second, noDate: true, response: []string{"Cache-Control", "max-age=60", "ETag", `"e1"`},
			want: expect{kind: "etag_validated"}},
		{advance: 10 * time.Second, want: expect{kind: "cached", header: []string{"Age", "10"}}},
	})
	add("§4.3.4 a 304 that says no-store ends the stored response", []exchange{
		{response: []string{"Cache-Control", "max-age=1", "ETag", `"e1"`}},
		{advance: pause, response: []string{"Cache-Control", "no-store, max-age=60", "ETag", `"e1"`},
			want: expect{kind: "etag_validated", body: "body 1"}},
		{want: expect{kind: "not_cached"}},
	})
	add("§4.3.4 a 304 with another strong validator updates nothing", []exchange{
		{response: []string{"Cache-Control", "max-age=1", "ETag", `"e1"`}},
		{advance: pause, status: http.StatusNotModified, response: []string{"ETag", `"e2"`, "Cache-Control", "max-age=60"},
			want: expect{kind: "not_cached"}},
	})

	// §4.3.1 sending a validation request.
	add("§4.3.1 a stale strong ETag becomes If-None-Match", []exchange{
		{response: []string{"Cache-Control", "max-age=2", "ETag", `"abcdef"`}},
		{advance: pause, want: expect{kind: "etag_validated", sent: []string{"If-None-Match", `"abcdef"`}}},
	})
	add("§4.3.1 a stale weak ETag becomes If-None-Match", []exchange{
		{response: []string{"Cache-Control", "max-age=2", "ETag", `W/"abcdef"`}},
		{advance: pause, want: expect{kind: "etag_validated", sent: []string{"If-None-Match", `W/"abcdef"`}}},
	})
	add("§4.3.1 a stale Last-Modified becomes If-Modified-Since", []exchange{
		{response: []string{"Cache-Control", "max-age=2", "Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"}},
		{advance: pause, want: expect{kind: "lm_validated", sent: []string{"If-Modified-Since", "Wed, 01 Jan 2020 00:00:00 GMT"}}},
	})
	add("§4.3.1 the validation request carries the Vary'd fields", []exchange{
		{request: []string{"Abc", "123"}, response: []string{"Expires", "date(1)", "ETag", `"abcdef"`, "Vary", "Abc"}},
		{advance: pause, request: []string{"Abc", "123"}, want: expect{kind: "etag_validated", sent: []string{"Abc", "123"}}},
	})

	// §4.3.2 answering the client's conditional requests from the cache.
	etagFresh := func(etag string) []string { return append([]string{"ETag", etag}, freshResponse...) }
	for _, c := range []struct{ name, etag, inm string }{
		{"strong", `"abcdef"`, `"abcdef"`}, {"weak", `W/"abcdef"`, `W/"abcdef"`},
		{"weak against strong", `"abcdef"`, `W/"abcdef"`}, {"first of several", `"abcdef"`, `"abcdef", "1234", "5678"`},
		{"middle of several", `"abcdef"`, `"1234", "abcdef", "5678"`}, {"last of several", `"abcdef"`, `"1234", "5678", "abcdef"`},
		{"star", `"abcdef"`, `*`},
	} {
		add("§4.3.2 If-None-Match "+c.name+" gets a 304 with the ETag", []exchange{
			{response: etagFresh(c.etag)},
			{request: []string{"If-None-Match", c.inm}, want: expect{kind: "cached", status: 304, header: []string{"ETag", c.etag},
				missing: []string{"Content-Length"}}},
		})
	}
	add("§4.3.2 If-None-Match that does not match gets the response", []exchange{
		{response: etagFresh(`"abcdef"`)},
		{request: []string{"If-None-Match", `"other"`}, want: expect{kind: "cached", status: 200, body: "body 1"}},
	})
	add("§4.3.2 If-None-Match takes precedence over If-Modified-Since", []exchange{
		{response: []string{"Cache-Control", "max-age=100000", "Last-Modified", "date(-5000)", "ETag", `"abcdef"`}},
		{request: []string{"If-None-Match", `"abcdef"`, "If-Modified-Since", "date(-6000)"}, want: expect{kind: "cached", status: 304}},
		{request: []string{"If-None-Match", `"other"`, "If-Modified-Since", "date(0)"}, want: expect{kind: "cached", status: 200}},
	})
	lmFresh := []string{"Cache-Control", "max-age=100000", "Last-Modified", "date(-3000)"}
	add("§4.3.2 If-Modified-Since equal to Last-Modified", []exchange{
		{response: lmFresh}, {advance: pause, request: []string{"If-Modified-Since", "date(-3003)"}, want: expect{kind: "cached", status: 304}},
	})
	add("§4.3.2 If-Modified-Since after Last-Modified", []exchange{
		{response: lmFresh}, {advance: pause, request: []string{"If-Modified-Since", "date(-2000)"}, want: expect{kind: "cached", status: 304}},
	})
	add("§4.3.2 If-Modified-Since before Last-Modified", []exchange{
		{response: lmFresh}, {advance: pause, request: []string{"If-Modified-Since", "date(-4000)"}, want: expect{kind: "cached", status: 200}},
	})
	add("§4.3.2 If-Modified-Since without Last-Modified compares with Date", []exchange{
		{response: []string{"Cache-Control", "max-age=10000"}},
		{advance: pause, request: []string{"If-Modified-Since", "date(-3000)"}, want: expect{kind: "cached", status: 200}},
		{request: []string{"If-Modified-Since", "date(-1)"}, want: expect{kind: "cached", status: 304}},
	})
	add("§4.3.2 If-Modified-Since in the rfc850 form", []exchange{
		{response: lmFresh},
		{advance: pause, request: []string{"If-Modified-Since", "Sunday, 01-Mar-26 12:00:00 GMT"}, want: expect{kind: "cached", status: 304}},
	})
	add("§4.3.2 If-Modified-Since on a stale response: validate, then 304", []exchange{
		{response: []string{"Cache-Control", "max-age=2", "Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"}},
		{advance: pause, request: []string{"If-Modified-Since", "Wed, 01 Jan 2020 00:00:00 GMT"},
			response: []string{"Cache-Control", "max-age=2", "Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"},
			want:     expect{kind: "lm_validated", status: 304}},
	})

	// §4.1 Vary.
	varyResponse := []string{"Expires", "date(5000)", "Last-Modified", "date(-3000)", "Vary", "Foo"}
	add("§4.1 Vary: matching request", []exchange{
		{request: []string{"Foo", "1"}, response: varyResponse},
		{request: []string{"Foo", "1"}, want: expect{kind: "cached"}},
	})
	add("§4.1 Vary: other value", []exchange{
		{request: []string{"Foo", "1"}, response: varyResponse},
		{request: []string{"Foo", "2"}, want: expect{kind: "not_cached"}},
	})
	add("§4.1 Vary: field omitted", []exchange{
		{request: []string{"Foo", "1"}, response: varyResponse}, {want: expect{kind: "not_cached"}},
	})
	add("§4.1 Vary: a second variant does not evict the first", []exchange{
		{request: []string{"Foo", "1"}, response: varyResponse, body: "foo_1"},
		{request: []string{"Foo", "2"}, response: varyResponse, body: "foo_2", want: expect{kind: "not_cached"}},
		{request: []string{"Foo", "1"}, want: expect{kind: "cached", body: "foo_1"}},
		{request: []string{"Foo", "2"}, want: expect{kind: "cached", body: "foo_2"}},
	})
	add("§4.1 Vary: fields not listed are not in the key", []exchange{
		{request: []string{"Foo", "1", "Other", "2"}, response: varyResponse},
		{request: []string{"Foo", "1", "Other", "3"}, want: expect{kind: "cached"}},
	})
	vary3 := []string{"Expires", "date(5000)", "Last-Modified", "date(-3000)", "Vary", "Foo, Bar, Baz"}
	add("§4.1 Vary: three fields match", []exchange{
		{request: []string{"Foo", "1", "Bar", "abc", "Baz", "789"}, response: vary3},
		{request: []string{"Baz", "789", "Foo", "1", "Bar", "abc"}, want: expect{kind: "cached"}},
	})
	add("§4.1 Vary: three fields, one differs", []exchange{
		{request: []string{"Foo", "1", "Bar", "abc4", "Baz", "789"}, response: vary3},
		{request: []string{"Foo", "1", "Bar", "abc", "Baz", "789"}, want: expect{kind: "not_cached"}},
	})
	add("§4.1 Vary: a field both requests omit matches", []exchange{
		{request: []string{"Foo", "1", "Baz", "789"}, response: vary3},
		{request: []string{"Foo", "1", "Baz", "789"}, want: expect{kind: "cached"}},
	})
	add("§4.1 Vary: two fields, one omitted", []exchange{
		{request: []string{"Foo", "1"}, response: []string{"Expires", "date(5000)", "Vary", "Foo, Bar"}},
		{want: expect{kind: "not_cached"}},
	})
	add("§4.1 Vary: whitespace is normalised", []exchange{
		{request: []string{"Foo", "1,2"}, response: varyResponse},
		{request: []string{"Foo", " 1, 2 "}, want: expect{kind: "cached"}},
	})
	add("§4.1 Vary: field lines are combined", []exchange{
		{request: []string{"Foo", "1, 2"}, response: varyResponse},
		{request: []string{"Foo", "1", "Foo", "2"}, want: expect{kind: "cached"}},
	})
	add("§4.1 Vary: field names are case-insensitive", []exchange{
		{request: []string{"Foo", "1"}, response: []string{"Expires", "date(5000)", "Vary", "fOO"}},
		{request: []string{"foo", "1"}, want: expect{kind: "cached"}},
	})
	for _, vary := range [][]string{{"*"}, {"*, *"}, {"*", "*"}, {", *"}, {"", "*"}, {"*, Foo"}, {"Foo, *"}} {
		resp := []string{"Expires", "date(5000)", "Last-Modified", "date(-3000)"}
		for _, v := range vary {
			resp = append(resp, "Vary", v)
		}
		add(fmt.Sprintf("§4.1 Vary %q never matches", vary), []exchange{
			{request: []string{"Foo", "1", "Baz", "789"}, response: resp},
			{request: []string{"Foo", "1", "Baz", "789"}, want: expect{kind: "not_cached"}},
		})
	}

	// §4.4 invalidation.
	for _, method := range []string{"POST", "PUT", "DELETE", "M-SEARCH"} {
		add("§4.4 a successful "+method+" invalidates the target", []exchange{
			{response: freshResponse},
			{method: method},
			{want: expect{kind: "not_cached"}},
		})
		add("§4.4 a failed "+method+" invalidates nothing", []exchange{
			{response: freshResponse},
			{method: method, status: 500},
			{want: expect{kind: "cached"}},
		})
		add("§4.4 a "+method+" invalidates its Location", []exchange{
			{path: "/location_target", response: freshResponse},
			{method: method, response: []string{"Location", "location_target", "Content-Location", "elsewhere"}},
			{path: "/location_target", want: expect{kind: "not_cached"}},
		})
		add("§4.4 a "+method+" invalidates its Content-Location", []exchange{
			{path: "/content_location_target", response: freshResponse},
			{method: method, response: []string{"Location", "elsewhere", "Content-Location", "/content_location_target"}},
			{path: "/content_location_target", want: expect{kind: "not_cached"}},
		})
	}
	add("§4.4 a 303 to an unsafe method invalidates", []exchange{
		{response: freshResponse}, {method: "POST", status: 303, response: []string{"Location", "/x"}}, {want: expect{kind: "not_cached"}},
	})
	add("§4.4 Location on another origin is not invalidated", []exchange{
		{path: "/victim", response: freshResponse},
		{method: "PUT", path: "/put", response: []string{"Location", "http://other.example/victim"}},
		{path: "/victim", want: expect{kind: "cached"}},
	})
	addDirect("§4.4 an unsafe request answered with nothing (an implicit 200) invalidates", []exchange{
		{response: freshResponse},
		{method: "DELETE", status: -1},
		{want: expect{kind: "not_cached"}},
	})
	add("§4 different query strings are different responses", []exchange{
		{path: "/c?test=1", response: freshResponse}, {path: "/c?test=2", want: expect{kind: "not_cached"}},
		{path: "/c?test=1", want: expect{kind: "cached"}},
	})
	add("§4 POST responses are not reused for GET", []exchange{
		{method: "POST", response: freshResponse}, {want: expect{kind: "not_cached"}},
	})

	// §5.2.1 request directives and §5.4 Pragma.
	add("§5.2.1.1 request max-age=0", []exchange{{response: freshResponse}, {advance: pause, request: []string{"Cache-Control", "max-age=0"}, want: expect{kind: "lm_validated"}}})
	add("§5.2.1.1 request max-age below the Age", []exchange{
		{response: []string{"Cache-Control", "max-age=3600", "Age", "1800"}},
		{request: []string{"Cache-Control", "max-age=600"}, want: expect{kind: "not_cached"}},
	})
	add("§5.2.1.2 request max-stale", []exchange{
		{response: []string{"Cache-Control", "max-age=1"}},
		{advance: pause, request: []string{"Cache-Control", "max-stale=1000"}, want: expect{kind: "cached"}},
	})
	add("§5.2.1.3 request min-fresh", []exchange{
		{response: []string{"Cache-Control", "max-age=1500", "Age", "1000"}},
		{request: []string{"Cache-Control", "min-fresh=1000"}, response: []string{"Cache-Control", "max-age=1500", "Age", "1000"},
			want: expect{kind: "not_cached"}},
		{request: []string{"Cache-Control", "min-fresh=100"}, want: expect{kind: "cached"}},
	})
	add("§5.2.1.4 request no-cache validates with Last-Modified", []exchange{
		{response: []string{"Cache-Control", "max-age=3600", "Last-Modified", "date(-10000)"}},
		{request: []string{"Cache-Control", "no-cache"}, want: expect{kind: "lm_validated"}},
	})
	add("§5.2.1.5 request no-store", []exchange{
		{response: []string{"Cache-Control", "max-age=3600"}},
		{request: []string{"Cache-Control", "no-store"}, want: expect{kind: "not_cached", body: "body 2"}},
		{want: expect{kind: "cached", body: "body 1"}},
	})
	add("§5.2.1.7 only-if-cached without a stored response is a 504", []exchange{
		{request: []string{"Cache-Control", "only-if-cached"}, want: expect{kind: "cached", status: 504}},
	})
	add("§5.2.1.7 only-if-cached with a stale response is a 504", []exchange{
		{response: []string{"Cache-Control", "max-age=1", "ETag", `"a"`}},
		{advance: pause, request: []string{"Cache-Control", "only-if-cached"}, want: expect{kind: "cached", status: 504}},
	})
	add("§5.2.1.7 only-if-cached with no-store never reaches the origin", []exchange{
		{request: []string{"Cache-Control", "only-if-cached, no-store"}, want: expect{kind: "cached", status: 504}},
		{response: []string{"Cache-Control", "max-age=60"}},
		{request: []string{"Cache-Control", "no-store, only-if-cached"}, want: expect{kind: "cached", status: 200, body: "body 1"}},
	})
	add("§5.4 Pragma: no-cache without Cache-Control validates", []exchange{
		{response: []string{"Cache-Control", "max-age=3600", "ETag", `"p"`}},
		{request: []string{"Pragma", "no-cache"}, want: expect{kind: "etag_validated"}},
	})
	add("§5.4 Pragma is ignored beside Cache-Control", []exchange{
		{response: []string{"Cache-Control", "max-age=3600"}},
		{request: []string{"Pragma", "no-cache", "Cache-Control", "max-stale=1"}, want: expect{kind: "cached"}},
	})
	add("§5.4 Pragma extensions are ignored", []exchange{
		{response: []string{"Cache-Control", "max-age=3600"}},
		{request: []string{"Pragma", "unrecognised-extension"}, want: expect{kind: "cached"}},
	})
	add("§5.4 Pragma in a response means nothing", twice([]string{"Cache-Control", "max-age=3600", "Pragma", "no-cache"}, pause, "cached"))

	// §4.2.4 serving stale, and RFC 5861.
	for _, cc := range []string{"must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=2"} {
		add("§4.2.4 "+cc+" forbids serving stale on an error", []exchange{
			{response: []string{"Cache-Control", "max-age=2, stale-if-error=600, " + cc}},
			{advance: pause, status: 503, request: []string{"Cache-Control", "max-stale=600"}, want: expect{kind: "not_cached", status: 503}},
		})
	}
	add("RFC 5861 §3 stale-while-revalidate serves stale, then the refreshed response", []exchange{
		{response: []string{"Cache-Control", "max-age=0, stale-while-revalidate=3600", "ETag", `"abc"`}},
		{advance: time.Second, response: []string{"Cache-Control", "max-age=3600", "ETag", `"def"`},
			want: expect{status: 200, body: "body 1", header: []string{"Cache-Control", "max-age=0, stale-while-revalidate=3600", "ETag", `"abc"`}}},
		{want: expect{kind: "cached", header: []string{"Cache-Control", "max-age=3600", "ETag", `"def"`}, body: "body 2"}},
	})
	add("RFC 5861 §4 stale-if-error in the response", []exchange{
		{response: []string{"Cache-Control", "max-age=0, stale-if-error=3600"}},
		{advance: time.Second, status: 500, want: expect{kind: "not_cached", status: 200, body: "body 1"}},
	})
	add("RFC 5861 §4 stale-if-error in the response, elapsed", []exchange{
		{response: []string{"Cache-Control", "max-age=0, stale-if-error=1"}},
		{advance: pause, status: 500, want: expect{kind: "not_cached", status: 500}},
	})
	add("RFC 5861 §4 stale-if-error in the request", []exchange{
		{response: []string{"Cache-Control", "max-age=0", "ETag", `"x"`}},
		{advance: time.Second, status: 500, request: []string{"Cache-Control", "stale-if-error=3600"}, want: expect{kind: "not_cached", status: 200, body: "body 1"}},
	})
	add("RFC 5861 §4 stale-if-error in the request, elapsed", []exchange{
		{response: []string{"Cache-Control", "max-age=0", "ETag", `"x"`}},
		{advance: pause, status: 500, request: []string{"Cache-Control", "stale-if-error=1"}, want: expect{kind: "not_cached", status: 500}},
	})

	// §4.3.5 / RFC 9110 §9.3.2 HEAD, and RFC 9110 §14 ranges from a stored 200.
	add("§4 HEAD is answered from a stored GET", []exchange{
		{response: []string{"Cache-Control", "max-age=3600", "X-A", "1"}},
		{method: "HEAD", want: expect{kind: "cached", status: 200, header: []string{"X-A", "1", "Content-Length", "6"}}},
	})
	full := []string{"Cache-Control", "max-age=3600"}
	for _, c := range []struct{ rng, want string }{{"bytes=0-1", "01"}, {"bytes=1-", "123456789A"}, {"bytes=-1", "A"}} {
		add("§3.4 a stored 200 answers Range "+c.rng, []exchange{
			{response: full, body: "0123456789A"},
			{request: []string{"Range", c.rng}, want: expect{kind: "cached", status: 206, body: c.want}},
		})
	}

	// RFC 9211 Cache-Status: the syntax is checked on every response above; here the values.
	add("RFC 9211 §2 Cache-Status values", []exchange{
		{response: []string{"Cache-Control", "max-age=10", "ETag", `"s"`},
			want: expect{header: []string{"Cache-Status", "sluice; fwd=uri-miss; fwd-status=200; stored"}}},
		{advance: pause, want: expect{header: []string{"Cache-Status", "sluice; hit; ttl=7"}}},
		{advance: 10 * time.Second, response: []string{"Cache-Control", "max-age=10", "ETag", `"s"`},
			want: expect{header: []string{"Cache-Status", "sluice; fwd=stale; fwd-status=304; ttl=10"}}},
		{request: []string{"Cache-Control", "no-cache"}, response: []string{"Cache-Control", "max-age=10", "ETag", `"s"`},
			want: expect{header: []string{"Cache-Status", "sluice; fwd=request; fwd-status=304; ttl=10"}}},
		{method: "POST", want: expect{header: []string{"Cache-Status", "sluice; fwd=method; fwd-status=200"}}},
	})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			newConformanceRig(t, c.direct, c.opts).run(c.steps)
		})
	}
}

// checkCacheStatus checks one Cache-Status field line against RFC 9211 §2: a structured
// field list (RFC 8941) of a cache name (token or string) with parameters, whose fwd values
// are the registered ones.
func checkCacheStatus(line string) error {
	for member := range strings.SplitSeq(line, ",") {
		member = strings.TrimSpace(member)
		parts := strings.Split(member, ";")
		name := strings.TrimSpace(parts[0])
		if !sfToken(name) && !(len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"') {
			return fmt.Errorf("member %q: cache name is neither a token nor a string", member)
		}
		for _, p := range parts[1:] {
			p = strings.TrimLeft(p, " ")
			key, value, hasValue := strings.Cut(p, "=")
			if key == "" || !('a' <= key[0] && key[0] <= 'z' || key[0] == '*') ||
				strings.TrimLeft(key, "abcdefghijklmnopqrstuvwxyz0123456789_-.*") != "" {
				return fmt.Errorf("member %q: parameter key %q", member, key)
			}
			if !hasValue {
				continue // a boolean true
			}
			switch key {
			case "fwd":
				switch value {
				case "bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial":
				default:
					return fmt.Errorf("member %q: fwd=%s is not an RFC 9211 value", member, value)
				}
			case "fwd-status", "ttl":
				if _, err := strconv.Atoi(value); err != nil {
					return fmt.Errorf("member %q: %s=%s is not an integer", member, key, value)
				}
			default:
				if !sfToken(value) && !(len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"') {
					return fmt.Errorf("member %q: %s=%s is neither a token nor a string", member, key, value)
				}
			}
		}
	}
	return nil
}

// RFC 9110 §4.2.3: "example.com:80" and "example.com" are one origin, for the cache key and
// for §4.4's same-origin rule.
func TestConformance_DefaultPort_RFC9110_4_2_3(t *testing.T) {
	c, err := New(Options{})
	require.NoError(t, err)
	defer c.Close()
	hits := 0
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.Method == http.MethodPost {
			w.Header().Set("Location", "http://EXAMPLE.com:80/target")
			w.WriteHeader(http.StatusCreated)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "x")
	}))
	serve := func(method, target string) {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, target, nil))
	}
	serve(http.MethodGet, "http://example.com/target")
	serve(http.MethodGet, "http://example.com:80/target")
	assert.Equal(t, 1, hits, "the default port names the same resource")
	serve(http.MethodPost, "http://example.com/form")
	serve(http.MethodGet, "http://example.com/target")
	assert.Equal(t, 3, hits, "a Location with the default port spelled out is the same origin, and is invalidated")
}

// RFC 9211 §2: the cache's name is an sf-token or the field would not parse.
func TestConformance_NameIsToken_RFC9211_2(t *testing.T) {
	for _, bad := range []string{"1cache", "a b", "a,b", "caché", "-x"} {
		_, err := New(Options{Name: bad})
		assert.ErrorContains(t, err, "Name", "%q is not a token", bad)
	}
	for _, good := range []string{"edge", "Edge-1", "*", "cdn.example.com", "x:y/z"} {
		_, err := New(Options{Name: good})
		assert.NoError(t, err, "%q is a token", good)
	}
}
