package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGateway(t *testing.T) {
	router, stop, err := newGateway()
	require.NoError(t, err)
	defer stop()
	srv := httptest.NewServer(router)
	defer srv.Close()
	get := func(host, path string, hdr ...string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Host = host
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, body := get("shop.localhost", "/", "X-Canary", "always")
	assert.True(t, strings.HasPrefix(body, "shop-v2 "), "pinned canary, got %q", body)
	_, body = get("api.localhost", "/v1/orders")
	assert.Equal(t, "api api.localhost /v1/orders\n", body)
	code, _ := get("api.localhost", "/v1/../admin")
	assert.Equal(t, http.StatusNotFound, code, "a traversal must not escape /v1")
	v2 := 0
	for range 400 {
		_, body = get("shop.localhost", "/")
		if strings.HasPrefix(body, "shop-v2 ") {
			v2++
		}
	}
	assert.InDelta(t, 20, v2, 18, "about 5%% of 400 requests go to the canary")
}
