package udpproxy_test

import (
	"fmt"
	"net"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/udpproxy"
)

// A UDP service behind the proxy: an echo server that shouts back what it gets. The client
// sends to the proxy and reads the replies from it; each client address is one flow, pinned
// to one endpoint.
func Example() {
	backend, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer backend.Close()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, client, err := backend.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			backend.WriteToUDPAddrPort([]byte(strings.ToUpper(string(buf[:n]))), client)
		}
	}()

	// Maglev's zero key hashes the client's IP: every flow of one client IP goes to one pod,
	// as kube-proxy's sessionAffinity: ClientIP keeps it.
	bal, err := balancer.New(balancer.Maglev{}, balancer.Options{})
	if err != nil {
		panic(err)
	}
	eps := []sluice.Endpoint{{Addr: backend.LocalAddr().String()}}
	bal.Update(eps)
	p, err := udpproxy.New(udpproxy.Options{Picker: bal}) // 60s idle timeout, 10,000 flows
	if err != nil {
		panic(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	go p.Serve(pc)
	defer p.Close()
	// With a discovery source, every new set goes to the balancer and to Prune, so that flows
	// to endpoints that left move at once, as kube-proxy clears their conntrack entries:
	//
	//	go src.Watch(ctx, func(eps []sluice.Endpoint) { bal.Update(eps); p.Prune(eps) })

	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	for _, msg := range []string{"hello", "again"} {
		c.Write([]byte(msg))
		n, _ := c.Read(buf) // a connected socket accepts replies only from the proxy's address
		fmt.Println(string(buf[:n]))
	}
	fmt.Printf("%+v\n", p.Stats())
	// Output:
	// HELLO
	// AGAIN
	// {Active:1 Opened:1 OverLimit:0 NoEndpoint:0 Draining:0 Oversized:0 ConnectFailures:0}
}
