package h2

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// bufferSize is how much of a response body is held before its head goes out: a response
// that ends within it is sent with its Content-Length, head and body in one write.
const bufferSize = 4 << 10

// responseWriter is the http.ResponseWriter of a stream.
type responseWriter struct {
	st     *stream
	header http.Header

	snap        http.Header // the header when the final status was written
	status      int         // the final status, once written
	wroteHeader bool        // WriteHeader was called with a final status
	sentHeader  bool        // the HEADERS frame went out
	isHead      bool
	declared    int64 // the Content-Length the handler set, or -1
	written     int64
	trailers    []string // declared with the Trailer field when the head went out
	ending      bool     // the handler returned
	buf         []byte   // from bufferPool once the handler writes
	err         error    // the write that failed, returned by every later one
}

var (
	_ http.ResponseWriter = (*responseWriter)(nil)
	_ http.Flusher        = (*responseWriter)(nil)
)

func (w *responseWriter) init(st *stream) {
	w.st = st
	w.header = make(http.Header)
	w.isHead = st.req.Method == "HEAD"
	w.declared = -1
}

// Header returns the response's header fields, as http.ResponseWriter's.
func (w *responseWriter) Header() http.Header { return w.header }

// WriteHeader sends an informational (1xx) head at once, or records the final status.
func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if w.wroteHeader {
		w.st.c.s.logf("h2: superfluous response.WriteHeader call (status %d after %d)", code, w.status)
		return
	}
	if code < 200 {
		w.writeInformational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	// The head is what the header held now, as net/http's servers send it: fields set
	// later (trailers, say) are not in it, even if the head goes out later.
	if len(w.header) > 0 {
		w.snap = w.header.Clone()
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	w.written += int64(len(p))
	if w.declared >= 0 && w.written > w.declared {
		return 0, http.ErrContentLength
	}
	if w.isHead && w.sentHeader {
		return len(p), nil
	}
	if len(w.buf)+len(p) <= bufferSize {
		if w.buf == nil {
			w.buf = getBuffer()
		}
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	// Over the buffer: the buffer, topped up from p, goes out with the head, then the
	// rest of p, unless it is small enough to wait in the buffer.
	if len(w.buf) > 0 {
		n := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+n]
		err := w.send(w.buf, false)
		w.buf = w.buf[:0]
		if err != nil {
			return 0, err
		}
		if len(p[n:]) < bufferSize {
			w.buf = append(w.buf, p[n:]...)
			return len(p), nil
		}
		if err := w.send(p[n:], false); err != nil {
			return n, err
		}
		return len(p), nil
	}
	if err := w.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteString is Write without a conversion to []byte when s fits in the buffer.
func (w *responseWriter) WriteString(s string) (int, error) {
	if w.wroteHeader && len(w.buf)+len(s) <= bufferSize && bodyAllowed(w.status) && w.err == nil &&
		!(w.isHead && w.sentHeader) && (w.declared < 0 || w.written+int64(len(s)) <= w.declared) {
		if w.buf == nil {
			w.buf = getBuffer()
		}
		w.buf = append(w.buf, s...)
		w.written += int64(len(s))
		return len(s), nil
	}
	return w.Write([]byte(s))
}

// Flush sends the head and what the body holds.
func (w *responseWriter) Flush() { w.FlushError() }

// FlushError is Flush returning the error, for http.ResponseController.
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.sentHeader && len(w.buf) == 0 {
		return nil
	}
	err := w.send(w.buf, false)
	w.buf = w.buf[:0]
	return err
}

// SetReadDeadline sets the deadline for reading the request body, for
// http.ResponseController.
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	if b := w.st.body; b != nil {
		b.deadline.set(t)
	}
	return nil
}

// SetWriteDeadline sets when the stream is reset if its response has not ended, for
// http.ResponseController.
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	w.st.writeDeadline.set(t)
	return nil
}

// EnableFullDuplex is for http.ResponseController: HTTP/2 always allows a handler to read
// the request body while it writes the response.
func (w *responseWriter) EnableFullDuplex() error { return nil }

// finish ends the response after the handler returned.
func (w *responseWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return
	}
	w.ending = true
	w.send(w.buf, true)
}

// send writes the head, if it has not gone out, then data (w.buf or a caller's bytes), and
// with end, the trailers and the end of the stream. A HEAD response's data is not sent.
func (w *responseWriter) send(data []byte, end bool) error {
	st, c := w.st, w.st.c
	first := data // the Content-Type is sniffed from it, even for HEAD
	if w.isHead {
		data = nil
	}
	if !w.sentHeader {
		w.declareTrailers()
	}
	var trailers http.Header
	if end {
		trailers = w.trailerFields()
	}
	endData := end && len(trailers) == 0

	// As much of data as the windows allow goes out with the head, in one write.
	n := 0
	if len(data) > 0 {
		n = st.takeWindow(len(data), false)
	}
	c.wmu.Lock()
	for len(c.out) >= maxQueuedOutput && c.writing && c.werr == nil && !st.wclosed {
		c.wdrain.Wait()
	}
	if st.wclosed || c.werr != nil {
		err := st.writeErr()
		c.wmu.Unlock()
		st.giveBack(n)
		return w.fail(err)
	}
	if !w.sentHeader {
		w.sentHeader = true
		w.encodeHead(first)
		c.appendHeaderBlockLocked(st.id, endData && len(data) == 0)
	} else if endData && len(data) == 0 {
		c.appendDataLocked(st.id, nil, true)
	}
	if n > 0 {
		c.appendDataLocked(st.id, data[:n], endData && n == len(data))
	}
	if endData && n == len(data) {
		st.endWrite()
	}
	c.flushLocked()
	c.wmu.Unlock()

	// The rest waits for the client to open its windows.
	for rest := data[n:]; len(rest) > 0; {
		n := st.takeWindow(len(rest), true)
		if n == 0 {
			c.wmu.Lock()
			err := st.writeErr()
			c.wmu.Unlock()
			return w.fail(err)
		}
		if err := st.writeData(rest[:n], endData && n == len(rest)); err != nil {
			st.giveBack(n)
			return w.fail(err)
		}
		rest = rest[n:]
	}
	if len(trailers) > 0 {
		c.wmu.Lock()
		if st.wclosed || c.werr != nil {
			err := st.writeErr()
			c.wmu.Unlock()
			return w.fail(err)
		}
		for k, vv := range trailers {
			name := lowerKey(k)
			for _, v := range vv {
				c.enc.WriteField(hpack.HeaderField{Name: name, Value: v})
			}
		}
		c.appendHeaderBlockLocked(st.id, true)
		st.endWrite()
		c.flushLocked()
		c.wmu.Unlock()
	}
	return nil
}

// fail records a failed write: every later write returns err.
func (w *responseWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// writeData appends DATA frames for p, which the windows were taken for, and writes them.
func (st *stream) writeData(p []byte, end bool) error {
	c := st.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(c.out) >= maxQueuedOutput && c.writing && c.werr == nil && !st.wclosed {
		c.wdrain.Wait()
	}
	if st.wclosed || c.werr != nil {
		return st.writeErr()
	}
	c.appendDataLocked(st.id, p, end)
	if end {
		st.endWrite()
	}
	c.flushLocked()
	return nil
}

// takeWindow takes up to n bytes of the stream's and the connection's send windows, and of
// the client's largest frame; with wait, it waits until some are open, and returns 0 only
// if the stream or the connection ended.
func (st *stream) takeWindow(n int, wait bool) int {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.streams[st.id] != st || c.ended {
			return 0
		}
		avail := min(int64(n), st.sendWindow, c.sendWindow)
		if avail > 0 {
			st.sendWindow -= avail
			c.sendWindow -= avail
			return int(avail)
		}
		if !wait {
			return 0
		}
		c.window.Wait()
	}
}

// giveBack returns n bytes of send window taken for frames that were not sent: the
// connection's window would otherwise shrink with every stream reset mid-response.
func (st *stream) giveBack(n int) {
	if n == 0 {
		return
	}
	c := st.c
	c.mu.Lock()
	c.sendWindow += int64(n)
	c.window.Broadcast()
	c.mu.Unlock()
}

// encodeHead encodes the response head into c.encBuf, sniffing the Content-Type from first,
// the first bytes of the body; c.wmu is held.
func (w *responseWriter) encodeHead(first []byte) {
	c := w.st.c
	h := w.snap
	if w.status == http.StatusOK {
		c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	} else {
		c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(w.status)})
	}
	allowed := bodyAllowed(w.status)
	// A response whose handler returned with its body in the buffer gets its length, as
	// net/http's does; a HEAD response's is what the handler wrote, if it wrote anything.
	if _, ok := h["Content-Length"]; !ok && w.ending && allowed {
		if !w.isHead {
			c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(w.buf))})
		} else if w.written > 0 {
			c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(w.written, 10)})
		}
	}
	if _, ok := h["Content-Type"]; !ok && allowed && len(first) > 0 && h.Get("Content-Encoding") == "" {
		c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: http.DetectContentType(first)})
	}
	if _, ok := h["Date"]; !ok {
		c.enc.WriteField(hpack.HeaderField{Name: "date", Value: dateValue()})
	}
	encodeFields(c.enc, h)
}

// encodeFields encodes the fields of h that HTTP/2 carries in a head: not the
// connection-specific ones (RFC 9113 §8.2.2), not the trailers set with
// http.TrailerPrefix, and not those whose name or value is invalid.
func encodeFields(enc *hpack.Encoder, h http.Header) {
	for k, vv := range h {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		name := lowerKey(k)
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				enc.WriteField(hpack.HeaderField{Name: name, Value: v})
			}
		}
	}
}

// declareTrailers records the names the Trailer field declares, as the head goes out.
func (w *responseWriter) declareTrailers() {
	for _, v := range w.snap["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(name))
			}
		}
	}
}

// trailerFields collects the trailers: the declared fields the handler set, and those set
// with http.TrailerPrefix.
func (w *responseWriter) trailerFields() http.Header {
	var t http.Header
	add := func(k string, vv []string) {
		if len(vv) == 0 {
			return
		}
		if t == nil {
			t = make(http.Header)
		}
		t[k] = append(t[k], vv...)
	}
	for _, k := range w.trailers {
		add(k, w.header[k])
	}
	for k, vv := range w.header {
		if rest, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(http.CanonicalHeaderKey(rest), vv)
		}
	}
	return t
}

// bodyAllowed reports whether a response with status may carry a body (RFC 9110 §6.4.1).
func bodyAllowed(status int) bool {
	return !(status >= 100 && status < 200) && status != http.StatusNoContent && status != http.StatusNotModified
}

// writeInformational sends a 1xx head with the fields set so far.
func (w *responseWriter) writeInformational(code int) {
	st, c := w.st, w.st.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if st.wclosed || c.werr != nil {
		return
	}
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(code)})
	encodeFields(c.enc, w.header)
	c.appendHeaderBlockLocked(st.id, false)
	c.flushLocked()
}

// bufferPool holds response buffers: every frame copies what it sends, so a buffer is free
// once its stream has ended.
var bufferPool = sync.Pool{New: func() any { return new([bufferSize]byte) }}

func getBuffer() []byte { return bufferPool.Get().(*[bufferSize]byte)[:0] }

// release returns the buffer once the stream's last frame is queued.
func (w *responseWriter) release() {
	if cap(w.buf) == bufferSize {
		bufferPool.Put((*[bufferSize]byte)(w.buf[:bufferSize]))
	}
	w.buf = nil
}
