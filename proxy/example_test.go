package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// A Proxy in front of one backend. A real deployment passes a balancer as the Picker; any
// sluice.Picker will do, here a function that always picks the one backend.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend got %s %s from %s", r.Method, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	defer backend.Close()

	ep := sluice.Endpoint{Addr: backend.Listener.Addr().String()}
	p := &proxy.Proxy{
		Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
			return sluice.PickResult{Endpoint: ep}, nil
		}),
	}
	defer p.CloseIdleConnections()
	front := httptest.NewServer(p)
	defer front.Close()

	res, err := http.Get(front.URL + "/hello")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Println(res.StatusCode, string(body))
	// Output: 200 backend got GET /hello from 127.0.0.1
}

// MetricsFunc feeds a metrics library from a function: here it prints what a counter would be
// labelled with.
func ExampleMetricsFunc() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()

	ep := sluice.Endpoint{Addr: backend.Listener.Addr().String()}
	done := make(chan proxy.Stats, 1)
	p := &proxy.Proxy{
		Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
			return sluice.PickResult{Endpoint: ep}, nil
		}),
		Metrics: proxy.MetricsFunc(func(r *http.Request, s proxy.Stats) { done <- s }),
	}
	defer p.CloseIdleConnections()
	front := httptest.NewServer(p)
	defer front.Close()

	res, err := http.Get(front.URL + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	s := <-done
	fmt.Println(s.Status, s.Tries, s.Bytes)
	// Output: 200 1 2
}
