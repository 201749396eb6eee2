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
	h := middleware.RedirectHTTPS(ipf.Handler(middleware.StripPrefix("/shop", "")(backend)))

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
