package healthcheck_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// These tests probe scripted upstreams (internal/upstreamtest) that misbehave in the ways real
// backends do when they are wedged or broken: silent after the request, a head and then no
// body, a malformed status line, a head that never ends, a reset in the middle of the head,
// stray bytes after the answer, an answer that comes just too late. Each must fail the HTTP
// probe within Options.Timeout, and leave no connection open behind.

// probeTimeout is the probes' Options.Timeout in these tests.
const probeTimeout = 250 * time.Millisecond

// overrun is how much later than probeTimeout a probe may return: scheduling on a loaded
// machine, never a hang.
const overrun = 750 * time.Millisecond

const healthy = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

// misbehaviour is what a scripted upstream does with a probe once it has read its request.
type misbehaviour struct {
	name string
	act  func(c *upstreamtest.Conn)
}

func misbehaviours() []misbehaviour {
	return []misbehaviour{
		{"silent after the request", func(c *upstreamtest.Conn) { c.Stall() }},
		{"head, then a stalled body", func(c *upstreamtest.Conn) {
			if c.Write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789") == nil {
				c.Stall()
			}
		}},
		{"head, then a body cut short", func(c *upstreamtest.Conn) {
			_ = c.Write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		}},
		{"chunked body without its last chunk, stalled", func(c *upstreamtest.Conn) {
			if c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n") == nil {
				c.Stall()
			}
		}},
		{"malformed status line", func(c *upstreamtest.Conn) {
			if c.Write("HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok") == nil {
				c.Stall()
			}
		}},
		{"not HTTP at all", func(c *upstreamtest.Conn) {
			if c.Write("SSH-2.0-OpenSSH_9.6\r\n") == nil {
				c.Stall()
			}
		}},
		{"endless header", func(c *upstreamtest.Conn) {
			if c.Write("HTTP/1.1 200 OK\r\n") != nil {
				return
			}
			line := "X-Filler: " + strings.Repeat("a", 8<<10) + "\r\n"
			chunk := strings.Repeat(line, 8)
			for range (64 << 20) / len(chunk) { // bounded: 64 MiB, far past any header limit
				if c.Write(chunk) != nil {
					return
				}
			}
			c.Stall()
		}},
		{"reset mid-head", func(c *upstreamtest.Conn) {
			if c.Write("HTTP/1.1 200 OK\r\nContent-Le") == nil {
				_ = c.Reset()
			}
		}},
		{"closed without an answer", func(c *upstreamtest.Conn) {}},
		{"answers just past the timeout", func(c *upstreamtest.Conn) {
			late := time.NewTimer(probeTimeout + 100*time.Millisecond)
			defer late.Stop()
			select {
			case <-late.C:
			case <-c.Done():
				return
			}
			if c.Write(healthy) == nil {
				c.Stall()
			}
		}},
	}
}

// switchable starts an upstream that runs bad on every probe while good is false, and answers
// 200 "ok" (then waits for the probe to close) while it is true.
func switchable(t *testing.T, bad func(c *upstreamtest.Conn), good *atomic.Bool) *upstreamtest.Server {
	return upstreamtest.Start(t, func(c *upstreamtest.Conn) {
		if _, err := c.ReadRequest(); err != nil {
			return
		}
		if !good.Load() {
			bad(c)
			return
		}
		if c.Write(healthy) == nil {
			c.Stall()
		}
	})
}

// poll checks cond every millisecond until it holds, failing t after d.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			require.Failf(t, "timed out", "waited %v for %s", d, what)
		}
	}
}

// waitClosed polls until every connection the upstream accepted is closed again: the probe
// left nothing open.
func waitClosed(t *testing.T, up *upstreamtest.Server) {
	t.Helper()
	poll(t, 5*time.Second, "every probe connection to be closed", func() bool { return up.Closed() >= up.Accepted() })
}

// One HTTP probe against each misbehaving upstream fails, within the timeout, and closes its
// connection; the same upstream answering well passes.
func TestHTTPProbeAgainstBadUpstreams(t *testing.T) {
	for _, mb := range misbehaviours() {
		t.Run(mb.name, func(t *testing.T) {
			var good atomic.Bool
			up := switchable(t, mb.act, &good)
			probe := &healthcheck.HTTP{Path: "/healthz"}
			ep := sluice.Endpoint{Addr: up.Addr()}

			check := func() (time.Duration, error) {
				ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
				defer cancel()
				start := time.Now()
				err := probe.Check(ctx, ep)
				return time.Since(start), err
			}
			took, err := check()
			assert.Error(t, err, "the probe must fail")
			t.Logf("failed after %v: %v", took.Round(time.Millisecond), err)
			assert.Less(t, took, probeTimeout+overrun, "the probe returned %v after it started", took)
			waitClosed(t, up)

			good.Store(true)
			_, err = check()
			assert.NoError(t, err, "the same upstream answering well passes")
			waitClosed(t, up)
			assert.Equal(t, 2, up.Accepted(), "one fresh connection per probe")
			if reqs := up.Requests(); assert.Len(t, reqs, 2) {
				assert.Equal(t, "/healthz", reqs[0].Target)
			}
		})
	}
}

// probeLog wraps a probe and records each result and how long it took.
type probeLog struct {
	probe healthcheck.Probe
	mu    sync.Mutex
	errs  []error
	took  []time.Duration
}

func (l *probeLog) Check(ctx context.Context, ep sluice.Endpoint) error {
	start := time.Now()
	err := l.probe.Check(ctx, ep)
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.took = append(l.took, time.Since(start))
	l.mu.Unlock()
	return err
}

// streak returns the number of probes so far and how many of the last ones in a row failed
// (failed true) or passed (failed false).
func (l *probeLog) streak(failed bool) (probes, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.errs) - 1; i >= 0 && (l.errs[i] != nil) == failed; i-- {
		n++
	}
	return len(l.errs), n
}

func (l *probeLog) longest() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, t := range l.took {
		d = max(d, t)
	}
	return d
}

// seen is a ChangeEvent with the probe streak it ended: Hooks.Change runs on Run's goroutine before
// the endpoint's next probe is scheduled, so the streak is exactly the one that decided.
type seen struct {
	healthcheck.ChangeEvent
	streak int
}

// The Checker running HTTP probes marks each misbehaving upstream unhealthy after exactly
// UnhealthyThreshold failed probes, none of which outlives the timeout, and healthy again after
// HealthyThreshold good answers; every probe connection is closed.
func TestCheckerMarksBadUpstreamsUnhealthyAndBack(t *testing.T) {
	const unhealthyThreshold, healthyThreshold = 3, 2
	for _, mb := range misbehaviours() {
		t.Run(mb.name, func(t *testing.T) {
			var good atomic.Bool
			up := switchable(t, mb.act, &good)
			plog := &probeLog{probe: &healthcheck.HTTP{Path: "/healthz"}}
			rec := newRecorder()
			var mu sync.Mutex
			var events []seen
			hc, err := healthcheck.New(healthcheck.Options{
				Probe:              plog,
				Interval:           20 * time.Millisecond,
				Jitter:             -1,
				Timeout:            probeTimeout,
				UnhealthyThreshold: unhealthyThreshold,
				HealthyThreshold:   healthyThreshold,
				Hooks: healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) {
					_, n := plog.streak(e.Reason == healthcheck.ProbeFailed)
					mu.Lock()
					events = append(events, seen{e, n})
					mu.Unlock()
					rec.poke()
				}},
			})
			require.NoError(t, err)
			stop := run(t, hc, rec)
			stopped := false
			defer func() {
				if !stopped {
					stop()
				}
			}()
			addr := up.Addr()
			hc.Update(endpoints(addr))
			count := func() int {
				mu.Lock()
				defer mu.Unlock()
				return len(events)
			}

			rec.waitFor(t, 10*time.Second, "the endpoint to turn unhealthy", func() bool {
				return count() >= 1 && rec.state(addr) == sluice.Unhealthy
			})
			mu.Lock()
			down := events[0]
			mu.Unlock()
			assert.Equal(t, healthcheck.ProbeFailed, down.Reason)
			assert.Error(t, down.Err, "the event carries the last probe's error")
			assert.Equal(t, unhealthyThreshold, down.streak, "unhealthy after exactly UnhealthyThreshold failures")

			good.Store(true)
			rec.waitFor(t, 10*time.Second, "the endpoint to turn healthy again", func() bool {
				return count() >= 2 && rec.state(addr) == sluice.Ready
			})
			mu.Lock()
			back := events[1]
			mu.Unlock()
			assert.Equal(t, healthcheck.ProbePassed, back.Reason)
			assert.Equal(t, healthyThreshold, back.streak, "healthy after exactly HealthyThreshold passes")

			stop()
			stopped = true
			assert.Less(t, plog.longest(), probeTimeout+overrun, "no probe outlives the timeout")
			waitClosed(t, up)
			probes, _ := plog.streak(false)
			assert.LessOrEqual(t, up.Accepted(), probes, "no connection beyond one per probe")
		})
	}
}

// An upstream that answers each probe and then sends, unasked, a whole second response: a
// probe must judge its own answer only. While the real answers are 503 the stray 200s must
// not pass a later probe (as they would on a reused connection), and while the real answers
// are 200 the stray 503s must not fail one.
func TestHTTPProbeStrayBytesNeverAnswerTheNextProbe(t *testing.T) {
	var good atomic.Bool
	const ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	const down503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"
	up := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
		for { // a keep-alive upstream: it answers every request the connection brings
			if _, err := c.ReadRequest(); err != nil {
				return
			}
			raw := down503 + ok200
			if good.Load() {
				raw = ok200 + down503
			}
			if c.Write(raw) != nil {
				return
			}
		}
	})
	plog := &probeLog{probe: &healthcheck.HTTP{}}
	rec := newRecorder()
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:              plog,
		Interval:           10 * time.Millisecond,
		Jitter:             -1,
		Timeout:            probeTimeout,
		UnhealthyThreshold: 3,
		HealthyThreshold:   3,
		Hooks:              healthcheck.Hooks{Change: rec.event},
	})
	require.NoError(t, err)
	stop := run(t, hc, rec)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	addr := up.Addr()
	hc.Update(endpoints(addr))

	rec.waitFor(t, 10*time.Second, "three 503s in a row to turn the endpoint unhealthy", func() bool {
		return rec.state(addr) == sluice.Unhealthy
	})
	good.Store(true)
	rec.waitFor(t, 10*time.Second, "three 200s in a row to turn it healthy", func() bool {
		return rec.state(addr) == sluice.Ready && len(rec.eventsFor(addr)) >= 2
	})
	// Ten more probes: a stray 503 read as an answer would fail some of them.
	before, _ := plog.streak(false)
	poll(t, 10*time.Second, "ten more probes", func() bool {
		n, _ := plog.streak(false)
		return n >= before+10
	})
	stop()
	stopped = true
	probes, passes := plog.streak(false)
	assert.GreaterOrEqual(t, passes, probes-before, "every probe since recovery passed")
	ev := rec.eventsFor(addr)
	require.Len(t, ev, 2, "one change down, one back up")
	var se *healthcheck.StatusError
	if assert.ErrorAs(t, ev[0].Err, &se) {
		assert.Equal(t, 503, se.Status)
	}
	waitClosed(t, up)
	assert.LessOrEqual(t, up.Accepted(), probes, "each probe on a connection of its own")
	assert.GreaterOrEqual(t, up.Accepted(), probes-1, "each probe on a connection of its own")
}
