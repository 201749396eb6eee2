package healthcheck

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Checker decides which endpoints are healthy, from active probes and from the outcomes of
// real traffic, and passes each endpoint set on with the unhealthy ones marked.
//
// Update takes the sets a discovery source produces; Run probes, detects outliers and pushes
// the marked sets to a balancer; Observe learns from every try the proxy makes. All three are
// safe for concurrent use, and Update and Observe may be called before Run starts.
type Checker struct {
	cfg *config

	// Thresholds of the consecutive-failure detectors, 0 when off, read by Observe.
	consec5xx, consecGateway uint64
	// windowed says a success-rate or failure-percentage detector reads the window counts.
	// Without one, a successful try is recorded with loads alone, and no core writes a
	// counter that another is reading.
	windowed bool

	// targets is what Observe reads: an immutable map rebuilt by Update, whose values are
	// shared with the map it replaces so that counters survive the rebuild.
	targets atomic.Pointer[map[string]*target]

	mu       sync.Mutex // mu protects input, hasInput and running.
	input    []sluice.Endpoint
	hasInput bool
	running  bool

	updated chan struct{} // a token when Update has a new set for Run
	tripped chan struct{} // a token when Observe saw a consecutive-failure threshold reached
}

var _ sluice.Observer = (*Checker)(nil)

// target holds what Observe records about one endpoint. Only atomics: Observe runs on every
// try of every request and takes no lock.
type target struct {
	// seen says a try reached the endpoint since its last probe (for NoTrafficInterval).
	seen atomic.Bool
	// tripped says Observe found a consecutive-failure threshold reached and told Run.
	tripped atomic.Bool
	// consec packs the consecutive server errors (high 32 bits) and consecutive gateway
	// failures (low 32 bits), so that one atomic add counts a gateway failure as both.
	consec atomic.Uint64
	// window packs the tries (high 32 bits) and server errors (low 32 bits) since Run last
	// looked, for the success-rate and failure-percentage detectors.
	window atomic.Uint64
	// pub is what Run last published about the endpoint, for Endpoints. Observe never
	// touches it.
	pub *published
	// The rest of the cache line, so that two endpoints' counters, written from different
	// cores at once, never share one.
	_ [64 - 32]byte
}

// published is Run's view of one endpoint, copied out for Endpoints whenever it changes.
// mu protects the other fields.
type published struct {
	mu             sync.Mutex
	healthy        bool
	ejected        bool
	probeFails     int
	probeErr       error
	reason         Reason
	changed        time.Time
	ejectedUntil   time.Time
	ejectionReason Reason
	ejections      int
	totalEjections int
}

const lo32 = 1<<32 - 1

// New returns a Checker configured by opts. It starts no goroutine: call Run. The error names
// the option that is out of range.
func New(opts Options) (*Checker, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	c := &Checker{
		cfg:     cfg,
		updated: make(chan struct{}, 1),
		tripped: make(chan struct{}, 1),
	}
	if cfg.passive {
		c.consec5xx = uint64(max(cfg.outlier.Consecutive5xx, 0))
		c.consecGateway = uint64(max(cfg.outlier.ConsecutiveGatewayFailure, 0))
		c.windowed = cfg.sr.MinimumHosts > 0 || cfg.fp.MinimumHosts > 0
	}
	empty := map[string]*target{}
	c.targets.Store(&empty)
	return c, nil
}

// Update replaces the set of endpoints to check. Endpoints are identified by Addr: one that
// was in the previous set keeps its health and counters, one that is new starts in
// Options.InitialState, and one that is gone stops being probed at once (a probe in flight is
// canceled). When several endpoints share an Addr, the first is kept.
//
// Update does not block on Run and may be called from any goroutine, before or while Run
// runs; sets that arrive faster than Run takes them are coalesced, the latest winning.
// The Checker does not retain eps.
func (c *Checker) Update(eps []sluice.Endpoint) {
	input := make([]sluice.Endpoint, 0, len(eps))
	next := make(map[string]*target, len(eps))
	c.mu.Lock()
	old := *c.targets.Load()
	for _, ep := range eps {
		if _, dup := next[ep.Addr]; dup {
			continue
		}
		t := old[ep.Addr]
		if t == nil {
			t = &target{pub: &published{healthy: c.cfg.Probe == nil || c.cfg.InitialState == sluice.Ready}}
		}
		next[ep.Addr] = t
		input = append(input, ep)
	}
	c.input = input
	c.hasInput = true
	c.targets.Store(&next)
	c.mu.Unlock()
	select {
	case c.updated <- struct{}{}:
	default:
	}
}

// Observe records the outcome of one try to ep, for outlier detection. Outcomes that say
// nothing about the endpoint (o.Counts() is false: the client went away) and outcomes for
// endpoints not in the current set are ignored.
//
// Observe takes no lock and allocates nothing: it reads the current set through an atomic
// pointer and updates a few atomic counters. When a consecutive-failure threshold is reached
// it wakes Run, which makes the ejection decision.
func (c *Checker) Observe(ep sluice.Endpoint, o sluice.Outcome) {
	if !o.Counts() {
		return
	}
	t := (*c.targets.Load())[ep.Addr]
	if t == nil {
		return
	}
	if !t.seen.Load() { // a load first: the flag is set far more often than it is cleared
		t.seen.Store(true)
	}
	if !c.cfg.passive {
		return
	}
	if !o.ServerError() {
		if c.windowed {
			t.window.Add(1 << 32)
		}
		if t.consec.Load() != 0 {
			t.consec.Store(0)
		}
		return
	}
	if c.windowed {
		t.window.Add(1<<32 | 1)
	}
	var v uint64
	if o.GatewayFailure() {
		v = t.consec.Add(1<<32 | 1)
	} else {
		// A server error that is not a gateway failure (a 500) counts as a 5xx and ends a run
		// of gateway failures: one add, and a compare-and-swap only when there was a run.
		v = t.consec.Add(1 << 32)
		for v&lo32 != 0 {
			if t.consec.CompareAndSwap(v, v&^lo32) {
				v &^= lo32
				break
			}
			v = t.consec.Load()
		}
	}
	if (c.consec5xx > 0 && v>>32 >= c.consec5xx) || (c.consecGateway > 0 && v&lo32 >= c.consecGateway) {
		if !t.tripped.Load() && t.tripped.CompareAndSwap(false, true) {
			select {
			case c.tripped <- struct{}{}:
			default:
			}
		}
	}
}

// Run checks the endpoints until ctx is done, and calls update with the current set — every
// endpoint of the last Update, in its order, with State set to sluice.Unhealthy where a probe
// or outlier detection says so — whenever the set or an endpoint's health changes. Changes
// that arrive together are pushed as one set. Endpoints that Update marks Terminating or
// Unhealthy are passed through as they are and not probed: Kubernetes has already taken them
// out of service, and a Terminating endpoint must keep its state so that the balancer sends
// it no new traffic while Ready endpoints exist, yet lets its in-flight requests finish.
//
// Nothing is pushed before the first Update. update is called from Run's goroutine, one call
// at a time, never under a lock of the Checker's; it may keep the slice. Run returns
// ctx.Err() once every probe it started has returned. Only one Run may run at a time.
func (c *Checker) Run(ctx context.Context, update func([]sluice.Endpoint)) error {
	if update == nil {
		return errors.New("healthcheck: Run needs an update function")
	}
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("healthcheck: Run is already running")
	}
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()
	return newRunner(c, update).run(ctx)
}

// snapshot returns the latest input set and its targets.
func (c *Checker) snapshot() (input []sluice.Endpoint, targets map[string]*target, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.input, *c.targets.Load(), c.hasInput
}

// EndpointStatus is what a Checker knows about one endpoint at one moment: an element of
// Endpoints' answer, for admin pages and gauges.
type EndpointStatus struct {
	// Endpoint is the endpoint as last given to Update.
	Endpoint sluice.Endpoint
	// State is what Run reports for the endpoint: Ready or Unhealthy for an endpoint that
	// came in Ready, and the state it came in with otherwise.
	State sluice.State
	// Reason is the reason of the endpoint's last health change, and Changed its time; zero
	// when its health has not changed since it joined.
	Reason  Reason
	Changed time.Time

	// ProbeFailures counts the consecutive failing probes, and ProbeErr is the last one's
	// error; zero and nil once a probe passes.
	ProbeFailures int
	ProbeErr      error

	// Consecutive5xx and ConsecutiveGatewayFailures are the runs of server errors and gateway
	// failures reported to Observe, as outlier detection counts them (zero without it).
	Consecutive5xx             int
	ConsecutiveGatewayFailures int

	// Ejected says outlier detection holds the endpoint out. EjectedUntil is when its
	// ejection time ends (with active checks on, it returns at the first passing probe after
	// that); zero when not ejected.
	Ejected      bool
	EjectedUntil time.Time
	// EjectionReason is the detector of the endpoint's latest ejection, ejected or not now;
	// zero when it was never ejected.
	EjectionReason Reason
	// Ejections counts the endpoint's recent ejections, the multiplier of
	// Outlier.BaseEjectionTime, which goes down by one per Outlier.Interval in service.
	Ejections int
	// TotalEjections counts every ejection since the endpoint joined the set.
	TotalEjections int
}

// Endpoints returns the status of every endpoint of the last Update, in its order. It is a
// copy, safe to keep; Endpoints is safe for concurrent use, and takes per-endpoint locks that
// only Run's bookkeeping (never Observe) contends for. Before Run has seen an endpoint it is
// reported as Options.InitialState says.
func (c *Checker) Endpoints() []EndpointStatus {
	input, targets, _ := c.snapshot()
	out := make([]EndpointStatus, len(input))
	for i, ep := range input {
		t := targets[ep.Addr]
		v := t.consec.Load()
		p := t.pub
		p.mu.Lock()
		s := EndpointStatus{
			Endpoint:                   ep,
			State:                      ep.State,
			Reason:                     p.reason,
			Changed:                    p.changed,
			ProbeFailures:              p.probeFails,
			ProbeErr:                   p.probeErr,
			Consecutive5xx:             int(v >> 32),
			ConsecutiveGatewayFailures: int(v & lo32),
			Ejected:                    p.ejected,
			EjectionReason:             p.ejectionReason,
			Ejections:                  p.ejections,
			TotalEjections:             p.totalEjections,
		}
		if p.ejected {
			s.EjectedUntil = p.ejectedUntil
		}
		if ep.State == sluice.Ready && (!p.healthy || p.ejected) {
			s.State = sluice.Unhealthy
		}
		p.mu.Unlock()
		out[i] = s
	}
	return out
}
