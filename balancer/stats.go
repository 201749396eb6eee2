package balancer

import (
	"math"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Stats is what a Balancer knows at one moment, for gauges and admin pages: the value
// Balancer.Stats returns.
type Stats struct {
	// Endpoints holds every distinct endpoint of the last Update, in its order.
	Endpoints []EndpointStats
	// Panic says the set is in panic mode: Unhealthy endpoints take traffic too.
	Panic bool
	// NodeDegraded and ZoneDegraded say the local node's or zone's endpoints are too
	// degraded to keep their traffic, so that every pick spills over.
	NodeDegraded, ZoneDegraded bool
	// CountsInFlight says EndpointStats.InFlight is counted: the policy compares loads
	// (LeastRequest, PeakEWMA, bounded-load Maglev) or zone or node preference is on. Other
	// policies count nothing, so that their picks touch no shared counter.
	CountsInFlight bool
}

// EndpointStats is what a Balancer knows about one endpoint.
type EndpointStats struct {
	// Endpoint is the endpoint as last given to Update: address, zone, node, weight, state.
	Endpoint sluice.Endpoint
	// Pickable says picks may choose the endpoint: it is Ready, or Unhealthy in panic mode,
	// or Terminating when nothing is Ready.
	Pickable bool
	// InFlight counts the tries picked for the endpoint whose Done has not been called, when
	// Stats.CountsInFlight; zero otherwise.
	InFlight int64
	// Latency is PeakEWMA's latency estimate as of the endpoint's last sample; zero for the
	// other policies and before the first sample.
	Latency time.Duration
	// RampShare is the fraction of its full share of picks a slow-starting endpoint gets now,
	// in (0, 1]; 1 when it is not ramping (Options.SlowStart).
	RampShare float64
}

// Stats returns a copy of what the Balancer knows about its endpoints. It is safe for
// concurrent use and never delays Pick, which takes no lock: it waits only for an Update in
// progress, and reads the counters picks write with atomic loads. It allocates the copy, so
// call it for a scrape or a page, not per request.
func (b *Balancer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Stats{
		Endpoints:      make([]EndpointStats, len(b.members)),
		Panic:          b.panic,
		NodeDegraded:   b.degradedTiers&(1<<TierNode) != 0,
		ZoneDegraded:   b.degradedTiers&(1<<TierZone) != 0,
		CountsInFlight: b.countLoad,
	}
	ramps := b.opts.SlowStart > 0 && b.policy.ramps()
	var now int64
	if ramps {
		now = b.nanotime()
	}
	for i, m := range b.members {
		e := EndpointStats{
			Endpoint:  *m.ep,
			Pickable:  b.keepMask&stateBit(m.state) != 0,
			InFlight:  m.inflight.Load(),
			Latency:   time.Duration(math.Float64frombits(m.ewma.Load())),
			RampShare: 1,
		}
		if start := m.start.Load(); ramps && start != 0 && m.state == sluice.Ready {
			e.RampShare = b.rampShare(start, now)
		}
		st.Endpoints[i] = e
	}
	return st
}
