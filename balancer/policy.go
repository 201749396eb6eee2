package balancer

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Policy chooses how a Balancer spreads tries over endpoints. The policies are the config
// structs of this package (RoundRobin, Random, LeastRequest, PeakEWMA, Maglev, Sticky); their
// zero values are usable. The interface is closed: its methods are unexported because a
// policy is compiled into every snapshot by the Balancer.
type Policy interface {
	validate() error
	// configure sets the Balancer's per-policy switches once, in New.
	configure(b *Balancer)
	// ramps reports whether slow start applies.
	ramps() bool
	// build compiles the policy for a snapshot whose pool, weights and alias table are set.
	build(s *snapshot) picker
}

// RoundRobin takes endpoints in turn. It honours Endpoint.Weight with smooth interleaving in
// the manner of NGINX's weighted round robin: with weights 5, 1, 1 the order is like
// A A B A C A A, never A A A A A B C. The schedule is computed when the endpoint set changes,
// so Pick is one atomic increment. There is no separate WeightedRoundRobin: equal weights are
// the special case (and skip the schedule).
type RoundRobin struct{}

func (RoundRobin) validate() error     { return nil }
func (RoundRobin) configure(*Balancer) {}
func (RoundRobin) ramps() bool         { return true }
func (RoundRobin) build(s *snapshot) picker {
	rr := &rrPicker{}
	if s.weighted {
		rr.sched = schedule(s.pool)
	}
	if n := len(s.pool); n > 0 {
		// Start somewhere random so that proxies restarted together do not march in step.
		rr.next.Store(uint64(s.b.rng.intn(n)))
	}
	return rr
}

type rrPicker struct {
	_     [64]byte
	next  atomic.Uint64
	_     [56]byte
	sched []int32 // weighted: indexes into pool in smooth order; nil when weights are equal
}

func (*rrPicker) bounded() bool { return false }

func (rr *rrPicker) pick(s *snapshot, _ sluice.PickInfo) int {
	k := rr.next.Add(1) - 1
	if rr.sched == nil {
		return int(k % uint64(len(s.pool)))
	}
	return int(rr.sched[k%uint64(len(rr.sched))])
}

// maxSchedule caps the weighted round-robin schedule: weights whose sum (after dividing by
// their common divisor) exceeds it are scaled down, which keeps shares exact to within
// 1/maxSchedule.
const maxSchedule = 1 << 16

// smoothBudget bounds the work of the exact NGINX schedule (endpoints × schedule length).
const smoothBudget = 1 << 22

// schedule returns one period of smooth weighted round robin. Weights are first divided by
// their common divisor (and scaled down if their sum still exceeds maxSchedule). When the
// set is small enough, the period is NGINX's smooth weighted round robin, run once at build
// time: every step each endpoint's credit grows by its weight, the endpoint with the most
// credit is picked and pays the total weight back. For large weighted sets, where that costs
// too much, each endpoint's k-th turn is placed at its ideal position (k+½)·T/w by a counting
// sort in O(T + n): shares are as exact, interleaving is slightly less even.
func schedule(pool []entry) []int32 {
	g := uint64(0)
	var sum uint64
	for _, e := range pool {
		g = gcd(g, uint64(e.weight()))
		sum += uint64(e.weight())
	}
	w := make([]uint64, len(pool))
	var total uint64
	for i, e := range pool {
		w[i] = uint64(e.weight()) / g
		if sum/g > maxSchedule {
			w[i] = max(1, uint64(e.weight())*maxSchedule/sum)
		}
		total += w[i]
	}
	sched := make([]int32, total)
	if total*uint64(len(pool)) <= smoothBudget {
		credit := make([]int64, len(pool))
		for k := range sched {
			best := 0
			for i := range credit {
				credit[i] += int64(w[i])
				if credit[i] > credit[best] {
					best = i
				}
			}
			credit[best] -= int64(total)
			sched[k] = int32(best)
		}
		return sched
	}
	count := make([]int32, total+1)
	pos := func(i int, k uint64) uint64 { return (2*k + 1) * total / (2 * w[i]) }
	for i := range pool {
		for k := range w[i] {
			count[pos(i, k)+1]++
		}
	}
	for p := 1; p <= int(total); p++ {
		count[p] += count[p-1]
	}
	for i := range pool {
		for k := range w[i] {
			p := pos(i, k)
			sched[count[p]] = int32(i)
			count[p]++
		}
	}
	return sched
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Random picks an endpoint at random, in proportion to Endpoint.Weight (Vose's alias method
// when weights differ).
type Random struct{}

func (Random) validate() error        { return nil }
func (Random) configure(*Balancer)    {}
func (Random) ramps() bool            { return true }
func (Random) build(*snapshot) picker { return randomPicker{} }

type randomPicker struct{}

func (randomPicker) bounded() bool { return false }

func (randomPicker) pick(s *snapshot, _ sluice.PickInfo) int { return s.random() }

// LeastRequest draws two endpoints at random (in proportion to weight) and sends the try to
// the one with fewer requests in flight — the "power of two choices", which comes within a
// constant of the best possible balance without a scan. With unequal weights it compares
// in-flight counts scaled as Envoy's active-request bias does: endpoint i costs
// (inflight_i)^ActiveRequestBias / weight_i.
type LeastRequest struct {
	// ActiveRequestBias says how strongly in-flight requests outweigh configured weight.
	// Zero means 1, Envoy's default. For pure weighted random, use Random.
	ActiveRequestBias float64
}

func (p LeastRequest) validate() error {
	if p.ActiveRequestBias < 0 || math.IsNaN(p.ActiveRequestBias) || math.IsInf(p.ActiveRequestBias, 0) {
		return fmt.Errorf("balancer: LeastRequest.ActiveRequestBias must be ≥ 0, got %v", p.ActiveRequestBias)
	}
	return nil
}
func (LeastRequest) configure(b *Balancer) { b.countLoad = true }
func (LeastRequest) ramps() bool           { return true }
func (p LeastRequest) build(*snapshot) picker {
	bias := p.ActiveRequestBias
	if bias == 0 {
		bias = 1
	}
	return lrPicker{bias: bias}
}

type lrPicker struct{ bias float64 }

func (lrPicker) bounded() bool { return false }

func (p lrPicker) pick(s *snapshot, _ sluice.PickInfo) int {
	i, j := s.randomPair()
	ea, eb := &s.pool[i], &s.pool[j]
	// Reading the weights from the endpoints fetches both candidates' endpoints while their
	// counters are fetched, so the one Pick copies out of the winner is already in cache.
	wa, wb := uint64(ea.ep.EffectiveWeight()), uint64(eb.ep.EffectiveWeight())
	ai, bi := ea.st.inflight.Load(), eb.st.inflight.Load()
	r := i
	if p.bias == 1 {
		if uint64(bi)*wa < uint64(ai)*wb {
			r = j // a conditional move: which candidate wins is a coin toss to the branch predictor
		}
		return r
	}
	ca := math.Pow(float64(ai), p.bias) / float64(wa)
	cb := math.Pow(float64(bi), p.bias) / float64(wb)
	if cb < ca {
		r = j
	}
	return r
}

// PeakEWMA draws two endpoints at random and sends the try to the one with the lower cost,
// latency × (in-flight + 1) / weight, where latency is a peak-sensitive moving average of
// the endpoint's response times: a slow response replaces the estimate at once, fast ones
// bring it down gradually, and an idle estimate decays so that a recovered endpoint is tried
// again. This is the policy Finagle and Linkerd use to route around slow pods.
//
// Latency comes from the Outcome passed to PickResult.Done. Canceled tries are ignored;
// failed tries count as at least twice the current estimate.
type PeakEWMA struct {
	// Decay is the time constant of the moving average: a sample's weight falls by 1/e over
	// Decay. Zero means 10s, as in Linkerd.
	Decay time.Duration
}

func (p PeakEWMA) validate() error {
	if p.Decay < 0 {
		return fmt.Errorf("balancer: PeakEWMA.Decay must be ≥ 0, got %v", p.Decay)
	}
	return nil
}
func (p PeakEWMA) configure(b *Balancer) {
	b.countLoad = true
	b.trackLatency = true
	d := p.Decay
	if d == 0 {
		d = 10 * time.Second
	}
	b.decayNanos = float64(d)
	b.decayRate = 1 / float64(d)
}
func (PeakEWMA) ramps() bool            { return true }
func (PeakEWMA) build(*snapshot) picker { return ewmaPicker{} }

type ewmaPicker struct{}

// unmeasuredPenalty is the cost of an endpoint with no latency sample yet and requests in
// flight: high enough that a new endpoint gets one request at a time until it answers.
const unmeasuredPenalty = float64(time.Hour)

func (ewmaPicker) bounded() bool { return false }

func (ewmaPicker) pick(s *snapshot, _ sluice.PickInfo) int {
	i, j := s.randomPair()
	ea, eb := &s.pool[i], &s.pool[j]
	a, b := ea.st, eb.st
	// As in LeastRequest's pick, the weights come from the endpoints, which brings the chosen
	// one's into cache while the counters are fetched. With equal weights, scaling both costs
	// by the same weight leaves their order as it was.
	wa, wb := float64(ea.ep.EffectiveWeight()), float64(eb.ep.EffectiveWeight())
	// Estimates decay with idle time. Rather than read the clock on every pick, measure idle
	// time against the fresher of the two candidates' last samples: what matters is that an
	// endpoint nobody has heard from in a while (a slow pod that was routed around) decays
	// relative to one that is answering now. Done still stamps samples with the real clock.
	sa, sb := a.stamp.Load(), b.stamp.Load()
	now := max(sa, sb)
	// cost = estimate, decayed over idle time, × (in-flight + 1); written out twice rather
	// than called, since the call is a fair part of a pick.
	rate := s.b.decayRate
	fa, fb := float64(a.inflight.Load()), float64(b.inflight.Load())
	xa, xb := math.Float64frombits(a.ewma.Load()), math.Float64frombits(b.ewma.Load())
	ca := xa * decayFactor(float64(now-sa)*rate) * (fa + 1)
	cb := xb * decayFactor(float64(now-sb)*rate) * (fb + 1)
	if xa == 0 && fa != 0 {
		ca = unmeasuredPenalty + fa // not measured yet, and busy: one request at a time
	}
	if xb == 0 && fb != 0 {
		cb = unmeasuredPenalty + fb
	}
	// Compare ca/wa with cb/wb without dividing, and without a branch.
	r := i
	if cb*wa < ca*wb {
		r = j
	}
	return r
}
