package cache_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

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

// Purging by tag: the origin tags its responses with Cache-Tag, and a purge removes every
// stored response with the tag. The context bounds the Store's work, which matters for a
// store across a network.
func ExampleCache_PurgeTag() {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Cache-Tag", "products")
		fmt.Fprintln(w, "product", r.URL.Path)
	}))
	defer origin.Close()
	target, _ := url.Parse(origin.URL)

	c, err := cache.New(cache.Options{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	front := httptest.NewServer(c.Handler(httputil.NewSingleHostReverseProxy(target)))
	defer front.Close()

	status := func(path string) string {
		resp, err := http.Get(front.URL + path)
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// "sluice; hit; ttl=600" or "sluice; fwd=uri-miss; ...": keep "hit" or "fwd=uri-miss",
		// since the ttl depends on the second the response arrived in.
		return strings.Split(resp.Header.Get("Cache-Status"), "; ")[1]
	}
	status("/1")
	status("/2")
	fmt.Println(status("/1"))

	n, err := c.PurgeTag(context.Background(), "products")
	if err != nil {
		panic(err)
	}
	fmt.Println("purged", n)
	fmt.Println(status("/1"))
	// Output:
	// hit
	// purged 2
	// fwd=uri-miss
}

// Counting outcomes with a hook instead of parsing Cache-Status, and reading what the cache
// holds with Stats.
func ExampleHooks() {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintln(w, "hello")
	}))
	defer origin.Close()
	target, _ := url.Parse(origin.URL)

	var mu sync.Mutex
	outcomes := map[cache.Outcome]int{}
	c, err := cache.New(cache.Options{Hooks: cache.Hooks{
		Lookup: func(e cache.LookupEvent) {
			mu.Lock()
			outcomes[e.Outcome]++
			mu.Unlock()
		},
	}})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	h := c.Handler(httputil.NewSingleHostReverseProxy(target))
	for range 3 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://example.com/", nil))
	}
	mu.Lock()
	fmt.Println(cache.Miss, outcomes[cache.Miss], cache.Hit, outcomes[cache.Hit])
	mu.Unlock()
	fmt.Println("entries:", c.Stats().Entries)
	// Output:
	// miss 1 hit 2
	// entries: 1
}
