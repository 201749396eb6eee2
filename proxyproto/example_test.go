package proxyproto_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxyproto"
)

// A server behind a load balancer that sends the PROXY protocol: handlers see the client's
// address in r.RemoteAddr, and sluice.ClientIP returns it.
func Example() {
	// The load balancers' addresses: here, the loopback, where the example's "load balancer"
	// connects from.
	trusted, err := sluice.ParseTrustedProxies("127.0.0.0/8")
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "client %s, ClientIP %v\n", r.RemoteAddr, sluice.ClientIP(r, nil))
	})}
	go srv.Serve(&proxyproto.Listener{Listener: ln, Trusted: trusted})
	defer srv.Close()

	// The load balancer: a version-2 header for its client, then the client's bytes.
	lb, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer lb.Close()
	client := proxyproto.TCP(2, netip.MustParseAddrPort("192.0.2.7:56324"), netip.MustParseAddrPort("198.51.100.1:80"))
	hdr, err := client.Append(nil)
	if err != nil {
		panic(err)
	}
	lb.Write(hdr)
	io.WriteString(lb, "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(lb), nil)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(res.Body)
	fmt.Print(string(body))
	// Output: client 192.0.2.7:56324, ClientIP 192.0.2.7
}

// Parse reads a header from the start of a buffer and says where the application's bytes
// begin.
func ExampleParse() {
	b := []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n")
	h, n, err := proxyproto.Parse(b)
	if err != nil {
		panic(err)
	}
	fmt.Println(h.Transport, h.Source, h.Destination)
	fmt.Printf("%q\n", b[n:])

	_, _, err = proxyproto.Parse([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 056324 443\r\n"))
	fmt.Println(err)
	// Output:
	// TCP4 192.0.2.7:56324 198.51.100.1:443
	// "GET / HTTP/1.1\r\n"
	// proxyproto: v1 header: source port: "056324" is not a port
}

// A sender writes a header once, before anything else, on each new upstream connection.
func ExampleHeader_Append() {
	h := proxyproto.TCP(1, netip.MustParseAddrPort("192.0.2.7:56324"), netip.MustParseAddrPort("198.51.100.1:443"))
	b, err := h.Append(nil)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q\n", b)

	h.Command = proxyproto.Local
	_, err = h.Append(nil)
	fmt.Println(err)
	// Output:
	// "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"
	// proxyproto: Command LOCAL needs Version 2
}
