package balancer_test

import (
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

// client returns the PickInfo of a connection from 10.1.x.y:port, as an L4 proxy fills it.
func client(x, y byte, port uint16) sluice.PickInfo {
	return sluice.PickInfo{Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, x, y}), port)}
}

// TestClientIPAffinity follows kube-proxy's sessionAffinity: ClientIP. With two endpoints
// and a round-robin fallback, every choice the fallback makes alternates, so a re-pick
// shows as a change of endpoint and a pinned pick as none.
func TestClientIPAffinity(t *testing.T) {
	eps := endpoints(2)
	other := func(addr string) string {
		if addr == eps[0].Addr {
			return eps[1].Addr
		}
		return eps[0].Addr
	}
	setup := func(t *testing.T) (*balancer.Balancer, *fakeClock, string) {
		clock := newClock()
		b := newBalancer(t, balancer.ClientIPAffinity{Timeout: time.Minute}, balancer.Options{Now: clock.Now}, eps)
		return b, clock, pick(t, b, client(0, 1, 40000))
	}

	t.Run("a client stays whatever its source port", func(t *testing.T) {
		b, _, first := setup(t)
		for port := range uint16(50) {
			assert.Equal(t, first, pick(t, b, client(0, 1, 1000+port)), "connection from port %d", 1000+port)
		}
		mapped := netip.AddrFrom16(netip.AddrFrom4([4]byte{10, 1, 0, 1}).As16())
		assert.Equal(t, first, pick(t, b, sluice.PickInfo{Client: netip.AddrPortFrom(mapped, 9)}),
			"an IPv4 client written as an IPv4-mapped address is the same client")
		assert.Equal(t, other(first), pick(t, b, client(0, 2, 40000)), "a new client is the fallback's next choice")
		assert.Equal(t, other(first), pick(t, b, client(0, 2, 40001)), "and stays there")
	})
	t.Run("the timeout counts from the last pick", func(t *testing.T) {
		b, clock, first := setup(t)
		for range 5 {
			clock.Advance(59 * time.Second)
			assert.Equal(t, first, pick(t, b, client(0, 1, 1)), "a client seen within the timeout stays")
		}
		clock.Advance(time.Minute)
		second := pick(t, b, client(0, 1, 1))
		assert.Equal(t, other(first), second, "a minute after its last pick, the client is placed again")
		assert.Equal(t, second, pick(t, b, client(0, 1, 2)), "and pinned to the new choice")
	})
	t.Run("an endpoint that leaves loses its clients for good", func(t *testing.T) {
		b, _, first := setup(t)
		var rest []sluice.Endpoint
		for _, e := range eps {
			if e.Addr != first {
				rest = append(rest, e)
			}
		}
		b.Update(rest)
		assert.Equal(t, other(first), pick(t, b, client(0, 1, 1)), "the pinned endpoint is gone")
		b.Update(eps)
		assert.Equal(t, other(first), pick(t, b, client(0, 1, 1)), "the client stays on its new endpoint when the old one is back")
	})
	t.Run("an endpoint that is not in the pool is left", func(t *testing.T) {
		b, _, first := setup(t)
		d := append([]sluice.Endpoint(nil), eps...)
		for i := range d {
			if d[i].Addr == first {
				d[i].State = sluice.Terminating
			}
		}
		b.Update(d)
		assert.Equal(t, other(first), pick(t, b, client(0, 1, 1)), "a Terminating endpoint is not used while another is Ready")

		b, _, first = setup(t)
		d = append(d[:0], eps...)
		for i := range d {
			d[i].State = sluice.Terminating
		}
		b.Update(d)
		assert.Equal(t, first, pick(t, b, client(0, 1, 1)), "with nothing Ready, the Terminating pinned endpoint is still the client's")
	})
	t.Run("a retry leaves the pinned endpoint and re-pins", func(t *testing.T) {
		b, _, first := setup(t)
		info := client(0, 1, 2)
		info.Tried = []string{first}
		assert.Equal(t, other(first), pick(t, b, info), "the retry goes elsewhere")
		assert.Equal(t, other(first), pick(t, b, client(0, 1, 3)), "and the client is pinned there")
	})
	t.Run("a try without a client is not pinned", func(t *testing.T) {
		b, _, first := setup(t)
		assert.Equal(t, other(first), pick(t, b, sluice.PickInfo{}))
		assert.Equal(t, first, pick(t, b, sluice.PickInfo{}), "tries without a client take turns")
		assert.Equal(t, first, pick(t, b, client(0, 1, 1)), "and leave pins alone")
	})
	t.Run("HTTP clients by their address", func(t *testing.T) {
		trusted, err := sluice.ParseTrustedProxies("192.0.2.0/24")
		require.NoError(t, err)
		b := newBalancer(t, balancer.ClientIPAffinity{}, balancer.Options{TrustedProxies: trusted}, eps)
		req := func(peer, xff string) sluice.PickInfo {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = peer
			if xff != "" {
				r.Header.Set("X-Forwarded-For", xff)
			}
			return sluice.PickInfo{Request: r}
		}
		first := pick(t, b, req("198.51.100.7:1000", ""))
		assert.Equal(t, first, pick(t, b, req("198.51.100.7:2000", "")), "the same peer")
		assert.Equal(t, other(first), pick(t, b, req("192.0.2.1:3000", "203.0.113.9")), "a client behind a trusted proxy is its own client")
		assert.Equal(t, other(first), pick(t, b, req("192.0.2.2:3000", "203.0.113.9")), "whichever trusted proxy it comes through")
		assert.Equal(t, first, pick(t, b, req("198.51.100.7:4000", "203.0.113.9")), "an untrusted peer's header is ignored")
	})
}

// TestClientIPAffinityIsPerBalancer checks that two balancers (two Service ports) keep their
// own pins, as kube-proxy keeps them per Service port.
func TestClientIPAffinityIsPerBalancer(t *testing.T) {
	eps := endpoints(10)
	seen := map[bool]int{}
	for y := range byte(100) {
		a := newBalancer(t, balancer.ClientIPAffinity{Fallback: balancer.Random{}}, balancer.Options{}, eps)
		b := newBalancer(t, balancer.ClientIPAffinity{Fallback: balancer.Random{}}, balancer.Options{}, eps)
		seen[pick(t, a, client(1, y, 1)) == pick(t, b, client(1, y, 1))]++
	}
	assert.Less(t, seen[true], 40, "two balancers should place a client independently (1 in 10 agree by chance)")
}

// TestClientIPAffinityBounded checks that a table of MaxClients pins serves a stream of far
// more clients: every pick succeeds, a client that keeps coming back keeps its endpoint while
// the others churn through the table, and pins far beyond MaxClients are forgotten.
func TestClientIPAffinityBounded(t *testing.T) {
	eps := endpoints(50)
	b := newBalancer(t, balancer.ClientIPAffinity{MaxClients: 100, Fallback: balancer.Random{}}, balancer.Options{}, eps)
	hot := pick(t, b, client(200, 200, 1))
	for i := range 20_000 {
		pick(t, b, client(byte(i>>8), byte(i), 1))
		require.Equal(t, hot, pick(t, b, client(200, 200, 1)), "a client in constant use must keep its endpoint (pick %d)", i)
	}
	kept := 0
	for i := range 1000 {
		info := client(byte(i>>8), byte(i), 1)
		if first := pick(t, b, info); pick(t, b, info) == first {
			kept++
		}
	}
	assert.Equal(t, 1000, kept, "each client is pinned at once, even when it evicts another")
}

// TestClientIPAffinityPinnedPickDoesNotAllocate checks the L4 path: a returning client costs no
// allocation.
func TestClientIPAffinityPinnedPickDoesNotAllocate(t *testing.T) {
	for _, n := range []int{10, 1000} {
		b := newBalancer(t, balancer.ClientIPAffinity{}, balancer.Options{Zone: "b", Node: "node-1"}, hintedEndpoints(n))
		info := client(1, 2, 3)
		pick(t, b, info)
		allocs := testing.AllocsPerRun(1000, func() {
			res, err := b.Pick(info)
			if err != nil {
				panic(err)
			}
			res.Done(sluice.Outcome{})
		})
		assert.Zero(t, allocs, "a pinned pick of %d endpoints should not allocate", n)
	}
}

// TestClientIPAffinityConcurrent runs pins, pinned picks, evictions and updates at once; under
// -race it checks the lock-free client table, and that every pick comes from the set.
func TestClientIPAffinityConcurrent(t *testing.T) {
	clock := newClock()
	b := newBalancer(t, balancer.ClientIPAffinity{MaxClients: 64, Timeout: time.Second}, balancer.Options{Now: clock.Now}, endpoints(8))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := b.Pick(client(byte(g), byte(i%200), 1))
				if !assert.NoError(t, err) {
					return
				}
				res.Done(sluice.Outcome{})
				assert.Contains(t, res.Endpoint.Addr, "10.0.0.", "picks come from the set")
			}
		})
	}
	for i := range 300 {
		b.Update(endpoints(4 + i%5))
		clock.Advance(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}
