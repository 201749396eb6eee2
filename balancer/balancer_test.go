package balancer_test

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

// endpoints returns n Ready endpoints 10.x.y.z:8080 with weight 1.
func endpoints(n int) []sluice.Endpoint {
	eps := make([]sluice.Endpoint, n)
	for i := range eps {
		eps[i] = sluice.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:8080", i>>16&0xff, i>>8&0xff, i&0xff)}
	}
	return eps
}

// hintedEndpoints returns n Ready endpoints like endpoints(n), spread over zones a, b and c,
// endpoint i on node "node-i", with the hints the EndpointSlice controller writes for a
// Service with trafficDistribution: PreferSameNode (each endpoint for its own zone and node).
func hintedEndpoints(n int) []sluice.Endpoint {
	eps := endpoints(n)
	for i := range eps {
		eps[i].Zone = string(rune('a' + i%3))
		eps[i].Node = "node-" + strconv.Itoa(i)
		eps[i].ForZones = eps[i].Zone
		eps[i].ForNodes = eps[i].Node
	}
	return eps
}

// allPolicies names every policy with a configuration worth testing.
func allPolicies() []struct {
	name string
	p    balancer.Policy
} {
	return []struct {
		name string
		p    balancer.Policy
	}{
		{"RoundRobin", balancer.RoundRobin{}},
		{"Random", balancer.Random{}},
		{"LeastRequest", balancer.LeastRequest{}},
		{"PeakEWMA", balancer.PeakEWMA{}},
		{"Maglev", balancer.Maglev{Key: balancer.HeaderKey("X-User")}},
		{"MaglevBounded", balancer.Maglev{Key: balancer.HeaderKey("X-User"), Epsilon: 0.25}},
		{"MaglevClientIP", balancer.Maglev{}},
		{"Sticky", balancer.Sticky{}}, // falls back to RoundRobin
		{"StickyLeastRequest", balancer.Sticky{Fallback: balancer.LeastRequest{}}},
		{"ClientIPAffinity", balancer.ClientIPAffinity{}}, // falls back to RoundRobin
		{"ClientIPAffinityLeastRequest", balancer.ClientIPAffinity{Fallback: balancer.LeastRequest{}}},
	}
}

// fakeClock is a manually advanced clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newBalancer(t testing.TB, p balancer.Policy, opts balancer.Options, eps []sluice.Endpoint) *balancer.Balancer {
	t.Helper()
	b, err := balancer.New(p, opts)
	require.NoError(t, err)
	b.Update(eps)
	return b
}

// pick picks and finishes at once, returning the address.
func pick(t testing.TB, b *balancer.Balancer, info sluice.PickInfo) string {
	t.Helper()
	res, err := b.Pick(info)
	require.NoError(t, err)
	require.NotNil(t, res.Done, "every pick should carry a Done")
	res.Done(sluice.Outcome{Status: 200, Latency: time.Millisecond})
	return res.Endpoint.Addr
}

func userRequest(user string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://svc/", nil)
	r.Header.Set("X-User", user)
	return r
}

func TestNoEndpoint(t *testing.T) {
	for _, tc := range allPolicies() {
		t.Run(tc.name, func(t *testing.T) {
			b, err := balancer.New(tc.p, balancer.Options{})
			require.NoError(t, err)
			_, err = b.Pick(sluice.PickInfo{})
			assert.ErrorIs(t, err, sluice.ErrNoEndpoint, "a balancer never updated has nothing to pick")
			b.Update(nil)
			_, err = b.Pick(sluice.PickInfo{})
			assert.ErrorIs(t, err, sluice.ErrNoEndpoint, "an empty set has nothing to pick")
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    balancer.Policy
		o    balancer.Options
		want string
	}{
		{"nil policy", nil, balancer.Options{}, "policy"},
		{"negative slow start", balancer.RoundRobin{}, balancer.Options{SlowStart: -time.Second}, "Options.SlowStart"},
		{"min weight above 1", balancer.RoundRobin{}, balancer.Options{SlowStartMinWeight: 2}, "Options.SlowStartMinWeight"},
		{"panic above 1", balancer.RoundRobin{}, balancer.Options{PanicThreshold: 1.5}, "Options.PanicThreshold"},
		{"NaN spill factor", balancer.RoundRobin{}, balancer.Options{ZoneSpillFactor: math.NaN()}, "Options.ZoneSpillFactor"},
		{"negative bias", balancer.LeastRequest{ActiveRequestBias: -1}, balancer.Options{}, "LeastRequest.ActiveRequestBias"},
		{"negative decay", balancer.PeakEWMA{Decay: -1}, balancer.Options{}, "PeakEWMA.Decay"},
		{"negative epsilon", balancer.Maglev{Epsilon: -0.1}, balancer.Options{}, "Maglev.Epsilon"},
		{"huge table", balancer.Maglev{TableSize: 1 << 30}, balancer.Options{}, "Maglev.TableSize"},
		{"sticky in sticky", balancer.Sticky{Fallback: balancer.Sticky{}}, balancer.Options{}, "Sticky.Fallback"},
		{"bad cookie name", balancer.Sticky{Cookie: "a;b"}, balancer.Options{}, "Sticky.Cookie"},
		{"affinity in sticky", balancer.Sticky{Fallback: balancer.ClientIPAffinity{}}, balancer.Options{}, "Sticky.Fallback"},
		{"sticky in affinity", balancer.ClientIPAffinity{Fallback: &balancer.Sticky{}}, balancer.Options{}, "ClientIPAffinity.Fallback"},
		{"affinity in affinity", balancer.ClientIPAffinity{Fallback: balancer.ClientIPAffinity{}}, balancer.Options{}, "ClientIPAffinity.Fallback"},
		{"negative affinity timeout", balancer.ClientIPAffinity{Timeout: -time.Second}, balancer.Options{}, "ClientIPAffinity.Timeout"},
		{"negative max clients", balancer.ClientIPAffinity{MaxClients: -1}, balancer.Options{}, "ClientIPAffinity.MaxClients"},
		{"bad affinity fallback", balancer.ClientIPAffinity{Fallback: balancer.PeakEWMA{Decay: -1}}, balancer.Options{}, "PeakEWMA.Decay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := balancer.New(tc.p, tc.o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want, "the error should name the field")
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, tc := range allPolicies() {
		for _, n := range []int{10, 1000} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, n), func(t *testing.T) {
				b := newBalancer(t, tc.p, balancer.Options{}, endpoints(n))
				assertPickDoesNotAllocate(t, b)
			})
			// Node and zone preference: the tried endpoint is the node's only one, so every
			// pick spills from the node to the zone.
			t.Run(fmt.Sprintf("%s/%d/NodeAndZone", tc.name, n), func(t *testing.T) {
				b := newBalancer(t, tc.p, balancer.Options{Zone: "b", Node: "node-1"}, hintedEndpoints(n))
				assertPickDoesNotAllocate(t, b)
			})
		}
	}
}

func assertPickDoesNotAllocate(t *testing.T, b *balancer.Balancer) {
	t.Helper()
	info := sluice.PickInfo{Request: userRequest("alice"), Tried: []string{"10.0.0.1:8080"}}
	info.Request.AddCookie(&http.Cookie{Name: "sluice_affinity", Value: "0123456789abcdef"})
	allocs := testing.AllocsPerRun(1000, func() {
		res, err := b.Pick(info)
		if err != nil {
			panic(err)
		}
		res.Done(sluice.Outcome{Status: 200, Latency: time.Millisecond})
	})
	assert.Zero(t, allocs, "Pick and Done should not allocate")
}

// TestWeightsConverge checks that weighted policies give each endpoint its share of 100,000
// picks to within 1 percentage point.
func TestWeightsConverge(t *testing.T) {
	eps := endpoints(4)
	for i := range eps {
		eps[i].Weight = uint32(i + 1) // shares 10%, 20%, 30%, 40%
	}
	const picks = 100_000
	for _, tc := range []struct {
		name string
		p    balancer.Policy
		req  func(i int) *http.Request
	}{
		{"RoundRobin", balancer.RoundRobin{}, nil},
		{"Random", balancer.Random{}, nil},
		{"LeastRequest", balancer.LeastRequest{}, nil},
		{"Maglev", balancer.Maglev{Key: balancer.HeaderKey("X-User")}, func(i int) *http.Request { return userRequest(strconv.Itoa(i)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, tc.p, balancer.Options{Seed: 42}, eps)
			got := map[string]int{}
			for i := range picks {
				var info sluice.PickInfo
				if tc.req != nil {
					info.Request = tc.req(i)
				}
				got[pick(t, b, info)]++
			}
			for i, ep := range eps {
				want := float64(i+1) / 10
				share := float64(got[ep.Addr]) / picks
				assert.InDelta(t, want, share, 0.01, "endpoint %d with weight %d should get %.0f%% of picks", i, ep.Weight, want*100)
			}
		})
	}
}

// TestRoundRobinIsSmooth checks that weighted round robin interleaves instead of sending bursts.
func TestRoundRobinIsSmooth(t *testing.T) {
	eps := endpoints(3)
	eps[0].Weight = 5
	b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{}, eps)
	var seq []string
	for range 70 {
		seq = append(seq, pick(t, b, sluice.PickInfo{}))
	}
	run, longest := 0, 0
	for i, a := range seq {
		if i > 0 && a == seq[i-1] {
			run++
		} else {
			run = 1
		}
		longest = max(longest, run)
	}
	// With weights 5:1:1 NGINX's order is A A B A C A A, which wraps to at most 4 in a row
	// (A A | A A); a burst schedule would have 5.
	assert.LessOrEqual(t, longest, 4, "weighted round robin should interleave: %v", seq[:14])
	count := map[string]int{}
	for _, a := range seq {
		count[a]++
	}
	assert.Equal(t, 50, count[eps[0].Addr], "weight 5 of 7 should get 50 of 70 picks")
}

func TestRoundRobinVisitsEveryEndpoint(t *testing.T) {
	eps := endpoints(7)
	b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{}, eps)
	seen := map[string]int{}
	for range 7 * 3 {
		seen[pick(t, b, sluice.PickInfo{})]++
	}
	for _, ep := range eps {
		assert.Equal(t, 3, seen[ep.Addr], "round robin should give %s exactly its turns", ep.Addr)
	}
}

func TestHealth(t *testing.T) {
	mk := func(states ...sluice.State) []sluice.Endpoint {
		eps := endpoints(len(states))
		for i, s := range states {
			eps[i].State = s
		}
		return eps
	}
	const (
		R = sluice.Ready
		T = sluice.Terminating
		U = sluice.Unhealthy
	)
	for _, tc := range []struct {
		name   string
		eps    []sluice.Endpoint
		opts   balancer.Options
		expect []int // indexes that may be picked
	}{
		{"unhealthy skipped", mk(R, R, R, U), balancer.Options{}, []int{0, 1, 2}},
		{"terminating only when nothing ready", mk(R, T, T), balancer.Options{}, []int{0}},
		{"terminating as last resort", mk(T, U, T), balancer.Options{}, []int{0, 2}},
		{"panic below threshold uses unhealthy too", mk(R, U, U, U, T), balancer.Options{}, []int{0, 1, 2, 3}},
		{"panic disabled", mk(R, U, U, U), balancer.Options{PanicThreshold: -1}, []int{0}},
		{"all unhealthy: panic uses all", mk(U, U), balancer.Options{}, []int{0, 1}},
		{"custom threshold", mk(R, R, U, U, U), balancer.Options{PanicThreshold: 0.3}, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, balancer.RoundRobin{}, tc.opts, tc.eps)
			seen := map[string]bool{}
			for range 100 {
				seen[pick(t, b, sluice.PickInfo{})] = true
			}
			want := map[string]bool{}
			for _, i := range tc.expect {
				want[tc.eps[i].Addr] = true
			}
			assert.Equal(t, want, seen, "picked set")
		})
	}
	t.Run("all unhealthy without panic", func(t *testing.T) {
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{PanicThreshold: -1}, mk(U, U))
		_, err := b.Pick(sluice.PickInfo{})
		assert.ErrorIs(t, err, sluice.ErrNoEndpoint)
	})
}

// TestPanicThresholdIgnoresTerminating checks the case of issue 16: one Ready, one Unhealthy
// and three Terminating endpoints. Terminating endpoints are leaving whatever their health,
// so they count neither way: one Ready of two members is not below the 50% threshold, and
// every try goes to the Ready endpoint. Counting them (1 < 0.5 × 5) had sent half the
// traffic to the Unhealthy one.
func TestPanicThresholdIgnoresTerminating(t *testing.T) {
	eps := endpoints(5)
	eps[1].State = sluice.Unhealthy
	for i := 2; i < 5; i++ {
		eps[i].State = sluice.Terminating
	}
	for _, tc := range allPolicies() {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, tc.p, balancer.Options{}, eps)
			got := map[string]int{}
			for i := range 1000 {
				got[pick(t, b, sluice.PickInfo{Request: userRequest(strconv.Itoa(i))})]++
			}
			assert.Equal(t, map[string]int{eps[0].Addr: 1000}, got, "every try should go to the Ready endpoint")
		})
	}
	t.Run("still panics when Ready are too few of Ready and Unhealthy", func(t *testing.T) {
		e := append([]sluice.Endpoint(nil), eps...)
		e[2].State = sluice.Unhealthy // 1 Ready, 2 Unhealthy, 2 Terminating: 1 < 0.5 × 3
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{}, e)
		seen := map[string]bool{}
		for range 100 {
			seen[pick(t, b, sluice.PickInfo{})] = true
		}
		assert.Equal(t, map[string]bool{e[0].Addr: true, e[1].Addr: true, e[2].Addr: true}, seen,
			"panic mode should spread over Ready and Unhealthy, never Terminating")
	})
}

func TestRetryAvoidsTried(t *testing.T) {
	eps := endpoints(3)
	for _, tc := range allPolicies() {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, tc.p, balancer.Options{}, eps)
			for i := range 200 {
				info := sluice.PickInfo{Request: userRequest(strconv.Itoa(i)), Tried: []string{eps[0].Addr, eps[2].Addr}}
				assert.Equal(t, eps[1].Addr, pick(t, b, info), "the only untried endpoint should be picked")
			}
			info := sluice.PickInfo{Request: userRequest("x"), Tried: []string{eps[0].Addr, eps[1].Addr, eps[2].Addr}}
			assert.NotEmpty(t, pick(t, b, info), "when all were tried, any endpoint will do")
		})
	}
}

// TestStateSurvivesUpdate checks that in-flight counts carry over a rebuild: least-request
// keeps avoiding an endpoint busy from before the update.
func TestStateSurvivesUpdate(t *testing.T) {
	eps := endpoints(2)
	b := newBalancer(t, balancer.LeastRequest{}, balancer.Options{Seed: 1}, eps)
	var busy []sluice.PickResult
	for range 10 {
		res, err := b.Pick(sluice.PickInfo{Tried: []string{eps[1].Addr}})
		require.NoError(t, err)
		require.Equal(t, eps[0].Addr, res.Endpoint.Addr, "a retry should avoid the tried endpoint")
		busy = append(busy, res)
	}
	b.Update(append(endpoints(2), sluice.Endpoint{Addr: "10.9.9.9:80"}))
	for range 100 {
		assert.NotEqual(t, eps[0].Addr, pick(t, b, sluice.PickInfo{}), "the endpoint with 10 in flight should be avoided after an update")
	}
	for _, r := range busy {
		r.Done(sluice.Outcome{Status: 200})
	}
}

func TestPeakEWMA(t *testing.T) {
	clock := newClock()
	eps := endpoints(2)
	b := newBalancer(t, balancer.PeakEWMA{}, balancer.Options{Now: clock.Now, Seed: 7}, eps)
	feed := func(addr string, o sluice.Outcome) {
		for {
			res, err := b.Pick(sluice.PickInfo{Tried: []string{otherThan(eps, addr)}})
			require.NoError(t, err)
			if res.Endpoint.Addr == addr {
				res.Done(o)
				return
			}
			res.Done(sluice.Outcome{Failure: sluice.Canceled})
		}
	}
	feed(eps[0].Addr, sluice.Outcome{Status: 200, Latency: 100 * time.Millisecond})
	feed(eps[1].Addr, sluice.Outcome{Status: 200, Latency: 10 * time.Millisecond})
	count := func() int {
		n := 0
		for range 1000 {
			if pick(t, b, sluice.PickInfo{}) == eps[1].Addr {
				n++
			}
		}
		return n
	}
	// pick() reports 1ms to whichever endpoint it got; the slow one should see almost nothing.
	assert.Greater(t, count(), 990, "the fast endpoint should take nearly every pick")

	t.Run("canceled tries do not count", func(t *testing.T) {
		for range 50 {
			feed(eps[0].Addr, sluice.Outcome{Failure: sluice.Canceled, Latency: time.Microsecond})
		}
		assert.Greater(t, count(), 990, "canceled fast tries must not make the slow endpoint look fast")
	})
	t.Run("estimate decays", func(t *testing.T) {
		// A minute later the old samples have decayed away: the once-slow endpoint now answers
		// in 1ms and the other in 5ms, and the estimates follow at once.
		clock.Advance(time.Minute)
		feed(eps[0].Addr, sluice.Outcome{Status: 200, Latency: time.Millisecond})
		feed(eps[1].Addr, sluice.Outcome{Status: 200, Latency: 5 * time.Millisecond})
		assert.Less(t, count(), 10, "the recovered endpoint should now take nearly every pick")
	})
}

func otherThan(eps []sluice.Endpoint, addr string) string {
	for _, e := range eps {
		if e.Addr != addr {
			return e.Addr
		}
	}
	return ""
}

func TestSlowStart(t *testing.T) {
	clock := newClock()
	opts := balancer.Options{Now: clock.Now, SlowStart: 10 * time.Second, Seed: 3}
	old := endpoints(4)
	b := newBalancer(t, balancer.RoundRobin{}, opts, old)
	newEp := sluice.Endpoint{Addr: "10.1.1.1:8080"}
	b.Update(append(endpoints(4), newEp))

	share := func() float64 {
		n := 0
		for range 10_000 {
			if pick(t, b, sluice.PickInfo{}) == newEp.Addr {
				n++
			}
		}
		return float64(n) / 10_000
	}
	// Full share is 20%. At the start the new endpoint gets the 10% minimum of it; halfway,
	// half; after the window, all.
	assert.InDelta(t, 0.025, share(), 0.02, "a new endpoint should start near the minimum share")
	clock.Advance(5 * time.Second)
	assert.InDelta(t, 0.11, share(), 0.03, "halfway through the window it should get about half its share")
	clock.Advance(6 * time.Second)
	assert.InDelta(t, 0.20, share(), 0.01, "after the window it should get its full share")

	t.Run("recovered endpoint ramps again", func(t *testing.T) {
		eps := append(endpoints(4), newEp)
		eps[4].State = sluice.Unhealthy
		b.Update(eps)
		eps[4].State = sluice.Ready
		b.Update(eps)
		assert.Less(t, share(), 0.06, "an endpoint back from Unhealthy should ramp up again")
	})
}

// TestSlowStartMaglev checks that with bounded loads a new endpoint's bound follows the ramp:
// its keys beyond that spill to their next endpoint until the window is over.
func TestSlowStartMaglev(t *testing.T) {
	clock := newClock()
	opts := balancer.Options{Now: clock.Now, SlowStart: 10 * time.Second}
	b := newBalancer(t, balancer.Maglev{Key: balancer.HeaderKey("X-User"), Epsilon: 0.25}, opts, endpoints(4))
	newEp := sluice.Endpoint{Addr: "10.1.1.1:8080"}
	b.Update(append(endpoints(4), newEp))

	const held = 1000
	// load holds one request in flight per key and returns how many went to the new endpoint.
	load := func() int {
		var res []sluice.PickResult
		n := 0
		for i := range held {
			r, err := b.Pick(sluice.PickInfo{Request: userRequest("user-" + strconv.Itoa(i))})
			require.NoError(t, err)
			if r.Endpoint.Addr == newEp.Addr {
				n++
			}
			res = append(res, r)
		}
		for _, r := range res {
			r.Done(sluice.Outcome{Status: 200})
		}
		return n
	}
	// Its full bound is ⌈1.25 × 1000/5⌉ = 250; at the start of the window, a tenth of it.
	assert.LessOrEqual(t, load(), 26, "a new endpoint should start at a tenth of its bound")
	clock.Advance(5 * time.Second)
	assert.LessOrEqual(t, load(), 126, "halfway through the window it should hold at most half its bound")
	clock.Advance(6 * time.Second)
	assert.Greater(t, load(), 150, "after the window it should take about its 200 keys")
}

func TestZonePreference(t *testing.T) {
	eps := endpoints(6)
	for i := range eps {
		eps[i].Zone = []string{"a", "b", "c"}[i%3]
	}
	picks := func(b *balancer.Balancer) map[string]bool {
		seen := map[string]bool{}
		for range 200 {
			seen[pick(t, b, sluice.PickInfo{})] = true
		}
		return seen
	}
	t.Run("own zone", func(t *testing.T) {
		b := newBalancer(t, balancer.LeastRequest{}, balancer.Options{Zone: "b"}, eps)
		assert.Equal(t, map[string]bool{eps[1].Addr: true, eps[4].Addr: true}, picks(b), "only zone b endpoints")
	})
	t.Run("hints win over zones", func(t *testing.T) {
		h := append([]sluice.Endpoint(nil), eps...)
		for i := range h {
			h[i].ForZones = h[i].Zone
		}
		h[0].ForZones = "a,b"
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b"}, h)
		assert.Equal(t, map[string]bool{eps[0].Addr: true, eps[1].Addr: true, eps[4].Addr: true}, picks(b), "endpoints hinted for zone b")
	})
	t.Run("spill over when local zone is degraded", func(t *testing.T) {
		d := append([]sluice.Endpoint(nil), eps...)
		d[1].State = sluice.Unhealthy
		d[4].State = sluice.Unhealthy
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b"}, d)
		assert.Len(t, picks(b), 4, "every healthy endpoint in other zones")
	})
	t.Run("terminating endpoints do not degrade the local zone", func(t *testing.T) {
		// Zone b: one Ready, one Unhealthy and three Terminating endpoints. Only Ready and
		// Unhealthy ones are weighed, 1 of 2, so the zone keeps its traffic.
		d := append([]sluice.Endpoint(nil), eps...)
		d[4].State = sluice.Unhealthy
		for i := range 3 {
			d = append(d, sluice.Endpoint{Addr: fmt.Sprintf("10.9.0.%d:8080", i), Zone: "b", State: sluice.Terminating})
		}
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b"}, d)
		assert.Equal(t, map[string]bool{eps[1].Addr: true}, picks(b), "only zone b's Ready endpoint")

		d[7].State = sluice.Unhealthy // now 1 Ready of 3: degraded
		b.Update(d)
		assert.Equal(t, map[string]bool{eps[0].Addr: true, eps[1].Addr: true, eps[2].Addr: true, eps[3].Addr: true, eps[5].Addr: true},
			picks(b), "a zone with too few Ready endpoints spills to every Ready endpoint")
	})
	t.Run("spill over when the local zone is busy", func(t *testing.T) {
		// Zone b has two of six endpoints. Hold 120 requests in flight: once a local endpoint
		// has more than 2 × (n+1) in flight, n being a remote endpoint's count, tries go to
		// every zone. The steady state is local ≈ 2 × remote + 2 per endpoint: about 31 on
		// each local endpoint and 14 on each remote one.
		for _, tc := range []struct {
			name   string
			factor float64
			min    float64 // bounds on the local share of the 120
			max    float64
		}{
			{"default factor", 0, 0.40, 0.70},
			{"factor 5", 5, 0.65, 0.90},
			{"load-based spill off", -1, 1, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := newBalancer(t, balancer.LeastRequest{}, balancer.Options{Zone: "b", ZoneSpillFactor: tc.factor, Seed: 5}, eps)
				load := map[string]int{}
				var held []sluice.PickResult
				for range 120 {
					res, err := b.Pick(sluice.PickInfo{})
					require.NoError(t, err)
					load[res.Endpoint.Zone]++
					held = append(held, res)
				}
				share := float64(load["b"]) / 120
				assert.GreaterOrEqual(t, share, tc.min, "local share of held requests: %v", load)
				assert.LessOrEqual(t, share, tc.max, "local share of held requests: %v", load)
				if tc.factor >= 0 {
					assert.Greater(t, float64(load["b"])/2, float64(load["a"]+load["c"])/4,
						"local endpoints should still carry more than remote ones: %v", load)
				}
				for _, r := range held {
					r.Done(sluice.Outcome{Status: 200, Latency: time.Millisecond})
				}
				assert.Equal(t, map[string]bool{eps[1].Addr: true, eps[4].Addr: true}, picks(b),
					"once the load is gone, tries should stay in zone b again")
			})
		}
	})
	t.Run("retry leaves the zone when every local endpoint was tried", func(t *testing.T) {
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b"}, eps)
		for range 50 {
			got := pick(t, b, sluice.PickInfo{Tried: []string{eps[1].Addr, eps[4].Addr}})
			assert.NotContains(t, []string{eps[1].Addr, eps[4].Addr}, got, "a retry should go to another zone")
		}
	})
	t.Run("sticky session kept in another zone", func(t *testing.T) {
		b := newBalancer(t, balancer.Sticky{}, balancer.Options{Zone: "b"}, eps)
		res, err := b.Pick(sluice.PickInfo{Tried: []string{eps[1].Addr, eps[4].Addr}})
		require.NoError(t, err)
		res.Done(sluice.Outcome{Status: 200})
		require.NotEqual(t, "b", res.Endpoint.Zone, "the first try was made to spill over")
		require.NotNil(t, res.Cookie)
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(res.Cookie)
		assert.Equal(t, res.Endpoint.Addr, pick(t, b, sluice.PickInfo{Request: r}),
			"a session pinned to another zone should stay there")
	})
	t.Run("unknown zone uses all", func(t *testing.T) {
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "z"}, eps)
		assert.Len(t, picks(b), 6)
	})
}

func TestNodePreference(t *testing.T) {
	eps := hintedEndpoints(9) // zone b: 1, 4, 7; node-1: 1
	set := func(idx ...int) map[string]bool {
		m := map[string]bool{}
		for _, i := range idx {
			m[eps[i].Addr] = true
		}
		return m
	}
	picks := func(b *balancer.Balancer, tried ...string) map[string]bool {
		seen := map[string]bool{}
		for i := range 300 {
			seen[pick(t, b, sluice.PickInfo{Request: userRequest(strconv.Itoa(i)), Tried: tried})] = true
		}
		return seen
	}
	opts := balancer.Options{Zone: "b", Node: "node-1"}
	t.Run("node hints win over zone hints", func(t *testing.T) {
		for _, tc := range allPolicies() {
			t.Run(tc.name, func(t *testing.T) {
				b := newBalancer(t, tc.p, opts, eps)
				assert.Equal(t, set(1), picks(b), "only the endpoint hinted for node-1")
			})
		}
	})
	t.Run("no Ready endpoint for the node falls back to the zone", func(t *testing.T) {
		d := append([]sluice.Endpoint(nil), eps...)
		d[1].State = sluice.Unhealthy
		b := newBalancer(t, balancer.RoundRobin{}, opts, d)
		assert.Equal(t, set(4, 7), picks(b), "zone b's Ready endpoints")
	})
	t.Run("no endpoint hinted for the node falls back to the zone", func(t *testing.T) {
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b", Node: "node-99"}, eps)
		assert.Equal(t, set(1, 4, 7), picks(b), "zone b's endpoints")
	})
	t.Run("without a zone the fallback is every endpoint", func(t *testing.T) {
		d := append([]sluice.Endpoint(nil), eps...)
		d[1].State = sluice.Unhealthy
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Node: "node-1"}, d)
		assert.Equal(t, set(0, 2, 3, 4, 5, 6, 7, 8), picks(b), "every Ready endpoint")
	})
	t.Run("hints are usable only when every Ready endpoint has them", func(t *testing.T) {
		d := append([]sluice.Endpoint(nil), eps...)
		d[5].ForNodes = ""
		b := newBalancer(t, balancer.RoundRobin{}, opts, d)
		assert.Equal(t, set(1, 4, 7), picks(b), "a Ready endpoint without node hints: the zone rule")
		d[5].State = sluice.Unhealthy
		b.Update(d)
		assert.Equal(t, set(1), picks(b), "an Unhealthy endpoint without node hints does not count")
	})
	t.Run("node endpoints are not found by Endpoint.Node alone", func(t *testing.T) {
		d := append([]sluice.Endpoint(nil), eps...)
		for i := range d {
			d[i].ForNodes = ""
		}
		b := newBalancer(t, balancer.RoundRobin{}, opts, d)
		assert.Equal(t, set(1, 4, 7), picks(b), "without node hints, the zone rule")
	})
	t.Run("a degraded node spills to the zone", func(t *testing.T) {
		// node-1 gets two more endpoints: one Ready of three Ready and Unhealthy is degraded;
		// once the third is Terminating instead, one of two is not.
		d := append([]sluice.Endpoint(nil), eps...)
		for i := range 2 {
			d = append(d, sluice.Endpoint{Addr: fmt.Sprintf("10.9.0.%d:8080", i), Zone: "b", Node: "node-1",
				ForZones: "b", ForNodes: "node-1", State: sluice.Unhealthy})
		}
		b := newBalancer(t, balancer.RoundRobin{}, opts, d)
		assert.Equal(t, set(1, 4, 7), picks(b), "zone b's Ready endpoints")
		d[10].State = sluice.Terminating
		b.Update(d)
		assert.Equal(t, set(1), picks(b), "a Terminating endpoint on the node counts neither way")
	})
	t.Run("a retry leaves the node for the zone, then every zone", func(t *testing.T) {
		b := newBalancer(t, balancer.RoundRobin{}, opts, eps)
		assert.Equal(t, set(4, 7), picks(b, eps[1].Addr), "the zone's other endpoints")
		assert.Equal(t, set(0, 2, 3, 5, 6, 8), picks(b, eps[1].Addr, eps[4].Addr, eps[7].Addr), "the other zones")
	})
	t.Run("a zone all on this node is skipped", func(t *testing.T) {
		d := append([]sluice.Endpoint(nil), eps...)
		d[4].ForNodes, d[7].ForNodes = "node-1", "node-1"
		b := newBalancer(t, balancer.RoundRobin{}, opts, d)
		assert.Equal(t, set(1, 4, 7), picks(b), "the node's endpoints")
		assert.Equal(t, set(0, 2, 3, 5, 6, 8), picks(b, eps[1].Addr, eps[4].Addr, eps[7].Addr),
			"a retry goes straight to every endpoint")
	})
	t.Run("a busy node spills to the zone first", func(t *testing.T) {
		// Hold 60 requests. The node's endpoint holds about 2 × (n+1), n being a zone
		// endpoint's load, which holds about 2 × (m+1), m being a remote one's: roughly
		// 20, 9 and 4.
		for _, tc := range []struct {
			name   string
			factor float64
		}{{"default factor", 0}, {"load-based spill off", -1}} {
			t.Run(tc.name, func(t *testing.T) {
				o := opts
				o.ZoneSpillFactor, o.Seed = tc.factor, 7
				b := newBalancer(t, balancer.LeastRequest{}, o, eps)
				load := map[string]float64{}
				var held []sluice.PickResult
				for range 60 {
					res, err := b.Pick(sluice.PickInfo{})
					require.NoError(t, err)
					switch {
					case res.Endpoint.Node == "node-1":
						load["node"]++
					case res.Endpoint.Zone == "b":
						load["zone"] += 1.0 / 2
					default:
						load["remote"] += 1.0 / 6
					}
					held = append(held, res)
				}
				if tc.factor < 0 {
					assert.Equal(t, map[string]float64{"node": 60}, load, "without load-based spill, all on the node")
				} else {
					assert.Greater(t, load["node"], load["zone"], "per endpoint, the node's should carry the most: %v", load)
					assert.Greater(t, load["zone"], load["remote"], "per endpoint, the zone's should carry more than others: %v", load)
					assert.Greater(t, load["remote"], 0.0, "the zone should spill too: %v", load)
				}
				for _, r := range held {
					r.Done(sluice.Outcome{Status: 200, Latency: time.Millisecond})
				}
				assert.Equal(t, set(1), picks(b), "once the load is gone, tries should stay on the node")
			})
		}
	})
	t.Run("sticky session kept off the node", func(t *testing.T) {
		b := newBalancer(t, balancer.Sticky{}, opts, eps)
		res, err := b.Pick(sluice.PickInfo{Tried: []string{eps[1].Addr, eps[4].Addr, eps[7].Addr}})
		require.NoError(t, err)
		res.Done(sluice.Outcome{Status: 200})
		require.NotEqual(t, "b", res.Endpoint.Zone, "the first try was made to spill over twice")
		require.NotNil(t, res.Cookie)
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(res.Cookie)
		assert.Equal(t, res.Endpoint.Addr, pick(t, b, sluice.PickInfo{Request: r}),
			"a session pinned to another zone should stay there")
	})
}

// TestMaglevDisruption checks that removing one of N endpoints moves at most 1/N + 1% of keys.
func TestMaglevDisruption(t *testing.T) {
	const keys = 100_000
	for _, n := range []int{5, 10, 50, 200} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			eps := endpoints(n)
			b := newBalancer(t, balancer.Maglev{Key: balancer.HeaderKey("X-User")}, balancer.Options{}, eps)
			reqs := make([]*http.Request, keys)
			before := make([]string, keys)
			for i := range reqs {
				reqs[i] = userRequest("user-" + strconv.Itoa(i))
				before[i] = pick(t, b, sluice.PickInfo{Request: reqs[i]})
			}
			gone := eps[n/2].Addr
			b.Update(append(eps[:n/2:n/2], eps[n/2+1:]...))
			moved := 0
			for i, r := range reqs {
				after := pick(t, b, sluice.PickInfo{Request: r})
				require.NotEqual(t, gone, after)
				if after != before[i] {
					moved++
				}
			}
			limit := 1/float64(n) + 0.01
			assert.LessOrEqual(t, float64(moved)/keys, limit, "keys moved when 1 of %d endpoints left", n)
		})
	}
}

// TestMaglevBoundedLoads holds requests in flight for a skewed key population and checks
// that no endpoint carries more than ⌈(1+ε) × average⌉.
func TestMaglevBoundedLoads(t *testing.T) {
	const n, inflight = 10, 1000
	for _, eps := range []float64{0.1, 0.25, 1} {
		t.Run(fmt.Sprint(eps), func(t *testing.T) {
			b := newBalancer(t, balancer.Maglev{Key: balancer.HeaderKey("X-User"), Epsilon: eps}, balancer.Options{}, endpoints(n))
			load := map[string]int{}
			var held []sluice.PickResult
			for i := range inflight {
				user := "hot" // half the traffic is one key
				if i%2 == 1 {
					user = strconv.Itoa(i % 17)
				}
				res, err := b.Pick(sluice.PickInfo{Request: userRequest(user)})
				require.NoError(t, err)
				load[res.Endpoint.Addr]++
				held = append(held, res)
			}
			limit := math.Ceil((1 + eps) * inflight / n)
			for addr, l := range load {
				assert.LessOrEqual(t, float64(l), limit, "endpoint %s load with ε=%v", addr, eps)
			}
			for _, r := range held {
				r.Done(sluice.Outcome{Status: 200})
			}
			// With everything finished, the hot key goes home again.
			a, c := pick(t, b, sluice.PickInfo{Request: userRequest("hot")}), pick(t, b, sluice.PickInfo{Request: userRequest("hot")})
			assert.Equal(t, a, c, "an idle cluster should keep key affinity")
		})
	}
}

func TestMaglevKeys(t *testing.T) {
	eps := endpoints(50)
	trusted, err := sluice.ParseTrustedProxies("192.0.2.0/24")
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		key  balancer.HashKey
		set  func(r *http.Request, v string)
	}{
		{"header", balancer.HeaderKey("x-user"), func(r *http.Request, v string) { r.Header.Set("X-User", v) }},
		{"cookie", balancer.CookieKey("sid"), func(r *http.Request, v string) { r.Header.Set("Cookie", "a=1; sid="+v+"; b=2") }},
		{"query", balancer.QueryKey("u"), func(r *http.Request, v string) { r.URL.RawQuery = "x=1&u=" + v }},
		{"path", balancer.PathKey(), func(r *http.Request, v string) { r.URL.Path = "/items/" + v }},
		{"client IP via trusted proxy", balancer.ClientIPKey(), func(r *http.Request, v string) {
			r.RemoteAddr = "192.0.2.1:5555"
			r.Header.Set("X-Forwarded-For", "203.0.113."+v)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, balancer.Maglev{Key: tc.key}, balancer.Options{TrustedProxies: trusted}, eps)
			distinct := map[string]bool{}
			for i := range 40 {
				v := strconv.Itoa(i)
				r1 := httptest.NewRequest(http.MethodGet, "http://svc/", nil)
				tc.set(r1, v)
				r2 := httptest.NewRequest(http.MethodGet, "http://svc/", nil)
				tc.set(r2, v)
				a := pick(t, b, sluice.PickInfo{Request: r1})
				assert.Equal(t, a, pick(t, b, sluice.PickInfo{Request: r2}), "one key should map to one endpoint")
				distinct[a] = true
			}
			assert.Greater(t, len(distinct), 10, "different keys should spread over endpoints")
		})
	}
	t.Run("missing key spreads at random", func(t *testing.T) {
		b := newBalancer(t, balancer.Maglev{Key: balancer.HeaderKey("X-User")}, balancer.Options{}, eps)
		distinct := map[string]bool{}
		for range 100 {
			distinct[pick(t, b, sluice.PickInfo{Request: httptest.NewRequest(http.MethodGet, "/", nil)})] = true
		}
		assert.Greater(t, len(distinct), 10)
	})
}

func TestSticky(t *testing.T) {
	eps := endpoints(5)
	b := newBalancer(t, balancer.Sticky{Cookie: "aff", Secret: "s3cret", MaxAge: time.Hour}, balancer.Options{}, eps)

	res, err := b.Pick(sluice.PickInfo{Request: httptest.NewRequest(http.MethodGet, "/", nil)})
	require.NoError(t, err)
	res.Done(sluice.Outcome{Status: 200})
	c := res.Cookie
	require.NotNil(t, c, "a client without the cookie should be given one")
	assert.Equal(t, "aff", c.Name)
	assert.True(t, c.HttpOnly)
	assert.Equal(t, 3600, c.MaxAge)
	host := strings.Split(res.Endpoint.Addr, ":")[0]
	assert.NotContains(t, c.Value, host, "the cookie must not reveal the address")
	assert.NotContains(t, c.Value, strings.ReplaceAll(host, ".", ""), "the cookie must not reveal the address")

	withCookie := func(v string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: "aff", Value: v})
		return r
	}
	for range 50 {
		r, err := b.Pick(sluice.PickInfo{Request: withCookie(c.Value)})
		require.NoError(t, err)
		r.Done(sluice.Outcome{Status: 200})
		assert.Equal(t, res.Endpoint.Addr, r.Endpoint.Addr, "the cookie should pin the endpoint")
		assert.Nil(t, r.Cookie, "a valid cookie need not be set again")
	}

	t.Run("retry leaves the pinned endpoint and re-pins", func(t *testing.T) {
		r, err := b.Pick(sluice.PickInfo{Request: withCookie(c.Value), Tried: []string{res.Endpoint.Addr}})
		require.NoError(t, err)
		r.Done(sluice.Outcome{})
		assert.NotEqual(t, res.Endpoint.Addr, r.Endpoint.Addr)
		require.NotNil(t, r.Cookie)
		assert.NotEqual(t, c.Value, r.Cookie.Value)
	})
	t.Run("unhealthy endpoint is left", func(t *testing.T) {
		eps2 := endpoints(5)
		for i := range eps2 {
			if eps2[i].Addr == res.Endpoint.Addr {
				eps2[i].State = sluice.Unhealthy
			}
		}
		b.Update(eps2)
		r, err := b.Pick(sluice.PickInfo{Request: withCookie(c.Value)})
		require.NoError(t, err)
		r.Done(sluice.Outcome{})
		assert.NotEqual(t, res.Endpoint.Addr, r.Endpoint.Addr, "a pinned endpoint that turned unhealthy must be left")
		assert.NotNil(t, r.Cookie, "and the client re-pinned")
		b.Update(eps)
	})
	t.Run("garbage cookie falls back", func(t *testing.T) {
		for _, v := range []string{"", "zz", "10.0.0.1:8080", strings.Repeat("f", 16), strings.Repeat("A", 16)} {
			r, err := b.Pick(sluice.PickInfo{Request: withCookie(v)})
			require.NoError(t, err, v)
			r.Done(sluice.Outcome{})
			assert.NotNil(t, r.Cookie, "cookie %q names no endpoint: a new one should be set", v)
		}
	})
	t.Run("replicas with one secret agree", func(t *testing.T) {
		b2 := newBalancer(t, balancer.Sticky{Cookie: "aff", Secret: "s3cret"}, balancer.Options{}, eps)
		r, err := b2.Pick(sluice.PickInfo{Request: withCookie(c.Value)})
		require.NoError(t, err)
		r.Done(sluice.Outcome{})
		assert.Equal(t, res.Endpoint.Addr, r.Endpoint.Addr)
	})
}

// TestConcurrentPickAndUpdate runs picks, finishes and updates at once; under -race it checks
// that the snapshot swap is safe.
func TestConcurrentPickAndUpdate(t *testing.T) {
	for _, tc := range allPolicies() {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			if m, ok := p.(balancer.Maglev); ok {
				// A small table keeps 200 rebuilds quick under -race on a busy machine; the
				// default size is covered by the other Maglev tests.
				m.TableSize = 1009
				p = m
			}
			b := newBalancer(t, p, balancer.Options{SlowStart: time.Second, Zone: "a"}, endpoints(20))
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 4 {
				wg.Go(func() {
					r := userRequest(strconv.Itoa(g))
					for {
						select {
						case <-stop:
							return
						default:
						}
						res, err := b.Pick(sluice.PickInfo{Request: r})
						if errors.Is(err, sluice.ErrNoEndpoint) {
							continue
						}
						if !assert.NoError(t, err) {
							return
						}
						res.Done(sluice.Outcome{Status: 200, Latency: time.Millisecond})
					}
				})
			}
			for i := range 200 {
				eps := endpoints(10 + i%15)
				for j := range eps {
					eps[j].Zone = string(rune('a' + j%2))
					eps[j].Weight = uint32(1 + (i+j)%3)
				}
				b.Update(eps)
			}
			close(stop)
			wg.Wait()
			// The last set had endpoints in zone a or b: picks must come from it. The request
			// comes from a client of its own: one that ClientIPAffinity pinned while a busy
			// zone spilled over would rightly stay in zone b.
			r := userRequest("x")
			r.RemoteAddr = "198.51.100.99:1"
			res, err := b.Pick(sluice.PickInfo{Request: r})
			require.NoError(t, err)
			res.Done(sluice.Outcome{})
			assert.Equal(t, "a", res.Endpoint.Zone, "zone preference should hold after concurrent updates")
		})
	}
}

// An L4 proxy has no Request, only the client's address: Maglev's client-IP key hashes that,
// so every connection of one client lands on one endpoint whatever its source port, an IPv4
// client hashes the same whether its address arrives mapped or not, and clients spread.
func TestMaglevClientAddrWithoutRequest(t *testing.T) {
	b := newBalancer(t, balancer.Maglev{}, balancer.Options{}, endpoints(8))
	seen := map[string]int{}
	for i := range 256 {
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 4), byte(i)})
		first := pick(t, b, sluice.PickInfo{Client: netip.AddrPortFrom(a, 40000)})
		for port := uint16(1); port < 5; port++ {
			require.Equal(t, first, pick(t, b, sluice.PickInfo{Client: netip.AddrPortFrom(a, port)}))
		}
		mapped := netip.AddrFrom16(a.As16())
		require.Equal(t, first, pick(t, b, sluice.PickInfo{Client: netip.AddrPortFrom(mapped, 9)}))
		seen[first]++
	}
	require.Len(t, seen, 8, "256 clients should reach all 8 endpoints")
}
