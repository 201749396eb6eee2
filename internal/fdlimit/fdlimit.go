// Package fdlimit raises the open-file limit for tests that hold thousands of connections.
package fdlimit

import "syscall"

// Raise raises the soft limit on open files (RLIMIT_NOFILE) to n, or as close to n as it can:
// up to the hard limit, or beyond it where the process may raise the hard limit too (root
// with CAP_SYS_RESOURCE). It returns the soft limit now in force, which is never lowered.
func Raise(n uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= n {
		return lim.Cur, nil
	}
	if lim.Max < n {
		raised := syscall.Rlimit{Cur: n, Max: n}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return n, nil
		}
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}
