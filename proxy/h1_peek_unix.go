//go:build unix

package proxy

import "syscall"

// peeker looks at an idle connection's socket with recv(MSG_PEEK|MSG_DONTWAIT): one system
// call, no goroutine, and nothing taken from the socket.
type peeker struct {
	raw syscall.RawConn // nil when the conn has no descriptor
	fn  func(fd uintptr) bool
	err error
	buf [1]byte
}

// initPeek binds the look once per connection, so that looking allocates nothing.
func (cc *h1Conn) initPeek() {
	sc, ok := cc.nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	pk := &cc.peeker
	pk.raw = raw
	pk.fn = func(fd uintptr) bool {
		_, _, pk.err = syscall.Recvfrom(int(fd), pk.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for the descriptor to become readable
	}
}

// canPeek reports whether peek can look at the conn's socket.
func (cc *h1Conn) canPeek() bool { return cc.peeker.raw != nil }

// peek reports whether nothing has arrived on the socket: no byte, no end of stream, no
// error. done is false when the conn has no descriptor to look at.
func (cc *h1Conn) peek() (ok, done bool) {
	pk := &cc.peeker
	if pk.raw == nil {
		return false, false
	}
	if err := pk.raw.Read(pk.fn); err != nil {
		return false, true
	}
	return pk.err == syscall.EAGAIN || pk.err == syscall.EWOULDBLOCK, true
}

// ended reports whether the socket has reached its end or an error: a recv that peeks
// returns 0 or fails other than with EAGAIN. A socket with bytes waiting, or none yet, has not
// ended; so has one it cannot look at.
func (cc *h1Conn) ended() bool {
	pk := &cc.peeker
	if pk.raw == nil {
		return false
	}
	var n int
	var rerr error
	err := pk.raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), pk.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	if err != nil || rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK {
		return false
	}
	return rerr != nil || n == 0
}
