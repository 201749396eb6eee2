//go:build unix

package h1

import "syscall"

// canPeek says whether idle connections wait without a buffer.
const canPeek = true

// peeker waits for an idle socket to become readable without holding a buffer: the first
// read is tried with a pooled buffer given back when nothing has arrived, and the runtime's
// poller then waits on the descriptor alone. An idle keep-alive connection costs no buffer,
// and a request costs the same two read calls as a plain conn.Read.
type peeker struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool
	c   *conn
	n   int
	err error
}

func (p *peeker) init(raw syscall.RawConn, c *conn) {
	p.raw = raw
	p.c = c
	p.fn = func(fd uintptr) bool {
		if c.rbuf == nil {
			c.rbuf = getBuf()
		}
		p.n, p.err = syscall.Read(int(fd), c.rbuf)
		if p.err == syscall.EAGAIN || p.err == syscall.EINTR {
			putBuf(c.rbuf)
			c.rbuf = nil
			return false
		}
		return true
	}
}

// wait blocks until the socket has bytes, read into c.rbuf[:n] (true), or its end, an error
// or the read deadline came (false).
func (p *peeker) wait() bool {
	if err := p.raw.Read(p.fn); err != nil || p.err != nil || p.n <= 0 {
		return false
	}
	p.c.w = p.n
	return true
}
