package balancer_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

// events collects what the hooks report.
type events struct {
	mu      sync.Mutex
	picks   []balancer.PickEvent
	spills  []balancer.SpillEvent
	panics  []balancer.PanicEvent
	updates []balancer.UpdateEvent
}

func (ev *events) hooks() balancer.Hooks {
	return balancer.Hooks{
		Pick: func(e balancer.PickEvent) { ev.mu.Lock(); ev.picks = append(ev.picks, e); ev.mu.Unlock() },
		Spill: func(e balancer.SpillEvent) {
			ev.mu.Lock()
			ev.spills = append(ev.spills, e)
			ev.mu.Unlock()
		},
		Panic: func(e balancer.PanicEvent) {
			ev.mu.Lock()
			ev.panics = append(ev.panics, e)
			ev.mu.Unlock()
		},
		Update: func(e balancer.UpdateEvent) {
			ev.mu.Lock()
			ev.updates = append(ev.updates, e)
			ev.mu.Unlock()
		},
	}
}

// Hooks.Pick reports every pick of every policy, with the endpoint Pick returned and whether
// it was a retry.
func TestPickHook(t *testing.T) {
	for _, tc := range allPolicies() {
		t.Run(tc.name, func(t *testing.T) {
			var ev events
			b := newBalancer(t, tc.p, balancer.Options{Hooks: ev.hooks()}, endpoints(5))
			var got []string
			for i := range 20 {
				info := sluice.PickInfo{Request: userRequest(fmt.Sprint("user-", i%3))}
				if i%2 == 1 {
					info.Tried = []string{got[len(got)-1]}
				}
				got = append(got, pick(t, b, info))
			}
			require.Len(t, ev.picks, 20, "one event per pick")
			for i, e := range ev.picks {
				assert.Equal(t, got[i], e.Endpoint.Addr, "pick %d: the endpoint Pick returned", i)
				assert.Equal(t, i%2 == 1, e.Retry, "pick %d: a retry when Tried is set", i)
				assert.Equal(t, balancer.NoSpill, e.Spill, "pick %d: no zones, no spill", i)
			}
			assert.Empty(t, ev.spills)
		})
	}
}

// Hooks.Spill reports every pick that leaves the local node or zone, with the tier it left
// and why; PickEvent.Spill says the same.
func TestSpillHook(t *testing.T) {
	zoned := endpoints(6) // zone b: 1 and 4
	for i := range zoned {
		zoned[i].Zone = []string{"a", "b", "c"}[i%3]
	}
	inZone := func(addr, zone string) bool {
		for _, ep := range zoned {
			if ep.Addr == addr {
				return ep.Zone == zone
			}
		}
		return false
	}

	t.Run("degraded zone", func(t *testing.T) {
		d := append([]sluice.Endpoint(nil), zoned...)
		d[1].State, d[4].State = sluice.Unhealthy, sluice.Unhealthy
		var ev events
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b", Hooks: ev.hooks()}, d)
		for range 10 {
			pick(t, b, sluice.PickInfo{})
		}
		require.Len(t, ev.spills, 10, "every pick leaves a degraded zone")
		for i, e := range ev.spills {
			assert.Equal(t, balancer.TierZone, e.From, "spill %d", i)
			assert.Equal(t, balancer.SpillDegraded, e.Reason, "spill %d", i)
			assert.False(t, inZone(e.Endpoint.Addr, "b"), "spill %d went to %s, outside zone b", i, e.Endpoint.Addr)
			assert.Equal(t, balancer.SpillDegraded, ev.picks[i].Spill, "pick %d", i)
		}
	})

	t.Run("retry", func(t *testing.T) {
		var ev events
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b", Hooks: ev.hooks()}, zoned)
		pick(t, b, sluice.PickInfo{})
		require.Len(t, ev.picks, 1)
		assert.Equal(t, balancer.NoSpill, ev.picks[0].Spill, "a first try stays in an idle zone")
		assert.Empty(t, ev.spills)

		addr := pick(t, b, sluice.PickInfo{Tried: []string{zoned[1].Addr, zoned[4].Addr}})
		assert.False(t, inZone(addr, "b"), "a retry that tried zone b leaves it")
		require.Len(t, ev.spills, 1)
		assert.Equal(t, balancer.SpillEvent{From: balancer.TierZone, Reason: balancer.SpillRetry, Endpoint: ev.picks[1].Endpoint, Retry: true}, ev.spills[0])
		assert.Equal(t, balancer.SpillRetry, ev.picks[1].Spill)
	})

	t.Run("busy", func(t *testing.T) {
		// With nothing in flight elsewhere, a local endpoint with more than 2 × (0 + 1) in
		// flight is busy: the seventh pick held open spills out of zone b.
		var ev events
		b := newBalancer(t, balancer.LeastRequest{}, balancer.Options{Zone: "b", Hooks: ev.hooks()}, zoned)
		for i := range 7 {
			res, err := b.Pick(sluice.PickInfo{})
			require.NoError(t, err)
			// The seventh pick spills: it goes where the policy sends it among every zone,
			// which is zone b again when both of least-request's two random candidates are
			// zone b's (one time in fifteen), so only the first six are pinned to zone b.
			if i < 6 {
				assert.True(t, inZone(res.Endpoint.Addr, "b"), "pick %d stays in zone b", i)
			}
		}
		require.Len(t, ev.spills, 1)
		assert.Equal(t, balancer.TierZone, ev.spills[0].From)
		assert.Equal(t, balancer.SpillBusy, ev.spills[0].Reason)
		assert.False(t, ev.spills[0].Retry)
		assert.Equal(t, balancer.SpillBusy, ev.picks[6].Spill)
	})

	t.Run("degraded node", func(t *testing.T) {
		// hintedEndpoints(9): endpoint i in zone a/b/c by i%3, hinted for node-i. Node-1's
		// only endpoint is Unhealthy, so picks leave the node for zone b (4 and 7).
		eps := hintedEndpoints(9)
		eps[1].State = sluice.Unhealthy
		var ev events
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b", Node: "node-1", Hooks: ev.hooks()}, eps)
		for range 4 {
			addr := pick(t, b, sluice.PickInfo{})
			assert.Contains(t, []string{eps[4].Addr, eps[7].Addr}, addr, "zone b's Ready endpoints")
		}
		require.Len(t, ev.spills, 4, "one spill per pick: from the node only")
		for _, e := range ev.spills {
			assert.Equal(t, balancer.TierNode, e.From)
			assert.Equal(t, balancer.SpillDegraded, e.Reason)
		}
		assert.True(t, ev.updates[0].NodeDegraded)
		assert.False(t, ev.updates[0].ZoneDegraded)
	})

	t.Run("node and zone", func(t *testing.T) {
		// A retry that tried the node's endpoint and the zone's leaves both, in that order.
		eps := hintedEndpoints(9)
		var ev events
		b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: "b", Node: "node-1", Hooks: ev.hooks()}, eps)
		addr := pick(t, b, sluice.PickInfo{Tried: []string{eps[1].Addr, eps[4].Addr, eps[7].Addr}})
		require.Len(t, ev.spills, 2)
		assert.Equal(t, balancer.TierNode, ev.spills[0].From)
		assert.Equal(t, balancer.TierZone, ev.spills[1].From)
		for _, e := range ev.spills {
			assert.Equal(t, balancer.SpillRetry, e.Reason)
			assert.Equal(t, addr, e.Endpoint.Addr, "both report where the pick went")
		}
	})
}

// Hooks.Panic reports panic mode starting and ending, once each; Hooks.Update reports every
// Update's counts.
func TestPanicAndUpdateHooks(t *testing.T) {
	var ev events
	b, err := balancer.New(balancer.RoundRobin{}, balancer.Options{Hooks: ev.hooks()})
	require.NoError(t, err)
	eps := endpoints(5)
	eps[4].State = sluice.Terminating
	b.Update(eps)
	assert.Empty(t, ev.panics, "a healthy set is not in panic")
	require.Len(t, ev.updates, 1)
	u := ev.updates[0]
	assert.Equal(t, [4]int{4, 0, 1, 4}, [4]int{u.Ready, u.Unhealthy, u.Terminating, u.Pickable}, "ready, unhealthy, terminating, pickable")
	assert.False(t, u.Panic)
	assert.Positive(t, u.Duration, "the update is timed")

	for i := range 3 {
		eps[i].State = sluice.Unhealthy
	}
	b.Update(eps)
	b.Update(eps)
	require.Len(t, ev.panics, 1, "panic mode starts once")
	assert.Equal(t, balancer.PanicEvent{Panic: true, Ready: 1, Unhealthy: 3}, ev.panics[0])
	u = ev.updates[2]
	assert.True(t, u.Panic)
	assert.Equal(t, 4, u.Pickable, "in panic, Ready and Unhealthy endpoints are picked")

	eps[0].State = sluice.Ready
	b.Update(eps)
	require.Len(t, ev.panics, 2, "and ends once")
	assert.Equal(t, balancer.PanicEvent{Panic: false, Ready: 2, Unhealthy: 2}, ev.panics[1])
	assert.Equal(t, 2, ev.updates[3].Pickable)
	assert.Len(t, ev.updates, 4, "one Update event per Update")
}

// JoinHooks calls every set's hooks in order, leaves a hook nil when no set has it, and
// allocates nothing per call.
func TestJoinHooks(t *testing.T) {
	var order []string
	h := balancer.JoinHooks(
		balancer.Hooks{Panic: func(balancer.PanicEvent) { order = append(order, "first") }},
		balancer.Hooks{},
		balancer.Hooks{Panic: func(balancer.PanicEvent) { order = append(order, "second") }},
	)
	assert.Nil(t, h.Pick)
	assert.Nil(t, h.Spill)
	assert.Nil(t, h.Update)
	require.NotNil(t, h.Panic)
	h.Panic(balancer.PanicEvent{})
	assert.Equal(t, []string{"first", "second"}, order)

	var n atomic.Int64
	count := balancer.Hooks{Pick: func(balancer.PickEvent) { n.Add(1) }}
	b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Hooks: balancer.JoinHooks(count, count)}, endpoints(3))
	allocs := testing.AllocsPerRun(100, func() {
		res, err := b.Pick(sluice.PickInfo{})
		if err != nil {
			panic(err)
		}
		res.Done(sluice.Outcome{})
	})
	assert.Zero(t, allocs, "a pick with joined hooks allocates nothing")
	assert.Equal(t, int64(2*101), n.Load(), "both hooks see every pick (AllocsPerRun warms up once)")
}

// Picks with hooks set allocate nothing either, for every policy and with spill-over.
func TestHookedPickDoesNotAllocate(t *testing.T) {
	for _, tc := range allPolicies() {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, tc.p, balancer.Options{Hooks: noopHooks}, endpoints(100))
			assertPickDoesNotAllocate(t, b)
			b = newBalancer(t, tc.p, balancer.Options{Zone: "b", Node: "node-1", Hooks: noopHooks}, hintedEndpoints(100))
			assertPickDoesNotAllocate(t, b)
		})
	}
}

// Stats reports every endpoint with its state, weight, in-flight count, PeakEWMA's estimate
// and slow-start share, and the set's panic and degraded flags.
func TestStats(t *testing.T) {
	clock := newClock()
	b, err := balancer.New(balancer.PeakEWMA{}, balancer.Options{Now: clock.Now, SlowStart: 10 * time.Second, Zone: "a"})
	require.NoError(t, err)
	eps := endpoints(3)
	for i := range eps {
		eps[i].Zone = "a"
	}
	eps[1].Weight = 5
	b.Update(eps)

	res, err := b.Pick(sluice.PickInfo{Tried: []string{eps[1].Addr, eps[2].Addr}})
	require.NoError(t, err)
	require.Equal(t, eps[0].Addr, res.Endpoint.Addr)
	res.Done(sluice.Outcome{Status: 200, Latency: 40 * time.Millisecond})
	held, err := b.Pick(sluice.PickInfo{Tried: []string{eps[1].Addr, eps[2].Addr}})
	require.NoError(t, err)

	added := append(eps, sluice.Endpoint{Addr: "10.9.9.9:8080", Zone: "a", State: sluice.Ready},
		sluice.Endpoint{Addr: "10.9.9.8:8080", Zone: "a", State: sluice.Unhealthy})
	b.Update(added)
	clock.Advance(2500 * time.Millisecond) // a quarter of the slow-start window

	st := b.Stats()
	assert.True(t, st.CountsInFlight, "PeakEWMA counts requests in flight")
	assert.False(t, st.Panic)
	assert.False(t, st.ZoneDegraded)
	require.Len(t, st.Endpoints, 5, "every endpoint of the last Update, in its order")
	for i, e := range st.Endpoints {
		assert.Equal(t, added[i], e.Endpoint, "endpoint %d as given to Update", i)
	}
	first, weighted, ramping, sick := st.Endpoints[0], st.Endpoints[1], st.Endpoints[3], st.Endpoints[4]
	assert.Equal(t, int64(1), first.InFlight, "one pick held")
	assert.Equal(t, 40*time.Millisecond, first.Latency, "the estimate of one 40ms sample")
	assert.Equal(t, 1.0, first.RampShare, "endpoints of the first Update do not ramp")
	assert.True(t, first.Pickable)
	assert.Equal(t, uint32(5), weighted.Endpoint.Weight)
	assert.Zero(t, weighted.InFlight)
	assert.Zero(t, weighted.Latency, "not measured yet")
	assert.InDelta(t, 0.25, ramping.RampShare, 1e-9, "a quarter through a linear ramp")
	assert.False(t, sick.Pickable, "an Unhealthy endpoint outside panic mode")

	held.Done(sluice.Outcome{Failure: sluice.Canceled})
	assert.Zero(t, b.Stats().Endpoints[0].InFlight, "Done gives the count back")

	for i := range added {
		added[i].State = sluice.Unhealthy
	}
	added[0].State = sluice.Ready
	b.Update(added)
	st = b.Stats()
	assert.True(t, st.Panic, "1 Ready of 5")
	assert.True(t, st.Endpoints[4].Pickable, "Unhealthy endpoints are picked in panic mode")

	rr := newBalancer(t, balancer.RoundRobin{}, balancer.Options{}, endpoints(2))
	st = rr.Stats()
	assert.False(t, st.CountsInFlight, "round robin counts nothing")
	assert.Zero(t, st.Endpoints[0].Latency)
}

// Stats runs alongside picks and updates without a race.
func TestStatsConcurrent(t *testing.T) {
	b := newBalancer(t, balancer.PeakEWMA{}, balancer.Options{}, endpoints(50))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				pick(t, b, sluice.PickInfo{})
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			b.Update(endpoints(40 + i%20))
		}
	})
	for range 200 {
		st := b.Stats()
		assert.GreaterOrEqual(t, len(st.Endpoints), 40)
	}
	close(stop)
	wg.Wait()
}
