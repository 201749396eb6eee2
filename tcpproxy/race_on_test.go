//go:build race

package tcpproxy_test

// raceEnabled says the race detector is on: it enlarges stack frames, and so the stacks of
// idle connections.
const raceEnabled = true
