//go:build race

package proxyproto_test

// raceEnabled says the race detector is on: it allocates, so allocation counts do not hold.
const raceEnabled = true
