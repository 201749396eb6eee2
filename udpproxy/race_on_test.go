//go:build race

package udpproxy_test

// raceEnabled says the race detector is on: sync.Pool then drops a quarter of what is put in
// it, so that pooled buffers are allocated again now and then.
const raceEnabled = true
