package h1_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/sluiceproxy/sluice/h1"
)

// An http.Server keeps the configuration; h1.New serves its HTTP/1.1 connections and hands
// the HTTP/2 ones back to it.
func Example() {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello over %s\n", r.Proto)
		}),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true) // h2c connections go to srv itself

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	front := h1.New(srv)
	go front.Serve(ln)
	defer front.Shutdown(context.Background())

	res, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Print(string(body))
	// Output: hello over HTTP/1.1
}
