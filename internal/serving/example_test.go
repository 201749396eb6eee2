package serving_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/sluiceproxy/sluice/internal/serving"
)

// A server's accept loop: each connection comes with its context, as net/http builds it.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	srv := &http.Server{}
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	err = serving.Serve(ln, srv, "example", func() bool { return true }, func(string, ...any) {}, nil,
		func(ctx context.Context, nc net.Conn) bool {
			fmt.Println(ctx.Value(http.ServerContextKey) == srv, ctx.Value(http.LocalAddrContextKey) == nc.LocalAddr())
			nc.Close()
			return false // stop after one connection
		})
	fmt.Println(err)
	// Output:
	// true true
	// http: Server closed
}
