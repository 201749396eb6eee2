package route_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sluiceproxy/sluice/proxy/route"
)

func reply(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, s) })
}

func Example() {
	table, err := route.New([]route.Route{
		{Name: "shop", Hosts: []string{"shop.example.com"}, Path: "/", Backends: []route.Backend{
			{Name: "stable", Handler: reply("shop v1"), Weight: 95},
			{Name: "canary", Handler: reply("shop v2"), Weight: 5},
		}, Pins: []route.Pin{{Header: "X-Canary", Value: "1", Backend: "canary"}}},
		{Name: "api", Hosts: []string{"*.example.com"}, Path: "/api", Backends: []route.Backend{{Handler: reply("api")}}},
		{Name: "health", Path: "/healthz", PathType: route.PathExact, Backends: []route.Backend{{Handler: reply("ok")}}},
	}, route.Options{})
	if err != nil {
		panic(err)
	}
	router := route.NewRouter(table, route.RouterOptions{})

	get := func(host, path string, hdr ...string) {
		r := httptest.NewRequest("GET", path, nil)
		r.Host = host
		if len(hdr) == 2 {
			r.Header.Set(hdr[0], hdr[1])
		}
		w := httptest.NewRecorder()
		router.ServeHTTP(w, r)
		fmt.Printf("%s%s -> %d %s\n", host, path, w.Code, strings.TrimSpace(w.Body.String()))
	}
	get("shop.example.com", "/", "X-Canary", "1")
	get("eu.example.com", "/api/orders")
	get("eu.example.com", "/apiary")
	get("anything.test", "/healthz")
	get("anything.test", "/x/../healthz")
	// Output:
	// shop.example.com/ -> 200 shop v2
	// eu.example.com/api/orders -> 200 api
	// eu.example.com/apiary -> 404 route: no route matches the request
	// anything.test/healthz -> 200 ok
	// anything.test/x/../healthz -> 200 ok
}
