//go:build !linux

package h1

// deferAccept does nothing where TCP_DEFER_ACCEPT does not exist.
func deferAccept(uintptr) error { return nil }
