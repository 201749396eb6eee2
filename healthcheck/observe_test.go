package healthcheck_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/internal/benchcpu"
)

// outcomeMix is the outcomes the benchmarks and the allocation test record, in turn: mostly
// successes, with server errors and gateway failures often enough to take every branch of
// Observe but never enough in a row to trip a detector. Its length, 11, is prime to the
// endpoint counts, so that every endpoint sees every outcome.
var outcomeMix = []sluice.Outcome{
	ok200, ok200, ok200, err500, ok200, ok200, err503, ok200, clientError, refused, ok200,
}

var successOnly = []sluice.Outcome{ok200}

// newObserving returns a Checker with outlier detection on, over n endpoints: only the
// consecutive-failure detectors (the defaults), or with windowed set every detector.
func newObserving(tb testing.TB, n int, windowed bool) (*healthcheck.Checker, []sluice.Endpoint) {
	o := &healthcheck.Outlier{}
	if windowed {
		o.SuccessRate = &healthcheck.SuccessRate{}
		o.FailurePercentage = &healthcheck.FailurePercentage{}
	}
	hc, err := healthcheck.New(healthcheck.Options{Outlier: o})
	require.NoError(tb, err)
	eps := make([]sluice.Endpoint, n)
	for i := range eps {
		eps[i] = sluice.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255)}
	}
	hc.Update(eps)
	return hc, eps
}

// Observe runs on every try the proxy makes: it must not allocate.
func TestObserveDoesNotAllocate(t *testing.T) {
	for _, windowed := range []bool{false, true} {
		hc, eps := newObserving(t, 1000, windowed)
		i := 0
		allocs := testing.AllocsPerRun(10_000, func() {
			hc.Observe(eps[i%len(eps)], outcomeMix[i%len(outcomeMix)])
			i++
		})
		assert.Zero(t, allocs, "allocations per Observe (windowed detectors %v)", windowed)

		unknown := sluice.Endpoint{Addr: "192.0.2.1:80"}
		assert.Zero(t, testing.AllocsPerRun(1000, func() { hc.Observe(unknown, err503) }),
			"allocations per Observe of an endpoint not in the set")
	}
}

// BenchmarkObserve measures recording one try's outcome, from parallel goroutines spread
// over 10, 1,000 and 10,000 endpoints. Two baselines run alongside: map is a lock-free map
// lookup and one atomic add, the floor of any per-endpoint recorder that counts every try;
// rwmutex is the same map behind a sync.RWMutex, as a locked recorder would read it.
//
// Each also reports cpu-ns/op, the process's CPU time per Observe summed over goroutines:
// what one call costs, steadier than ns/op on a machine shared with other work.
//
// consecutive has the default detectors (consecutive 5xx and gateway failures), under which
// a success only reads; all adds the success-rate and failure-percentage detectors, which
// count every try in the window.
func BenchmarkObserve(b *testing.B) {
	for _, n := range []int{10, 1000, 10_000} {
		consecutive, eps := newObserving(b, n, false)
		all, _ := newObserving(b, n, true)
		counters := make(map[string]*atomic.Uint64, n)
		for _, ep := range eps {
			counters[ep.Addr] = new(atomic.Uint64)
		}
		b.Run(fmt.Sprintf("baseline-map/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			defer benchcpu.Start(b)()
			b.RunParallel(func(pb *testing.PB) {
				for i := rand.IntN(n); pb.Next(); i++ {
					counters[eps[i%n].Addr].Add(1)
				}
			})
		})
		b.Run(fmt.Sprintf("baseline-rwmutex/%d", n), func(b *testing.B) {
			var mu sync.RWMutex
			b.ReportAllocs()
			defer benchcpu.Start(b)()
			b.RunParallel(func(pb *testing.PB) {
				for i := rand.IntN(n); pb.Next(); i++ {
					mu.RLock()
					counters[eps[i%n].Addr].Add(1)
					mu.RUnlock()
				}
			})
		})
		for _, tc := range []struct {
			name     string
			hc       *healthcheck.Checker
			outcomes []sluice.Outcome
		}{
			{"consecutive-success", consecutive, successOnly},
			{"consecutive-mixed", consecutive, outcomeMix},
			{"all-mixed", all, outcomeMix},
		} {
			b.Run(fmt.Sprintf("Observe-%s/%d", tc.name, n), func(b *testing.B) {
				b.ReportAllocs()
				defer benchcpu.Start(b)()
				b.RunParallel(func(pb *testing.PB) {
					for i := rand.IntN(n); pb.Next(); i++ {
						tc.hc.Observe(eps[i%n], tc.outcomes[i%len(tc.outcomes)])
					}
				})
			})
		}
		// Every goroutine records against one endpoint: the worst case for contention on its
		// counters, as when one hot endpoint takes most of the traffic.
		b.Run(fmt.Sprintf("Observe-all-mixed-one-endpoint/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			defer benchcpu.Start(b)()
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					all.Observe(eps[0], outcomeMix[i%len(outcomeMix)])
				}
			})
		})
	}
}
