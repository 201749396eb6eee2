package healthcheck_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

var (
	ok200       = sluice.Outcome{Status: 200}
	err500      = sluice.Outcome{Status: 500}
	err503      = sluice.Outcome{Status: 503}
	refused     = sluice.Outcome{Failure: sluice.ConnectFailure}
	canceled    = sluice.Outcome{Failure: sluice.Canceled}
	clientError = sluice.Outcome{Status: 404}
)

func observe(hc *healthcheck.Checker, addr string, outcomes ...sluice.Outcome) {
	for _, o := range outcomes {
		hc.Observe(sluice.Endpoint{Addr: addr}, o)
	}
}

func repeat(o sluice.Outcome, n int) []sluice.Outcome {
	out := make([]sluice.Outcome, n)
	for i := range out {
		out[i] = o
	}
	return out
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("ep%d", i)
	}
	return out
}

func TestConsecutive5xx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{
				Consecutive5xx:            3,
				ConsecutiveGatewayFailure: -1,
				BaseEjectionTime:          30 * time.Second,
				MaxEjectionTime:           70 * time.Second,
				Interval:                  time.Hour, // no forgiveness during this test
			},
			Hooks: healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints(names(10)...))
		synctest.Wait()

		observe(hc, "ep0", err500, err503, ok200, err500, clientError, err500, err500)
		observe(hc, "ep0", canceled, canceled, canceled) // say nothing about the endpoint
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("ep0"), "a success or a 4xx resets the run; cancellations do not count")

		observe(hc, "ep0", err500)
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("ep0"), "the third 5xx in a row ejects")
		ev := rec.eventsFor("ep0")
		require.Len(t, ev, 1)
		assert.Equal(t, healthcheck.Consecutive5xx, ev[0].Reason)
		assert.Equal(t, 1, ev[0].Ejections)
		assert.Equal(t, 30*time.Second, ev[0].EjectionTime)

		time.Sleep(30*time.Second - time.Millisecond)
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("ep0"), "ejected for BaseEjectionTime")
		time.Sleep(time.Millisecond)
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("ep0"), "back when the time is over")
		assert.Equal(t, healthcheck.EjectionEnded, rec.eventsFor("ep0")[1].Reason)

		// Each further ejection lasts longer: 2 × 30s, then capped at 70s, where the count
		// stops growing.
		for i, want := range []time.Duration{60 * time.Second, 70 * time.Second, 70 * time.Second} {
			observe(hc, "ep0", repeat(err500, 3)...)
			synctest.Wait()
			require.Equal(t, sluice.Unhealthy, rec.state("ep0"))
			ev := rec.eventsFor("ep0")
			assert.Equal(t, min(i+2, 3), ev[len(ev)-1].Ejections)
			assert.Equal(t, want, ev[len(ev)-1].EjectionTime)
			time.Sleep(want - time.Millisecond)
			synctest.Wait()
			assert.Equal(t, sluice.Unhealthy, rec.state("ep0"))
			time.Sleep(time.Millisecond)
			synctest.Wait()
			assert.Equal(t, sluice.Ready, rec.state("ep0"))
		}
	})
}

func TestConsecutiveGatewayFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{
				Consecutive5xx:            -1,
				ConsecutiveGatewayFailure: 2,
			},
			Hooks: healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints("a", "b"))

		observe(hc, "a", refused, err500, err503, err500)
		observe(hc, "a", repeat(err500, 20)...)
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("a"), "a 500 is not a gateway failure and ends the run")

		observe(hc, "a", err503, refused)
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("a"))
		require.Len(t, rec.eventsFor("a"), 1)
		assert.Equal(t, healthcheck.ConsecutiveGatewayFailure, rec.eventsFor("a")[0].Reason)
		assert.Equal(t, sluice.Ready, rec.state("b"))
	})
}

func TestMaxEjectionPercent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{
				MaxEjectionPercent: 20,
				BaseEjectionTime:   10 * time.Second,
				Interval:           time.Hour,
			},
			Hooks: healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints(names(10)...))

		for i := range 4 {
			observe(hc, fmt.Sprint("ep", i), repeat(err503, 5)...)
			synctest.Wait()
		}
		unhealthy := func() (n int) {
			for _, ep := range rec.last() {
				if ep.State == sluice.Unhealthy {
					n++
				}
			}
			return n
		}
		assert.Equal(t, 2, unhealthy(), "20%% of 10 endpoints")

		// When an ejection ends the next failing endpoint may take its place.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		assert.Zero(t, unhealthy())
		observe(hc, "ep2", err503)
		observe(hc, "ep3", err503)
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("ep2"), "a refused ejection is retried on the next failure")
		assert.Equal(t, sluice.Unhealthy, rec.state("ep3"))
	})

	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{Outlier: &healthcheck.Outlier{}, Hooks: healthcheck.Hooks{Change: rec.event}})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints("a", "b", "c"))
		observe(hc, "a", repeat(err503, 5)...)
		synctest.Wait()
		observe(hc, "b", repeat(err503, 5)...)
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("a"), "one endpoint may always be ejected, though 10%% of 3 is 0")
		assert.Equal(t, sluice.Ready, rec.state("b"))
	})
}

func TestSuccessRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{
				Consecutive5xx:            -1,
				ConsecutiveGatewayFailure: -1,
				SuccessRate:               &healthcheck.SuccessRate{}, // 5 hosts, 100 requests, 1.9 σ
				Interval:                  10 * time.Second,
				MaxEjectionPercent:        50,
			},
			Hooks: healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints(names(8)...))

		// ep0 fails a third of its requests; the others 1 to 3 in 100; ep7 fails half but
		// has too little volume to be judged.
		for i := range 7 {
			for j := range 120 {
				o := ok200
				if (i == 0 && j%3 == 0) || (i > 0 && j%50 < i%3+1) {
					o = err500
				}
				observe(hc, fmt.Sprint("ep", i), o)
			}
		}
		observe(hc, "ep7", err500, ok200, err500, ok200)
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("ep0"), "judged at the end of the interval")

		time.Sleep(10 * time.Second)
		synctest.Wait()
		for _, ep := range rec.last() {
			want := sluice.Ready
			if ep.Addr == "ep0" {
				want = sluice.Unhealthy
			}
			assert.Equal(t, want, ep.State, ep.Addr)
		}
		require.Len(t, rec.eventsFor("ep0"), 1)
		assert.Equal(t, healthcheck.SuccessRateOutlier, rec.eventsFor("ep0")[0].Reason)

		// Fewer than MinimumHosts with enough volume: nobody is judged.
		for i := 1; i < 4; i++ {
			observe(hc, fmt.Sprint("ep", i), repeat(ok200, 200)...)
		}
		observe(hc, "ep5", repeat(err500, 200)...)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("ep5"))
	})
}

func TestFailurePercentage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{
				Consecutive5xx:            -1,
				ConsecutiveGatewayFailure: -1,
				FailurePercentage:         &healthcheck.FailurePercentage{Threshold: 40, MinimumHosts: 3, RequestVolume: 10},
				MaxEjectionPercent:        100,
			},
			Hooks: healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints("a", "b", "c", "d"))
		for range 10 {
			observe(hc, "a", err500, ok200)       // 50%
			observe(hc, "b", refused, ok200)      // 50%
			observe(hc, "c", ok200, ok200)        // 0%
			observe(hc, "d", err500, clientError) // 50%, but only 2 tries a round...
		}
		observe(hc, "d", repeat(ok200, 15)...) // ... and then 15 successes: 10 of 35, 29%
		time.Sleep(10 * time.Second)
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("a"))
		assert.Equal(t, sluice.Unhealthy, rec.state("b"))
		assert.Equal(t, sluice.Ready, rec.state("c"))
		assert.Equal(t, sluice.Ready, rec.state("d"))
		assert.Equal(t, healthcheck.FailurePercentageOutlier, rec.eventsFor("b")[0].Reason)
	})
}

// A past ejection is forgiven for every Interval spent in service, so the next one is short
// again.
func TestEjectionsAreForgiven(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{BaseEjectionTime: 25 * time.Second, Interval: 10 * time.Second},
			Hooks:   healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints("a"))
		last := func() healthcheck.ChangeEvent { ev := rec.eventsFor("a"); return ev[len(ev)-1] }

		observe(hc, "a", repeat(err503, 5)...)
		synctest.Wait()
		assert.Equal(t, 25*time.Second, last().EjectionTime)
		time.Sleep(25 * time.Second)
		synctest.Wait()
		require.Equal(t, healthcheck.EjectionEnded, last().Reason)
		observe(hc, "a", repeat(err503, 5)...)
		synctest.Wait()
		assert.Equal(t, 50*time.Second, last().EjectionTime, "ejected again at once: twice as long")
		time.Sleep(50 * time.Second) // back at 75s
		time.Sleep(20 * time.Second) // the intervals ending at 80s and 90s forgive both ejections
		synctest.Wait()
		observe(hc, "a", repeat(err503, 5)...)
		synctest.Wait()
		assert.Equal(t, 25*time.Second, last().EjectionTime)
		assert.Equal(t, 1, last().Ejections)
	})
}

// With active checks on, an ejected endpoint comes back only once a probe passes after its
// ejection time.
func TestEjectionEndsWithPassingProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:              probe,
			Interval:           time.Hour,
			UnhealthyInterval:  5 * time.Second,
			Jitter:             -1,
			UnhealthyThreshold: 100, // the probes alone never turn it unhealthy here
			Outlier:            &healthcheck.Outlier{BaseEjectionTime: 30 * time.Second, Interval: time.Hour},
			Hooks:              healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints("a", "b"))
		synctest.Wait()

		observe(hc, "a", repeat(err503, 5)...)
		synctest.Wait()
		ejected := time.Now()
		require.Equal(t, sluice.Unhealthy, rec.state("a"))
		probe.set("a", errDown)

		time.Sleep(30 * time.Second)
		synctest.Wait()
		calls := probe.callsTo("a")
		require.NotEmpty(t, calls)
		assert.Equal(t, ejected.Add(30*time.Second), calls[len(calls)-1], "probed the moment the ejection time is over")
		assert.Equal(t, sluice.Unhealthy, rec.state("a"), "still out: the probe failed")

		time.Sleep(5 * time.Second)
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("a"), "probed again after UnhealthyInterval, failing")
		probe.set("a", nil)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("a"), "back after the first passing probe")
		ev := rec.eventsFor("a")
		assert.Equal(t, healthcheck.EjectionEnded, ev[len(ev)-1].Reason)
		assert.Len(t, probe.callsTo("a"), len(calls)+2)
	})
}

// Outcomes for endpoints that are not in the set are ignored, and outcomes seen before Run
// starts count.
func TestObserveBeforeRun(t *testing.T) {
	rec := newRecorder()
	hc, err := healthcheck.New(healthcheck.Options{
		Outlier: &healthcheck.Outlier{Consecutive5xx: 2, MaxEjectionPercent: 100},
		Hooks:   healthcheck.Hooks{Change: rec.event},
	})
	require.NoError(t, err)
	observe(hc, "a", repeat(err503, 10)...) // not in the set yet
	hc.Update(endpoints("a", "b"))
	observe(hc, "b", repeat(err503, 2)...)
	stop := run(t, hc, rec)
	defer stop()
	rec.waitFor(t, 5*time.Second, "b ejected", func() bool { return rec.state("b") == sluice.Unhealthy })
	assert.Equal(t, sluice.Ready, rec.state("a"), "outcomes from before a was known are ignored")
	observe(hc, "a", err503, err503)
	rec.waitFor(t, 5*time.Second, "a ejected", func() bool { return rec.state("a") == sluice.Unhealthy })
}
