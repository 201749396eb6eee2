// Package balancer picks the endpoint for each try of a request: round robin, random,
// least-request and peak-EWMA with the power of two choices, Maglev consistent hashing with
// bounded loads, cookie-based sticky sessions and kube-proxy's client-IP session affinity,
// with slow start, zone and node preference and Envoy-style health handling on top.
//
// # Snapshots
//
// A [Balancer] is fed whole endpoint sets through [Balancer.Update] (from a discovery source or
// a health checker) and answers [Balancer.Pick] for the proxy. Update compiles the set into an
// immutable snapshot — the pickable endpoints after health and zone filtering, a smooth
// weighted round-robin schedule, an alias table for weighted random choice, a Maglev lookup
// table, the sticky cookies — and publishes it with an atomic pointer swap. Pick loads that
// pointer and, for the policies that compare loads, touches a few atomic counters: it takes
// no lock and allocates nothing, and the PickResult.Done it returns is a function bound once
// per endpoint, not a closure per pick.
//
// What the balancer learns about an endpoint — requests in flight, its latency estimate, when
// it joined — is kept outside the snapshot, keyed by address, so it survives every rebuild.
//
// # Health
//
// Endpoint.State is an input. Unhealthy endpoints are skipped; Terminating ones are used only
// when no endpoint is Ready. When fewer than Options.PanicThreshold (default 50%) of the
// Ready and Unhealthy endpoints are Ready, the balancer assumes the health signal is wrong or
// the service is overloaded, and spreads load over Ready and Unhealthy endpoints alike, as
// Envoy does. Terminating endpoints count neither way, as Envoy leaves draining hosts out of
// its threshold: they are leaving whatever their health, so one Ready, one Unhealthy and three
// Terminating endpoints send every try to the Ready one. Every policy honours PickInfo.Tried:
// a retry goes to an endpoint not yet tried while there is one.
//
// # Choosing a policy
//
// [RoundRobin] and [Random] ignore load. They are fine when every endpoint is equally fast,
// and disastrous when one is not: a pod that is ten times slower still gets its full share,
// its queue grows without bound, and every request routed to it waits behind that queue.
//
// [LeastRequest] sends each try to the less busy of two random endpoints. [PeakEWMA] weighs
// busy-ness by a moving average of latency that jumps to every new peak, so it learns within
// a few requests that a pod is slow and then sends it only what the fast pods cannot take.
// It is the policy to use for stateless services.
//
// [Maglev] maps a request key (header, cookie, query parameter, path or client IP) to an
// endpoint, for caches and session affinity; with Epsilon set it caps every endpoint's load
// at (1+Epsilon) × average, so a hot key spills over instead of melting its pod. [Sticky]
// pins a client to an endpoint with a cookie that carries a keyed hash of the endpoint's
// address, never the address. [ClientIPAffinity] pins a client's IP address to the endpoint
// it was first sent to, for as long as the client keeps coming back within a timeout, as
// kube-proxy does for a Service with sessionAffinity: ClientIP; it needs no cookie, so it
// works for TCP and UDP, and unlike Maglev's client-IP key it moves no client when the set
// changes, only the clients of an endpoint that left.
//
// # Simulation
//
// examples/lbsim drives each policy, through a real Balancer on a virtual clock, against five
// simulated pods (4 workers each, exponential service times with a 10ms mean) at 80%
// utilisation, first with all pods healthy and then with one pod ten times slower (the
// arrival rate is 80% of the capacity of the pods as they are). Latency is measured from
// arrival to completion, queueing included; 200,000 requests per run, seed 1:
//
//	policy             all healthy p50/p99/p99.9   one slow p50/p99/p99.9      p99 ×    to slow pod
//	round-robin        10.4ms/54.0ms/78.2ms        11.0ms/813s/848s            15063.2  20.0%
//	random             13.6ms/66.5ms/91.3ms        13.0ms/808s/843s            12140.7  19.8%
//	least-request P2C  8.5ms/48.2ms/70.6ms         9.3ms/184.7ms/427.7ms       3.8      3.0%
//	peak-EWMA P2C      8.6ms/48.7ms/72.0ms         9.6ms/56.0ms/192.4ms        1.2      0.7%
//	maglev ε=0.25      9.1ms/49.4ms/71.6ms         10.1ms/203.7ms/431.4ms      4.1      3.1%
//
// Round robin and random give the slow pod 20% of the traffic, six and a half times what it
// can serve (its 40 requests a second against 262 sent), so its queue — and the p99 — grow
// for as long as the run lasts. Peak-EWMA sends it under 1% and keeps p99 within 1.15× of the
// healthy case. Regenerate with: go run ./examples/lbsim
//
// # Cost
//
// Measured with go test -run '^$' -bench 'Pick|Update' -cpu 1,2 ./balancer/ on a two-vCPU
// machine (medians of three runs). Pick, in parallel, allocates nothing and costs, on one
// thread, at 10 / 1,000 / 10,000 endpoints: RoundRobin 36/37/38 ns, Random 37/49/69,
// LeastRequest 55/57/88, PeakEWMA 62/71/95, Maglev 52/64/72 (bounded 63/82/83, on the client
// IP 70/80/83), Sticky 46/44/46 for a new client and 72/81/80 for a returning one,
// ClientIPAffinity about 95 for a returning client (a clock read and two table probes). The
// P2C policies' candidates are cache misses at 10,000 endpoints. With two threads the wall
// time per pick halves for the policies that count nothing (round robin's one shared cursor
// aside); LeastRequest, PeakEWMA and bounded-load Maglev pass in-flight counters between the
// cores and take 40–90 ns a pick. Only the policies that compare loads count requests in
// flight at all. PeakEWMA's Done adds a clock read and an estimate update (~40 ns).
//
// Rebuilding the snapshot of 10,000 endpoints costs 0.4–0.7 ms (1 ms for weighted round
// robin, whose smooth schedule is computed then). Maglev adds its table fill: 2.8 ms in all,
// 3.3 ms weighted. The fill computes exactly the table of Maglev's population loop, so
// replicas running different versions of this package agree on every key. A table is kept
// when its pool's addresses and weights did not change, as after an update confined to
// another zone or to endpoints outside the pool; with zone preference and both pools
// changed, the two tables fill on two goroutines: 3.6 ms of wall time, 5.3 ms of CPU.
//
// # Hooks and stats
//
// Options.Hooks reports what the balancer does, for metrics, tracing and dashboards: every
// pick (Hooks.Pick: the endpoint, whether it was a retry, why it left the local tier), every
// tier a pick leaves with its reason (Hooks.Spill: the node's or zone's endpoints were
// degraded, the local endpoint was busy, or a retry had tried them all), panic mode starting
// and ending (Hooks.Panic), and every Update with its counts by state (Hooks.Update). Pick and
// Spill run on the goroutine calling Pick, Panic and Update on the one calling Update after
// the new snapshot is published; none runs under a lock, so each must be safe for concurrent
// use and must not block. JoinHooks combines several listeners.
//
// With Hooks.Pick and Hooks.Spill nil, Pick runs the code it ran before hooks existed, behind
// one branch on a field read with the snapshot: Pick/<policy> in BenchmarkPick did not move
// (go test -run '^$' -bench 'Pick/(Pick|PickHooks)/(RoundRobin|PeakEWMA|Maglev)/1000$'
// -cpu 1 -count 3 ./balancer/, cpu-ns/op: RoundRobin 37–48 before, 37–39 after; PeakEWMA
// 58 and 52–57; Maglev 73–74 and 68–70). With no-op hooks set a pick costs 11–15 ns more
// (RoundRobin 49–51, PeakEWMA 69–73, Maglev 81–84): copying the endpoint into the event,
// the out-of-line pick with its hook call. It allocates nothing either way.
//
// Balancer.Stats returns a copy of every endpoint with its state, weight and zone, whether
// picks may choose it, its requests in flight (for the policies that count them), PeakEWMA's
// latency estimate and its slow-start share, plus the panic and degraded-tier flags: what an
// admin page shows. It waits only for an Update in progress; Pick never waits for it.
//
// # Slow start, zones and nodes
//
// With Options.SlowStart, an endpoint that joins (or comes back from Unhealthy or
// Terminating) starts at a tenth of its share and ramps up over the window, as Envoy's
// slow_start_config does, so a cold JVM or an empty cache is not flooded. The load-aware and
// load-blind policies turn away part of the picks that land on it; bounded-load Maglev shrinks
// its load bound instead, so its surplus keys spill to their usual next endpoint; pure Maglev
// and pinned Sticky sessions do not ramp, because holding an endpoint back would break the
// affinity they exist for (new Sticky sessions ramp through the fallback policy).
//
// With Options.Zone, picks stay in the proxy's zone (following EndpointSlice hints when every
// endpoint that is not Terminating has them, as kube-proxy does for trafficDistribution:
// PreferSameZone, and else the endpoints' own zones, as Envoy does, unless
// Options.HintsOnly asks for kube-proxy's rule alone) while the zone has capacity.
// Capacity is judged per try, from in-flight counts, with no global counter: a try leaves the
// zone when the local endpoint the policy chose has more than Options.ZoneSpillFactor
// (default 2) × (n + 1) requests in flight, n being the count of a random endpoint in another
// zone. An idle zone keeps all its traffic; a zone with too few endpoints for the proxies in
// it carries about twice the load per endpoint of the others and sheds the rest. A zone with
// fewer Ready endpoints than PanicThreshold of its Ready and Unhealthy ones (its Terminating
// endpoints left out, as above) spills over entirely, and a retry whose local endpoints were
// all tried goes elsewhere.
//
// With Options.Node as well, picks stay on the proxy's own node when the Service asks for it
// with trafficDistribution: PreferSameNode, whose EndpointSlice hints list each endpoint's
// node. kube-proxy's rule decides: node hints count when every Ready endpoint has them and
// some Ready endpoint is hinted for this node; they then win over zone hints. When no Ready
// endpoint is hinted for the node, the zone rule applies, and failing that every endpoint is
// used. The node's endpoints spill over to the zone's (or to every endpoint, without a zone)
// by the same rules as a zone's do to every zone: degraded, busy, or all tried by a retry.
// So a try falls back one tier at a time — node, zone, everywhere — and Pick still reads one
// snapshot, whose tiers are built by Update.
package balancer
