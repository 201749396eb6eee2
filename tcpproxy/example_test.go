package tcpproxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// A proxy that passes TLS for example.com through, by SNI, to an HTTPS backend that holds the
// certificate, and sends every other connection — here plain text — to a default backend.
func Example() {
	// The HTTPS backend terminates TLS itself: the proxy never sees inside the stream.
	secure := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s over TLS, asked for %s", r.Proto, r.TLS.ServerName)
	}))
	secure.EnableHTTP2 = true
	secure.StartTLS()
	defer secure.Close()
	// The default backend greets whoever connects.
	plain, _ := net.Listen("tcp", "127.0.0.1:0")
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "plain greeting\n")
			c.Close()
		}
	}()

	// Each route's endpoints come from a balancer, fed here with one address each.
	pool := func(addr string) *balancer.Balancer {
		b, _ := balancer.New(balancer.LeastRequest{}, balancer.Options{})
		b.Update([]sluice.Endpoint{{Addr: addr}})
		return b
	}
	table, err := tcpproxy.NewTable([]tcpproxy.Route{
		{Name: "secure", ServerNames: []string{"example.com"}, Picker: pool(secure.Listener.Addr().String())},
		{Name: "default", Picker: pool(plain.Addr().String())},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := tcpproxy.New(table, tcpproxy.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go p.Serve(ln)
	defer p.Shutdown(context.Background())

	// An HTTPS client that trusts the backend's certificate, connecting through the proxy.
	tr := secure.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("tcp", ln.Addr().String())
	}
	tr.ForceAttemptHTTP2 = true
	res, err := (&http.Client{Transport: tr}).Get("https://example.com/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	tr.CloseIdleConnections()
	fmt.Println(string(body))

	c, _ := net.Dial("tcp", ln.Addr().String())
	io.WriteString(c, "hi\n") // not TLS: the default route
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	fmt.Print(line)
	// Output:
	// HTTP/2.0 over TLS, asked for example.com
	// plain greeting
}
