package tcpproxy

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"

	"github.com/sluiceproxy/sluice/proxyproto"
)

// pipeSize is the capacity asked of each pipe, and so the most one splice(2) moves: 1 MiB, as
// Go's own splice asks (the default /proc/sys/fs/pipe-max-size). A pipe's pages are taken only
// while data sits in it.
const pipeSize = 1 << 20

const spliceFlags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK

// pipe is a kernel pipe that splice(2) moves bytes through, from one socket to another,
// without copying them into user space.
type pipe struct {
	r, w    int
	cleanup runtime.Cleanup // closes the descriptors of a pipe the pool dropped
}

// pipes holds the idle pipes. A direction takes one when its source has bytes to read and
// gives it back, empty, as soon as the source has nothing more: an idle connection holds no
// pipe, where io.Copy's splice holds one per direction (two descriptors and a pipe buffer)
// for the connection's whole life.
var pipes sync.Pool

func getPipe() (*pipe, error) {
	if p, ok := pipes.Get().(*pipe); ok {
		return p, nil
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), syscall.F_SETPIPE_SZ, pipeSize) // a smaller pipe works too
	p := &pipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
	}, fds)
	return p, nil
}

// destroy closes a pipe that cannot be reused: it still holds bytes.
func (p *pipe) destroy() {
	p.cleanup.Stop()
	syscall.Close(p.r)
	syscall.Close(p.w)
}

// splicer is the state of a direction's splice loop. Its two callbacks are bound once, when
// the direction starts, so that the loop allocates nothing.
type splicer struct {
	p      *pipe
	inPipe int   // bytes in p
	rerr   error // from splicing src into p
	werr   error // from splicing p into dst
	perr   error // from getting a pipe
	readFn func(fd uintptr) bool
	writFn func(fd uintptr) bool
}

// socket returns the raw socket of a *net.TCPConn, or of a proxyproto.Conn (whose RawConn
// checks an untrusted peer's first bytes before it reads), when nc is one.
func socket(nc net.Conn) (syscall.RawConn, bool) {
	switch nc.(type) {
	case *net.TCPConn, *proxyproto.Conn:
		rc, err := nc.(syscall.Conn).SyscallConn()
		return rc, err == nil
	}
	return nil, false
}

// splice forwards src to dst through a pooled pipe when both are TCP sockets. It reports
// false, having done nothing, when they are not.
func (d *direction) splice() bool {
	rsrc, ok1 := socket(d.src)
	rdst, ok2 := socket(d.dst)
	if !ok1 || !ok2 {
		return false
	}
	s := &splicer{}
	s.readFn = func(fd uintptr) bool {
		if s.p == nil {
			if s.p, s.perr = getPipe(); s.perr != nil {
				return true
			}
		}
		for {
			n, err := syscall.Splice(int(fd), nil, s.p.w, nil, pipeSize, spliceFlags)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				// Nothing to read (the pipe is empty, so it cannot be full): give the pipe
				// back and let the poller wait on the socket alone.
				pipes.Put(s.p)
				s.p = nil
				return false
			}
			s.inPipe, s.rerr = int(n), err
			return true
		}
	}
	s.writFn = func(fd uintptr) bool {
		for s.inPipe > 0 {
			n, err := syscall.Splice(s.p.r, nil, int(fd), nil, s.inPipe, spliceFlags)
			switch err {
			case nil:
				s.inPipe -= int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // dst is full: wait until it takes more
			default:
				s.werr = err
				return true
			}
		}
		return true
	}
	defer func() {
		if s.p != nil {
			if s.inPipe == 0 {
				pipes.Put(s.p)
			} else {
				s.p.destroy()
			}
		}
	}()
	for {
		if err := rsrc.Read(s.readFn); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !d.c.expired(d.src, false) {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				d.idle()
			} else {
				d.broke(d.readFail, d.src) // closed under us, most often: fail keeps the first cause
			}
			return true
		}
		switch {
		case s.perr != nil:
			d.broke(d.readFail, d.src)
			return true
		case s.rerr != nil:
			d.broke(d.readFail, d.src)
			return true
		case s.inPipe == 0:
			d.eof()
			return true
		}
		d.c.touch()
		for s.inPipe > 0 {
			err := rdst.Write(s.writFn)
			if err == nil && s.werr == nil {
				break
			}
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !d.c.expired(d.dst, true) {
				continue
			}
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				d.idle()
			} else {
				d.broke(d.writeFail, d.dst)
			}
			return true
		}
		d.c.touch()
	}
}

// errWouldBlock is what readFd returns when the socket has nothing to read yet.
var errWouldBlock = syscall.EAGAIN

// readFd reads the socket fd into b, retrying on EINTR.
func readFd(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, nil
	}
}
