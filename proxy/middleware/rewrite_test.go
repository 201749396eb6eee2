package middleware

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRewrite(t *testing.T) {
	for _, c := range []struct {
		pattern, repl, path, want string
	}{
		{`^/api/v1/(.*)$`, "/v1/$1", "/api/v1/items/7", "/v1/items/7"},
		{`^/users/(?P<id>[0-9]+)$`, "/u/${id}/", "/users/42", "/u/42/"},
		{`^/old/`, "/new/", "/old/a/b", "/new/a/b"},
		{`^/old/`, "/new/", "/other/old/", "/other/old/"},
		{`^/(\w+)/(\w+)$`, "/$2/$1", "/a/b", "/b/a"},
		{`^/(\w+)/(\w+)$`, "/${1}x/$$", "/a/b", "/ax/$"},
		{`^/static/(.*)$`, "/files/$1", "/static/../../etc/passwd", "/static/../../etc/passwd"},
		{`^/static/(.*)$`, "/files/$1", "/static/a/../../static/b", "/files/b"},
		{`^/static/(.*)$`, "/files/$1", "/static//a/./b", "/files/a/b"},
		{`^/api(/.*)?$`, "$1", "/api", "/"},
		{`^/api(/.*)?$`, "$1", "/api//x/./y/", "/x/y/"},
		{`^/api(/.*)?$`, "/v2$1", "/api/%2e%2e/admin", "/api/../admin"},
	} {
		rw, err := NewRewrite(RewriteOptions{Pattern: c.pattern, Replacement: c.repl})
		require.NoError(t, err, c.pattern)
		var got string
		h := rw.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.URL.Path }))
		r := httptest.NewRequest("GET", c.path, nil)
		before := r.URL.Path
		h.ServeHTTP(httptest.NewRecorder(), r)
		assert.Equal(t, c.want, got, "%s -> %s on %s", c.pattern, c.repl, c.path)
		assert.Equal(t, before, r.URL.Path, "the caller's request is not modified")
	}
}

func TestRewriteValidation(t *testing.T) {
	for _, c := range []struct{ pattern, repl, want string }{
		{"", "/", "Rewrite Pattern is required"},
		{"(", "/", "Rewrite Pattern: error parsing regexp"},
		{"^/(a)$", "/$2", `Rewrite Replacement "/$2": $2, but Pattern has 1 groups`},
		{"^/(a)$", "/$1x", `Pattern has no group named "1x"`},
		{"^/(?P<id>a)$", "/${name}", `Pattern has no group named "name"`},
		{"^/(a)$", "/${1", `unclosed "${"`},
		{"^/(a)$", "/${}", `"${}" is not a group name or number`},
		{"^/(a)$", "/$-", `"$" must be followed by a group`},
		{"^/(a)$", "/$", `"$" must be followed by a group`},
	} {
		_, err := NewRewrite(RewriteOptions{Pattern: c.pattern, Replacement: c.repl})
		assert.ErrorContains(t, err, c.want, "%q %q", c.pattern, c.repl)
	}
}

func TestRedirect(t *testing.T) {
	for _, c := range []struct {
		opts   RedirectOptions
		method string
		target string
		code   int
		loc    string
	}{
		{RedirectOptions{Host: "new.test", Permanent: true}, "GET", "http://old.test/a?b=1", 301, "http://new.test/a?b=1"},
		{RedirectOptions{Host: "new.test", Permanent: true}, "HEAD", "http://old.test/a", 301, "http://new.test/a"},
		{RedirectOptions{Host: "new.test", Permanent: true}, "POST", "http://old.test/a", 308, "http://new.test/a"},
		{RedirectOptions{Host: "new.test"}, "GET", "http://old.test/a", 302, "http://new.test/a"},
		{RedirectOptions{Host: "new.test"}, "PUT", "http://old.test/a", 307, "http://new.test/a"},
		{RedirectOptions{Scheme: "https", Permanent: true}, "DELETE", "http://a.test:8080/x", 308, "https://a.test/x"},
		{RedirectOptions{Scheme: "https"}, "GET", "http://[2001:db8::1]:80/x", 302, "https://[2001:db8::1]/x"},
		{RedirectOptions{Scheme: "https", Host: "a.test:8443"}, "GET", "http://a.test/x", 302, "https://a.test:8443/x"},
		{RedirectOptions{Path: "/login"}, "GET", "http://a.test:8080/x?next=%2Fy", 302, "http://a.test:8080/login?next=%2Fy"},
		{RedirectOptions{Path: "/a b"}, "GET", "http://a.test/x", 302, "http://a.test/a%20b"},
		{RedirectOptions{Status: 303}, "POST", "https://a.test/form", 303, "https://a.test/form"},
		{RedirectOptions{Status: 301}, "POST", "http://a.test/", 301, "http://a.test/"},
	} {
		rd, err := NewRedirect(c.opts)
		require.NoError(t, err)
		w := httptest.NewRecorder()
		rd.ServeHTTP(w, httptest.NewRequest(c.method, c.target, nil))
		assert.Equal(t, c.code, w.Code, "%+v %s %s", c.opts, c.method, c.target)
		assert.Equal(t, c.loc, w.Header().Get("Location"), "%+v %s %s", c.opts, c.method, c.target)
	}
	for _, c := range []struct {
		opts RedirectOptions
		want string
	}{
		{RedirectOptions{Scheme: "ftp"}, `Redirect Scheme must be "http" or "https", got "ftp"`},
		{RedirectOptions{Host: "a.test/x"}, `Redirect Host "a.test/x"`},
		{RedirectOptions{Host: "u@a.test"}, `Redirect Host "u@a.test"`},
		{RedirectOptions{Path: "x"}, `Redirect Path "x" must start with "/"`},
		{RedirectOptions{Path: "/x?y"}, `Redirect Path "/x?y"`},
		{RedirectOptions{Status: 200}, `Redirect Status must be 301, 302, 303, 307 or 308, got 200`},
	} {
		_, err := NewRedirect(c.opts)
		assert.ErrorContains(t, err, c.want)
	}
}

func TestCORS(t *testing.T) {
	c, err := NewCORS(CORSOptions{
		AllowOrigins:     []string{"https://app.test"},
		AllowMethods:     []string{"GET", "PUT"},
		AllowHeaders:     []string{"Content-Type", "X-Token"},
		ExposeHeaders:    []string{"X-Trace"},
		AllowCredentials: true,
		MaxAge:           10 * time.Minute,
	})
	require.NoError(t, err)
	h := c.Handler(echo)
	req := func(method, origin, wantMethod, wantHeaders string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if wantMethod != "" {
			r.Header.Set("Access-Control-Request-Method", wantMethod)
		}
		if wantHeaders != "" {
			r.Header.Set("Access-Control-Request-Headers", wantHeaders)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := req("OPTIONS", "https://app.test", "PUT", "content-type, x-token")
	assert.Equal(t, 204, w.Code, "allowed preflight")
	assert.Equal(t, "https://app.test", w.Header().Get("Access-Control-Allow-Origin"))
	assert.Equal(t, "GET, PUT", w.Header().Get("Access-Control-Allow-Methods"))
	assert.Equal(t, "Content-Type, X-Token", w.Header().Get("Access-Control-Allow-Headers"))
	assert.Equal(t, "600", w.Header().Get("Access-Control-Max-Age"))
	assert.Equal(t, "true", w.Header().Get("Access-Control-Allow-Credentials"))
	assert.Equal(t, "Origin", w.Header().Get("Vary"))
	assert.Empty(t, w.Body.String(), "a preflight never reaches the backend")

	for _, c := range []struct{ origin, method, headers, reason string }{
		{"https://evil.test", "PUT", "", "origin not allowed"},
		{"https://app.test", "DELETE", "", "method not allowed: DELETE"},
		{"https://app.test", "GET", "X-Token, X-Other", "header not allowed: X-Other"},
	} {
		w := req("OPTIONS", c.origin, c.method, c.headers)
		assert.Equal(t, 403, w.Code, c.reason)
		assert.Contains(t, w.Body.String(), c.reason)
		assert.Empty(t, w.Header().Get("Access-Control-Allow-Origin"))
	}

	w = req("GET", "https://APP.test", "", "")
	assert.Equal(t, 200, w.Code)
	assert.Equal(t, "https://APP.test", w.Header().Get("Access-Control-Allow-Origin"), "origins compare case-insensitively")
	assert.Equal(t, "X-Trace", w.Header().Get("Access-Control-Expose-Headers"))
	w = req("GET", "https://evil.test", "", "")
	assert.Equal(t, 200, w.Code, "a disallowed origin is served; the browser withholds the answer")
	assert.Empty(t, w.Header().Get("Access-Control-Allow-Origin"))
	w = req("OPTIONS", "", "", "")
	assert.Equal(t, 200, w.Code, "a plain OPTIONS passes")
	assert.Empty(t, w.Header().Get("Vary"))

	for _, c := range []struct {
		opts CORSOptions
		want string
	}{
		{CORSOptions{}, "CORS AllowOrigins is required"},
		{CORSOptions{AllowOrigins: []string{"app.test"}}, `AllowOrigins[0] "app.test"`},
		{CORSOptions{AllowOrigins: []string{"https://a.test/path"}}, `AllowOrigins[0] "https://a.test/path"`},
		{CORSOptions{AllowOrigins: []string{"*"}, AllowCredentials: true}, "AllowCredentials cannot be combined"},
		{CORSOptions{AllowOrigins: []string{"*"}, AllowMethods: []string{"G T"}}, `AllowMethods[0] "G T"`},
		{CORSOptions{AllowOrigins: []string{"*"}, ExposeHeaders: []string{"ok", "no:"}}, `ExposeHeaders[1] "no:"`},
		{CORSOptions{AllowOrigins: []string{"*"}, MaxAge: -1}, "MaxAge must be ≥ 0"},
	} {
		_, err := NewCORS(c.opts)
		assert.ErrorContains(t, err, c.want)
	}
	any, err := NewCORS(CORSOptions{AllowOrigins: []string{"*"}})
	require.NoError(t, err)
	w = httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Origin", "https://whoever.test")
	any.Handler(echo).ServeHTTP(w, r)
	assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
}
