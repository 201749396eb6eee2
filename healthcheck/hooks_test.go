package healthcheck_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// hookLog records every hook call, in order, across both hooks.
type hookLog struct {
	mu     sync.Mutex
	calls  []any // healthcheck.ProbeEvent or healthcheck.ChangeEvent
	notify chan struct{}
}

func newHookLog() *hookLog { return &hookLog{notify: make(chan struct{}, 1)} }

func (l *hookLog) hooks() healthcheck.Hooks {
	add := func(e any) {
		l.mu.Lock()
		l.calls = append(l.calls, e)
		l.mu.Unlock()
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
	return healthcheck.Hooks{
		ProbeDone: func(e healthcheck.ProbeEvent) { add(e) },
		Change:    func(e healthcheck.ChangeEvent) { add(e) },
	}
}

func (l *hookLog) probes(addr string) []healthcheck.ProbeEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []healthcheck.ProbeEvent
	for _, c := range l.calls {
		if e, ok := c.(healthcheck.ProbeEvent); ok && e.Endpoint.Addr == addr {
			out = append(out, e)
		}
	}
	return out
}

func (l *hookLog) snapshot() []any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]any(nil), l.calls...)
}

// wait waits in real time, waking on every hook call, until cond holds or d passes.
func (l *hookLog) wait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-l.notify:
		case <-deadline.C:
			require.Failf(t, "timed out", "waited %v for %s", d, what)
		}
	}
}

// ProbeDone reports every probe of real HTTP servers with the kind of probe, a result that
// tells a pass, a timeout, a refused connection and a bad answer apart, the error and the
// latency; and it comes before the Change the probe causes.
func TestProbeDoneHook(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ok := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refusing := closed.Addr().String()
	require.NoError(t, closed.Close())

	log := newHookLog()
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:              &healthcheck.HTTP{Path: "/healthz"},
		Interval:           50 * time.Millisecond,
		Timeout:            timeout,
		UnhealthyThreshold: 1,
		Hooks:              log.hooks(),
		Logger:             quiet(),
	})
	require.NoError(t, err)
	stop := run(t, hc, newRecorder())
	defer stop()
	addrs := map[string]healthcheck.ProbeResult{
		ok.Listener.Addr().String():   healthcheck.ProbeOK,
		bad.Listener.Addr().String():  healthcheck.ProbeBadResponse,
		slow.Listener.Addr().String(): healthcheck.ProbeTimeout,
		refusing:                      healthcheck.ProbeUnreachable,
	}
	var eps []sluice.Endpoint
	for a := range addrs {
		eps = append(eps, sluice.Endpoint{Addr: a})
	}
	hc.Update(eps)
	log.wait(t, 10*time.Second, "a probe of every endpoint", func() bool {
		for a := range addrs {
			if len(log.probes(a)) == 0 {
				return false
			}
		}
		return true
	})

	for addr, want := range addrs {
		e := log.probes(addr)[0]
		assert.Equal(t, "http", e.Probe, "%s: the kind of probe", addr)
		assert.Equal(t, want, e.Result, "%s: the result (err %v)", addr, e.Err)
		assert.Equal(t, want == healthcheck.ProbeOK, e.Err == nil, "%s: an error exactly when the probe failed", addr)
		assert.Positive(t, e.Latency, "%s: the latency is measured", addr)
		if want == healthcheck.ProbeTimeout {
			assert.GreaterOrEqual(t, e.Latency, timeout, "a probe that timed out took the timeout")
		} else {
			assert.Less(t, e.Latency, timeout, "%s: a probe that did not time out took less than the timeout", addr)
		}
	}

	// The failing probe comes before the change it caused.
	badAddr := bad.Listener.Addr().String()
	log.wait(t, 10*time.Second, "the bad server marked unhealthy", func() bool {
		for _, c := range log.snapshot() {
			if e, ok := c.(healthcheck.ChangeEvent); ok && e.Endpoint.Addr == badAddr {
				return true
			}
		}
		return false
	})
	var seq []string
	for _, c := range log.snapshot() {
		switch e := c.(type) {
		case healthcheck.ProbeEvent:
			if e.Endpoint.Addr == badAddr {
				seq = append(seq, "probe "+e.Result.String())
			}
		case healthcheck.ChangeEvent:
			if e.Endpoint.Addr == badAddr {
				seq = append(seq, "change "+e.Reason.String())
			}
		}
	}
	require.GreaterOrEqual(t, len(seq), 2)
	assert.Equal(t, []string{"probe bad response", "change probe failed"}, seq[:2], "ProbeDone, then the Change it caused")
}

// ProbeEvent.Probe names the kind of probe, and a custom probe's errors are bad responses.
func TestProbeDoneKinds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	errCustom := errors.New("custom probe says no")
	for _, tc := range []struct {
		probe  healthcheck.Probe
		kind   string
		result healthcheck.ProbeResult
	}{
		{&healthcheck.TCP{}, "tcp", healthcheck.ProbeOK},
		{&healthcheck.GRPC{}, "grpc", healthcheck.ProbeBadResponse}, // an HTTP/1 server is no gRPC server
		{healthcheck.ProbeFunc(func(context.Context, sluice.Endpoint) error { return errCustom }), "custom", healthcheck.ProbeBadResponse},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			log := newHookLog()
			hc, err := healthcheck.New(healthcheck.Options{
				Probe: tc.probe, Interval: 20 * time.Millisecond, Hooks: log.hooks(), Logger: quiet(),
			})
			require.NoError(t, err)
			stop := run(t, hc, newRecorder())
			defer stop()
			addr := srv.Listener.Addr().String()
			hc.Update(endpoints(addr))
			log.wait(t, 10*time.Second, "a probe", func() bool { return len(log.probes(addr)) > 0 })
			e := log.probes(addr)[0]
			assert.Equal(t, tc.kind, e.Probe)
			assert.Equal(t, tc.result, e.Result, "err %v", e.Err)
		})
	}
}

// Change reports each ejection and its end with the states before and after, the detector,
// and the ejection's count and length.
func TestChangeHook(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outcome sluice.Outcome
		reason  healthcheck.Reason
	}{
		{"gateway failures", err503, healthcheck.ConsecutiveGatewayFailure},
		{"5xx", err500, healthcheck.Consecutive5xx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := newRecorder()
				hc, err := healthcheck.New(healthcheck.Options{
					Outlier: &healthcheck.Outlier{BaseEjectionTime: 30 * time.Second},
					Hooks:   healthcheck.Hooks{Change: rec.event},
					Logger:  quiet(),
				})
				require.NoError(t, err)
				stop := run(t, hc, rec)
				defer stop()
				hc.Update(endpoints("a", "b"))
				observe(hc, "a", repeat(tc.outcome, 5)...)
				synctest.Wait()
				time.Sleep(30 * time.Second)
				synctest.Wait()

				ev := rec.eventsFor("a")
				require.Len(t, ev, 2, "an ejection and its end")
				assert.Equal(t, sluice.Ready, ev[0].From)
				assert.Equal(t, sluice.Unhealthy, ev[0].To)
				assert.Equal(t, tc.reason, ev[0].Reason)
				assert.Equal(t, 1, ev[0].Ejections)
				assert.Equal(t, 30*time.Second, ev[0].EjectionTime)
				assert.Equal(t, sluice.Unhealthy, ev[1].From)
				assert.Equal(t, sluice.Ready, ev[1].To)
				assert.Equal(t, healthcheck.EjectionEnded, ev[1].Reason)
				assert.Empty(t, rec.eventsFor("b"), "b never changed")
			})
		})
	}
}

// JoinHooks calls every set's hooks in order and leaves a hook nil when no set has it.
func TestJoinHooks(t *testing.T) {
	var got []string
	h := healthcheck.JoinHooks(
		healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) { got = append(got, "1:"+e.Endpoint.Addr) }},
		healthcheck.Hooks{},
		healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) { got = append(got, "2:"+e.Endpoint.Addr) }},
	)
	assert.Nil(t, h.ProbeDone, "no set has ProbeDone")
	require.NotNil(t, h.Change)
	h.Change(healthcheck.ChangeEvent{Endpoint: sluice.Endpoint{Addr: "a"}})
	assert.Equal(t, []string{"1:a", "2:a"}, got)

	var n int
	one := healthcheck.Hooks{ProbeDone: func(healthcheck.ProbeEvent) { n++ }}
	healthcheck.JoinHooks(one).ProbeDone(healthcheck.ProbeEvent{})
	assert.Equal(t, 1, n, "a single hook is called once")

	var calls int
	count := healthcheck.Hooks{Change: func(healthcheck.ChangeEvent) { calls++ }}
	joined := healthcheck.JoinHooks(count, count).Change
	assert.Zero(t, testing.AllocsPerRun(100, func() { joined(healthcheck.ChangeEvent{}) }),
		"a joined hook allocates nothing per call")
	assert.Equal(t, 2*101, calls, "both hooks ran on every call (AllocsPerRun warms up once)")
}

// quiet is a Logger that drops the change log, for tests that check hooks instead.
func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Endpoints reports, per endpoint, what an admin page shows: state, failing probes, runs of
// server errors, and ejections with their detector, end and count.
func TestEndpoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:              probe,
			Interval:           time.Second,
			Jitter:             -1,
			UnhealthyThreshold: 2,
			Outlier:            &healthcheck.Outlier{BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100},
			Logger:             quiet(),
		})
		require.NoError(t, err)
		hc.Update(append(endpoints("a", "b", "c"), sluice.Endpoint{Addr: "d", State: sluice.Terminating}))
		before := hc.Endpoints()
		require.Len(t, before, 4, "Endpoints answers before Run")
		for _, s := range before[:3] {
			assert.Equal(t, sluice.Ready, s.State, "%s starts in InitialState", s.Endpoint.Addr)
		}
		assert.Equal(t, sluice.Terminating, before[3].State, "a Terminating endpoint is passed through")

		stop := run(t, hc, newRecorder())
		defer stop()
		probe.set("b", errDown)
		time.Sleep(2500 * time.Millisecond) // two probes of every endpoint
		synctest.Wait()
		start := time.Now()
		observe(hc, "a", repeat(err503, 5)...)
		synctest.Wait()
		observe(hc, "c", err500, err503)

		got := hc.Endpoints()
		require.Len(t, got, 4)
		a, b, c := got[0], got[1], got[2]
		assert.Equal(t, "a", a.Endpoint.Addr, "in the order of Update")
		assert.Equal(t, sluice.Unhealthy, a.State, "a is ejected")
		assert.True(t, a.Ejected)
		assert.Equal(t, start.Add(30*time.Second), a.EjectedUntil)
		assert.Equal(t, healthcheck.ConsecutiveGatewayFailure, a.EjectionReason)
		assert.Equal(t, healthcheck.ConsecutiveGatewayFailure, a.Reason)
		assert.Equal(t, start, a.Changed)
		assert.Equal(t, 1, a.Ejections)
		assert.Equal(t, 1, a.TotalEjections)
		assert.Zero(t, a.Consecutive5xx, "an ejection starts the counts afresh")

		assert.Equal(t, sluice.Unhealthy, b.State, "b failed two probes or more")
		assert.Equal(t, len(probe.callsTo("b")), b.ProbeFailures, "every probe of b failed")
		assert.ErrorIs(t, b.ProbeErr, errDown)
		assert.Equal(t, healthcheck.ProbeFailed, b.Reason)
		assert.False(t, b.Ejected)

		assert.Equal(t, sluice.Ready, c.State)
		assert.Equal(t, 2, c.Consecutive5xx, "a 500 and a 503")
		assert.Equal(t, 1, c.ConsecutiveGatewayFailures, "the 503 after the 500")
		assert.Zero(t, c.ProbeFailures)
		assert.Zero(t, c.Reason, "c never changed")

		// The ejection ends at the first passing probe after its time; the record stays.
		probe.set("b", nil)
		time.Sleep(31 * time.Second)
		synctest.Wait()
		got = hc.Endpoints()
		a, b = got[0], got[1]
		assert.Equal(t, sluice.Ready, a.State)
		assert.False(t, a.Ejected)
		assert.True(t, a.EjectedUntil.IsZero(), "no end when not ejected")
		assert.Equal(t, healthcheck.EjectionEnded, a.Reason)
		assert.Equal(t, healthcheck.ConsecutiveGatewayFailure, a.EjectionReason, "the latest ejection's detector stays")
		assert.Equal(t, 1, a.TotalEjections)
		assert.Equal(t, sluice.Ready, b.State)
		assert.Zero(t, b.ProbeFailures)
		assert.NoError(t, b.ProbeErr)
	})
}
