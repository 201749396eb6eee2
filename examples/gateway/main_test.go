package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/logbuf"
)

func TestGateway(t *testing.T) {
	logs := &logbuf.Buffer{}
	g, err := newGateway(t.Context(), slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	defer g.close()
	srv := httptest.NewServer(g.router)
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
	assert.True(t, strings.HasPrefix(body, "shop-v2-0 "), "pinned canary, got %q", body)
	_, body = get("api.localhost", "/v1/orders")
	assert.Regexp(t, `^api-[01] api\.localhost /v1/orders\n$`, body)
	code, _ := get("api.localhost", "/v1/../admin")
	assert.Equal(t, http.StatusNotFound, code, "a traversal must not escape /v1")

	pods := map[string]int{}
	for range 400 {
		_, body = get("shop.localhost", "/")
		pod, _, _ := strings.Cut(body, " ")
		pods[pod]++
	}
	assert.Equal(t, 20, pods["shop-v2-0"], "5%% of 400 requests go to the canary")
	assert.Equal(t, 380, pods["shop-v1-0"]+pods["shop-v1-1"], "the rest go to the stable pool")
	assert.Positive(t, pods["shop-v1-0"], "the stable pool's balancer uses both pods: %v", pods)
	assert.Positive(t, pods["shop-v1-1"], "the stable pool's balancer uses both pods: %v", pods)
	assert.Contains(t, logs.String(), "route=shop", "access logs carry the route")
	assert.Contains(t, logs.String(), "route=api")
}
