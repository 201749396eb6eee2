//go:build !race

package proxy_test

// raceEnabled says the race detector is on.
const raceEnabled = false
