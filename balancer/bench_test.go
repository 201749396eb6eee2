package balancer_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

// BenchmarkPick measures Pick plus Done, in parallel, for every policy at 10, 1,000 and
// 10,000 endpoints. BenchmarkPick/baseline is an atomic counter over a slice: the floor any
// lock-free picker pays; baseline-clock is one time.Now, which PeakEWMA's Done pays.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 1000, 10_000} {
		eps := endpoints(n)
		b.Run(fmt.Sprintf("baseline/%d", n), func(b *testing.B) {
			var next atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_ = eps[next.Add(1)%uint64(len(eps))]
				}
			})
		})
		// PeakEWMA's Done reads the clock once; this is what that read costs here.
		b.Run(fmt.Sprintf("baseline-clock/%d", n), func(b *testing.B) {
			var sink atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var t int64
				for pb.Next() {
					t += time.Now().UnixNano()
				}
				sink.Add(t)
			})
		})
		for _, tc := range allPolicies() {
			b.Run(fmt.Sprintf("%s/%d", tc.name, n), func(b *testing.B) {
				bal := newBalancer(b, tc.p, balancer.Options{}, eps)
				info := sluice.PickInfo{Request: userRequest("alice")}
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						res, err := bal.Pick(info)
						if err != nil {
							b.Fatal(err)
						}
						res.Done(sluice.Outcome{Status: 200, Latency: time.Millisecond})
					}
				})
			})
		}
	}
}

// BenchmarkUpdate measures rebuilding the snapshot for a set of 10,000 endpoints that
// alternates between two versions (one endpoint changes state), as an EndpointSlice update
// does.
func BenchmarkUpdate(b *testing.B) {
	for _, tc := range allPolicies() {
		for _, weighted := range []bool{false, true} {
			name := tc.name + "/10000"
			if weighted {
				name += "/weighted"
			}
			b.Run(name, func(b *testing.B) {
				one, two := endpoints(10_000), endpoints(10_000)
				if weighted {
					for i := range one {
						one[i].Weight = uint32(1 + i%5)
						two[i].Weight = uint32(1 + i%5)
					}
				}
				two[7].State = sluice.Unhealthy
				bal := newBalancer(b, tc.p, balancer.Options{SlowStart: time.Minute}, one)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if i%2 == 0 {
						bal.Update(two)
					} else {
						bal.Update(one)
					}
				}
			})
		}
	}
}
