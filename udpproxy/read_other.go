//go:build !unix

package udpproxy

// reader keeps one buffer per flow where the socket cannot be waited on without one.
type reader struct {
	buf *[]byte
}

// init has nothing to bind here.
func (u *upstream) init(*Proxy) error { return nil }

// read waits for the next datagram on u's socket and returns it in (*buf)[:n]. n above
// Options.MaxDatagramSize means it was too long.
func (u *upstream) read(p *Proxy) (buf *[]byte, n int, err error) {
	if u.buf == nil {
		u.buf = p.bufs.Get().(*[]byte)
	}
	n, err = u.conn.Read(*u.buf)
	return u.buf, n, err
}

// release keeps the buffer for the flow's next read.
func (u *upstream) release(*Proxy, *[]byte) {}
