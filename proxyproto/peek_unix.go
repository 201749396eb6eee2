//go:build unix

package proxyproto

import (
	"io"
	"net"
	"syscall"
)

// canPeek says whether sockets can be looked at without consuming what they hold.
const canPeek = true

// peekerOf returns a peekFunc for r's socket, or nil when r is not a socket.
func peekerOf(r io.Reader) peekFunc {
	c, ok := r.(interface {
		net.Conn
		syscall.Conn
	})
	if !ok {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return func(p []byte, have int) (int, error) { return peek(raw, p, have) }
}

// peek waits until more than have bytes have arrived on raw's socket, or its end, and copies
// up to len(p) of them into p with recv(MSG_PEEK), leaving them to be read: have < len(p).
// It honours the read deadline. It returns io.EOF when the peer closed with nothing left to
// read, and errNoPeek when raw is no socket.
//
// Waiting for more than have bytes relies on the runtime's poller being edge-triggered:
// bytes already there do not wake it again, new ones do.
func peek(raw syscall.RawConn, p []byte, have int) (int, error) {
	var n int
	var serr error
	err := raw.Read(func(fd uintptr) bool {
		for {
			n, _, serr = syscall.Recvfrom(int(fd), p, syscall.MSG_PEEK)
			if serr != syscall.EINTR {
				break
			}
		}
		switch {
		case serr == syscall.EAGAIN:
			return false
		case serr == nil && n > 0 && n <= have:
			return false // nothing new: wait for more
		}
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case serr == syscall.ENOTSOCK:
		return 0, errNoPeek
	case serr != nil:
		return 0, serr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
