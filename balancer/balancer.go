package balancer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// errNoEndpoint is returned by Pick when the snapshot holds nothing to pick. It is a single
// value so that the error path allocates nothing either.
var errNoEndpoint = fmt.Errorf("balancer: no usable endpoint: %w", sluice.ErrNoEndpoint)

// Options configures a Balancer. The zero value is ready to use: no slow start, no zone or
// node preference, a 50% panic threshold, the wall clock and an unseeded random source.
type Options struct {
	// SlowStart is the window over which a new or recovered endpoint ramps up to its full share
	// of traffic, as Envoy's slow_start_config does. Zero disables slow start. Endpoints in the
	// first Update are not ramped: a proxy that just started has no warm endpoints to protect.
	//
	// RoundRobin, Random, LeastRequest and PeakEWMA ramp by turning away a share of the picks
	// that land on a ramping endpoint. Maglev ramps only with bounded loads (Epsilon > 0), by
	// shrinking the endpoint's load bound to its share of the ramp, so that its surplus keys
	// spill to their next endpoint; pure Maglev does not ramp, because holding an endpoint
	// back would move its keys away and back again. Sticky ramps through its Fallback, which
	// places every new session; a session already pinned stays where it is, and a new
	// endpoint has none pinned to it.
	SlowStart time.Duration

	// SlowStartAggression shapes the ramp: an endpoint that has been up for the fraction t of the
	// window gets the share t^(1/SlowStartAggression). Zero means 1 (linear).
	SlowStartAggression float64

	// SlowStartMinWeight is the smallest share, as a fraction of the full share, that a ramping
	// endpoint gets. Zero means 0.1, as in Envoy.
	SlowStartMinWeight float64

	// Zone is the topology zone this proxy runs in. When set, picks prefer the endpoints
	// meant for this zone: those whose ForZones hint lists Zone when every endpoint that is
	// not Terminating carries hints, else those whose Zone is Zone. That is kube-proxy's rule
	// for EndpointSlice hints, which looks at ready endpoints only: the EndpointSlice
	// controller never hints terminating ones, so counting them would turn hints off for
	// every rollout (Unhealthy endpoints count, being ready ones a health check failed).
	// A try spills over to every zone when
	//   - the local zone is degraded: it has no Ready endpoint, or fewer Ready endpoints
	//     than PanicThreshold of its Ready and Unhealthy ones, its Terminating endpoints
	//     counting neither way (then every try spills);
	//   - the local zone is busy: see ZoneSpillFactor;
	//   - it is a retry and every local endpoint was already tried.
	// A sticky session pinned to an endpoint in another zone stays there. Empty disables
	// zone preference.
	Zone string

	// HintsOnly makes zone preference follow EndpointSlice hints alone, as kube-proxy does:
	// a set whose endpoints do not all carry ForZones hints (a Service without
	// trafficDistribution) is spread over every zone, whatever the endpoints' Zone says.
	// Without it, such a set prefers the endpoints whose Zone is Zone, as Envoy's
	// zone-aware routing does. Node preference follows hints in either case.
	HintsOnly bool

	// Node is the name of the node this proxy runs on. When set and the set carries usable
	// node hints — every Ready endpoint has ForNodes, and some Ready endpoint's ForNodes lists
	// Node, as the EndpointSlice controller writes them for trafficDistribution:
	// PreferSameNode — picks prefer the Ready endpoints hinted for Node over those of the
	// zone. That is kube-proxy's rule: node hints for this node win over zone hints; when no
	// Ready endpoint is hinted for this node, the zone rule above applies, and without a
	// usable zone either, every endpoint. A try leaves the node's endpoints for the zone's
	// (or for every endpoint, when Zone is empty or the zone's endpoints are all on this
	// node) under the same rules as a try leaving the zone: the node's endpoints are
	// degraded, the chosen one is busy (ZoneSpillFactor), or a retry has tried them all.
	// Endpoint.Node alone does not make an endpoint local: a Service asks for node-local
	// traffic with its hints. Empty disables node preference.
	Node string

	// ZoneSpillFactor says how much busier than the other zones the local zone may get before
	// tries spill over. A try leaves the local zone when the local endpoint chosen for it has
	// more than ZoneSpillFactor × (n + 1) requests in flight, n being the in-flight count of an
	// endpoint drawn at random from the other zones (both per unit of weight); it then goes
	// where the policy sends it among every zone. So an idle or lightly loaded zone keeps its
	// traffic local, and a zone with too few endpoints for the proxies in it sheds the excess
	// instead of queueing it. Envoy reaches the same end by comparing the sizes of the proxy
	// and upstream fleets per zone, which a library does not know; in-flight counts measure
	// the capacity that matters directly. The same factor governs tries leaving the local
	// node's endpoints (Options.Node) for the zone's, n then being the count of one of the
	// zone's endpoints off the node. Zero means 2. A negative value turns load-based
	// spill-over off, leaving only the health rule above.
	ZoneSpillFactor float64

	// PanicThreshold is the fraction of Ready endpoints below which the balancer stops trusting
	// health and spreads load over Ready and Unhealthy endpoints alike, as Envoy's
	// healthy_panic_threshold does: panic mode starts when ready < PanicThreshold ×
	// (ready + unhealthy). Terminating endpoints count neither way, as Envoy leaves draining
	// hosts out: a rollout draining many pods at once must not push the load of a healthy
	// few onto Unhealthy ones. Zero means 0.5; a negative value disables panic mode.
	PanicThreshold float64

	// TrustedProxies says whose X-Forwarded-For and Forwarded headers are believed when Maglev
	// hashes on the client IP ([ClientIPKey]). Nil trusts nobody: the TCP peer is the client.
	TrustedProxies *sluice.TrustedProxies

	// Now returns the current time. Nil means the runtime's monotonic clock. Simulations and
	// tests pass a virtual clock; it is called on Update, by PeakEWMA on every Done that
	// reports a latency, by ClientIPAffinity on every pick with a client, and otherwise by
	// Pick only during slow-start windows.
	Now func() time.Time

	// Seed, when not zero, makes the balancer's random choices reproducible: a single goroutine
	// that makes the same calls gets the same picks. Zero draws from the runtime's per-thread
	// generator, which is faster under contention.
	Seed uint64

	// Hooks are called on picks, spill-overs, panic mode and updates, for metrics and
	// dashboards. See Hooks for when and where they run.
	Hooks Hooks
}

// Balancer picks an endpoint per try according to a Policy. It implements sluice.Picker.
//
// Update replaces the endpoint set; Pick reads the latest snapshot without a lock. Both are
// safe for concurrent use. A Balancer with no endpoints answers every Pick with an error that
// wraps sluice.ErrNoEndpoint.
type Balancer struct {
	policy Policy
	opts   Options
	now    func() time.Time // nil: use time.Since(epoch), which reads only the monotonic clock
	epoch  time.Time
	rng    rng

	// Per-policy behaviour chosen once in New so that the hot path only tests booleans.
	trackLatency bool    // PeakEWMA: Done feeds latency into the EWMA
	countLoad    bool    // Pick and Done keep each endpoint's in-flight count: some policy or zone spill-over reads it
	trackTotal   bool    // Maglev with bounded loads: Pick and Done keep total in-flight
	decayNanos   float64 // PeakEWMA decay time constant
	decayRate    float64 // 1/decayNanos, so that picks multiply instead of dividing
	hooked       bool    // Hooks.Pick or Hooks.Spill is set: Pick takes pickHooked

	// In-flight over all endpoints, kept only for bounded loads, in stripes of a cache line
	// each: an endpoint counts in one stripe (endpointState.stripe), so that picks of
	// different endpoints on different cores do not pass one line back and forth, and the
	// total is the stripes' sum, read only when a bound needs checking.
	stripes [totalStripes]struct {
		n atomic.Int64
		_ [56]byte
	}
	nextStripe uint32 // the stripe for the next new endpoint; guarded by mu

	snap atomic.Pointer[snapshot]

	mu      sync.Mutex // mu serialises Update; it protects the fields below.
	states  map[string]*endpointState
	members []*endpointState // the states of the last set, in states too
	spare   []*endpointState // the set before that: reused for the next
	at      []int32          // scratch: the index in Update's argument of each member
	gen     uint64
	updated bool

	// Maglev: the tables the last Update built or kept, and those this one has so far.
	hashTables, hashTablesNext []builtTable
	fills                      []func() // table fills this Update has yet to run

	lastID  uint64       // the endpointState.id given last
	clients *clientTable // ClientIPAffinity's pins; nil for the other policies; set in New

	// What the last Update decided, for Stats and the Panic hook.
	keepMask      uint8 // keep's mask: the States that enter the pool
	panic         bool  // panic mode
	degradedTiers uint8 // bit 1<<Tier for each local tier too degraded to keep its traffic
}

var _ sluice.Picker = (*Balancer)(nil)

// totalStripes is how many counters the in-flight total for bounded loads is spread over.
const totalStripes = 8

// total returns the requests in flight over all endpoints, for bounded loads.
func (b *Balancer) total() int64 {
	var n int64
	for i := range b.stripes {
		n += b.stripes[i].n.Load()
	}
	return n
}

// New returns a Balancer that picks with policy. It has no endpoints until the first Update.
// The error names the field of policy or opts that is out of range.
func New(policy Policy, opts Options) (*Balancer, error) {
	if policy == nil {
		return nil, errors.New("balancer: policy must not be nil")
	}
	if err := policy.validate(); err != nil {
		return nil, err
	}
	switch {
	case opts.SlowStart < 0:
		return nil, fmt.Errorf("balancer: Options.SlowStart must be ≥ 0, got %v", opts.SlowStart)
	case opts.SlowStartAggression < 0 || math.IsNaN(opts.SlowStartAggression):
		return nil, fmt.Errorf("balancer: Options.SlowStartAggression must be ≥ 0, got %v", opts.SlowStartAggression)
	case opts.SlowStartMinWeight < 0 || opts.SlowStartMinWeight > 1 || math.IsNaN(opts.SlowStartMinWeight):
		return nil, fmt.Errorf("balancer: Options.SlowStartMinWeight must be in [0, 1], got %v", opts.SlowStartMinWeight)
	case math.IsNaN(opts.ZoneSpillFactor) || math.IsInf(opts.ZoneSpillFactor, 0):
		return nil, fmt.Errorf("balancer: Options.ZoneSpillFactor must be a finite number, got %v", opts.ZoneSpillFactor)
	case opts.PanicThreshold > 1 || math.IsNaN(opts.PanicThreshold):
		return nil, fmt.Errorf("balancer: Options.PanicThreshold must be ≤ 1, got %v", opts.PanicThreshold)
	}
	if opts.SlowStartAggression == 0 {
		opts.SlowStartAggression = 1
	}
	if opts.SlowStartMinWeight == 0 {
		opts.SlowStartMinWeight = 0.1
	}
	if opts.ZoneSpillFactor == 0 {
		opts.ZoneSpillFactor = 2
	}
	if opts.PanicThreshold == 0 {
		opts.PanicThreshold = 0.5
	}
	b := &Balancer{policy: policy, opts: opts, now: opts.Now, states: make(map[string]*endpointState)}
	if b.now != nil {
		b.epoch = b.now()
	} else {
		b.epoch = time.Now()
	}
	if opts.Seed != 0 {
		b.rng.seeded = true
		b.rng.state.Store(opts.Seed)
	}
	policy.configure(b)
	// Zone and node spill-over compare in-flight counts whatever the policy.
	b.countLoad = b.countLoad || opts.Zone != "" || opts.Node != ""
	b.hooked = opts.Hooks.Pick != nil || opts.Hooks.Spill != nil
	return b, nil
}

// nanotime returns the nanoseconds since the Balancer was made, plus one so that zero can mean
// "never". With the default clock it is time.Since on a monotonic reading, which costs one
// monotonic clock read where time.Now costs two (wall and monotonic): it runs on PeakEWMA's
// every Done.
func (b *Balancer) nanotime() int64 {
	if b.now == nil {
		return int64(time.Since(b.epoch)) + 1
	}
	return int64(b.now().Sub(b.epoch)) + 1
}

// endpointState is what the balancer remembers about one address across Updates. It lives
// outside the snapshot, keyed by Addr, so that a rebuild keeps in-flight counts, latency
// estimates and slow-start clocks (the pattern of grpc-go's leastrequest picker).
type endpointState struct {
	// The state is 128 bytes, which the allocator places on a 128-byte boundary: the first
	// cache line holds what a pick reads and writes (the counters, and the Done and cookie it
	// hands back), the second what Update keeps (a pick reads start there only during a
	// slow-start window), so no two endpoints' counters share a line and a pick of an
	// endpoint touches one line of its state. Small states also keep the states of thousands
	// of endpoints dense in cache.
	inflight atomic.Int64
	ewma     atomic.Uint64 // float64 bits: peak-EWMA latency estimate in nanoseconds; 0 = unmeasured
	stamp    atomic.Int64  // Balancer.nanotime of the last EWMA observation
	b        *Balancer
	done     func(sluice.Outcome) // st.finish, bound once so that Pick allocates no closure
	cookie   *http.Cookie         // Sticky: the endpoint's cookie, made on first use and never changed
	stripe   *atomic.Int64        // bounded loads: the Balancer.stripes counter this endpoint counts in
	_        [8]byte

	addr string

	// Written under Balancer.mu.
	gen   uint64
	state sluice.State
	start atomic.Int64     // Balancer.nanotime when the endpoint (re)joined; 0 = never ramps
	ep    *sluice.Endpoint // the endpoint as last updated, shared by entries; never written through
	token uint64           // Sticky: the token in cookie
	id    uint64           // unique to this state: ClientIPAffinity pins clients to it
}

// finish is the PickResult.Done of every pick of this endpoint.
func (st *endpointState) finish(o sluice.Outcome) {
	b := st.b
	if b.countLoad {
		st.inflight.Add(-1)
	}
	if b.trackTotal {
		st.stripe.Add(-1)
	}
	if !b.trackLatency || !o.Counts() {
		// A canceled try says nothing about the endpoint: it must not pull the estimate down
		// (a client that gave up early) or up.
		return
	}
	rtt := float64(o.Latency)
	if o.Failure != sluice.NoFailure {
		// A failure that came back fast (a refused dial) must not make the endpoint look fast:
		// count it as at least twice the current estimate, so repeated failures repel traffic
		// until health checking ejects the endpoint.
		rtt = max(rtt, 2*math.Float64frombits(st.ewma.Load()))
	}
	st.observe(b.nanotime(), rtt, b.decayNanos)
}

// observe folds one latency sample into the peak-EWMA estimate: a sample above the estimate
// replaces it (the peak), a lower one is averaged in with a weight that grows with the time
// since the last sample, so the estimate forgets at the same pace whatever the request rate.
func (st *endpointState) observe(now int64, rtt, decay float64) {
	for {
		old := st.ewma.Load()
		prev := math.Float64frombits(old)
		next := rtt
		if rtt < prev {
			td := max(float64(now-st.stamp.Load()), 0)
			w := decayFactor(td / decay)
			next = prev*w + rtt*(1-w)
		}
		if st.ewma.CompareAndSwap(old, math.Float64bits(next)) {
			st.stamp.Store(now)
			return
		}
	}
}

// decayFactor returns e^-x for x ≥ 0. Samples usually arrive a tiny fraction of the decay
// constant apart, where a two-term series is exact to one part in a million and much cheaper
// than math.Exp, which runs on every Done.
func decayFactor(x float64) float64 {
	if x < 1.0/64 {
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}

// entry is one pickable endpoint in a snapshot: two pointers, 16 bytes, so that the pool of
// thousands of endpoints stays in cache and a pick fetches the state (counters) and the
// endpoint (what Pick returns) of its candidates side by side. The endpoint is a separate
// immutable value, made again only when an Update changes it.
type entry struct {
	st *endpointState
	ep *sluice.Endpoint
}

// weight is the endpoint's effective weight.
func (e *entry) weight() uint32 { return e.ep.EffectiveWeight() }

// snapshot is an immutable view of the endpoint set, built by Update and read by Pick.
// Only its atomic fields change after it is published.
type snapshot struct {
	b    *Balancer
	pool []entry
	pk   picker

	weighted bool  // weights differ: random choices go through alias
	alias    alias // weighted random over pool

	sticky *stickyTable
	pinned *stickyTable // ClientIPAffinity: endpointState.id → pool index

	// Zone and node preference: when spill is not nil, pool holds the Ready endpoints of the
	// local node or zone, and spill is the snapshot of the next wider tier (the node's spills
	// to the zone's, the zone's to every endpoint), which a try uses when leave says so.
	// remote indexes spill.pool's endpoints outside this tier.
	spill  *snapshot
	remote []int32
	tier   Tier // the tier of pool when spill is not nil

	// degraded, in the snapshot Pick loads, has bit 1<<Tier set for each local tier that is
	// too degraded to have a snapshot of its own, for Hooks.Spill.
	degraded uint8

	rampEnd  int64       // nanotime when the last ramping endpoint reaches full share; 0 = none
	rampDone atomic.Bool // set once a pick sees the clock past rampEnd
}

// picker is a policy compiled for one snapshot.
type picker interface {
	// pick returns an index into s.pool, or -1 when it has nothing to offer. It may honour
	// info.Tried itself; the caller re-asks (and finally scans) when the answer was tried.
	pick(s *snapshot, info sluice.PickInfo) int
	// bounded reports whether the picker applies slow start itself, by capping a ramping
	// endpoint's load, rather than leaving choose to turn away a share of its picks.
	bounded() bool
}

// Pick chooses an endpoint for one try. It implements sluice.Picker.
//
// Pick loads the current snapshot and, for the policies that compare loads (LeastRequest,
// PeakEWMA, bounded-load Maglev, and any policy with zone or node preference), touches a few
// atomic counters; it takes no lock and allocates nothing, except when ClientIPAffinity pins
// a client anew. The caller must call the result's Done exactly once.
func (b *Balancer) Pick(info sluice.PickInfo) (sluice.PickResult, error) {
	s := b.snap.Load()
	if s == nil || len(s.pool) == 0 {
		return sluice.PickResult{}, errNoEndpoint
	}
	if b.hooked {
		return b.pickHooked(s, info), nil
	}
	// A sticky cookie is honoured wherever its endpoint is: on another node or in another
	// zone too, since the session may have spilled over there.
	if top := s.top(); top.sticky != nil {
		if j := top.sticky.lookup(info.Request); j >= 0 && !tried(info.Tried, top.pool[j].ep.Addr) {
			return b.result(&top.pool[j], nil), nil
		}
	}
	if b.clients != nil {
		return b.pickPinned(s, &info, nil), nil
	}
	s, i := s.chooseTier(info)
	e := &s.pool[i]
	var cookie *http.Cookie
	if s.sticky != nil {
		cookie = e.st.cookie
	}
	return b.result(e, cookie), nil
}

// result counts a pick of e in flight and makes its PickResult.
func (b *Balancer) result(e *entry, cookie *http.Cookie) sluice.PickResult {
	if b.countLoad {
		// Only policies that compare loads pay for counting them: round robin, random and pure
		// Maglev picks touch no shared counter at all, so they do not contend across cores.
		e.st.inflight.Add(1)
	}
	if b.trackTotal {
		e.st.stripe.Add(1)
	}
	return sluice.PickResult{Endpoint: *e.ep, Done: e.st.done, Cookie: cookie}
}

// chooseTier asks the policy of s for the try's endpoint and, while the try should leave the
// tier for a wider one, asks the wider one. It returns the snapshot chosen from and the index
// in its pool.
func (s *snapshot) chooseTier(info sluice.PickInfo) (*snapshot, int) {
	i := s.choose(info)
	for s.spill != nil && s.leave(i, info) {
		s = s.spill
		i = s.choose(info)
	}
	return s, i
}

// top returns the snapshot that holds every pickable endpoint: s, or the widest of its
// spill-over sets when s is confined to the local node or zone.
func (s *snapshot) top() *snapshot {
	for s.spill != nil {
		s = s.spill
	}
	return s
}

// leave reports whether a try for which the local node or zone offered pool[i] should spill
// over to the next wider tier instead: because pool[i] was already tried (so was every local
// endpoint, or choose would not have offered it), or because it is busier, per unit of
// weight, than ZoneSpillFactor × (n + 1) where n is the in-flight count of an endpoint drawn
// at random from the wider tier's endpoints outside this one. Comparing with one random
// remote endpoint, as the power of two choices does, needs no global counter: Pick still
// touches only the counters of the endpoints it looks at.
func (s *snapshot) leave(i int, info sluice.PickInfo) bool {
	e := &s.pool[i]
	if len(info.Tried) > 0 && tried(info.Tried, e.ep.Addr) {
		return true
	}
	f := s.b.opts.ZoneSpillFactor
	if f <= 0 {
		return false
	}
	l := e.st.inflight.Load()
	if l == 0 {
		return false // an idle local endpoint always has room
	}
	r := &s.spill.pool[s.remote[s.b.rng.intn(len(s.remote))]]
	return float64(l)*float64(r.weight()) > f*float64(r.st.inflight.Load()+1)*float64(e.weight())
}

// maxAttempts bounds how often choose re-asks the policy before it scans for an untried
// endpoint; it keeps the retry and slow-start paths O(1) in the common case.
const maxAttempts = 8

// choose asks the policy, re-asking while the answer was already tried or is held back by
// slow start, and finally scans for any untried endpoint.
func (s *snapshot) choose(info sluice.PickInfo) int {
	ramping := s.rampEnd != 0 && !s.rampDone.Load()
	if !ramping && len(info.Tried) == 0 {
		if i := s.pk.pick(s, info); i >= 0 {
			return i // the common case: a first try outside any slow-start window
		}
	}
	var now int64
	if ramping {
		now = s.b.nanotime()
		if now >= s.rampEnd {
			s.rampDone.Store(true)
			ramping = false
		}
	}
	last := -1
	for range maxAttempts {
		i := s.pk.pick(s, info)
		if i < 0 {
			break
		}
		last = i
		if len(info.Tried) > 0 && tried(info.Tried, s.pool[i].ep.Addr) {
			continue
		}
		if ramping && !s.pk.bounded() && !s.admit(i, now) {
			continue
		}
		return i
	}
	if len(info.Tried) == 0 && last >= 0 {
		return last // held back by slow start every time: take the last answer
	}
	// Everything we were offered was tried. Scan from a random place for one that was not;
	// when all were, any will do.
	n := len(s.pool)
	off := s.b.rng.intn(n)
	for k := range n {
		j := (off + k) % n
		if !tried(info.Tried, s.pool[j].ep.Addr) {
			return j
		}
	}
	if last >= 0 {
		return last
	}
	return off
}

// admit reports whether a pick of pool[i] survives slow start: a random draw against the
// endpoint's current share.
func (s *snapshot) admit(i int, now int64) bool {
	start := s.pool[i].st.start.Load()
	if start == 0 {
		return true
	}
	f := s.b.rampShare(start, now)
	return f >= 1 || s.b.rng.float() < f
}

// rampShare returns the fraction of its full share that an endpoint which (re)joined at start
// gets at now: max(SlowStartMinWeight, t^(1/SlowStartAggression)) for the fraction t of the
// window that has passed, and 1 after the window.
func (b *Balancer) rampShare(start, now int64) float64 {
	o := &b.opts
	t := float64(now-start) / float64(o.SlowStart)
	if t >= 1 {
		return 1
	}
	f := o.SlowStartMinWeight
	if t > 0 {
		f = max(f, math.Pow(t, 1/o.SlowStartAggression))
	}
	return f
}

// tried reports whether addr is in list. Tried lists are a handful long; a linear scan beats
// any set.
func tried(list []string, addr string) bool {
	for _, a := range list {
		if a == addr {
			return true
		}
	}
	return false
}

// random returns a random index into the pool, in proportion to weight.
func (s *snapshot) random() int {
	r := s.b.rng.next()
	if !s.weighted {
		return int((r >> 32) * uint64(len(s.pool)) >> 32)
	}
	return s.alias.pick(r)
}

// randomPair returns two indexes drawn by weight; when weights are equal they are distinct
// (with one endpoint, both are 0).
func (s *snapshot) randomPair() (int, int) {
	n := len(s.pool)
	if s.weighted || n < 2 {
		return s.random(), s.random()
	}
	r := s.b.rng.next()
	i := int((r >> 32) * uint64(n) >> 32)
	j := int((r & 0xffffffff) * uint64(n-1) >> 32)
	if j >= i {
		j++
	}
	return i, j
}

// Update replaces the endpoint set. It builds a new snapshot and publishes it atomically;
// picks in progress finish on the old one. Endpoints are identified by Addr (the first of
// duplicates wins); state kept for an address that stays — in-flight count, latency estimate,
// slow-start clock — carries over. Update does not retain eps.
//
// With Hooks.Update or Hooks.Panic set, Update calls them after publishing the new snapshot,
// outside its lock.
func (b *Balancer) Update(eps []sluice.Endpoint) {
	h := &b.opts.Hooks
	if h.Update == nil && h.Panic == nil {
		b.update(eps)
		return
	}
	ev, flipped := b.update(eps)
	if flipped && h.Panic != nil {
		h.Panic(PanicEvent{Panic: ev.Panic, Ready: ev.Ready, Unhealthy: ev.Unhealthy})
	}
	if h.Update != nil {
		h.Update(ev)
	}
}

// update is Update under b.mu. It returns what Hooks.Update reports, and whether panic mode
// started or ended.
func (b *Balancer) update(eps []sluice.Endpoint) (ev UpdateEvent, flipped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()

	now := b.nanotime()
	b.gen++
	gen := b.gen
	first := !b.updated
	b.updated = true

	// First pass: find every endpoint's state and count what health rules need. The entries
	// are made afterwards, once it is known which endpoints are kept, so that each is written
	// once, into a pool of the right size.
	members, at := b.spare[:0], b.at[:0]
	var c health
	for i := range eps {
		ep := &eps[i]
		// Sources usually send the set in the same order every time: try the state at the
		// same place in the last set before looking the address up in the map.
		var st *endpointState
		if k := len(members); k < len(b.members) && b.members[k].addr == ep.Addr {
			st = b.members[k]
		} else {
			st = b.states[ep.Addr]
		}
		switch {
		case st == nil:
			b.lastID++
			st = &endpointState{b: b, addr: ep.Addr, state: ep.State, id: b.lastID}
			st.done = st.finish
			st.stripe = &b.stripes[b.nextStripe%totalStripes].n
			b.nextStripe++
			if !first && ep.State == sluice.Ready {
				st.start.Store(now)
			}
			b.states[ep.Addr] = st
		case st.gen == gen:
			continue // duplicate Addr in this set
		case st.state != sluice.Ready && ep.State == sluice.Ready:
			st.start.Store(now) // recovered: ramp again
		}
		st.gen = gen
		st.state = ep.State
		if st.ep == nil || *st.ep != *ep {
			v := *ep
			st.ep = &v
		}
		members = append(members, st)
		at = append(at, int32(i))
		c.count(ep.State)
	}
	// Forget the endpoints that left. Walking the previous set is cheaper than ranging over
	// the map.
	for _, st := range b.members {
		if st.gen != gen {
			delete(b.states, st.addr)
		}
	}
	b.members, b.spare, b.at = members, b.members, at

	keep := b.keep(c)
	panicking := keep&(1<<sluice.Unhealthy) != 0 && c.unhealthy > 0
	flipped = panicking != b.panic
	b.keepMask, b.panic = keep, panicking
	pool := make([]entry, 0, c.kept(keep))
	for k, st := range members {
		if keep&stateBit(eps[at[k]].State) != 0 {
			pool = append(pool, entry{st: st, ep: st.ep})
		}
	}

	// Tiers, narrowest first: the node's endpoints, the zone's, every endpoint. A tier that
	// would add nothing to the one inside it is left out, so that no try spills in vain.
	zone, zoneOut, zoneDegraded := b.local(pool, eps, at)
	node, nodeDegraded := b.onNode(pool, eps, at)
	b.degradedTiers = 0
	if zoneDegraded {
		b.degradedTiers |= 1 << TierZone
	}
	if nodeDegraded {
		b.degradedTiers |= 1 << TierNode
	}
	var nodeOut []int32
	if node != nil && zone != nil {
		if nodeOut = b.offNode(zone); nodeOut == nil {
			zone, zoneOut = nil, nil // the zone's endpoints are all on this node
		}
	}
	if node != nil && zone == nil {
		if nodeOut = b.offNode(pool); nodeOut == nil {
			node = nil // every endpoint is on this node
		}
	}
	s := b.compile(pool, now)
	if zone != nil {
		s = b.narrow(zone, zoneOut, s, TierZone, now)
	}
	if node != nil {
		s = b.narrow(node, nodeOut, s, TierNode, now)
	}
	s.degraded = b.degradedTiers
	b.runFills()
	b.snap.Store(s)
	clear(b.hashTables) // let go of pools no snapshot uses any more
	b.hashTables, b.hashTablesNext = b.hashTablesNext, b.hashTables[:0]
	ev = UpdateEvent{
		Ready: c.ready, Unhealthy: c.unhealthy, Terminating: c.terminating,
		Pickable: len(pool), Panic: panicking,
		NodeDegraded: nodeDegraded, ZoneDegraded: zoneDegraded,
	}
	if b.opts.Hooks.Update != nil {
		ev.Duration = time.Duration(b.nanotime() - now) // a clock read only for the hook
	}
	return ev, flipped
}

// runFills runs the Maglev table fills that compile left to do. When there are several (the
// local node's or zone's table and the spill-over sets'), they run on their own goroutines:
// they share nothing, and an Update then takes as long as the longest fill rather than all;
// the CPU they use is the same either way.
func (b *Balancer) runFills() {
	fills := b.fills
	if len(fills) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, f := range fills[1:] {
		wg.Go(f)
	}
	fills[0]()
	wg.Wait()
	clear(fills)
	b.fills = fills[:0]
}

// narrow compiles the snapshot of a local tier, pool, that spills over to wider, remote
// being the indexes in wider.pool of the endpoints outside the tier.
func (b *Balancer) narrow(pool []entry, remote []int32, wider *snapshot, tier Tier, now int64) *snapshot {
	s := b.compile(pool, now)
	s.spill, s.remote, s.tier = wider, remote, tier
	return s
}

// compile builds the snapshot of one pool: slow-start window, weights, the policy's tables.
func (b *Balancer) compile(pool []entry, now int64) *snapshot {
	s := &snapshot{b: b, pool: pool}
	ramps := b.opts.SlowStart > 0 && b.policy.ramps()
	for i := range pool {
		if start := pool[i].st.start.Load(); ramps && start != 0 && start+int64(b.opts.SlowStart) > now {
			s.rampEnd = max(s.rampEnd, start+int64(b.opts.SlowStart))
		}
		if pool[i].weight() != pool[0].weight() {
			s.weighted = true
		}
	}
	if s.weighted {
		s.alias = newAlias(pool)
	}
	s.pk = b.policy.build(s)
	return s
}

// health counts the endpoints of a set by State.
type health struct{ ready, terminating, unhealthy int }

func (c *health) count(st sluice.State) {
	switch st {
	case sluice.Ready:
		c.ready++
	case sluice.Terminating:
		c.terminating++
	default:
		c.unhealthy++
	}
}

// stateBit is st's bit in a keep mask. A State beyond Unhealthy, which no source should send,
// counts as Unhealthy, as health.count does.
func stateBit(st sluice.State) uint8 { return 1 << min(st, sluice.Unhealthy) }

// kept returns how many endpoints the State mask keep lets through.
func (c health) kept(keep uint8) int {
	n := 0
	if keep&(1<<sluice.Ready) != 0 {
		n += c.ready
	}
	if keep&(1<<sluice.Terminating) != 0 {
		n += c.terminating
	}
	if keep&^(1<<sluice.Ready|1<<sluice.Terminating) != 0 {
		n += c.unhealthy
	}
	return n
}

// degraded reports whether a set with the counts c has too few Ready endpoints to be trusted
// with its traffic: fewer than PanicThreshold of its Ready and Unhealthy ones. Terminating
// endpoints count neither way: they are leaving whatever their health, and a rollout that
// drains many at once must not make the healthy rest look like a minority. Envoy leaves
// draining hosts out of its panic threshold in the same way.
func (b *Balancer) degraded(c health) bool {
	return float64(c.ready) < b.opts.PanicThreshold*float64(c.ready+c.unhealthy)
}

// keep applies Endpoint.State to a set with the counts c, as a mask with bit s set for each
// State s that enters the pool: Ready endpoints normally; Ready and Unhealthy ones when
// the set is degraded (panic mode); Terminating ones only when nothing is Ready.
func (b *Balancer) keep(c health) uint8 {
	const (
		ready       = 1 << sluice.Ready
		terminating = 1 << sluice.Terminating
		everything  = 0xff
	)
	switch {
	case c.ready > 0 && b.opts.PanicThreshold > 0 && b.degraded(c):
		return everything &^ terminating
	case c.ready == 0 && c.terminating > 0:
		return terminating
	case c.ready == 0 && b.opts.PanicThreshold > 0:
		return everything
	}
	return ready
}

// local applies zone preference to the healthy pool, given the whole set: eps[at[k]] is its
// k-th distinct endpoint. It returns the Ready endpoints meant for Options.Zone, and the
// indexes in pool of the endpoints that are not, or a nil slice when picks should not be
// confined to the zone: zone preference is off, the zone has no endpoints, every endpoint is
// in it, or it is too degraded to carry its traffic (no Ready endpoint, or fewer Ready than
// PanicThreshold of its Ready and Unhealthy members).
//
// degraded reports the last case: the zone has endpoints, but too few Ready ones.
func (b *Balancer) local(pool []entry, eps []sluice.Endpoint, at []int32) (local []entry, remote []int32, degraded bool) {
	if b.opts.Zone == "" || len(pool) == 0 {
		return nil, nil, false
	}
	// The set is hinted when every endpoint that is not Terminating carries ForZones hints,
	// as kube-proxy requires of ready endpoints (it ignores hints when none is ready).
	hinted, anyReady := true, false
	for _, i := range at {
		if eps[i].State == sluice.Terminating {
			continue
		}
		anyReady = true
		if eps[i].ForZones == "" {
			hinted = false
			break
		}
	}
	hinted = hinted && anyReady
	if !hinted && b.opts.HintsOnly {
		return nil, nil, false // kube-proxy: no usable hints, no topology
	}
	var c health
	for _, i := range at {
		if ep := &eps[i]; b.isLocal(hinted, ep) {
			c.count(ep.State)
		}
	}
	if c.ready == 0 || b.degraded(c) {
		// The local zone is too degraded to carry its traffic: spill over.
		return nil, nil, c != health{}
	}
	nl, nr := 0, 0
	for i := range pool {
		switch e := &pool[i]; {
		case !b.isLocal(hinted, e.ep):
			nr++
		case e.ep.State == sluice.Ready:
			nl++
		}
	}
	if nr == 0 {
		return nil, nil, false // nowhere else to go: the pool is the zone
	}
	local = make([]entry, 0, nl)
	remote = make([]int32, 0, nr)
	for i := range pool {
		switch e := &pool[i]; {
		case !b.isLocal(hinted, e.ep):
			remote = append(remote, int32(i))
		case e.ep.State == sluice.Ready:
			local = append(local, *e)
		}
	}
	return local, remote, false
}

// onNode applies node preference to the healthy pool, given the whole set as local is. It
// returns the Ready endpoints of pool hinted for Options.Node, or nil when picks should not
// prefer them: node preference is off, the node hints are unusable — a Ready endpoint has
// none, or no Ready endpoint is hinted for Node, kube-proxy's rule for
// trafficDistribution: PreferSameNode — or the node's endpoints are degraded as a zone's can
// be. Only Ready endpoints decide whether the hints are usable, as in kube-proxy: an
// Unhealthy or Terminating endpoint is not picked here whatever its hints say.
//
// degraded reports that the node has endpoints, but too few Ready ones.
func (b *Balancer) onNode(pool []entry, eps []sluice.Endpoint, at []int32) (node []entry, degraded bool) {
	if b.opts.Node == "" || len(pool) == 0 {
		return nil, false
	}
	var c health
	for _, i := range at {
		ep := &eps[i]
		if ep.State == sluice.Ready && ep.ForNodes == "" {
			return nil, false // the set is not node-hinted
		}
		if b.forNode(ep) {
			c.count(ep.State)
		}
	}
	if c.ready == 0 || b.degraded(c) {
		// Nothing Ready for this node, or too little of it: fall back to the zone.
		return nil, c != health{}
	}
	node = make([]entry, 0, c.ready)
	for i := range pool {
		if e := &pool[i]; e.ep.State == sluice.Ready && b.forNode(e.ep) {
			node = append(node, *e)
		}
	}
	return node, false
}

// offNode returns the indexes in pool of the endpoints not hinted for Options.Node, or nil
// when there are none.
func (b *Balancer) offNode(pool []entry) []int32 {
	n := 0
	for i := range pool {
		if !b.forNode(pool[i].ep) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	off := make([]int32, 0, n)
	for i := range pool {
		if !b.forNode(pool[i].ep) {
			off = append(off, int32(i))
		}
	}
	return off
}

// forNode reports whether ep's node hints list Options.Node.
func (b *Balancer) forNode(ep *sluice.Endpoint) bool { return listHas(ep.ForNodes, b.opts.Node) }

// isLocal reports whether ep is meant for Options.Zone: by its ForZones hint when the set is
// hinted, else by its Zone.
func (b *Balancer) isLocal(hinted bool, ep *sluice.Endpoint) bool {
	if hinted {
		return listHas(ep.ForZones, b.opts.Zone)
	}
	return ep.Zone == b.opts.Zone
}

// listHas reports whether the comma-separated list holds item.
func listHas(list, item string) bool {
	for list != "" {
		var f string
		f, list, _ = strings.Cut(list, ",")
		if strings.TrimSpace(f) == item {
			return true
		}
	}
	return false
}

// rng is the balancer's random source: the runtime's per-thread generator by default, or a
// splitmix64 sequence over an atomic counter when seeded, which is lock-free and reproducible.
type rng struct {
	seeded bool
	state  atomic.Uint64
}

func (r *rng) next() uint64 {
	if !r.seeded {
		return rand.Uint64()
	}
	return mix64(r.state.Add(0x9e3779b97f4a7c15))
}

// intn returns a number in [0, n) for 0 < n < 2³².
func (r *rng) intn(n int) int { return int((r.next() >> 32) * uint64(n) >> 32) }

// float returns a number in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// alias is Vose's alias table: weighted random choice in O(1) per pick.
type alias struct {
	prob  []uint32 // threshold on 32 random bits: keep column i when below prob[i]
	other []int32
}

func newAlias(pool []entry) alias {
	n := len(pool)
	a := alias{prob: make([]uint32, n), other: make([]int32, n)}
	var total float64
	for _, e := range pool {
		total += float64(e.weight())
	}
	scaled := make([]float64, n)
	small := make([]int32, 0, n)
	large := make([]int32, 0, n)
	for i, e := range pool {
		scaled[i] = float64(e.weight()) * float64(n) / total
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		l := small[len(small)-1]
		small = small[:len(small)-1]
		g := large[len(large)-1]
		a.prob[l] = uint32(scaled[l] * (1 << 32))
		a.other[l] = g
		scaled[g] -= 1 - scaled[l]
		if scaled[g] < 1 {
			large = large[:len(large)-1]
			small = append(small, g)
		}
	}
	for _, i := range append(small, large...) {
		a.prob[i] = math.MaxUint32
		a.other[i] = i
	}
	return a
}

func (a *alias) pick(r uint64) int {
	i := int((r >> 32) * uint64(len(a.prob)) >> 32)
	if uint32(r) < a.prob[i] {
		return i
	}
	return int(a.other[i])
}

// mix64 is splitmix64's finaliser: a cheap, well-spread bijection on 64 bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
