package healthcheck

import (
	"cmp"
	"container/heap"
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice"
)

// maxCoalesce bounds how many events Run handles back to back before it pushes a changed set,
// so that a steady stream of events cannot hold a push back for ever.
const maxCoalesce = 256

// runner is the state of one Run. Everything in it is owned by Run's goroutine; probe
// goroutines only read their own copy of the endpoint and send their result back.
type runner struct {
	c      *Checker
	cfg    *config
	update func([]sluice.Endpoint)

	members map[string]*member // by Addr, every endpoint of the last input
	order   []sluice.Endpoint  // the last input, in its order
	ready   int                // members whose input state is Ready
	ejected map[*member]bool   // members ejected by outlier detection
	queue   probeQueue         // members waiting for their next probe, soonest first
	results chan result        // probe outcomes; room for every probe in flight
	flight  int                // probes in flight
	wg      sync.WaitGroup     // counts probe goroutines
	dirty   bool               // the set changed since the last push
	samples []sample           // scratch for evaluate
	timer   *time.Timer        // wakes Run for the next probe or the end of an ejection
	armed   time.Time          // when timer fires; zero when stopped
	tick    <-chan time.Time   // outlier detection interval; nil when passive checks are off
}

// member is what Run knows about one endpoint.
type member struct {
	t  *target
	ep sluice.Endpoint // as last given to Update

	// Active checking.
	probed  bool // a probe has completed since the endpoint was added
	healthy bool // the active verdict (true when there is no probe)
	passes  int  // consecutive passing probes
	fails   int  // consecutive failing probes
	due     time.Time
	index   int                // in runner.queue; -1 when not queued
	cancel  context.CancelFunc // cancels the probe in flight; nil when none
	gen     uint64             // bumped when probing stops, so late results are ignored
	removed bool

	// Outlier detection.
	ejectedUntil  time.Time
	awaitingProbe bool // the ejection time is over; the next passing probe ends it
	ejections     int  // recent ejections, forgiven one per outlier interval
	isEjected     bool

	// For Endpoints only.
	probeErr       error     // the last probe's error; nil once one passes
	reason         Reason    // the reason of the last change
	changed        time.Time // when it happened
	ejectionReason Reason    // the detector of the latest ejection
	totalEjections int
}

type result struct {
	m       *member
	gen     uint64 // m.gen when the probe started
	err     error
	latency time.Duration // measured only for Hooks.ProbeDone
}

type sample struct {
	m         *member
	req, fail uint64
	rate      float64
}

func newRunner(c *Checker, update func([]sluice.Endpoint)) *runner {
	r := &runner{
		c:       c,
		cfg:     c.cfg,
		update:  update,
		members: make(map[string]*member),
		ejected: make(map[*member]bool),
		results: make(chan result, c.cfg.MaxProbes),
	}
	return r
}

func (r *runner) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		r.wg.Wait() // every probe returns before Run does
	}()
	r.timer = time.NewTimer(time.Hour)
	r.timer.Stop()
	defer r.timer.Stop()
	if r.cfg.passive {
		tk := time.NewTicker(r.cfg.outlier.Interval)
		defer tk.Stop()
		r.tick = tk.C
	}
	if _, _, ok := r.c.snapshot(); ok {
		r.reconcile(time.Now())
	}
	handled := 0
	for {
		now := time.Now()
		r.dispatch(ctx, now)
		r.arm(now)
		if r.dirty {
			// Take whatever else is already waiting, so that a burst becomes one push.
			if handled < maxCoalesce && r.step(ctx, false) {
				handled++
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.push()
			handled = 0
		}
		if !r.step(ctx, true) {
			return ctx.Err()
		}
	}
}

// step handles one event, waiting for it when wait is set. It reports false when there was
// none or ctx is done.
func (r *runner) step(ctx context.Context, wait bool) bool {
	if !wait {
		select {
		case <-r.c.updated:
			r.reconcile(time.Now())
		case res := <-r.results:
			r.finish(res, time.Now())
		case <-r.c.tripped:
			r.checkTripped(time.Now())
		case <-r.tick:
			r.evaluate(time.Now())
		case <-r.timer.C:
			r.timerFired(time.Now())
		default:
			return false
		}
		return true
	}
	select {
	case <-ctx.Done():
		return false
	case <-r.c.updated:
		r.reconcile(time.Now())
	case res := <-r.results:
		r.finish(res, time.Now())
	case <-r.c.tripped:
		r.checkTripped(time.Now())
	case <-r.tick:
		r.evaluate(time.Now())
	case <-r.timer.C:
		r.timerFired(time.Now())
	}
	return true
}

// state is what Run reports for m.
func (r *runner) state(m *member) sluice.State {
	if m.ep.State != sluice.Ready {
		return m.ep.State
	}
	if !m.healthy || m.isEjected {
		return sluice.Unhealthy
	}
	return sluice.Ready
}

func (r *runner) push() {
	out := make([]sluice.Endpoint, len(r.order))
	for i, ep := range r.order {
		if m := r.members[ep.Addr]; m != nil {
			ep.State = r.state(m)
		}
		out[i] = ep
	}
	r.dirty = false
	r.update(out)
}

// notify reports a change of m's health that happened while it was in state before.
func (r *runner) notify(m *member, before sluice.State, reason Reason, err error) {
	after := r.state(m)
	if after != before {
		r.dirty = true
	}
	m.reason, m.changed = reason, time.Now()
	r.publish(m)
	e := ChangeEvent{Endpoint: m.ep, From: before, To: after, Reason: reason, Err: err}
	if reason.Ejection() {
		e.Ejections = m.ejections
		e.EjectionTime = r.ejectionTime(m.ejections)
	}
	logEvent(r.cfg.Logger, e)
	if f := r.cfg.Hooks.Change; f != nil {
		f(e)
	}
}

// publish copies what Endpoints reports about m to where it reads it.
func (r *runner) publish(m *member) {
	p := m.t.pub
	p.mu.Lock()
	p.healthy, p.ejected = m.healthy, m.isEjected
	p.probeFails, p.probeErr = m.fails, m.probeErr
	p.reason, p.changed = m.reason, m.changed
	p.ejectedUntil, p.ejectionReason = m.ejectedUntil, m.ejectionReason
	p.ejections, p.totalEjections = m.ejections, m.totalEjections
	p.mu.Unlock()
}

// reconcile takes the latest input set from Update.
func (r *runner) reconcile(now time.Time) {
	input, targets, _ := r.c.snapshot() // Update never modifies a slice or map it published
	for _, ep := range input {
		t := targets[ep.Addr]
		m := r.members[ep.Addr]
		if m != nil && m.t != t { // removed and added back between two looks: a new endpoint
			r.remove(m)
			m = nil
		}
		if m == nil {
			m = &member{t: t, ep: ep, index: -1}
			r.members[ep.Addr] = m
			r.start(m, now)
			continue
		}
		wasReady := m.ep.State == sluice.Ready
		m.ep = ep
		switch isReady := ep.State == sluice.Ready; {
		case wasReady && !isReady:
			r.stopProbing(m)
		case !wasReady && isReady:
			r.start(m, now)
		}
	}
	for addr, m := range r.members {
		if t, ok := targets[addr]; !ok || t != m.t {
			r.remove(m)
			delete(r.members, addr)
		}
	}
	r.order = input
	r.ready = 0
	for _, ep := range input {
		if ep.State == sluice.Ready {
			r.ready++
		}
	}
	r.dirty = true
}

// start resets m's active state and schedules its first probe at a random point within one
// interval, so that many new endpoints are probed spread over the interval, not in a burst.
func (r *runner) start(m *member, now time.Time) {
	m.probed, m.passes, m.fails, m.probeErr = false, 0, 0, nil
	m.healthy = r.cfg.Probe == nil || r.cfg.InitialState == sluice.Ready
	r.publish(m)
	if r.cfg.Probe == nil || m.ep.State != sluice.Ready {
		return
	}
	spread := r.cfg.Interval
	if !m.healthy {
		spread = r.cfg.UnhealthyInterval
	}
	r.schedule(m, now.Add(time.Duration(rand.Int64N(int64(spread)))))
}

func (r *runner) schedule(m *member, due time.Time) {
	m.due = due
	if m.index >= 0 {
		heap.Fix(&r.queue, m.index)
	} else {
		heap.Push(&r.queue, m)
	}
}

// stopProbing cancels m's probe in flight and takes it off the queue.
func (r *runner) stopProbing(m *member) {
	m.gen++
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	if m.index >= 0 {
		heap.Remove(&r.queue, m.index)
	}
}

func (r *runner) remove(m *member) {
	m.removed = true
	r.stopProbing(m)
	delete(r.ejected, m)
}

// dispatch starts the probes that are due, as long as there is room in flight.
func (r *runner) dispatch(ctx context.Context, now time.Time) {
	for r.flight < r.cfg.MaxProbes && len(r.queue) > 0 && !r.queue[0].due.After(now) {
		m := heap.Pop(&r.queue).(*member)
		pctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		m.cancel = cancel
		r.flight++
		r.wg.Add(1)
		timed := r.cfg.Hooks.ProbeDone != nil
		go func(ep sluice.Endpoint, gen uint64) {
			defer r.wg.Done()
			var start time.Time
			if timed {
				start = time.Now()
			}
			err := r.cfg.Probe.Check(pctx, ep)
			var took time.Duration
			if timed {
				took = time.Since(start)
			}
			cancel()
			r.results <- result{m, gen, err, took} // never blocks: results has room for every probe
		}(m.ep, m.gen)
	}
}

// arm sets the timer for the next probe due (unless no probe may start) or the end of the
// next ejection, whichever comes first.
func (r *runner) arm(now time.Time) {
	var next time.Time
	if len(r.queue) > 0 && r.flight < r.cfg.MaxProbes {
		next = r.queue[0].due
	}
	for m := range r.ejected {
		if !m.awaitingProbe && (next.IsZero() || m.ejectedUntil.Before(next)) {
			next = m.ejectedUntil
		}
	}
	if next.Equal(r.armed) {
		return
	}
	r.armed = next
	if next.IsZero() {
		r.timer.Stop()
		return
	}
	r.timer.Reset(max(next.Sub(now), 0))
}

func (r *runner) timerFired(now time.Time) {
	r.armed = time.Time{}
	// Probes due are started by dispatch; here ejections end.
	for m := range r.ejected {
		if m.awaitingProbe || now.Before(m.ejectedUntil) {
			continue
		}
		if r.cfg.Probe == nil || m.ep.State != sluice.Ready {
			r.endEjection(m)
			continue
		}
		// With active checks on, the endpoint comes back only once a probe passes: probe it
		// now rather than at its next turn.
		m.awaitingProbe = true
		if m.index >= 0 {
			r.schedule(m, now)
		}
	}
}

// finish applies the result of one probe.
func (r *runner) finish(res result, now time.Time) {
	r.flight--
	m := res.m
	if m.removed || res.gen != m.gen {
		return // probing stopped since this probe started: its result says nothing current
	}
	m.cancel = nil
	if f := r.cfg.Hooks.ProbeDone; f != nil {
		f(ProbeEvent{Endpoint: m.ep, Probe: r.cfg.probe, Result: probeResult(res.err), Err: res.err, Latency: res.latency})
	}
	before := r.state(m)
	first := !m.probed
	m.probed = true
	m.probeErr = res.err
	if res.err == nil {
		m.passes++
		m.fails = 0
		if !m.healthy && (first || m.passes >= r.cfg.HealthyThreshold) {
			m.healthy = true
			r.notify(m, before, ProbePassed, nil)
		}
		if m.isEjected && m.awaitingProbe {
			r.endEjection(m)
		}
	} else {
		m.fails++
		m.passes = 0
		if (m.healthy && m.fails >= r.cfg.UnhealthyThreshold) || (first && !m.healthy) {
			m.healthy = false
			r.notify(m, before, ProbeFailed, res.err)
		}
	}
	r.publish(m)
	r.schedule(m, now.Add(r.jitter(r.interval(m))))
}

// interval is the wait before m's next probe.
func (r *runner) interval(m *member) time.Duration {
	traffic := m.t.seen.Swap(false)
	switch {
	case !m.healthy || m.isEjected:
		return r.cfg.UnhealthyInterval
	case !traffic:
		return r.cfg.NoTrafficInterval
	}
	return r.cfg.Interval
}

func (r *runner) jitter(d time.Duration) time.Duration {
	if r.cfg.Jitter <= 0 {
		return d
	}
	n := int64(float64(d) * r.cfg.Jitter)
	if n <= 0 {
		return d
	}
	return d + time.Duration(rand.Int64N(n))
}

// ejectionTime is how long the n-th recent ejection lasts.
func (r *runner) ejectionTime(n int) time.Duration {
	o := &r.cfg.outlier
	if n <= 0 {
		return 0
	}
	if int64(n) > int64(o.MaxEjectionTime/o.BaseEjectionTime) {
		return o.MaxEjectionTime
	}
	return min(o.BaseEjectionTime*time.Duration(n), o.MaxEjectionTime)
}

// eject takes m out of service for reason, unless it is already out or that would eject more
// than MaxEjectionPercent of the Ready endpoints.
func (r *runner) eject(m *member, reason Reason, now time.Time) bool {
	if m.isEjected || m.ep.State != sluice.Ready {
		return false
	}
	if n := len(r.ejected); n > 0 && (n+1)*100 > r.cfg.outlier.MaxEjectionPercent*r.ready {
		return false
	}
	before := r.state(m)
	if r.ejectionTime(m.ejections) < r.cfg.outlier.MaxEjectionTime {
		m.ejections++
	}
	m.isEjected = true
	m.awaitingProbe = false
	m.ejectedUntil = now.Add(r.ejectionTime(m.ejections))
	m.ejectionReason = reason
	m.totalEjections++
	r.ejected[m] = true
	m.t.consec.Store(0)
	r.notify(m, before, reason, nil)
	return true
}

func (r *runner) endEjection(m *member) {
	before := r.state(m)
	m.isEjected = false
	m.awaitingProbe = false
	delete(r.ejected, m)
	// Start afresh: what the endpoint did before and during its ejection is history.
	m.t.consec.Store(0)
	m.t.window.Store(0)
	m.t.tripped.Store(false)
	r.notify(m, before, EjectionEnded, nil)
}

// checkTripped ejects the endpoints that Observe found past a consecutive-failure threshold.
func (r *runner) checkTripped(now time.Time) {
	for _, m := range r.members {
		t := m.t
		if !t.tripped.Load() {
			continue
		}
		v := t.consec.Load()
		switch {
		case r.c.consecGateway > 0 && v&lo32 >= r.c.consecGateway:
			r.eject(m, ConsecutiveGatewayFailure, now)
		case r.c.consec5xx > 0 && v>>32 >= r.c.consec5xx:
			r.eject(m, Consecutive5xx, now)
		}
		// Cleared after the decision: if it was refused (too many ejected already), the
		// next failure asks again.
		t.tripped.Store(false)
	}
}

// evaluate runs once per outlier interval: it forgives one past ejection of every endpoint
// in service, and runs the success-rate and failure-percentage detectors over the window
// that just ended.
func (r *runner) evaluate(now time.Time) {
	samples := r.samples[:0]
	for _, m := range r.members {
		v := m.t.window.Swap(0)
		if m.isEjected {
			continue
		}
		if m.ejections > 0 {
			m.ejections--
			r.publish(m)
		}
		if m.ep.State != sluice.Ready {
			continue
		}
		if req := v >> 32; req > 0 {
			fail := min(v&lo32, req)
			samples = append(samples, sample{m: m, req: req, fail: fail, rate: float64(req-fail) / float64(req)})
		}
	}
	r.samples = samples[:0]

	if sr := r.cfg.sr; sr.MinimumHosts > 0 {
		judged := judged(samples, sr.RequestVolume)
		if len(judged) >= sr.MinimumHosts {
			var sum float64
			for _, s := range judged {
				sum += s.rate
			}
			mean := sum / float64(len(judged))
			var sq float64
			for _, s := range judged {
				sq += (s.rate - mean) * (s.rate - mean)
			}
			limit := mean - sr.StdevFactor*math.Sqrt(sq/float64(len(judged)))
			slices.SortFunc(judged, func(a, b sample) int { return cmp.Compare(a.rate, b.rate) })
			for _, s := range judged {
				if s.rate < limit {
					r.eject(s.m, SuccessRateOutlier, now)
				}
			}
		}
	}
	if fp := r.cfg.fp; fp.MinimumHosts > 0 {
		judged := judged(samples, fp.RequestVolume)
		if len(judged) >= fp.MinimumHosts {
			slices.SortFunc(judged, func(a, b sample) int { return cmp.Compare(a.rate, b.rate) })
			for _, s := range judged {
				if s.fail*100 >= uint64(fp.Threshold)*s.req {
					r.eject(s.m, FailurePercentageOutlier, now)
				}
			}
		}
	}
}

// judged moves the samples with at least volume tries to the front of samples and returns
// them.
func judged(samples []sample, volume int) []sample {
	n := 0
	for i, s := range samples {
		if s.req >= uint64(volume) {
			samples[n], samples[i] = samples[i], samples[n]
			n++
		}
	}
	return samples[:n]
}

// probeQueue is a min-heap of members by due time.
type probeQueue []*member

func (q probeQueue) Len() int           { return len(q) }
func (q probeQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q probeQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}
func (q *probeQueue) Push(x any) {
	m := x.(*member)
	m.index = len(*q)
	*q = append(*q, m)
}
func (q *probeQueue) Pop() any {
	old := *q
	m := old[len(old)-1]
	old[len(old)-1] = nil
	m.index = -1
	*q = old[:len(old)-1]
	return m
}
