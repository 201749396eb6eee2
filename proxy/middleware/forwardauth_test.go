package middleware

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// authService is a real auth server whose answer depends on the bearer token.
func authService(t *testing.T, seen chan<- http.Header) *httptest.Server {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h := r.Header.Clone()
		h.Set("Sub-Method", r.Method)
		h.Set("Sub-Body", string(b))
		select {
		case seen <- h:
		default:
		}
		switch r.Header.Get("Authorization") {
		case "Bearer good":
			w.Header().Set("X-User", "alice")
			w.Header().Add("X-Groups", "admin")
			w.Header().Add("X-Groups", "dev")
			w.Header().Set("X-Internal", "not passed")
			io.WriteString(w, "ok")
		case "Bearer anonymous":
			w.WriteHeader(http.StatusNoContent)
		case "Bearer login":
			http.Redirect(w, r, "https://login.test/?next="+r.Header.Get("X-Forwarded-Uri"), http.StatusFound)
		case "Bearer slow":
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case "Bearer huge":
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, strings.Repeat("x", 1000))
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
			w.Header().Set("Connection", "X-Hop")
			w.Header().Set("X-Hop", "must not be relayed")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "no entry")
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv
}

func TestForwardAuth(t *testing.T) {
	seen := make(chan http.Header, 1)
	auth := authService(t, seen)
	var reached atomic.Int64
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, strings.Join([]string{r.Header.Get("X-User"), strings.Join(r.Header.Values("X-Groups"), ","), r.Header.Get("X-Internal"), string(b)}, "|"))
	})
	trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8")
	require.NoError(t, err)
	fa, err := NewForwardAuth(ForwardAuthOptions{
		URL:             auth.URL + "/check",
		ResponseHeaders: []string{"x-user", "X-Groups"},
		Timeout:         200 * time.Millisecond,
		MaxBodyBytes:    100,
		TrustedProxies:  trusted,
	})
	require.NoError(t, err)
	front := httptest.NewServer(fa.Handler(backend))
	defer front.Close()

	do := func(method, target, token string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, front.URL+target, strings.NewReader("payload"))
		require.NoError(t, err)
		req.Host = "app.test"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := front.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	t.Run("2xx passes chosen headers", func(t *testing.T) {
		resp, body := do("POST", "/orders?id=7", "good", "X-User", "root", "X-Internal", "client's")
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "alice|admin,dev|client's|payload", body, "auth headers replace the client's; unchosen ones are not passed; body reaches upstream")
		sub := <-seen
		assert.Equal(t, "GET", sub.Get("Sub-Method"), "the sub-request is a GET")
		assert.Empty(t, sub.Get("Sub-Body"), "the body is never sent to the auth service")
		assert.Equal(t, "POST", sub.Get("X-Forwarded-Method"))
		assert.Equal(t, "/orders?id=7", sub.Get("X-Forwarded-Uri"))
		assert.Equal(t, "app.test", sub.Get("X-Forwarded-Host"))
		assert.Equal(t, "http", sub.Get("X-Forwarded-Proto"))
		assert.Equal(t, "127.0.0.1", sub.Get("X-Forwarded-For"))
		assert.Equal(t, "Bearer good", sub.Get("Authorization"))
		assert.Empty(t, sub.Get("X-User"), "only chosen client headers reach the auth service")
	})
	t.Run("forged identity removed", func(t *testing.T) {
		resp, body := do("GET", "/", "anonymous", "X-User", "root")
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "|||payload", body, "a client's X-User never reaches upstream")
		<-seen
	})
	t.Run("untrusted forwarding headers replaced", func(t *testing.T) {
		do("GET", "/", "anonymous", "X-Forwarded-For", "203.0.113.9", "X-Forwarded-Host", "evil.test")
		sub := <-seen
		assert.Equal(t, "127.0.0.1", sub.Get("X-Forwarded-For"), "the loopback peer is not trusted")
		assert.Equal(t, "app.test", sub.Get("X-Forwarded-Host"))
	})

	before := reached.Load()
	t.Run("refusal relayed", func(t *testing.T) {
		resp, body := do("GET", "/", "bad")
		assert.Equal(t, 401, resp.StatusCode)
		assert.Equal(t, "no entry", body)
		assert.Equal(t, `Bearer realm="test"`, resp.Header.Get("WWW-Authenticate"))
		assert.Empty(t, resp.Header.Get("X-Hop"), "fields named in Connection are hop-by-hop")
		<-seen
	})
	t.Run("redirect relayed, not followed", func(t *testing.T) {
		front.Client().CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, _ := do("GET", "/a", "login")
		assert.Equal(t, 302, resp.StatusCode)
		assert.Equal(t, "https://login.test/?next=/a", resp.Header.Get("Location"))
		<-seen
	})
	t.Run("refusal body bounded", func(t *testing.T) {
		resp, body := do("GET", "/", "huge")
		assert.Equal(t, 502, resp.StatusCode)
		assert.Contains(t, body, "MaxBodyBytes")
		<-seen
	})
	t.Run("timeout is 504", func(t *testing.T) {
		resp, body := do("GET", "/", "slow")
		assert.Equal(t, 504, resp.StatusCode)
		assert.Contains(t, body, "did not answer in time")
		<-seen
	})
	assert.Equal(t, before, reached.Load(), "a refused request never reaches the backend")

	t.Run("unreachable is 503", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		fa, err := NewForwardAuth(ForwardAuthOptions{URL: dead.URL})
		require.NoError(t, err)
		w := httptest.NewRecorder()
		fa.Handler(backend).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, 503, w.Code)
		assert.Contains(t, w.Body.String(), "unavailable")
		assert.Equal(t, before, reached.Load())
	})
}

func TestForwardAuthTrustedPeer(t *testing.T) {
	seen := make(chan http.Header, 1)
	auth := authService(t, seen)
	trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8")
	require.NoError(t, err)
	fa, err := NewForwardAuth(ForwardAuthOptions{URL: auth.URL, TrustedProxies: trusted})
	require.NoError(t, err)
	r := httptest.NewRequest("GET", "/x", nil)
	r.RemoteAddr = "10.1.2.3:5555"
	r.Header.Set("Authorization", "Bearer anonymous")
	r.Header.Set("X-Forwarded-For", "198.51.100.4")
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("X-Forwarded-Host", "public.test")
	w := httptest.NewRecorder()
	fa.Handler(echo).ServeHTTP(w, r)
	assert.Equal(t, 200, w.Code)
	sub := <-seen
	assert.Equal(t, "198.51.100.4", sub.Get("X-Forwarded-For"), "a trusted proxy's client address is believed")
	assert.Equal(t, "https", sub.Get("X-Forwarded-Proto"))
	assert.Equal(t, "public.test", sub.Get("X-Forwarded-Host"))
}

func TestForwardAuthValidation(t *testing.T) {
	for _, c := range []struct {
		opts ForwardAuthOptions
		want string
	}{
		{ForwardAuthOptions{}, `ForwardAuth URL "" must be an absolute http or https URL`},
		{ForwardAuthOptions{URL: "ftp://a"}, `ForwardAuth URL "ftp://a"`},
		{ForwardAuthOptions{URL: "http://a", Timeout: -1}, `ForwardAuth Timeout must be ≥ 0`},
		{ForwardAuthOptions{URL: "http://a", MaxBodyBytes: -1}, `ForwardAuth MaxBodyBytes must be ≥ 0`},
		{ForwardAuthOptions{URL: "http://a", RequestHeaders: []string{"ok", "bad name"}}, `ForwardAuth RequestHeaders[1] "bad name"`},
		{ForwardAuthOptions{URL: "http://a", ResponseHeaders: []string{""}}, `ForwardAuth ResponseHeaders[0] ""`},
	} {
		_, err := NewForwardAuth(c.opts)
		assert.ErrorContains(t, err, c.want)
	}
}
