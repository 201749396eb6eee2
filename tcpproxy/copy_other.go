//go:build !linux

package tcpproxy

// splice reports false: only Linux has splice(2), so other systems take the portable copy.
func (d *direction) splice() bool { return false }
