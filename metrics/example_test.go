package metrics_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/cache"
	"github.com/sluiceproxy/sluice/metrics"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/route"
	"github.com/sluiceproxy/sluice/ratelimit"
)

// Example wires one Metrics into a whole proxy: an edge access log around a router, a rate
// limiter and a cache in front of a proxy, and /metrics on a listener of its own.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "hello")
	}))
	defer backend.Close()

	m, err := metrics.New(metrics.Options{}) // a registry of its own, served by m.Handler
	if err != nil {
		fmt.Println(err)
		return
	}
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	bal.Update([]sluice.Endpoint{{Addr: backend.Listener.Addr().String(), Weight: 1}})
	api := &proxy.Proxy{Picker: bal, Hooks: m.Proxy()}
	c, err := cache.New(cache.Options{Hooks: m.Cache("api")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	m.WatchCache("api", c) // entries and bytes, read at each scrape
	limiter, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Name: "per-client", Rate: 1, Burst: 2}},
		Hooks:  m.RateLimit("api"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	table, err := route.New([]route.Route{
		{Name: "api", Backends: []route.Backend{{Handler: limiter.Handler(c.Handler(api))}}},
	}, route.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	edge, err := accesslog.New(accesslog.Options{Hooks: m.Edge()}) // add a Logger for lines
	if err != nil {
		fmt.Println(err)
		return
	}
	front := httptest.NewServer(edge.Handler(route.NewRouter(table, route.RouterOptions{})))
	defer front.Close()
	admin := httptest.NewServer(m.Handler()) // a private listener in a real program
	defer admin.Close()

	for range 3 { // a miss, a hit, and a 429
		res, err := http.Get(front.URL + "/hello")
		if err != nil {
			fmt.Println(err)
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}

	res, err := http.Get(admin.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		for _, prefix := range []string{
			"sluice_requests_total",
			"sluice_upstream_requests_total",
			`sluice_cache_lookups_total{cache="api",outcome="hit"}`,
			`sluice_cache_lookups_total{cache="api",outcome="miss"}`,
			"sluice_cache_entries",
			`sluice_ratelimit_decisions_total{limit="per-client",limiter="api",result="limited"}`,
		} {
			if strings.HasPrefix(line, prefix) {
				fmt.Println(line)
			}
		}
	}
	// Output:
	// sluice_cache_entries{cache="api"} 1
	// sluice_cache_lookups_total{cache="api",outcome="hit"} 1
	// sluice_cache_lookups_total{cache="api",outcome="miss"} 1
	// sluice_ratelimit_decisions_total{limit="per-client",limiter="api",result="limited"} 1
	// sluice_requests_total{class="2xx",method="GET",route="api"} 2
	// sluice_requests_total{class="4xx",method="GET",route="api"} 1
	// sluice_upstream_requests_total{class="2xx",route="api"} 1
}
