package balancer_test

import (
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/benchcpu"
)

// benchKeys is how many distinct users (hash keys, client IPs) the benchmarks rotate through,
// so that hashing policies spread over endpoints as real traffic does instead of hammering
// one endpoint's counters.
const benchKeys = 256

// benchRequests returns benchKeys requests that differ in their X-User header and client IP.
func benchRequests() []*http.Request {
	reqs := make([]*http.Request, benchKeys)
	for i := range reqs {
		reqs[i] = userRequest("user-" + strconv.Itoa(i))
		reqs[i].RemoteAddr = fmt.Sprintf("198.51.%d.%d:40000", i>>8, i&0xff)
	}
	return reqs
}

// BenchmarkPick measures Balancer.Pick for every policy at 10, 1,000 and 10,000 endpoints, in
// parallel, in three forms, with baselines in the same run:
//
//   - Pick/<policy>: Pick, then Done with a canceled outcome, which only gives back the
//     in-flight count (one atomic add, two for bounded-load Maglev) and learns nothing. This
//     is the cost of choosing, which the 100 ns target is about; releasing the count
//     keeps the balancer in the steady state a real proxy sees.
//   - PickDone/<policy>: Pick and a Done that reports a 200 with its latency: the whole
//     per-try cost, including PeakEWMA's estimate update and its clock read.
//   - PickHooks/<policy>: Pick with no-op Hooks.Pick and Hooks.Spill set, against Pick/<policy>
//     the cost of the hooks' plumbing.
//   - baseline/atomic: an atomic counter over a slice plus a second atomic add, the floor any
//     lock-free picker that counts in-flight requests pays; baseline/clock: one time.Now.
//
// Each also reports cpu-ns/op: the process's CPU time per operation, summed over goroutines,
// which is the per-call cost and much less sensitive than ns/op to other work on the machine.
// (ns/op of a parallel benchmark is wall time divided by the calls of all goroutines.)
//
// Before timing, every balancer is warmed with picks that report latencies, so that PeakEWMA
// compares measured estimates rather than its cheaper unmeasured case.
func BenchmarkPick(b *testing.B) {
	reqs := benchRequests()
	for _, n := range []int{10, 1000, 10_000} {
		eps := endpoints(n)
		b.Run(fmt.Sprintf("baseline/atomic/%d", n), func(b *testing.B) {
			var next, inflight atomic.Uint64
			var sink atomic.Int64
			b.ReportAllocs()
			defer benchcpu.Start(b)()
			b.RunParallel(func(pb *testing.PB) {
				var s int
				for pb.Next() {
					s += len(eps[next.Add(1)%uint64(len(eps))].Addr)
					inflight.Add(1)
				}
				sink.Add(int64(s))
			})
		})
		b.Run(fmt.Sprintf("baseline/clock/%d", n), func(b *testing.B) {
			var sink atomic.Int64
			b.ReportAllocs()
			defer benchcpu.Start(b)()
			b.RunParallel(func(pb *testing.PB) {
				var t int64
				for pb.Next() {
					t += time.Now().UnixNano()
				}
				sink.Add(t)
			})
		})
		b.Run(fmt.Sprintf("Pick/StickyReturning/%d", n), func(b *testing.B) {
			// Clients that come back with the cookie of their first pick: the lookup path.
			bal := newBalancer(b, balancer.Sticky{}, balancer.Options{}, eps)
			back := make([]*http.Request, benchKeys)
			for i := range back {
				res, err := bal.Pick(sluice.PickInfo{Request: reqs[i]})
				if err != nil {
					b.Fatal(err)
				}
				res.Done(sluice.Outcome{Failure: sluice.Canceled})
				back[i] = userRequest("user-" + strconv.Itoa(i))
				back[i].AddCookie(&http.Cookie{Name: res.Cookie.Name, Value: res.Cookie.Value})
			}
			runPicks(b, bal, back, sluice.Outcome{Failure: sluice.Canceled}, func(res sluice.PickResult) bool {
				return res.Cookie == nil // a new cookie: the client was not recognised
			})
		})
		for _, tc := range allPolicies() {
			for _, mode := range []struct {
				name  string
				out   sluice.Outcome
				hooks balancer.Hooks
			}{
				{"Pick", sluice.Outcome{Failure: sluice.Canceled}, balancer.Hooks{}},
				{"PickDone", sluice.Outcome{Status: 200, Latency: time.Millisecond}, balancer.Hooks{}},
				{"PickHooks", sluice.Outcome{Failure: sluice.Canceled}, noopHooks},
			} {
				b.Run(fmt.Sprintf("%s/%s/%d", mode.name, tc.name, n), func(b *testing.B) {
					bal := newBalancer(b, tc.p, balancer.Options{Hooks: mode.hooks}, eps)
					for i := range 20 * n {
						pick(b, bal, sluice.PickInfo{Request: reqs[i%len(reqs)]})
					}
					runPicks(b, bal, reqs, mode.out, nil)
				})
			}
		}
	}
}

// noopHooks are per-pick hooks that do nothing: PickHooks/<policy> measures what setting them
// costs over Pick/<policy>, the price of the hooks' plumbing rather than of any exporter.
var noopHooks = balancer.Hooks{Pick: func(balancer.PickEvent) {}, Spill: func(balancer.SpillEvent) {}}

// BenchmarkPickZoned measures Pick with zone preference (Options.Zone) over three zones, with
// every endpoint Ready: a try stays in the local third unless the local endpoint is busier
// than a random remote one. Zone preference makes every policy count requests in flight,
// which is most of its cost over BenchmarkPick. The Node variants add node preference
// (Options.Node) over PreferSameNode hints: a try stays on the node's one endpoint unless it
// is busier than one of the zone's, and then the zone's rule applies.
func BenchmarkPickZoned(b *testing.B) {
	reqs := benchRequests()
	for _, n := range []int{10, 1000, 10_000} {
		eps := endpoints(n)
		for i := range eps {
			eps[i].Zone = string(rune('a' + i%3))
		}
		hinted := hintedEndpoints(n)
		for _, tc := range allPolicies() {
			b.Run(fmt.Sprintf("%s/%d", tc.name, n), func(b *testing.B) {
				bal := newBalancer(b, tc.p, balancer.Options{Zone: "a"}, eps)
				runPicks(b, bal, reqs, sluice.Outcome{Failure: sluice.Canceled}, nil)
			})
			b.Run(fmt.Sprintf("Node/%s/%d", tc.name, n), func(b *testing.B) {
				bal := newBalancer(b, tc.p, balancer.Options{Zone: "b", Node: "node-1"}, hinted)
				runPicks(b, bal, reqs, sluice.Outcome{Failure: sluice.Canceled}, nil)
			})
		}
	}
}

// runPicks times Pick and Done(out) in parallel over reqs, which must hold benchKeys
// requests; each goroutine starts at its own place in them. When check is not nil, every
// result must pass it.
func runPicks(b *testing.B, bal *balancer.Balancer, reqs []*http.Request, out sluice.Outcome, check func(sluice.PickResult) bool) {
	if len(reqs) != benchKeys {
		b.Fatalf("runPicks needs %d requests, got %d", benchKeys, len(reqs))
	}
	var worker atomic.Uint32
	b.ReportAllocs()
	b.ResetTimer()
	defer benchcpu.Start(b)()
	b.RunParallel(func(pb *testing.PB) {
		k := int(worker.Add(1)) * 97
		for pb.Next() {
			k++
			res, err := bal.Pick(sluice.PickInfo{Request: reqs[k%benchKeys]})
			if err != nil {
				b.Fatal(err)
			}
			if check != nil && !check(res) {
				b.Fatalf("unexpected pick of %s", res.Endpoint.Addr)
			}
			res.Done(out)
		}
	})
}

// BenchmarkUpdate measures rebuilding the snapshot for a set of 10,000 endpoints that
// alternates between two versions (one endpoint changes state), as an EndpointSlice update
// does. The zoned variants build two pools, the local zone (a third of the endpoints) and the
// spill-over set (all of them): in /zoned the endpoint that changes is in another zone, so
// the local pool stays as it was; in /zoned-local it is in the local zone, so both change.
func BenchmarkUpdate(b *testing.B) {
	for _, tc := range allPolicies() {
		for _, variant := range []string{"", "/weighted", "/zoned", "/zoned-local"} {
			b.Run(tc.name+"/10000"+variant, func(b *testing.B) {
				one, two := endpoints(10_000), endpoints(10_000)
				opts := balancer.Options{SlowStart: time.Minute}
				for i := range one {
					switch variant {
					case "/weighted":
						one[i].Weight = uint32(1 + i%5)
						two[i].Weight = uint32(1 + i%5)
					case "/zoned", "/zoned-local":
						one[i].Zone = string(rune('a' + i%3))
						two[i].Zone = one[i].Zone
						opts.Zone = "a"
					}
				}
				flap := 7 // in zone b
				if variant == "/zoned-local" {
					flap = 6 // in zone a
				}
				two[flap].State = sluice.Unhealthy
				bal := newBalancer(b, tc.p, opts, one)
				b.ReportAllocs()
				b.ResetTimer()
				defer benchcpu.Start(b)()
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
