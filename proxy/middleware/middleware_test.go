package middleware

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	w.Header().Set("Server", "backend")
	io.WriteString(w, r.Host+" "+r.URL.Path+" "+r.Header.Get("X-A")+" "+string(b))
})

func TestHeadersAndPaths(t *testing.T) {
	h := Headers{
		Request:  HeaderRules{Set: map[string]string{"X-A": "set"}, Remove: []string{"Cookie"}},
		Response: HeaderRules{Remove: []string{"Server"}, Add: map[string]string{"X-Via": "sluice"}},
	}.Handler(StripPrefix{Prefix: "/api", Replace: "/v2"}.Handler(SetHost{Host: "internal.test"}.Handler(echo)))
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/api/items", nil)
	r.Header.Set("Cookie", "a=b")
	h.ServeHTTP(w, r)
	assert.Equal(t, "internal.test /v2/items set ", w.Body.String())
	assert.Empty(t, w.Header().Get("Server"), "response header removed")
	assert.Equal(t, "sluice", w.Header().Get("X-Via"))
	assert.Equal(t, "a=b", r.Header.Get("Cookie"), "the caller's request is not mutated")

	for _, c := range []struct {
		strip      StripPrefix
		path, want string
	}{
		{StripPrefix{Prefix: "/api"}, "/apiary", "/apiary"}, // prefix by element only
		{StripPrefix{Prefix: "/api"}, "/api", "/"},
		{StripPrefix{Prefix: "/api/"}, "/api/x", "/x"},
		{StripPrefix{Replace: "/v1"}, "/x", "/v1/x"}, // an empty Prefix adds Replace
		{StripPrefix{}, "/a%2Fb", "/a/b"},            // the zero value passes unchanged
	} {
		var got *http.Request
		c.strip.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r })).
			ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", c.path, nil))
		require.NotNil(t, got, "%+v passes %s on", c.strip, c.path)
		assert.Equal(t, c.want, got.URL.Path, "%+v on %s", c.strip, c.path)
		if c.strip == (StripPrefix{}) {
			assert.Equal(t, "/a%2Fb", got.URL.EscapedPath(), "the zero StripPrefix keeps the escaping")
		}
	}
}

// The zero SetHost clears Host, so that a Proxy sends the backend's address.
func TestSetHostZero(t *testing.T) {
	var host = "unset"
	SetHost{}.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { host = r.Host })).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://a.test/", nil))
	assert.Empty(t, host, "the zero SetHost clears Host")
}

func TestRedirectHTTPS(t *testing.T) {
	for _, c := range []struct {
		rh             RedirectHTTPS
		method, target string
		code           int
		loc            string
	}{
		{RedirectHTTPS{}, "GET", "http://a.test:80/x?y=1", 301, "https://a.test/x?y=1"},
		{RedirectHTTPS{}, "HEAD", "http://a.test:80/x?y=1", 301, "https://a.test/x?y=1"},
		{RedirectHTTPS{}, "POST", "http://a.test:80/x?y=1", 308, "https://a.test/x?y=1"},
		{RedirectHTTPS{}, "PUT", "http://a.test/x?y=1", 308, "https://a.test/x?y=1"},
		{RedirectHTTPS{}, "GET", "http://[2001:db8::1]:80/x", 301, "https://[2001:db8::1]/x"},
		{RedirectHTTPS{Port: 443}, "GET", "http://a.test:8080/x", 301, "https://a.test/x"},
		{RedirectHTTPS{Port: 8443}, "GET", "http://a.test:8080/x", 301, "https://a.test:8443/x"},
		{RedirectHTTPS{Port: 8443}, "GET", "http://[2001:db8::1]/x", 301, "https://[2001:db8::1]:8443/x"},
	} {
		w := httptest.NewRecorder()
		c.rh.Handler(echo).ServeHTTP(w, httptest.NewRequest(c.method, c.target, nil))
		assert.Equal(t, c.code, w.Code, "%s %s", c.method, c.target)
		assert.Equal(t, c.loc, w.Header().Get("Location"), "%+v %s", c.rh, c.target)
	}

	// TLS requests go to next.
	srv := httptest.NewTLSServer(RedirectHTTPS{}.Handler(echo))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/x")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a TLS request is passed on, not redirected")
}

// Every middleware has one shape: its Handler method value is a
// func(http.Handler) http.Handler, so any of them drops into a chain.
func TestOneShape(t *testing.T) {
	ipf, err := NewIPFilter(IPFilterOptions{})
	require.NoError(t, err)
	rw, err := NewRewrite(RewriteOptions{Pattern: "^/old/", Replacement: "/new/"})
	require.NoError(t, err)
	chain := []func(http.Handler) http.Handler{
		RedirectHTTPS{}.Handler,
		Limits{MaxBodyBytes: 1 << 20}.Handler,
		ipf.Handler,
		Headers{Request: HeaderRules{Set: map[string]string{"X-A": "a"}}}.Handler,
		StripPrefix{Prefix: "/api"}.Handler,
		rw.Handler,
		SetHost{Host: "backend.test"}.Handler,
	}
	var h http.Handler = echo
	for i := len(chain) - 1; i >= 0; i-- {
		h = chain[i](h)
	}
	r := httptest.NewRequest("GET", "https://a.test/api/old/x", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	assert.Equal(t, "backend.test /new/x a ", w.Body.String(), "every link of the chain ran, in order")
}

func TestIPFilter(t *testing.T) {
	trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8")
	require.NoError(t, err)
	f, err := NewIPFilter(IPFilterOptions{Allow: []string{"192.0.2.0/24"}, Deny: []string{"192.0.2.66"}, TrustedProxies: trusted})
	require.NoError(t, err)
	for _, c := range []struct {
		peer, xff string
		code      int
	}{
		{"192.0.2.1:1", "", 200},
		{"192.0.2.66:1", "", 403},
		{"198.51.100.1:1", "", 403},
		{"10.1.1.1:1", "192.0.2.7", 200},
		{"10.1.1.1:1", "192.0.2.66", 403},
		{"198.51.100.1:1", "192.0.2.7", 403}, // untrusted peer's XFF ignored
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		w := httptest.NewRecorder()
		f.Handler(echo).ServeHTTP(w, r)
		assert.Equal(t, c.code, w.Code, "peer %s xff %q", c.peer, c.xff)
	}
	_, err = NewIPFilter(IPFilterOptions{Deny: []string{"nope"}})
	assert.ErrorContains(t, err, `Deny[0] "nope"`)
	assert.False(t, (&IPFilter{allow: []netip.Prefix{netip.MustParsePrefix("::/0")}}).Allowed(netip.Addr{}))
}

func TestLimits(t *testing.T) {
	h := Limits{MaxHeaderBytes: 100, MaxBodyBytes: 10}.Handler(echo)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Big", strings.Repeat("a", 200))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	assert.Equal(t, 431, w.Code)

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("a", 20))))
	assert.Equal(t, 413, w.Code, "declared length over the limit")

	r = httptest.NewRequest("POST", "/", io.NopCloser(strings.NewReader(strings.Repeat("a", 20))))
	r.ContentLength = -1
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	assert.Equal(t, 413, w.Code, "streamed body over the limit fails the read")
}

func TestBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	users, err := ParseHtpasswd("# users\nalice:" + string(hash) + "\n")
	require.NoError(t, err)
	now := time.Unix(0, 0)
	a, err := NewBasicAuth(users, BasicAuthOptions{Now: func() time.Time { return now }})
	require.NoError(t, err)
	h := a.Handler(echo)
	for _, c := range []struct {
		user, pass string
		code       int
	}{{"alice", "s3cret", 200}, {"alice", "wrong", 401}, {"bob", "s3cret", 401}} {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(c.user, c.pass)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		assert.Equal(t, c.code, w.Code, c.user+":"+c.pass)
		if c.code == 401 {
			assert.Contains(t, w.Header().Get("WWW-Authenticate"), `Basic realm="restricted"`)
		}
	}
	// A cached pair skips bcrypt: swap the hash out and it still passes
	// until the TTL ends.
	a.users["alice"] = []byte("$2a$04$invalidinvalidinvalidinvalidinvalidinvalidinvalidinv")
	assert.True(t, a.Check("alice", "s3cret"), "cached")
	now = now.Add(2 * time.Minute)
	assert.False(t, a.Check("alice", "s3cret"), "cache expired, bcrypt runs again")

	_, err = ParseHtpasswd("bob:{SHA}abc")
	assert.ErrorContains(t, err, `line 1 (user "bob"): not a bcrypt hash`)
}

func FuzzParseHtpasswd(f *testing.F) {
	f.Add("alice:$2y$05$abcdefghijklmnopqrstuuJ7H9V1R8Hn3lYc0bQ8x0wqfY4mSxk7e\n")
	f.Add("# c\n\nbob:{SHA}x\n:nouser\nnocolon")
	f.Fuzz(func(t *testing.T, s string) {
		users, err := ParseHtpasswd(s)
		if err != nil {
			return
		}
		for u, h := range users {
			if u == "" {
				t.Fatalf("empty user accepted from %q", s)
			}
			if _, err := bcrypt.Cost(h); err != nil {
				t.Fatalf("non-bcrypt hash accepted for %q", u)
			}
		}
	})
}
