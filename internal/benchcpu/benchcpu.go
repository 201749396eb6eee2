// Package benchcpu reports a benchmark's process CPU time per operation as the metric
// "cpu-ns/op".
//
// On a machine shared with other work, wall time per operation measures the machine's load as
// much as the code under test; the CPU time this process spends is much steadier, so sluice's
// benchmarks report both. Where the platform cannot tell CPU time, nothing is reported.
package benchcpu

import "testing"

// Start begins measuring the process's CPU time for b. The function it returns, called once
// the benchmark loop is done, reports the CPU time used since, divided by b.N, as cpu-ns/op.
// CPU time is the whole process's, so it includes a benchmark's in-process servers.
func Start(b *testing.B) (stop func()) {
	start := Now()
	return func() {
		if used := Now() - start; used > 0 && b.N > 0 {
			b.ReportMetric(float64(used)/float64(b.N), "cpu-ns/op")
		}
	}
}
