//go:build unix

package udpproxy

import "syscall"

// reader waits for a reply without holding a buffer: the read is tried with a pooled buffer
// that is given back when nothing has arrived, and the runtime's poller then waits on the
// descriptor alone. An idle flow costs its goroutine and its socket, not 64 KiB; a reply
// costs the same read calls as a plain conn.Read.
type reader struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool // bound once per socket, so that reading allocates nothing
	buf *[]byte
	n   int
	err error
}

// init binds u's read to u's socket.
func (u *upstream) init(p *Proxy) error {
	raw, err := u.conn.SyscallConn()
	if err != nil {
		return err
	}
	u.raw = raw
	u.fn = func(fd uintptr) bool {
		b := p.bufs.Get().(*[]byte)
		for {
			n, err := syscall.Read(int(fd), *b)
			switch err {
			case nil:
				u.buf, u.n, u.err = b, n, nil
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN: // EWOULDBLOCK too, the same number on every unix
				p.bufs.Put(b)
				return false // wait until the socket is readable
			}
			p.bufs.Put(b)
			u.buf, u.n, u.err = nil, 0, err
			return true
		}
	}
	return nil
}

// read waits for the next datagram on u's socket and returns it in (*buf)[:n], buf borrowed
// from the pool until release. A datagram longer than the buffer is cut to its size, so n
// above Options.MaxDatagramSize means it was too long.
func (u *upstream) read(*Proxy) (buf *[]byte, n int, err error) {
	if err := u.raw.Read(u.fn); err != nil {
		return nil, 0, err
	}
	return u.buf, u.n, u.err
}

// release gives back the buffer of a datagram read.
func (u *upstream) release(p *Proxy, buf *[]byte) {
	u.buf = nil
	p.bufs.Put(buf)
}
