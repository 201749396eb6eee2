package tcpproxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice"
)

// direction is one half of a forwarded connection: the bytes from src to dst.
type direction struct {
	c        *conn
	src, dst net.Conn
	// readFail and writeFail are the failures charged when reading src or writing dst breaks:
	// Canceled on the client's side, ConnectionFailure on the endpoint's.
	readFail, writeFail sluice.Failure
}

// forward copies both ways until both directions have ended, then finishes the connection.
// The upstream direction runs in a goroutine of its own, the other on the caller's.
func (c *conn) forward() {
	now := time.Now()
	c.last.Store(now.UnixNano())
	if idle := c.p.opts.IdleTimeout; idle > 0 {
		c.client.SetDeadline(now.Add(idle))
		c.up.SetDeadline(now.Add(idle))
	}
	c.remaining.Store(2)
	up := &direction{c: c, src: c.client, dst: c.up, readFail: sluice.Canceled, writeFail: sluice.ConnectionFailure}
	down := &direction{c: c, src: c.up, dst: c.client, readFail: sluice.ConnectionFailure, writeFail: sluice.Canceled}
	go up.run()
	down.run()
}

func (d *direction) run() {
	p := d.c.p
	switch {
	case p.stdCopy:
		d.stdCopy()
	case !p.spliceOff && d.splice():
	default:
		d.copy()
	}
	if d.c.remaining.Add(-1) == 0 {
		d.c.finish()
	}
}

// stdCopy is io.Copy, kept to compare with: on Linux it splices too, but holds a pipe for as
// long as the direction lasts.
func (d *direction) stdCopy() {
	_, err := io.Copy(d.dst, d.src)
	if err != nil {
		d.c.fail(sluice.ConnectionFailure, nil)
		return
	}
	d.eof()
}

// touch records that bytes moved.
func (c *conn) touch() { c.last.Store(time.Now().UnixNano()) }

// expired is called when a deadline of nc fired. It reports whether the connection has been
// idle for IdleTimeout; if not, it moves the deadline to IdleTimeout after the last transfer,
// so that the caller can wait again.
func (c *conn) expired(nc net.Conn, write bool) bool {
	idle := c.p.opts.IdleTimeout
	if idle <= 0 {
		return true // a deadline we did not set: our Close
	}
	last := time.Unix(0, c.last.Load())
	next := last.Add(idle)
	if !time.Now().Before(next) {
		return true
	}
	if write {
		nc.SetWriteDeadline(next)
	} else {
		nc.SetReadDeadline(next)
	}
	return false
}

// idle ends the connection for having been idle: a client's doing, or nobody's, so the
// endpoint is not charged.
func (d *direction) idle() { d.c.fail(sluice.ClientFailure, nil) }

// broke ends the connection after an error on nc, charging f. An error after the connection
// was closed by the other direction or by Close is not the cause, and charges nothing new.
func (d *direction) broke(f sluice.Failure, nc net.Conn) {
	other := d.dst
	if nc == d.dst {
		other = d.src
	}
	d.c.fail(f, other)
}

// eof handles the end of src: dst is told with a FIN (half-close) and the other direction
// goes on.
func (d *direction) eof() {
	switch dst := d.dst.(type) {
	case *net.TCPConn:
		dst.CloseWrite()
	case *tls.Conn:
		dst.CloseWrite() // close_notify
		if tc, ok := tcpConn(dst); ok {
			tc.CloseWrite()
		}
	case interface{ CloseWrite() error }:
		dst.CloseWrite()
	default:
		// No half-close: the conn cannot say "no more", so the connection ends here.
		d.c.closeBoth()
	}
}

// bufs holds the buffers of the portable copy, taken for the length of a connection.
var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copy is the portable copy loop: a pooled buffer, reads and writes, deadlines re-armed from
// the last transfer.
func (d *direction) copy() {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := d.src.Read(buf)
		if n > 0 {
			d.c.touch()
			if !d.write(buf[:n]) {
				return
			}
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF:
			d.eof()
			return
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			if d.c.expired(d.src, false) {
				d.idle()
				return
			}
		default:
			d.broke(d.readFail, d.src)
			return
		}
	}
}

// write writes b to dst whole, waiting while the connection is not idle.
func (d *direction) write(b []byte) bool {
	for len(b) > 0 {
		n, err := d.dst.Write(b)
		b = b[n:]
		if n > 0 {
			d.c.touch()
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if _, isTLS := d.dst.(*tls.Conn); isTLS || d.c.expired(d.dst, true) {
				// A TLS write that timed out leaves the session unusable: end it.
				d.idle()
				return false
			}
		default:
			d.broke(d.writeFail, d.dst)
			return false
		}
	}
	return true
}
