package healthcheck_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

var errDown = errors.New("backend down")

// recorder collects what Run pushes and the events it reports.
type recorder struct {
	mu     sync.Mutex
	sets   [][]sluice.Endpoint
	events []healthcheck.ChangeEvent
	notify chan struct{} // a token after every push or event
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) update(eps []sluice.Endpoint) {
	r.mu.Lock()
	r.sets = append(r.sets, eps)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) event(e healthcheck.ChangeEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) pushes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sets)
}

func (r *recorder) last() []sluice.Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return nil
	}
	return r.sets[len(r.sets)-1]
}

// state returns addr's state in the last push, or -1 when it is not there.
func (r *recorder) state(addr string) sluice.State {
	for _, ep := range r.last() {
		if ep.Addr == addr {
			return ep.State
		}
	}
	return 255
}

func (r *recorder) eventsFor(addr string) []healthcheck.ChangeEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []healthcheck.ChangeEvent
	for _, e := range r.events {
		if e.Endpoint.Addr == addr {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits, in real time, until cond holds or d passes. It wakes on every push and
// event instead of sleeping.
func (r *recorder) waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-r.notify:
		case <-deadline.C:
			require.Failf(t, "timed out", "waited %v for %s", d, what)
		}
	}
}

// run starts hc.Run with rec and returns a function that stops it and checks that Run
// returned ctx.Err().
func run(t *testing.T, hc *healthcheck.Checker, rec *recorder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hc.Run(ctx, rec.update) }()
	return func() {
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled, "Run returns ctx.Err()")
	}
}

// fakeProbe is a Probe whose verdict per address the test sets. It records when each probe
// started and how many ran at once.
type fakeProbe struct {
	mu       sync.Mutex
	fail     map[string]error
	calls    map[string][]time.Time
	canceled map[string][]time.Time
	delay    time.Duration // how long a probe takes; it waits for ctx when negative
	inflight int
	peak     int
}

func newFakeProbe() *fakeProbe {
	return &fakeProbe{
		fail:     map[string]error{},
		calls:    map[string][]time.Time{},
		canceled: map[string][]time.Time{},
	}
}

func (p *fakeProbe) Check(ctx context.Context, ep sluice.Endpoint) error {
	p.mu.Lock()
	p.calls[ep.Addr] = append(p.calls[ep.Addr], time.Now())
	p.inflight++
	p.peak = max(p.peak, p.inflight)
	err, delay := p.fail[ep.Addr], p.delay
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}()
	if delay != 0 {
		var wait <-chan time.Time
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-wait:
		case <-ctx.Done():
			p.mu.Lock()
			p.canceled[ep.Addr] = append(p.canceled[ep.Addr], time.Now())
			p.mu.Unlock()
			return ctx.Err()
		}
	}
	return err
}

func (p *fakeProbe) set(addr string, err error) {
	p.mu.Lock()
	p.fail[addr] = err
	p.mu.Unlock()
}

func (p *fakeProbe) callsTo(addr string) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.calls[addr]...)
}

func (p *fakeProbe) canceledAt(addr string) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.canceled[addr]...)
}

func (p *fakeProbe) peakInFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

func gaps(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]))
	}
	return out
}

// settleGoroutines waits until at most n goroutines run, or fails after a few seconds: the
// leak check of goleak, by count. Goroutines that just returned take a moment to be reaped.
func settleGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			require.Failf(t, "goroutine leak", "%d goroutines running, want ≤ %d:\n%s", runtime.NumGoroutine(), n, buf)
		}
		runtime.Gosched()
	}
}

func endpoints(addrs ...string) []sluice.Endpoint {
	eps := make([]sluice.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = sluice.Endpoint{Addr: a}
	}
	return eps
}
