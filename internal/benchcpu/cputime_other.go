//go:build !unix

package benchcpu

import "time"

// Now returns 0: this platform's CPU time is not read, so Start reports nothing.
func Now() time.Duration { return 0 }
