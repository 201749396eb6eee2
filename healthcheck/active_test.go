package healthcheck_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// The checker's clock is the runtime's: inside a synctest bubble, time.Sleep in the test
// advances a fake clock, and synctest.Wait lets Run finish reacting before the test looks.

func TestThresholdsAndIntervals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:              probe,
			Interval:           10 * time.Second,
			UnhealthyInterval:  2 * time.Second,
			Jitter:             -1,
			HealthyThreshold:   2,
			UnhealthyThreshold: 3,
			Hooks:              healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()

		hc.Update(endpoints("a"))
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("a"), "a new endpoint starts healthy by default")

		time.Sleep(10 * time.Second)
		synctest.Wait()
		require.Len(t, probe.callsTo("a"), 1, "the first probe falls within one interval")
		first := probe.callsTo("a")[0]
		// sleepTo moves the clock to just after the probe at first+d.
		sleepTo := func(d time.Duration) {
			time.Sleep(time.Until(first.Add(d + time.Millisecond)))
			synctest.Wait()
		}

		probe.set("a", errDown)
		sleepTo(20 * time.Second)
		require.Len(t, probe.callsTo("a"), 3)
		assert.Equal(t, sluice.Ready, rec.state("a"), "two failures are below UnhealthyThreshold")

		sleepTo(30 * time.Second)
		require.Len(t, probe.callsTo("a"), 4)
		assert.Equal(t, sluice.Unhealthy, rec.state("a"), "the third consecutive failure turns it unhealthy")
		ev := rec.eventsFor("a")
		require.Len(t, ev, 1)
		assert.Equal(t, healthcheck.ProbeFailed, ev[0].Reason)
		assert.ErrorIs(t, ev[0].Err, errDown, "the event carries the probe's error")
		assert.Equal(t, sluice.Unhealthy, ev[0].To)

		sleepTo(34 * time.Second) // unhealthy: probed every 2s
		require.Len(t, probe.callsTo("a"), 6)

		probe.set("a", nil)
		sleepTo(36 * time.Second)
		assert.Equal(t, sluice.Unhealthy, rec.state("a"), "one pass is below HealthyThreshold")
		sleepTo(38 * time.Second)
		assert.Equal(t, sluice.Ready, rec.state("a"), "the second consecutive pass turns it healthy")
		ev = rec.eventsFor("a")
		require.Len(t, ev, 2)
		assert.Equal(t, healthcheck.ProbePassed, ev[1].Reason)

		sleepTo(58 * time.Second)
		calls := probe.callsTo("a")
		require.Len(t, calls, 10)
		want := []time.Duration{10, 10, 10, 2, 2, 2, 2, 10, 10}
		for i, g := range gaps(calls) {
			assert.Equal(t, want[i]*time.Second, g, "gap %d between probes", i)
		}
	})
}

func TestJitterAndNoTrafficInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:             probe,
			Interval:          10 * time.Second,
			NoTrafficInterval: 60 * time.Second,
			Jitter:            0.2,
			Hooks:             healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints("busy", "idle"))

		// Traffic to "busy" keeps it on the short interval; "idle" sees none.
		busy := sluice.Endpoint{Addr: "busy"}
		for range 120 {
			hc.Observe(busy, sluice.Outcome{Status: 200})
			time.Sleep(5 * time.Second)
		}
		synctest.Wait()
		b, i := probe.callsTo("busy"), probe.callsTo("idle")
		for _, g := range gaps(b) {
			assert.GreaterOrEqual(t, g, 10*time.Second)
			assert.Less(t, g, 12*time.Second, "jitter adds at most 20%% of the interval")
		}
		assert.Greater(t, len(b), 45)
		for _, g := range gaps(i[1:]) { // the first wait follows the very first probe
			assert.GreaterOrEqual(t, g, 60*time.Second, "an endpoint with no traffic is probed every NoTrafficInterval")
		}
		assert.LessOrEqual(t, len(i), 12)
		distinct := map[time.Duration]bool{}
		for _, g := range gaps(b) {
			distinct[g] = true
		}
		assert.Greater(t, len(distinct), 10, "jittered waits differ")
	})
}

func TestInitialStateUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:             probe,
			Interval:          time.Minute,
			UnhealthyInterval: time.Second,
			InitialState:      sluice.Unhealthy,
			Hooks:             healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()

		probe.set("bad", errDown)
		hc.Update(endpoints("good", "bad"))
		synctest.Wait()
		assert.Equal(t, sluice.Unhealthy, rec.state("good"), "unknown until the first probe")
		assert.Equal(t, sluice.Unhealthy, rec.state("bad"))

		time.Sleep(time.Second) // unknown endpoints are first probed within UnhealthyInterval
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("good"), "one passing probe admits a new endpoint")
		assert.Equal(t, sluice.Unhealthy, rec.state("bad"))
		require.Len(t, rec.eventsFor("bad"), 1)
		assert.Equal(t, healthcheck.ProbeFailed, rec.eventsFor("bad")[0].Reason)
	})
}

// A thousand endpoints arriving at once are probed spread over the interval, never more
// than MaxProbes at a time, each by a goroutine that exists only while its probe runs.
func TestManyEndpointsSpreadAndBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, maxProbes = 1000, 8
		probe := newFakeProbe()
		probe.delay = 60 * time.Millisecond
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:     probe,
			Interval:  10 * time.Second,
			MaxProbes: maxProbes,
			Hooks:     healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		base := runtime.NumGoroutine()
		stop := run(t, hc, rec)
		defer stop()

		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("10.0.%d.%d:80", i/256, i%256)
		}
		hc.Update(endpoints(addrs...))
		start := time.Now()
		peakG := 0
		for range 110 { // the interval, and time for the last probes that fell due
			time.Sleep(100 * time.Millisecond)
			peakG = max(peakG, runtime.NumGoroutine())
		}
		synctest.Wait()

		var buckets [10]int
		for _, a := range addrs {
			calls := probe.callsTo(a)
			require.NotEmpty(t, calls, "%s probed within the interval", a)
			buckets[min(calls[0].Sub(start)/time.Second, 9)]++
		}
		for i, b := range buckets {
			// In one burst they would all start in the first second (8 slots of 60ms make
			// 133 a second); spread evenly they come 100 a second.
			assert.InDelta(t, 100, b, 40, "first probes in second %d", i)
		}
		assert.LessOrEqual(t, probe.peakInFlight(), maxProbes, "probes in flight are bounded by MaxProbes")
		// runtime.NumGoroutine counts the whole process, and the runtime's finalizer
		// goroutine counts while it runs finalizers (of connections earlier tests left to the
		// GC): one more than the Checker's own.
		assert.LessOrEqual(t, peakG-base, maxProbes+2, "one goroutine per probe in flight, plus Run")
	})
}

func TestSlowProbesQueueBehindMaxProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.delay = 3 * time.Second // longer than the interval
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:     probe,
			Interval:  time.Second,
			Timeout:   5 * time.Second,
			MaxProbes: 2,
			Hooks:     healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		hc.Update(endpoints("a", "b", "c", "d"))
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, 2, probe.peakInFlight())
		total := 0
		for _, a := range []string{"a", "b", "c", "d"} {
			calls := probe.callsTo(a)
			assert.GreaterOrEqual(t, len(calls), 6, "%s still gets its turn", a)
			total += len(calls)
		}
		assert.LessOrEqual(t, total, 2*60/3+2, "two slots, three seconds a probe")
	})
}

// An endpoint that leaves the set has its probe in flight canceled at once and is never
// probed again.
func TestRemovedEndpointStopsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.delay = -1 // probes hang until canceled
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe:    probe,
			Interval: time.Second,
			Timeout:  time.Hour,
			Hooks:    healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		base := runtime.NumGoroutine()
		stop := run(t, hc, rec)
		defer stop()

		hc.Update(endpoints("a", "b"))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.Len(t, probe.callsTo("a"), 1, "a's probe hangs")
		assert.Equal(t, base+3, runtime.NumGoroutine(), "Run and two probes")

		removed := time.Now()
		hc.Update(endpoints("b"))
		synctest.Wait()
		assert.Equal(t, []time.Time{removed}, probe.canceledAt("a"), "the probe in flight is canceled at once")
		assert.Equal(t, base+2, runtime.NumGoroutine(), "its goroutine is gone")
		assert.Equal(t, []sluice.Endpoint{{Addr: "b"}}, rec.last())

		time.Sleep(time.Hour)
		synctest.Wait()
		assert.Len(t, probe.callsTo("a"), 1, "a removed endpoint is never probed again")

		hc.Update(nil)
		synctest.Wait()
		assert.Equal(t, base+1, runtime.NumGoroutine(), "only Run is left")
		assert.Empty(t, rec.last())
	})
}

func TestRunWaitsForProbesAndReturnsCtxErr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.delay = -1
		hc, err := healthcheck.New(healthcheck.Options{Probe: probe, Interval: time.Second, Timeout: time.Hour})
		require.NoError(t, err)
		hc.Update(endpoints("a", "b", "c"))
		base := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- hc.Run(ctx, func([]sluice.Endpoint) {}) }()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Equal(t, base+4, runtime.NumGoroutine())

		assert.Error(t, hc.Run(ctx, func([]sluice.Endpoint) {}), "a second concurrent Run is refused")
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
		assert.Equal(t, base, runtime.NumGoroutine(), "no probe outlives Run")
		assert.Len(t, probe.canceledAt("a"), 1)
	})
}

// Terminating and Unhealthy endpoints from discovery pass through unchanged and unprobed.
func TestTerminatingPassesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		for _, a := range []string{"ready", "terminating", "notready"} {
			probe.set(a, errDown)
		}
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{
			Probe: probe, Interval: time.Second, UnhealthyThreshold: 1, Hooks: healthcheck.Hooks{Change: rec.event},
		})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		in := []sluice.Endpoint{
			{Addr: "ready", Zone: "a", Weight: 3},
			{Addr: "terminating", State: sluice.Terminating, Zone: "b"},
			{Addr: "notready", State: sluice.Unhealthy},
		}
		hc.Update(in)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		want := []sluice.Endpoint{
			{Addr: "ready", Zone: "a", Weight: 3, State: sluice.Unhealthy},
			{Addr: "terminating", State: sluice.Terminating, Zone: "b"},
			{Addr: "notready", State: sluice.Unhealthy},
		}
		assert.Equal(t, want, rec.last(), "fields other than State pass through; Terminating is kept")
		assert.Empty(t, probe.callsTo("terminating"))
		assert.Empty(t, probe.callsTo("notready"))

		// The pod comes back Ready (a rollout undone): it is probed again from scratch.
		probe.set("terminating", nil)
		in[1].State = sluice.Ready
		hc.Update(in)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Equal(t, sluice.Ready, rec.state("terminating"))
		assert.NotEmpty(t, probe.callsTo("terminating"))
	})
}

func TestUpdatesAreCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{Hooks: healthcheck.Hooks{Change: rec.event}})
		require.NoError(t, err)
		for i := range 50 { // before Run: only the latest counts
			hc.Update(endpoints(fmt.Sprint(i)))
		}
		stop := run(t, hc, rec)
		defer stop()
		synctest.Wait()
		assert.Equal(t, 1, rec.pushes(), "one push for the sets given before Run")
		assert.Equal(t, endpoints("49"), rec.last())

		for i := range 1000 {
			hc.Update(endpoints(fmt.Sprint(i), "x", "x")) // a duplicate Addr is dropped
		}
		synctest.Wait()
		assert.Less(t, rec.pushes(), 1+500, "a burst of sets is coalesced")
		assert.Equal(t, endpoints("999", "x"), rec.last())
	})
}

func TestNothingPushedBeforeFirstUpdate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		hc, err := healthcheck.New(healthcheck.Options{Probe: newFakeProbe()})
		require.NoError(t, err)
		stop := run(t, hc, rec)
		defer stop()
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Zero(t, rec.pushes())
		hc.Update(nil)
		synctest.Wait()
		assert.Equal(t, 1, rec.pushes(), "an empty set is a set")
	})
}

func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		opts healthcheck.Options
		want string
	}{
		{healthcheck.Options{Interval: -1}, "Options.Interval must be ≥ 0"},
		{healthcheck.Options{Timeout: -time.Second}, "Options.Timeout must be ≥ 0"},
		{healthcheck.Options{UnhealthyInterval: -1}, "Options.UnhealthyInterval"},
		{healthcheck.Options{NoTrafficInterval: -1}, "Options.NoTrafficInterval"},
		{healthcheck.Options{HealthyThreshold: -1}, "Options.HealthyThreshold must be ≥ 0, got -1"},
		{healthcheck.Options{UnhealthyThreshold: -2}, "Options.UnhealthyThreshold"},
		{healthcheck.Options{MaxProbes: -1}, "Options.MaxProbes"},
		{healthcheck.Options{Jitter: 1.5}, "Options.Jitter must be ≤ 1, got 1.5"},
		{healthcheck.Options{InitialState: sluice.Unhealthy}, "Options.InitialState unhealthy needs a Probe"},
		{healthcheck.Options{InitialState: sluice.Terminating, Probe: newFakeProbe()}, "Options.InitialState must be ready or unhealthy"},
		{healthcheck.Options{Outlier: &healthcheck.Outlier{MaxEjectionPercent: 101}}, "Outlier.MaxEjectionPercent must be in [0, 100], got 101"},
		{healthcheck.Options{Outlier: &healthcheck.Outlier{BaseEjectionTime: -1}}, "Outlier.BaseEjectionTime"},
		{healthcheck.Options{Outlier: &healthcheck.Outlier{BaseEjectionTime: time.Hour, MaxEjectionTime: time.Minute}}, "Outlier.MaxEjectionTime must be ≥ BaseEjectionTime"},
		{healthcheck.Options{Outlier: &healthcheck.Outlier{SuccessRate: &healthcheck.SuccessRate{StdevFactor: -1}}}, "Outlier.SuccessRate.StdevFactor"},
		{healthcheck.Options{Outlier: &healthcheck.Outlier{SuccessRate: &healthcheck.SuccessRate{MinimumHosts: -1}}}, "Outlier.SuccessRate.MinimumHosts"},
		{healthcheck.Options{Outlier: &healthcheck.Outlier{FailurePercentage: &healthcheck.FailurePercentage{Threshold: 200}}}, "Outlier.FailurePercentage.Threshold must be in [0, 100], got 200"},
		{healthcheck.Options{Outlier: &healthcheck.Outlier{FailurePercentage: &healthcheck.FailurePercentage{RequestVolume: -5}}}, "Outlier.FailurePercentage.RequestVolume"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			hc, err := healthcheck.New(tc.opts)
			assert.Nil(t, hc)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "healthcheck: "+tc.want)
		})
	}
	hc, err := healthcheck.New(healthcheck.Options{})
	require.NoError(t, err, "the zero Options are valid")
	require.NotNil(t, hc)
	assert.Error(t, hc.Run(context.Background(), nil), "Run needs an update function")
}
