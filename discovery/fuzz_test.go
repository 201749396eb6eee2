package discovery

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice"
)

// answer is a Resolver that returns fixed records, as a DNS server under someone else's
// control may.
type answer struct {
	ips  []net.IPAddr
	srvs []*net.SRV
}

func (a answer) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) { return a.ips, nil }
func (a answer) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", a.srvs, nil
}

// checkSet fails t unless eps is a set a Source may push: sorted by Addr, each Addr once,
// and each Addr a host and a port in 1..65535 that net.SplitHostPort takes apart, with the
// host an IP address or a DNS name.
func checkSet(t *testing.T, eps []sluice.Endpoint) {
	t.Helper()
	if !slices.IsSortedFunc(eps, func(a, b sluice.Endpoint) int { return strings.Compare(a.Addr, b.Addr) }) {
		t.Fatalf("set not sorted: %v", eps)
	}
	for i, ep := range eps {
		if i > 0 && eps[i-1].Addr == ep.Addr {
			t.Fatalf("Addr %q twice in %v", ep.Addr, eps)
		}
		host, port, err := net.SplitHostPort(ep.Addr)
		if err != nil {
			t.Fatalf("Addr %q does not split into host and port: %v", ep.Addr, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("Addr %q has port %q", ep.Addr, port)
		}
		if _, err := netip.ParseAddr(host); err != nil && !validHost(host) {
			t.Fatalf("Addr %q has host %q, neither an IP address nor a DNS name", ep.Addr, host)
		}
	}
}

// FuzzSRVRecords feeds DNS one SRV answer of up to three records with arbitrary targets,
// ports, priorities and weights.
func FuzzSRVRecords(f *testing.F) {
	f.Add("a.example.", uint16(80), uint16(10), uint16(60), "b.example", uint16(81), uint16(10), uint16(0), ".", uint16(80), uint16(0))
	f.Add("backup.example.", uint16(80), uint16(20), uint16(1), "", uint16(0), uint16(1), uint16(1), "x", uint16(65535), uint16(65535))
	f.Add("[::1]", uint16(80), uint16(0), uint16(0), "a b", uint16(80), uint16(0), uint16(0), "10.0.0.1", uint16(443), uint16(0))
	f.Add("host:80", uint16(1), uint16(0), uint16(0), "-bad-.example", uint16(2), uint16(0), uint16(0), "a..b", uint16(3), uint16(0))
	f.Add(strings.Repeat("a", 64)+".example", uint16(1), uint16(0), uint16(0), "xn--bcher-kva.example", uint16(2), uint16(0), uint16(0), "_svc._tcp.example.", uint16(3), uint16(0))
	f.Fuzz(func(t *testing.T, t1 string, port1, prio1, weight1 uint16, t2 string, port2, prio2, weight2 uint16, t3 string, port3, prio3 uint16) {
		srvs := []*net.SRV{
			{Target: t1, Port: port1, Priority: prio1, Weight: weight1},
			{Target: t2, Port: port2, Priority: prio2, Weight: weight2},
			nil,
			{Target: t3, Port: port3, Priority: prio3},
		}
		d := DNS{Name: "example", Service: "http", Resolver: answer{srvs: srvs}}
		eps, err := d.lookup(context.Background())
		if err != nil {
			if len(eps) != 0 {
				t.Fatalf("lookup failed (%v) and returned %v", err, eps)
			}
			return
		}
		checkSet(t, eps)
		lowest := -1
		for _, s := range srvs {
			if s != nil && s.Port != 0 && validHost(strings.TrimSuffix(s.Target, ".")) && (lowest < 0 || int(s.Priority) < lowest) {
				lowest = int(s.Priority)
			}
		}
		for _, ep := range eps {
			if ep.Weight < 1 {
				t.Fatalf("endpoint %v has weight 0: it would never get traffic", ep)
			}
			found := false
			for _, s := range srvs {
				found = found || s != nil && int(s.Priority) == lowest &&
					ep.Addr == net.JoinHostPort(strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port)))
			}
			if !found {
				t.Fatalf("endpoint %v is not a target of the lowest priority %d in %v", ep, lowest, srvs)
			}
		}
	})
}

// FuzzAddressRecords feeds DNS an A/AAAA answer of raw IP bytes and zones.
func FuzzAddressRecords(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1}, "", []byte(net.ParseIP("fe80::1")), "eth0", 8080)
	f.Add([]byte{0, 0, 0, 0}, "", []byte(net.ParseIP("::ffff:10.0.0.1")), "", 1)
	f.Add([]byte{1, 2, 3}, "x", []byte{1, 2, 3, 4, 5}, "]:80", 65535)
	f.Add([]byte(net.ParseIP("2001:db8::1")), "a%b", []byte{192, 0, 2, 1}, "z", 443)
	f.Fuzz(func(t *testing.T, ip1 []byte, zone1 string, ip2 []byte, zone2 string, port int) {
		if port < 1 || port > 65535 {
			return // DNS.validate refuses these before any lookup
		}
		d := DNS{Name: "example", Port: port, Resolver: answer{ips: []net.IPAddr{{IP: ip1, Zone: zone1}, {IP: ip2, Zone: zone2}}}}
		eps, err := d.lookup(context.Background())
		if err != nil {
			return
		}
		checkSet(t, eps)
		for _, ep := range eps {
			ap, err := netip.ParseAddrPort(ep.Addr)
			if err != nil {
				t.Fatalf("A/AAAA endpoint %q is not an IP address and port: %v", ep.Addr, err)
			}
			if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || int(ap.Port()) != port {
				t.Fatalf("A/AAAA endpoint %q from %v/%q, %v/%q", ep.Addr, ip1, zone1, ip2, zone2)
			}
		}
	})
}

// FuzzNormalize checks that Normalize returns one canonical set, keeping the first endpoint
// of each Addr.
func FuzzNormalize(f *testing.F) {
	f.Add("10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80")
	f.Add("", "", "b")
	f.Add("[::1]:80", "a:1", "[::1]:80")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		in := []sluice.Endpoint{{Addr: a, Weight: 1}, {Addr: b, Weight: 2}, {Addr: c, Weight: 3}}
		got := Normalize(slices.Clone(in))
		if !slices.IsSortedFunc(got, func(x, y sluice.Endpoint) int { return strings.Compare(x.Addr, y.Addr) }) {
			t.Fatalf("Normalize(%v) = %v: not sorted", in, got)
		}
		for _, ep := range in {
			first := in[slices.IndexFunc(in, func(e sluice.Endpoint) bool { return e.Addr == ep.Addr })]
			if n := slices.IndexFunc(got, func(e sluice.Endpoint) bool { return e.Addr == ep.Addr }); n < 0 || got[n] != first {
				t.Fatalf("Normalize(%v) = %v: want the first endpoint of %q once", in, got, ep.Addr)
			}
		}
		if len(got) != len(slices.CompactFunc(slices.Clone(got), func(x, y sluice.Endpoint) bool { return x.Addr == y.Addr })) {
			t.Fatalf("Normalize(%v) = %v: an Addr repeats", in, got)
		}
	})
}
