package h2_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/h2"
)

// An http.Server keeps the configuration; h1.New serves its HTTP/1.1 connections and h2.New
// the HTTP/2 ones, here h2c with prior knowledge.
func Example() {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello over %s\n", r.Proto)
		}),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	front := h1.New(srv)
	front.HTTP2 = h2.New(srv)
	go front.Serve(ln)
	defer front.Shutdown(context.Background())

	// A client that speaks HTTP/2 with prior knowledge, and one that speaks HTTP/1.1.
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	for _, c := range []*http.Client{{Transport: h2c}, http.DefaultClient} {
		res, err := c.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Print(string(body))
	}
	// Output:
	// hello over HTTP/2.0
	// hello over HTTP/1.1
}
