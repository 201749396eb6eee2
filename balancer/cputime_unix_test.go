//go:build unix

package balancer_test

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time, user and system, that this process has used so far. The
// benchmarks report it per operation next to ns/op: on a machine shared with other work,
// wall time per operation measures the machine's load as much as the code, CPU time much
// less so.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
