package h1

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// How a request body is delimited.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
)

// maxChunkLine bounds a chunk-size line with its extensions.
const maxChunkLine = 4 << 10

var (
	errChunked      = errors.New("h1: malformed chunked encoding")
	errChunkLine    = errors.New("h1: chunk line too long")
	errTrailerLarge = errors.New("h1: trailer section too large")
	errBadTrailer   = errors.New("h1: malformed trailer field")
)

// body is a request body as the handler reads it.
type body struct {
	c    *conn
	req  *http.Request // the handler's, whose Trailer map the trailer section fills
	res  *response
	mode int
	n    int64 // what is left of the body (length) or of the current chunk (chunked)

	expect atomic.Bool  // a 100 Continue is owed before the first read
	done   atomic.Bool  // read to its end
	failed atomic.Bool  // a read failed: what is left on the connection is not a request
	remain atomic.Int64 // n after the last read, for the response's commit

	mu       sync.Mutex // mu serializes reads, which may come from another goroutine
	needCRLF bool       // the CRLF after a chunk's data comes next
	closed   bool       // the handler returned: reads fail
	err      error

	// Guarded by c.wmtx, for the watch: whether the body ended, and whether the watch
	// waits for that.
	ended      bool
	watchAtEOF bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.expect.Load() && b.expect.CompareAndSwap(true, false) {
		b.res.sendContinue()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, http.ErrBodyReadAfterClose
	case b.done.Load():
		return 0, io.EOF
	case b.err != nil:
		return 0, b.err
	}
	var n int
	var err error
	b.c.freshRead()
	if b.mode == bodyLength {
		n, err = b.readLength(p)
	} else {
		n, err = b.readChunked(p)
	}
	b.remain.Store(b.n)
	if err == io.EOF {
		b.markEOF()
	} else if err != nil {
		b.err = err
		b.failed.Store(true)
	}
	return n, err
}

// Close keeps the body from being read further by the handler: later reads fail with
// http.ErrBodyReadAfterClose. What is left of it is read by the server after the handler
// returns, if it is short enough to keep the connection.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

func (b *body) markEOF() {
	b.done.Store(true)
	c := b.c
	c.wmtx.Lock()
	b.ended = true
	start := b.watchAtEOF && c.cur != nil
	b.watchAtEOF = false
	c.wmtx.Unlock()
	if start {
		go c.watch()
	}
}

// eofLocked reports, with c.wmtx held, whether the handler is done reading the connection.
func (b *body) eofLocked() bool { return b.mode == bodyNone || b.ended }

// finished reports whether the body was read to its end.
func (b *body) finished() bool { return b.done.Load() }

// read reads body bytes, at most n, from the buffer or the connection.
func (b *body) read(p []byte, n int64) (int, error) {
	if int64(len(p)) > n {
		p = p[:n]
	}
	c := b.c
	if c.r == c.w {
		if len(p) >= len(c.rbuf) {
			m, err := c.rwc.Read(p)
			if m > 0 {
				return m, nil
			}
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if err := c.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	m := copy(p, c.rbuf[c.r:c.w])
	c.r += m
	return m, nil
}

func (b *body) readLength(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := b.read(p, b.n)
	b.n -= int64(n)
	if b.n == 0 {
		return n, io.EOF
	}
	return n, err
}

func (b *body) readChunked(p []byte) (int, error) {
	for b.n == 0 {
		if b.needCRLF {
			if err := b.crlf(); err != nil {
				return 0, err
			}
			b.needCRLF = false
		}
		line, err := b.c.readLine(maxChunkLine)
		if err != nil {
			return 0, err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return 0, err
		}
		if size == 0 {
			return 0, b.trailers()
		}
		b.n = size
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := b.read(p, b.n)
	b.n -= int64(n)
	if b.n == 0 {
		b.needCRLF = true
	}
	return n, err
}

// crlf consumes the CRLF that ends a chunk's data.
func (b *body) crlf() error {
	c := b.c
	for c.w-c.r < 2 {
		if err := c.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	if c.rbuf[c.r] != '\r' || c.rbuf[c.r+1] != '\n' {
		return errChunked
	}
	c.r += 2
	return nil
}

// readLine returns the next CRLF-terminated line without its CRLF; a bare LF is refused.
func (c *conn) readLine(limit int) ([]byte, error) {
	from := c.r
	for {
		if i := bytes.IndexByte(c.rbuf[from:c.w], '\n'); i >= 0 {
			end := from + i
			if end == c.r || c.rbuf[end-1] != '\r' {
				return nil, errChunked
			}
			line := c.rbuf[c.r : end-1]
			c.r = end + 1
			return line, nil
		}
		if c.w-c.r >= limit {
			return nil, errChunkLine
		}
		from = c.w
		r0 := c.r
		if err := c.fill(); err != nil {
			if err == errBufferFull {
				return nil, errChunkLine
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		from -= r0 - c.r // fill may have moved the bytes to the buffer's start
	}
}

// parseChunkSize parses "1a2b" with optional extensions (";name=value"), which are checked
// for stray bytes and dropped.
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if i >= 15 {
			return 0, errChunked // past 2^60: no honest body is that long
		}
		n = n<<4 | int64(d)
	}
	if i == 0 {
		return 0, errChunked
	}
	ext := line[i:]
	for len(ext) > 0 && (ext[0] == ' ' || ext[0] == '\t') {
		ext = ext[1:]
	}
	if len(ext) > 0 {
		if ext[0] != ';' {
			return 0, errChunked
		}
		for _, c := range ext {
			if c < ' ' && c != '\t' || c == 0x7f {
				return 0, errChunked
			}
		}
	}
	return n, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// trailers reads the trailer section after the last chunk into req.Trailer; fields that may
// not be trailers are dropped. It returns io.EOF at the section's end.
func (b *body) trailers() error {
	c := b.c
	total := 0
	for {
		line, err := c.readLine(maxChunkLine)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return io.EOF
		}
		if total += len(line) + 2; total > c.s.maxHead {
			return errTrailerLarge
		}
		l := string(line)
		colon := strings.IndexByte(l, ':')
		if colon <= 0 || !validToken(l[:colon]) {
			return errBadTrailer
		}
		v := trimOWS(l[colon+1:])
		if !validValue(v) {
			return errBadTrailer
		}
		key := canonicalKey(l[:colon])
		switch key {
		case "Content-Length", "Transfer-Encoding", "Trailer", "Host", "Connection",
			"Content-Type", "Content-Encoding", "Content-Range", "Te", "Upgrade", "Keep-Alive":
			continue // framing, routing and control fields never come from a trailer
		}
		if b.req.Trailer == nil {
			b.req.Trailer = make(http.Header)
		}
		b.req.Trailer[key] = append(b.req.Trailer[key], v)
	}
}

// handlerDone ends the handler's reads.
func (b *body) handlerDone() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// discard reads what is left of a body after its handler returned, so that the connection
// can carry the next request. It reports whether the body was read to its end; a body too
// long, too slow or owed a 100 Continue that was never sent closes the connection instead.
func (b *body) discard() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done.Load() {
		return true
	}
	if b.expect.Load() || b.err != nil {
		return false
	}
	if b.mode == bodyLength && b.n > maxDiscard {
		return false
	}
	c := b.c
	c.staleRead.Store(false)
	c.rwc.SetReadDeadline(time.Now().Add(lingerTime))
	defer c.rwc.SetReadDeadline(time.Time{})
	var scratch [512]byte
	for read := 0; read <= maxDiscard; {
		var n int
		var err error
		if b.mode == bodyLength {
			n, err = b.readLength(scratch[:])
		} else {
			n, err = b.readChunked(scratch[:])
		}
		read += n
		if err == io.EOF {
			b.markEOF()
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}
