package cache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"

	"github.com/sluiceproxy/sluice/cache"
)

func Example() {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprintln(w, "hello from the origin")
	}))
	defer origin.Close()
	target, _ := url.Parse(origin.URL)

	c, err := cache.New(cache.Options{MaxBytes: 64 << 20})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	front := httptest.NewServer(c.Handler(httputil.NewSingleHostReverseProxy(target)))
	defer front.Close()

	for range 2 {
		resp, err := http.Get(front.URL + "/greeting")
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s%s\n", body, resp.Header.Get("Cache-Status"))
	}
	// Output:
	// hello from the origin
	// sluice; fwd=uri-miss; fwd-status=200; stored
	// hello from the origin
	// sluice; hit; ttl=60
}
