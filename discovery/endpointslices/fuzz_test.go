package endpointslices_test

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
)

// FuzzMerge merges two slices built from arbitrary addresses, address types, ports,
// protocols and conditions, as an embedder's cache might hold them without the API server's
// validation, and checks that the result is a set a balancer can use: sorted, each Addr once,
// each Addr a host of the slice's address type (never from an FQDN slice) and a port in 1..65535 that came from a slice
// port, and only Ready or Terminating endpoints.
func FuzzMerge(f *testing.F) {
	f.Add(uint8(0), "10.244.0.1", "10.244.0.2", "http", int32(8080), "TCP", "http", uint8(0xff))
	f.Add(uint8(1), "fd00::1", "FD00:0::1", "", int32(80), "", "", uint8(0))
	f.Add(uint8(1), "fe80::1%eth0", "::", "h", int32(65536), "UDP", "65536", uint8(0x0f))
	f.Add(uint8(2), "db.example.com", "Bad_Name", "grpc", int32(-1), "SCTP", "-1", uint8(0x33))
	f.Add(uint8(0), "10.0.0.1:80", "::ffff:10.0.0.1", "x", int32(0), "TCP", "+80", uint8(0x55))
	f.Add(uint8(3), "10.244.0.1", "", "http", int32(443), "TCP", "0443", uint8(0xaa))
	f.Fuzz(func(t *testing.T, typ uint8, addr1, addr2, portName string, portNum int32, proto, want string, conds uint8) {
		types := []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN, "Other"}
		at := types[int(typ)%len(types)]
		cond := func(bits uint8) discoveryv1.EndpointConditions {
			b := func(i int) *bool {
				switch bits >> (2 * i) & 3 {
				case 0:
					return nil
				case 1:
					return ptr(false)
				}
				return ptr(true)
			}
			return discoveryv1.EndpointConditions{Ready: b(0), Serving: b(1), Terminating: b(2)}
		}
		p := discoveryv1.EndpointPort{Name: ptr(portName), Port: ptr(portNum)}
		if proto != "" {
			p.Protocol = ptr(corev1.Protocol(proto))
		}
		a := slice("a", "web", at, []discoveryv1.EndpointPort{p},
			discoveryv1.Endpoint{Addresses: []string{addr1}, Conditions: cond(conds)},
			discoveryv1.Endpoint{Addresses: []string{addr2}, Conditions: cond(conds >> 4)})
		b := slice("b", "web", at, []discoveryv1.EndpointPort{{Port: ptr(int32(8080))}},
			discoveryv1.Endpoint{Addresses: []string{addr2, addr1}, Conditions: cond(^conds)})

		got := endpointslices.Merge([]*discoveryv1.EndpointSlice{a, nil, b}, want)
		if !slices.IsSortedFunc(got, func(x, y sluice.Endpoint) int { return strings.Compare(x.Addr, y.Addr) }) {
			t.Fatalf("Merge = %v: not sorted", got)
		}
		for i, ep := range got {
			if i > 0 && got[i-1].Addr == ep.Addr {
				t.Fatalf("Merge = %v: %q twice", got, ep.Addr)
			}
			if ep.State != sluice.Ready && ep.State != sluice.Terminating {
				t.Fatalf("Merge = %v: endpoint %q is %v", got, ep.Addr, ep.State)
			}
			host, port, err := net.SplitHostPort(ep.Addr)
			if err != nil {
				t.Fatalf("Addr %q does not split: %v", ep.Addr, err)
			}
			n, err := strconv.Atoi(port)
			if err != nil || n < 1 || n > 65535 || (int32(n) != portNum && n != 8080) {
				t.Fatalf("Addr %q: port is not a slice port (%d or 8080)", ep.Addr, portNum)
			}
			switch at {
			case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
				ip, err := netip.ParseAddr(host)
				if err != nil || ip.Is4() != (at == discoveryv1.AddressTypeIPv4) || ip.String() != host {
					t.Fatalf("Addr %q in an %s slice: host is not a canonical address of that family", ep.Addr, at)
				}
			default: // FQDN slices too: Merge resolves no names, and never dials an FQDN slice's literal
				t.Fatalf("Addr %q from a slice of unknown address type %q", ep.Addr, at)
			}
		}
	})
}
