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

// Hooks feed a metrics library or a tracer: here RequestDone prints what a counter would be
// labelled with, and TryStart sets the W3C traceparent field a tracer would inject.
func ExampleHooks() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("upstream got traceparent", r.Header.Get("Traceparent"))
		io.WriteString(w, "ok")
	}))
	defer backend.Close()

	ep := sluice.Endpoint{Addr: backend.Listener.Addr().String()}
	done := make(chan proxy.RequestEvent, 1)
	p := &proxy.Proxy{
		Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
			return sluice.PickResult{Endpoint: ep}, nil
		}),
		Hooks: proxy.Hooks{
			RequestDone: func(r *http.Request, e proxy.RequestEvent) { done <- e },
			TryStart: func(out *http.Request, e proxy.TryStartEvent) func(proxy.TryEvent) {
				out.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
				return func(e proxy.TryEvent) {
					fmt.Println("try", e.Attempt, "answered", e.Outcome.Status, "retry:", e.Retry)
				}
			},
		},
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
	e := <-done
	fmt.Println("request", e.Status, e.Tries, e.Bytes)
	// Output:
	// upstream got traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// try 1 answered 200 retry: none
	// request 200 1 2
}
