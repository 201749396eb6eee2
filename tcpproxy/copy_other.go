//go:build !linux

package tcpproxy

import (
	"errors"
	"net"
	"syscall"
)

// splice reports false: only Linux has splice(2), so other systems take the portable copy.
func (d *direction) splice() bool { return false }

// socket reports false: without splice(2) the proxy needs no raw socket.
func socket(net.Conn) (syscall.RawConn, bool) { return nil, false }

// errWouldBlock and readFd are never used where socket reports false.
var errWouldBlock = errors.New("would block")

func readFd(uintptr, []byte) (int, error) { return 0, errWouldBlock }
