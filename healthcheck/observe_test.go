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
)

// outcomeMix is the outcomes the benchmarks and the allocation test record, in turn: mostly
// successes, with server errors and gateway failures often enough to take every branch of
// Observe but never enough in a row to trip a detector. Its length, 11, is prime to the
// endpoint counts, so that every endpoint sees every outcome.
var outcomeMix = []sluice.Outcome{
	ok200, ok200, ok200, err500, ok200, ok200, err503, ok200, clientError, refused, ok200,
}

var successOnly = []sluice.Outcome{ok200}

func newObserving(tb testing.TB, n int) (*healthcheck.Checker, []sluice.Endpoint) {
	hc, err := healthcheck.New(healthcheck.Options{Outlier: &healthcheck.Outlier{
		SuccessRate:       &healthcheck.SuccessRate{},
		FailurePercentage: &healthcheck.FailurePercentage{},
	}})
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
	hc, eps := newObserving(t, 1000)
	i := 0
	allocs := testing.AllocsPerRun(10_000, func() {
		hc.Observe(eps[i%len(eps)], outcomeMix[i%len(outcomeMix)])
		i++
	})
	assert.Zero(t, allocs, "allocations per Observe")

	unknown := sluice.Endpoint{Addr: "192.0.2.1:80"}
	assert.Zero(t, testing.AllocsPerRun(1000, func() { hc.Observe(unknown, err503) }),
		"allocations per Observe of an endpoint not in the set")
}

// BenchmarkObserve measures recording one try's outcome, from parallel goroutines spread
// over 10, 1,000 and 10,000 endpoints, with every detector on. Two baselines run alongside:
// map is a lock-free map lookup and one atomic add, the floor of any per-endpoint recorder;
// rwmutex is the same map behind a sync.RWMutex, as a locked recorder would read it.
func BenchmarkObserve(b *testing.B) {
	for _, n := range []int{10, 1000, 10_000} {
		hc, eps := newObserving(b, n)
		counters := make(map[string]*atomic.Uint64, n)
		for _, ep := range eps {
			counters[ep.Addr] = new(atomic.Uint64)
		}
		b.Run(fmt.Sprintf("baseline-map/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for i := rand.IntN(n); pb.Next(); i++ {
					counters[eps[i%n].Addr].Add(1)
				}
			})
		})
		b.Run(fmt.Sprintf("baseline-rwmutex/%d", n), func(b *testing.B) {
			var mu sync.RWMutex
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for i := rand.IntN(n); pb.Next(); i++ {
					mu.RLock()
					counters[eps[i%n].Addr].Add(1)
					mu.RUnlock()
				}
			})
		})
		for _, mix := range []struct {
			name     string
			outcomes []sluice.Outcome
		}{{"success", successOnly}, {"mixed", outcomeMix}} {
			b.Run(fmt.Sprintf("Observe-%s/%d", mix.name, n), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for i := rand.IntN(n); pb.Next(); i++ {
						hc.Observe(eps[i%n], mix.outcomes[i%len(mix.outcomes)])
					}
				})
			})
		}
		// Every goroutine records against one endpoint: the worst case for contention on its
		// counters, as when one hot endpoint takes most of the traffic.
		b.Run(fmt.Sprintf("Observe-mixed-one-endpoint/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					hc.Observe(eps[0], outcomeMix[i%len(outcomeMix)])
				}
			})
		})
	}
}
