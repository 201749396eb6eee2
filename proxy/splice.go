package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// Splicing. A large response body with a Content-Length, from an HTTP/1.1 upstream on a plain
// TCP connection to a client whose ResponseWriter implements io.ReaderFrom (package h1's, and
// net/http's HTTP/1.1 one, do), goes from socket to socket with splice(2): the writer's
// ReadFrom is given an *io.LimitedReader of the upstream *net.TCPConn, and net.TCPConn's
// ReadFrom moves the bytes through a pipe in the kernel. Copying a 1 MiB body through user
// space costs two copies of it; splicing costs page references.

const (
	// spliceMin is the least body worth splicing: below it, the pipe's setup costs more than
	// the copies it saves.
	spliceMin = 64 << 10
	// spliceChunk is how much one ReadFrom may move before the write deadline moves again.
	spliceChunk = 4 << 20
)

// spliceTarget returns the io.ReaderFrom to splice a body into, or nil if w has none: the
// guard's timedWriter counts when the ResponseWriter it wraps has one.
func spliceTarget(w http.ResponseWriter) io.ReaderFrom {
	if tw, ok := w.(*timedWriter); ok {
		if _, ok := tw.ResponseWriter.(io.ReaderFrom); ok {
			return tw
		}
		return nil
	}
	rf, _ := w.(io.ReaderFrom)
	return rf
}

// spliceable reports whether b's rest may be spliced: a Content-Length body of at least
// spliceMin bytes on a plain TCP connection, where the system splices.
func (b *h1Body) spliceable() bool {
	if !canSplice || b.cc == nil || b.mode != bodyLength || b.n < spliceMin || b.err != nil {
		return false
	}
	_, ok := b.cc.nc.(*net.TCPConn)
	return ok
}

// spliceBody sends b to the client through rf: first, by Write, what the connection's buffer
// holds, then the rest from socket to socket. It returns what copyBody returns: the bytes
// written, and the read or write error that stopped it, told apart by looking at the
// upstream socket, so that a client that went away is not charged to the upstream.
func (x *exchange) spliceBody(b *h1Body, rf io.ReaderFrom) (n int64, rerr, werr error) {
	cc := b.cc
	tcp := cc.nc.(*net.TCPConn)
	if cc.br.Buffered() > 0 {
		bp := bufPool.Get().(*[]byte)
		for b.cc != nil && cc.br.Buffered() > 0 {
			nr, err := b.Read((*bp)[:min(len(*bp), cc.br.Buffered())])
			if nr > 0 {
				nw, err := x.rw.Write((*bp)[:nr])
				n += int64(nw)
				if err != nil {
					werr = err
				}
			}
			if err != nil && err != io.EOF {
				rerr = err
			}
			if rerr != nil || werr != nil {
				break
			}
		}
		bufPool.Put(bp)
		if rerr != nil || werr != nil {
			if werr != nil {
				b.finish(werr)
			}
			return n, rerr, werr
		}
	}
	// A body worth splicing lasts: the request's context is hooked now rather than at
	// hookAt, and each splice waits under the body's own read deadline alone.
	if !cc.hookAt.IsZero() {
		cc.hookAt = time.Time{}
		cc.hookCtx()
	}
	want := cc.want
	for b.cc != nil && b.n > 0 {
		d := want
		if t := b.c.bodyTimeout; t > 0 {
			d = time.Now().Add(t + t/4)
		}
		cc.setReadDeadline(d)
		if cc.ctx.Err() != nil {
			// The request ended as the deadline moved: keep the cancel's deadline.
			tcp.SetReadDeadline(aLongTimeAgo)
		}
		src := io.LimitedReader{R: tcp, N: b.n}
		m, err := rf.ReadFrom(&src)
		b.n -= m
		n += m
		if err == nil {
			if m == 0 {
				rerr = io.ErrUnexpectedEOF // the upstream closed before the Content-Length
				break
			}
			continue
		}
		if cc.upstreamFailed(err) {
			rerr = err
		} else {
			werr = err
		}
		break
	}
	if b.cc != nil {
		switch {
		case rerr != nil:
			b.finish(rerr)
		case werr != nil:
			b.finish(werr)
		case b.n == 0:
			b.finish(nil)
		}
	}
	return n, rerr, werr
}

// upstreamFailed tells whose side of a splice failed with err: the upstream's, if its read
// deadline passed or its socket has ended; otherwise the client's. When it cannot tell, it
// blames the client, which costs the upstream nothing.
func (cc *h1Conn) upstreamFailed(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return !cc.readDL.IsZero() && !time.Now().Before(cc.readDL)
	}
	return cc.ended()
}

// ReadFrom sends r with the wrapped ResponseWriter's ReadFrom, moving the write deadline for
// every spliceChunk bytes as Write moves it for every write.
func (w *timedWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	lr, limited := r.(*io.LimitedReader)
	if !ok || !limited {
		return io.Copy(writerOnly{w}, r)
	}
	var total int64
	for lr.N > 0 {
		w.arm()
		chunk := io.LimitedReader{R: lr.R, N: min(lr.N, spliceChunk)}
		n, err := rf.ReadFrom(&chunk)
		total += n
		lr.N -= n
		if err != nil || n == 0 {
			return total, err
		}
	}
	return total, nil
}

// writerOnly hides ReadFrom, so that io.Copy writes rather than call it back.
type writerOnly struct{ io.Writer }
