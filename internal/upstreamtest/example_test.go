package upstreamtest_test

import (
	"fmt"
	"io"
	"net/http"

	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// An upstream that answers a HEAD request and then, unasked, sends a whole second response on
// the same connection: the bytes a careless client would hand to its next request.
func Example() {
	// A test calls upstreamtest.Start(t, script), which shuts the server down as the test ends.
	srv, err := upstreamtest.NewServer(func(c *upstreamtest.Conn) {
		if _, err := c.ReadRequest(); err != nil {
			return
		}
		c.Write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
		c.Write("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstray!")
		c.Stall()
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	res, err := http.Head(srv.URL() + "/a")
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	reqs := srv.Requests()
	fmt.Println(res.Status, res.ContentLength)
	fmt.Println(len(reqs), reqs[0].Method, reqs[0].Target)
	// Output:
	// 200 OK 5
	// 1 HEAD /a
}
