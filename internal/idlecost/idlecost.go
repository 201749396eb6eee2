// Package idlecost holds what the tests that measure idle connections and flows share: room
// for thousands of descriptors, and the memory a process holds once collected.
package idlecost

import (
	"runtime"
	"syscall"
	"testing"
)

// RaiseFileLimit raises the soft limit on open files (RLIMIT_NOFILE) toward n, up to the hard
// limit, or beyond it where the process may raise the hard limit too (root with
// CAP_SYS_RESOURCE), and returns the soft limit now in force, which is never lowered. It fails
// t if the limit cannot be read or set.
func RaiseFileLimit(t testing.TB, n uint64) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("reading the open-file limit: %v", err)
	}
	if lim.Cur >= n {
		return lim.Cur
	}
	if lim.Max < n {
		raised := syscall.Rlimit{Cur: n, Max: n}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return n
		}
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising the open-file limit to %d: %v", lim.Cur, err)
	}
	return lim.Cur
}

// InUse returns the heap in use and the goroutine stacks after three collections (the later
// ones shrink the stacks the first found mostly unused): what a process holds for the
// connections it keeps, when measured before and after opening them.
func InUse() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
