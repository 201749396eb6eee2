package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one request. Body bytes are collected in the
// connection's out buffer until it fills, the handler flushes or returns: a response that
// fits goes out in one write with its head, with a Content-Length the server computes.
type response struct {
	c    *conn
	req  *http.Request
	body *body

	header      http.Header
	sent        http.Header // the head's fields, once header is a copy for trailers; nil before
	status      int
	wroteHeader bool  // the final status is set
	committed   bool  // the head is written (or in c.out, ahead of the body)
	chunking    bool  // the body is sent chunked
	length      int64 // the declared Content-Length; -1 for none
	written     int64 // body bytes the handler wrote
	closeAfter  bool  // the connection closes after this response
	keepAlive10 bool  // an HTTP/1.0 client asked for keep-alive
	trailers    []string
	hijacked    bool
	done        bool // the handler returned
	deadlines   bool // the handler moved the write deadline
}

var errDone = errors.New("h1: response used after its handler returned")

// Header returns the response header map; changes after WriteHeader (or the first Write)
// have no effect but for trailers.
func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	if w.wroteHeader && !w.committed && w.sent == nil {
		// The head is not written yet: it keeps the fields WriteHeader saw, and the handler
		// changes a copy, whose only use is the trailers. Handlers that set their fields
		// before WriteHeader, nearly all, never pay for the copy.
		w.sent = w.header
		w.header = w.header.Clone()
	}
	return w.header
}

// headFields returns the fields of the head: as they were at WriteHeader.
func (w *response) headFields() http.Header {
	if w.sent != nil {
		return w.sent
	}
	return w.header
}

// WriteHeader sends a 1xx response at once, or sets the final status.
func (w *response) WriteHeader(code int) {
	if w.hijacked || w.done {
		w.c.s.logf("h1: superfluous or late WriteHeader(%d)", code)
		return
	}
	if w.wroteHeader {
		w.c.s.logf("h1: superfluous WriteHeader(%d)", code)
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	w.length = -1
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, ok := parseLength(cl); ok {
			w.length = n
		} else {
			w.c.s.logf("h1: invalid Content-Length of %q", cl)
			w.header.Del("Content-Length")
		}
	}
}

// informational writes a 1xx response with the header as it is now.
func (w *response) informational(code int) {
	if code == http.StatusContinue && !w.body.expect.CompareAndSwap(true, false) {
		return // sent already, or not asked for
	}
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if w.committed || c.werr != nil {
		return
	}
	b := c.head()
	b = appendStatusLine(b, code)
	b = w.appendFields(b, false)
	b = append(b, "\r\n"...)
	c.hbuf = b
	c.freshWrite()
	c.bufs = append(c.bufs[:0], b)
	if _, err := c.bufs.WriteTo(c.rwc); err != nil {
		c.werr = err
	}
}

// sendContinue writes "100 Continue" before the first read of a body that asked for it,
// unless the final response has started.
func (w *response) sendContinue() {
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if w.committed || c.werr != nil {
		return
	}
	c.freshWrite()
	if _, err := io.WriteString(c.rwc, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
		c.werr = err
	}
}

// bodyAllowed reports whether the status allows a body (RFC 9110 §6.4.1).
func bodyAllowed(code int) bool {
	return !(code >= 100 && code < 200) && code != http.StatusNoContent && code != http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.done {
		return 0, errDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		// No body goes out, but its start is kept to sniff the Content-Type a GET would get.
		c := w.c
		c.wmu.Lock()
		if !w.committed && len(c.out) < sniffLen {
			if c.out == nil {
				c.out = getBuf()[:0]
			}
			c.out = append(c.out, p[:min(len(p), sniffLen-len(c.out))]...)
		}
		c.wmu.Unlock()
		return len(p), nil
	}
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.out == nil {
		c.out = getBuf()[:0]
	}
	n := len(p)
	if !w.committed {
		if len(c.out)+len(p) <= cap(c.out) {
			c.out = append(c.out, p...)
			return n, nil
		}
		// The head's Content-Type is sniffed from what is collected: the body's start.
		m := copy(c.out[len(c.out):max(len(c.out), min(cap(c.out), sniffLen))], p)
		c.out, p = c.out[:len(c.out)+m], p[m:]
		w.commit(false)
	}
	w.writeBody(p)
	if c.werr != nil {
		return 0, c.werr
	}
	return n, nil
}

// ReadFrom writes what r holds to the body, as io.Copy would with Write. When r is an
// *io.LimitedReader of a *net.TCPConn, the connection takes bytes with a ReadFrom of its own
// (a plain *net.TCPConn, or a wrapper that hands the copy to one, as proxyproto.Conn does;
// a *tls.Conn has none) and the response has a Content-Length, the connection's ReadFrom
// gets the bytes: from socket to socket with splice(2), through the kernel alone. A proxy
// forwarding a large body (package proxy does, for its HTTP/1.1 upstreams) copies none of it. The head and the bytes collected so far go out first. An error on
// either side ends the response, as a failed Write does: bytes the kernel took from r may not
// have reached the client, so nothing more may follow them.
func (w *response) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	dst, plain := w.c.rwc.(io.ReaderFrom)
	if ok {
		_, ok = lr.R.(*net.TCPConn)
	}
	if !ok || !plain || w.hijacked || w.done || w.req.Method == http.MethodHead {
		return copyBuffered(w, r)
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	c := w.c
	c.wmu.Lock()
	if !w.committed {
		if c.out == nil {
			c.out = getBuf()[:0]
		}
		w.commit(false)
	}
	if w.chunking || w.length < 0 {
		c.wmu.Unlock()
		return copyBuffered(w, r)
	}
	defer c.wmu.Unlock()
	c.flushOut()
	if c.werr != nil {
		return 0, c.werr
	}
	// Never past the Content-Length: what r holds beyond it stays unread.
	src := io.LimitedReader{R: lr.R, N: min(lr.N, w.length-w.written)}
	c.freshWrite()
	n, err := dst.ReadFrom(&src)
	lr.N -= n
	w.written += n
	if err != nil {
		c.werr = err
	}
	return n, err
}

// copyBuffered is io.Copy to w through a pooled buffer, for what ReadFrom cannot splice.
func copyBuffered(w *response, r io.Reader) (int64, error) {
	buf := getBuf()
	defer putBuf(buf)
	return io.CopyBuffer(writerOnly{w}, r, buf)
}

// writerOnly hides ReadFrom, so that io.CopyBuffer writes rather than call it back.
type writerOnly struct{ io.Writer }

// sniffLen is how much of the body http.DetectContentType looks at.
const sniffLen = 512

// WriteString is Write without the conversion.
func (w *response) WriteString(s string) (int, error) {
	if w.committed || w.hijacked || w.done || len(s) > bufSize || w.req.Method == http.MethodHead {
		return w.Write([]byte(s))
	}
	// The common case of a short answer: collected in the buffer, no copy of s made.
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(s)) > w.length {
		return 0, http.ErrContentLength
	}
	c := w.c
	c.wmu.Lock()
	if c.out == nil {
		c.out = getBuf()[:0]
	}
	if len(c.out)+len(s) <= cap(c.out) {
		c.out = append(c.out, s...)
		w.written += int64(len(s))
		c.wmu.Unlock()
		return len(s), nil
	}
	c.wmu.Unlock()
	return w.Write([]byte(s))
}

// writeBody sends body bytes after the head: framed as a chunk when chunking, collected
// while they fit, else written with what is collected in one writev.
func (w *response) writeBody(p []byte) {
	c := w.c
	if w.chunking {
		if len(c.out)+len(p)+20 <= cap(c.out) {
			c.out = appendChunkHeader(c.out, len(p))
			c.out = append(c.out, p...)
			c.out = append(c.out, "\r\n"...)
			return
		}
		c.out = appendChunkHeader(c.out, len(p))
		c.writeOut(p, crlf)
		return
	}
	if len(c.out)+len(p) <= cap(c.out) {
		c.out = append(c.out, p...)
		return
	}
	c.writeOut(p)
}

var crlf = []byte("\r\n")

func appendChunkHeader(b []byte, n int) []byte {
	b = strconv.AppendInt(b, int64(n), 16)
	return append(b, "\r\n"...)
}

// commit puts the response head in front of the collected body bytes. final says the
// handler returned, so that the collected bytes are the whole body.
func (w *response) commit(final bool) {
	c := w.c
	w.committed = true
	h := w.headFields()
	req := w.req
	code := w.status
	allowed := bodyAllowed(code)
	if code == http.StatusSwitchingProtocols {
		w.closeAfter = true // only a hijacker may use the connection after it
	}
	if req.Close || c.s.tracker.Closing() || hasToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	// A body the handler left unread: the server reads it after the handler, unless it is
	// owed a 100 Continue (the client may never send it), is too long to throw away, or
	// failed (malformed, or too slow): then the connection closes, and the head says so.
	if b := w.body; b.mode != bodyNone && !b.done.Load() &&
		(b.expect.Load() || b.failed.Load() || b.mode == bodyLength && b.remain.Load() > maxDiscard) {
		w.closeAfter = true
	}
	if len(h["Trailer"]) > 0 {
		for _, v := range h["Trailer"] {
			for k := range strings.SplitSeq(v, ",") {
				if k = http.CanonicalHeaderKey(trimOWS(k)); k != "" {
					w.trailers = append(w.trailers, k)
				}
			}
		}
	}
	hasTrailers := len(w.trailers) > 0
	if !hasTrailers {
		for k := range w.header { // a TrailerPrefix field may come after WriteHeader
			if strings.HasPrefix(k, http.TrailerPrefix) {
				hasTrailers = true
				break
			}
		}
	}

	// The framing of the body.
	length := w.length
	if te := h["Transfer-Encoding"]; te != nil {
		delete(h, "Transfer-Encoding")
		if length >= 0 {
			delete(h, "Content-Length") // chunked wins, as with net/http
			length = -1
		}
	}
	isHead := req.Method == http.MethodHead
	switch {
	case !allowed:
	case length >= 0:
	case final && !hasTrailers && (!isHead || w.written > 0):
		length = w.written
		w.length = length
	case isHead:
	case req.ProtoAtLeast(1, 1):
		w.chunking = true
	default:
		w.closeAfter = true // an HTTP/1.0 body without a length ends with the connection
	}
	if !allowed {
		delete(h, "Content-Length")
		if code == http.StatusNotModified {
			// Representation metadata a 304 should not carry (RFC 9110 §15.4.5), dropped as
			// net/http drops it.
			delete(h, "Content-Type")
		}
	}

	pending := c.out
	b := c.head()
	b = appendStatusLine(b, code)
	b = w.appendFields(b, true)
	if allowed && length >= 0 && (h["Content-Length"] == nil || w.length != length) {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, length, 10)
		b = append(b, "\r\n"...)
	}
	if allowed && len(pending) > 0 {
		// An encoded body's bytes say nothing of its type (net/http's issue 31753).
		if _, ok := h["Content-Type"]; !ok && h.Get("Content-Encoding") == "" {
			b = append(b, "Content-Type: "...)
			b = append(b, http.DetectContentType(pending[:min(len(pending), sniffLen)])...)
			b = append(b, "\r\n"...)
		}
	}
	if _, ok := h["Date"]; !ok {
		b = appendDate(b)
	}
	if w.chunking {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.closeAfter {
		if !hasToken(h["Connection"], "close") {
			b = append(b, "Connection: close\r\n"...)
		}
	} else if req.ProtoMinor == 0 && w.keepAlive10 {
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	b = append(b, "\r\n"...)
	// The head goes first, then the body bytes collected so far.
	if w.chunking && len(pending) > 0 {
		b = appendChunkHeader(b, len(pending))
		b = append(b, pending...)
		b = append(b, "\r\n"...)
	} else if !isHead { // a HEAD's bytes were kept for sniffing only
		b = append(b, pending...)
	}
	c.hbuf, c.out = pending[:0], b
}

// head returns the connection's head buffer, empty.
func (c *conn) head() []byte {
	if c.hbuf == nil {
		c.hbuf = getBuf()
	}
	return c.hbuf[:0]
}

// appendFields appends the handler's header fields: names that are not valid tokens are
// dropped and line breaks in values become spaces, so that no handler can split the
// response; framing fields are left to commit.
func (w *response) appendFields(b []byte, final bool) []byte {
	for k, vv := range w.headFields() {
		if final {
			switch k {
			case "Content-Length":
				if w.length < 0 {
					continue
				}
			case "Transfer-Encoding", "Date":
				if k == "Date" && len(vv) == 0 {
					continue
				}
			}
			if strings.HasPrefix(k, http.TrailerPrefix) {
				continue
			}
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			b = appendField(b, k, v)
		}
	}
	return b
}

// appendField appends the field line "name: value\r\n", its value as appendValue makes it.
func appendField(b []byte, name, v string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = appendValue(b, v)
	return append(b, "\r\n"...)
}

// appendValue appends v trimmed, with CR and LF replaced by spaces.
func appendValue(b []byte, v string) []byte {
	v = strings.TrimSpace(v)
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\r', '\n':
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return b
}

// statusLines holds the usual status lines.
var statusLines = func() map[int]string {
	m := make(map[int]string)
	for code := 100; code < 600; code++ {
		if t := http.StatusText(code); t != "" {
			m[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + t + "\r\n"
		}
	}
	return m
}()

func appendStatusLine(b []byte, code int) []byte {
	if l, ok := statusLines[code]; ok {
		return append(b, l...)
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, " status code "...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, "\r\n"...)
}

// dateLine caches the Date field for the current second.
type dateLine struct {
	sec  int64
	line []byte
}

var date atomic.Pointer[dateLine]

func appendDate(b []byte) []byte {
	now := time.Now()
	d := date.Load()
	if d == nil || d.sec != now.Unix() {
		l := append([]byte("Date: "), now.UTC().AppendFormat(nil, http.TimeFormat)...)
		d = &dateLine{sec: now.Unix(), line: append(l, "\r\n"...)}
		date.Store(d)
	}
	return append(b, d.line...)
}

// Flush sends the head and what the handler wrote so far.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush reporting the write error; http.ResponseController.Flush calls it.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.done {
		return errDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !w.committed {
		if c.out == nil {
			c.out = getBuf()[:0]
		}
		w.commit(false)
	}
	c.flushOut()
	return c.werr
}

// finish completes the response after the handler returned and writes it.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w.done = true
	if c.out == nil {
		c.out = getBuf()[:0]
	}
	if !w.committed {
		w.commit(true)
	}
	if w.chunking {
		c.out = append(c.out, "0\r\n"...)
		c.out = w.appendTrailers(c.out)
		c.out = append(c.out, "\r\n"...)
	} else if w.length >= 0 && w.written < w.length && bodyAllowed(w.status) && w.req.Method != http.MethodHead {
		// Fewer bytes than declared: the client would wait for the rest.
		w.closeAfter = true
	}
	c.flushOut()
}

// appendTrailers appends the declared trailers and the ones set with http.TrailerPrefix.
func (w *response) appendTrailers(b []byte) []byte {
	for _, k := range w.trailers {
		switch k {
		case "Transfer-Encoding", "Content-Length", "Trailer":
			continue
		}
		for _, v := range w.header[k] {
			if httpguts.ValidHeaderFieldName(k) {
				b = appendField(b, k, v)
			}
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) {
			for _, v := range vv {
				b = appendField(b, name, v)
			}
		}
	}
	return b
}

// Hijack hands the connection to the handler, with what the client sent past the request
// head in the returned reader.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.done {
		return nil, nil, errDone
	}
	c := w.c
	c.stopWatch()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if w.committed {
		c.flushOut()
	}
	if c.werr != nil {
		return nil, nil, c.werr
	}
	w.hijacked = true
	rwc := c.rwc
	rwc.SetDeadline(time.Time{})
	c.staleWrite = false
	pending := append([]byte(nil), c.rbuf[c.r:c.w]...)
	c.r = c.w
	br := bufio.NewReaderSize(&prefixConn{Conn: rwc, prefix: pending}, max(bufSize, len(pending)))
	if len(pending) > 0 {
		br.Peek(len(pending)) // the bytes sit in br's buffer, where Buffered sees them
	}
	bw := bufio.NewWriter(rwc)
	c.state.Store(stateClosed)
	c.s.tracker.RemoveConn(c)
	c.s.setState(c, http.StateHijacked)
	c.rwc = nil
	c.release()
	return rwc, bufio.NewReadWriter(br, bw), nil
}

// SetReadDeadline sets the connection's read deadline; http.ResponseController calls it.
func (w *response) SetReadDeadline(t time.Time) error {
	if w.hijacked || w.done {
		return errDone
	}
	w.c.staleRead.Store(false)
	return w.c.rwc.SetReadDeadline(t)
}

// SetWriteDeadline sets the connection's write deadline; http.ResponseController calls it.
// The server clears it before the next request.
func (w *response) SetWriteDeadline(t time.Time) error {
	if w.hijacked || w.done {
		return errDone
	}
	w.deadlines = true
	c := w.c
	c.wmu.Lock()
	c.staleWrite = false
	c.wmu.Unlock()
	return c.rwc.SetWriteDeadline(t)
}

// EnableFullDuplex is accepted for http.ResponseController: the server lets a handler read
// the request body after it began the response, always.
func (w *response) EnableFullDuplex() error { return nil }
