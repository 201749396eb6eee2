package middleware_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/sluiceproxy/sluice/proxy/middleware"
)

func Example() {
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	})
	ipf, err := middleware.NewIPFilter(middleware.IPFilterOptions{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		panic(err)
	}
	// Each middleware's Handler wraps the next; the outermost runs first.
	h := middleware.RedirectHTTPS{}.Handler(ipf.Handler(middleware.StripPrefix{Prefix: "/shop"}.Handler(backend)))

	for _, target := range []string{"http://a.test/shop/cart", "https://a.test/shop/cart"} {
		r := httptest.NewRequest("POST", target, nil)
		r.RemoteAddr = "192.0.2.10:1234"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("Location")+w.Body.String())
	}
	// Output:
	// 308 https://a.test/shop/cart
	// 200 /cart
}

func ExampleRewrite() {
	rw, err := middleware.NewRewrite(middleware.RewriteOptions{
		Pattern:     `^/api/v(?P<version>[0-9]+)/(.*)$`,
		Replacement: "/orders-v${version}/${2}",
	})
	if err != nil {
		panic(err)
	}
	for _, p := range []string{"/api/v2/orders", "/api/v2/../../etc", "/static/app.js"} {
		out, matched := rw.Path(p)
		fmt.Println(p, "->", out, matched)
	}
	_, err = middleware.NewRewrite(middleware.RewriteOptions{Pattern: `^/(a)$`, Replacement: "/$2"})
	fmt.Println(err)
	// Output:
	// /api/v2/orders -> /orders-v2/orders true
	// /api/v2/../../etc -> /api/v2/../../etc false
	// /static/app.js -> /static/app.js false
	// middleware: Rewrite Replacement "/$2": $2, but Pattern has 1 groups
}

func ExampleRedirect() {
	rd, err := middleware.NewRedirect(middleware.RedirectOptions{Host: "www.example.com", Permanent: true})
	if err != nil {
		panic(err)
	}
	for _, method := range []string{"GET", "POST"} {
		w := httptest.NewRecorder()
		rd.ServeHTTP(w, httptest.NewRequest(method, "http://example.com/cart?id=1", nil))
		fmt.Println(method, w.Code, w.Header().Get("Location"))
	}
	// Output:
	// GET 301 http://www.example.com/cart?id=1
	// POST 308 http://www.example.com/cart?id=1
}
