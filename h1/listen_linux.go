package h1

import "syscall"

// deferAccept sets TCP_DEFER_ACCEPT on a listening socket; a socket that does not take it
// (a Unix socket) is left as it is.
func deferAccept(fd uintptr) error {
	err := syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, deferAcceptSeconds)
	if err == syscall.EOPNOTSUPP || err == syscall.ENOPROTOOPT || err == syscall.EINVAL {
		return nil
	}
	return err
}
