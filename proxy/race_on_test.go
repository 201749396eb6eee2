//go:build race

package proxy_test

// raceEnabled says the race detector is on: sync.Pool then drops a quarter of what is put in
// it, so that pooled objects are allocated again now and then.
const raceEnabled = true
