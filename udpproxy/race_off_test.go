//go:build !race

package udpproxy_test

// raceEnabled says the race detector is on.
const raceEnabled = false
