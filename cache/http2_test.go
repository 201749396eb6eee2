package cache

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Over TLS and HTTP/2 at both ends, hits and misses work and a streamed, uncacheable
// response reaches the client chunk by chunk (Flush goes through the cache).
func TestHTTP2_StreamingAndHits(t *testing.T) {
	step := make(chan struct{})
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Cache-Control", "no-store")
			for _, line := range []string{"one\n", "two\n"} {
				_, _ = io.WriteString(w, line)
				require.NoError(t, http.NewResponseController(w).Flush())
				<-step
			}
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "cached over h2")
	}))
	origin.EnableHTTP2 = true
	origin.StartTLS()
	defer origin.Close()
	u, err := url.Parse(origin.URL)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = origin.Client().Transport
	rp.FlushInterval = -1

	c, err := New(Options{})
	require.NoError(t, err)
	defer c.Close()
	front := httptest.NewUnstartedServer(c.Handler(rp))
	front.EnableHTTP2 = true
	front.StartTLS()
	defer front.Close()
	client := front.Client()

	for i, want := range []string{"fwd=uri-miss", "hit"} {
		resp, err := client.Get(front.URL + "/doc")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, 2, resp.ProtoMajor, "HTTP/2 to the cache")
		assert.Equal(t, "cached over h2", string(body))
		assert.Contains(t, resp.Header.Get("Cache-Status"), want, "request %d", i)
	}

	resp, err := client.Get(front.URL + "/stream")
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "one\n", line, "the first chunk arrives before the origin finishes")
	step <- struct{}{}
	line, err = br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "two\n", line)
	step <- struct{}{}
}
