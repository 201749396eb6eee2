package healthcheck_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// These tests run the Checker in real time against real HTTP servers that fail, hang and
// recover, with real probes, and with traffic from a real HTTP client that sends each request
// to a Ready endpoint of the last set the Checker pushed and reports the outcome to Observe,
// as a proxy would.

// flaky is an httptest backend that can be switched between serving, failing with 500 and
// hanging. It counts the traffic (not the probes) it receives.
type flaky struct {
	srv     *httptest.Server
	mode    atomic.Int32 // serving, failing or hanging
	traffic atomic.Int64 // requests to /work
	hung    atomic.Int64 // requests hanging right now, probes included
	release chan struct{}
}

const (
	serving int32 = iota
	failing
	hanging
)

func newFlaky(t *testing.T) *flaky {
	f := &flaky{release: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/work" {
			f.traffic.Add(1)
		}
		switch f.mode.Load() {
		case failing:
			http.Error(w, "broken", http.StatusInternalServerError)
		case hanging:
			f.hung.Add(1)
			defer f.hung.Add(-1)
			select {
			case <-r.Context().Done():
			case <-f.release:
			}
		}
	}))
	t.Cleanup(func() {
		close(f.release)
		f.srv.Close()
	})
	return f
}

func (f *flaky) addr() string { return f.srv.Listener.Addr().String() }

// driver sends traffic the way a proxy does: each request to the next Ready endpoint of the
// last set the Checker pushed, its outcome reported to Observe.
type driver struct {
	hc     *healthcheck.Checker
	rec    *recorder
	client *http.Client
	next   int
}

func newDriver(hc *healthcheck.Checker, rec *recorder, timeout time.Duration) *driver {
	return &driver{hc: hc, rec: rec, client: &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: 4},
	}}
}

// send makes one request, and reports false when no endpoint is Ready.
func (d *driver) send() bool {
	var ready []sluice.Endpoint
	for _, ep := range d.rec.last() {
		if ep.State == sluice.Ready {
			ready = append(ready, ep)
		}
	}
	if len(ready) == 0 {
		return false
	}
	d.next++
	ep := ready[d.next%len(ready)]
	start := time.Now()
	res, err := d.client.Get("http://" + ep.Addr + "/work")
	o := sluice.Outcome{Latency: time.Since(start)}
	switch {
	case err == nil:
		res.Body.Close()
		o.Status = res.StatusCode
	case errors.Is(err, syscall.ECONNREFUSED):
		o.Failure = sluice.ConnectFailure
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		o.Failure = sluice.Timeout
	default:
		o.Failure = sluice.ConnectionFailure
	}
	d.hc.Observe(ep, o)
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (d *driver) close() { d.client.CloseIdleConnections() }

func reasons(events []healthcheck.ChangeEvent) []healthcheck.Reason {
	out := make([]healthcheck.Reason, len(events))
	for i, e := range events {
		out[i] = e.Reason
	}
	return out
}

// A backend that starts failing is ejected after Consecutive5xx failed requests, receives no
// traffic while it keeps failing (though its ejection time runs out again and again: with
// active checks on, only a passing probe lets it back), and takes traffic again once it
// recovers.
func TestFlakyBackendEjectedAndRecovers(t *testing.T) {
	const consecutive5xx = 5
	backends := []*flaky{newFlaky(t), newFlaky(t), newFlaky(t)}
	victim := backends[2]
	rec := newRecorder()
	hc, err := healthcheck.New(healthcheck.Options{
		Probe: &healthcheck.HTTP{Path: "/healthz"},
		// Slow probes while healthy, so that the failing requests, not the probes, are
		// first to notice; fast ones while unhealthy or ejected.
		Interval:           time.Second,
		UnhealthyInterval:  20 * time.Millisecond,
		Timeout:            2 * time.Second,
		HealthyThreshold:   2,
		UnhealthyThreshold: 3,
		Outlier: &healthcheck.Outlier{
			Consecutive5xx:   consecutive5xx,
			BaseEjectionTime: 50 * time.Millisecond,
		},
		Hooks: healthcheck.Hooks{Change: rec.event},
	})
	require.NoError(t, err)
	stop := run(t, hc, rec)
	defer stop()
	eps := make([]sluice.Endpoint, len(backends))
	for i, b := range backends {
		eps[i] = sluice.Endpoint{Addr: b.addr()}
	}
	hc.Update(eps)
	rec.waitFor(t, 5*time.Second, "the first set", func() bool { return rec.pushes() > 0 })
	d := newDriver(hc, rec, 5*time.Second)
	defer d.close()

	for range 30 {
		require.True(t, d.send())
	}
	for i, b := range backends {
		assert.Equal(t, int64(10), b.traffic.Load(), "backend %d takes its share", i)
	}

	victim.mode.Store(failing)
	before := victim.traffic.Load()
	for rec.state(victim.addr()) != sluice.Unhealthy {
		require.Less(t, victim.traffic.Load()-before, int64(consecutive5xx), "ejected within Consecutive5xx failed requests")
		require.True(t, d.send())
		if victim.traffic.Load()-before == consecutive5xx {
			// Give Run the moment it needs to act; a proxy would send on meanwhile, and the
			// end-to-end test shows that moment is short.
			rec.waitFor(t, 5*time.Second, "the ejection", func() bool { return rec.state(victim.addr()) == sluice.Unhealthy })
		}
	}
	assert.Equal(t, int64(consecutive5xx), victim.traffic.Load()-before, "ejected at the Consecutive5xx-th failure, not before")
	ev := rec.eventsFor(victim.addr())
	require.NotEmpty(t, ev)
	assert.Equal(t, healthcheck.Consecutive5xx, ev[0].Reason)

	// Keep the traffic going well past several ejection times: the probes keep failing, so
	// the ejection never ends, and the victim sees no request.
	ejected := victim.traffic.Load()
	rec.waitFor(t, 5*time.Second, "the probes fail too", func() bool {
		return containsReason(rec.eventsFor(victim.addr()), healthcheck.ProbeFailed)
	})
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		require.True(t, d.send())
	}
	assert.Equal(t, ejected, victim.traffic.Load(), "an ejected backend gets no traffic")
	assert.Equal(t, sluice.Unhealthy, rec.state(victim.addr()))

	victim.mode.Store(serving)
	rec.waitFor(t, 5*time.Second, "the victim back", func() bool { return rec.state(victim.addr()) == sluice.Ready })
	for range 30 {
		require.True(t, d.send())
	}
	assert.Equal(t, ejected+10, victim.traffic.Load(), "a recovered backend takes its share again")
	assert.Subset(t, reasons(rec.eventsFor(victim.addr())), []healthcheck.Reason{
		healthcheck.Consecutive5xx, healthcheck.ProbeFailed, healthcheck.ProbePassed, healthcheck.EjectionEnded,
	})
	for _, b := range backends[:2] {
		assert.Empty(t, rec.eventsFor(b.addr()), "the healthy backends never change")
	}
}

func containsReason(events []healthcheck.ChangeEvent, r healthcheck.Reason) bool {
	for _, e := range events {
		if e.Reason == r {
			return true
		}
	}
	return false
}

// A backend that accepts connections but never answers is caught by the probe timeout, or,
// without probes, by the timeouts of the requests sent to it; the probes leave no request
// hanging on it.
func TestHangingBackendCaughtByTimeout(t *testing.T) {
	t.Run("active", func(t *testing.T) {
		good, stuck := newFlaky(t), newFlaky(t)
		stuck.mode.Store(hanging)
		rec := newRecorder()
		const timeout = 100 * time.Millisecond
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:              &healthcheck.HTTP{Path: "/healthz"},
			Interval:           50 * time.Millisecond,
			Timeout:            timeout,
			UnhealthyThreshold: 2,
			Hooks:              healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		start := time.Now()
		hc.Update(endpoints(good.addr(), stuck.addr()))
		rec.waitFor(t, 10*time.Second, "the stuck backend unhealthy", func() bool {
			return rec.state(stuck.addr()) == sluice.Unhealthy
		})
		took := time.Since(start)
		ev := rec.eventsFor(stuck.addr())
		require.Len(t, ev, 1)
		assert.Equal(t, healthcheck.ProbeFailed, ev[0].Reason)
		assert.ErrorIs(t, ev[0].Err, context.DeadlineExceeded, "the probe timed out")
		assert.GreaterOrEqual(t, took, 2*timeout, "two probes, each given the full Timeout")
		assert.Equal(t, sluice.Ready, rec.state(good.addr()))
		assert.Eventually(t, func() bool { return stuck.hung.Load() <= 1 }, 5*time.Second, 5*time.Millisecond,
			"timed-out probes close their connections: at most the current probe hangs")
	})

	// A hanging probe of an endpoint that leaves the set is canceled at once: its connection
	// closes, and no goroutine is left behind.
	t.Run("removed", func(t *testing.T) {
		stuck := newFlaky(t)
		stuck.mode.Store(hanging)
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:    &healthcheck.HTTP{Path: "/healthz"},
			Interval: 10 * time.Millisecond,
			Timeout:  time.Hour,
			Hooks:    healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		base := runtime.NumGoroutine()
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints(stuck.addr()))
		require.Eventually(t, func() bool { return stuck.hung.Load() == 1 }, 5*time.Second, time.Millisecond,
			"the probe reaches the backend and hangs")
		hc.Update(nil)
		assert.Eventually(t, func() bool { return stuck.hung.Load() == 0 }, 2*time.Second, time.Millisecond,
			"the backend sees the probe's connection close")
		// Run, and the server's goroutines for its listener and the probe's closed connection.
		settleGoroutines(t, base+1)
		assert.Empty(t, rec.eventsFor(stuck.addr()), "a removed endpoint gets no verdict")
	})

	t.Run("passive", func(t *testing.T) {
		good, stuck := newFlaky(t), newFlaky(t)
		stuck.mode.Store(hanging)
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{ConsecutiveGatewayFailure: 3, BaseEjectionTime: time.Minute},
			Hooks:   healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints(good.addr(), stuck.addr()))
		rec.waitFor(t, 5*time.Second, "the first set", func() bool { return rec.pushes() > 0 })
		d := newDriver(hc, rec, 100*time.Millisecond)
		defer d.close()
		for rec.state(stuck.addr()) != sluice.Unhealthy {
			require.Less(t, stuck.traffic.Load(), int64(3), "ejected after 3 timed-out requests")
			require.True(t, d.send())
			if stuck.traffic.Load() == 3 {
				rec.waitFor(t, 5*time.Second, "the ejection", func() bool { return rec.state(stuck.addr()) == sluice.Unhealthy })
			}
		}
		ev := rec.eventsFor(stuck.addr())
		require.Len(t, ev, 1)
		assert.Equal(t, healthcheck.ConsecutiveGatewayFailure, ev[0].Reason)
		assert.Equal(t, int64(3), stuck.traffic.Load(), "three requests timed out")
		for range 10 {
			require.True(t, d.send())
		}
		assert.Equal(t, int64(3), stuck.traffic.Load(), "and then no more traffic")
	})
}

// A thousand endpoints — virtual hosts of one real server, reached through the probe's
// Transport — are probed over real connections, spread over the interval rather than in a
// burst, with never more than MaxProbes probes in flight and a goroutine count that stays
// far below the number of endpoints.
func TestThousandEndpointsRealProbes(t *testing.T) {
	const (
		n         = 1000
		maxProbes = 8
		interval  = 4 * time.Second
	)
	var (
		mu       sync.Mutex
		first    = map[string]time.Time{} // mu protects first
		inflight atomic.Int64
		peak     atomic.Int64
		allSeen  = make(chan struct{})
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		mu.Lock()
		if _, ok := first[r.Host]; !ok {
			first[r.Host] = time.Now()
			if len(first) == n {
				close(allSeen)
			}
		}
		mu.Unlock()
	}))
	defer srv.Close()
	var dialer net.Dialer
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, srv.Listener.Addr().String())
		},
		DisableKeepAlives: true,
	}
	defer transport.CloseIdleConnections()

	hc, err := healthcheck.New(healthcheck.Options{
		Probe:     &healthcheck.HTTP{Path: "/healthz", Transport: transport},
		Interval:  interval,
		MaxProbes: maxProbes,
		Timeout:   5 * time.Second,
		Logger:    slog.New(slog.DiscardHandler), // thousands of endpoints: no change log
	})
	require.NoError(t, err)
	eps := make([]sluice.Endpoint, n)
	for i := range eps {
		eps[i] = sluice.Endpoint{Addr: net.JoinHostPort(net.IPv4(10, 1, byte(i/256), byte(i%256)).String(), "8080")}
	}
	base := runtime.NumGoroutine()
	rec := newRecorder()
	stop := run(t, hc, rec)
	defer stop()
	start := time.Now()
	hc.Update(eps)

	peakG := 0
	sample := time.NewTicker(5 * time.Millisecond)
	defer sample.Stop()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
wait:
	for {
		select {
		case <-sample.C:
			peakG = max(peakG, runtime.NumGoroutine())
		case <-allSeen:
			break wait
		case <-deadline.C:
			mu.Lock()
			seen := len(first)
			mu.Unlock()
			require.FailNow(t, "not every endpoint was probed", "%d of %d in 30s", seen, n)
		}
	}

	mu.Lock()
	var quarters [4]int
	for _, at := range first {
		quarters[min(at.Sub(start)*4/interval, 3)]++
	}
	mu.Unlock()
	t.Logf("first probes per quarter of the interval: %v; peak probes in flight %d; peak goroutines %d above the %d before Run",
		quarters, peak.Load(), peakG-base, base)
	// Spread evenly, the first probes come 250 a quarter (a second). In a burst they would
	// come as fast as the machine can probe — hundreds a second even under -race — so most
	// in the first quarter. A slow machine can only push probes later, never earlier, so
	// only the early quarters have upper bounds.
	assert.GreaterOrEqual(t, quarters[0], n/10, "probing starts at once")
	assert.LessOrEqual(t, quarters[0], n*2/5, "not in a burst at the start")
	assert.LessOrEqual(t, quarters[0]+quarters[1], n*13/20, "not in a burst in the first half")
	assert.LessOrEqual(t, peak.Load(), int64(maxProbes), "probes in flight, as the server counts them")
	// Each probe in flight is a goroutine of the Checker's, the client connection's two and
	// the server's one; closed connections take a moment to be reaped.
	assert.Less(t, peakG-base, 10*maxProbes, "goroutines stay bounded by MaxProbes, not by the endpoints")
}
