package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// errClientGone is the error a request body and writes return once the client has reset the
// stream or the connection has ended.
var errClientGone = errors.New("h2: client reset the stream or closed the connection")

// conn is one HTTP/2 connection. The goroutine running serve reads every frame; handlers run
// on workers and write their frames through the output queue (write.go).
type conn struct {
	s          *Server
	rwc        net.Conn
	ctx        context.Context
	cancel     context.CancelFunc
	remoteAddr string
	tlsState   *tls.ConnectionState
	br         *bufio.Reader
	fr         *http2.Framer

	// The reader goroutine's alone, except lastStream: the reader writes it holding mu, and
	// reads it without; other goroutines read it holding mu.
	lastStream  uint32 // the highest stream the client opened
	sawSettings bool
	dec         *hpack.Decoder
	block       headerBlock // the last header block read

	mu          sync.Mutex
	window      sync.Cond // on mu: send windows grew, a stream was reset or the conn ended
	streams     map[uint32]*stream
	active      int // handlers running, reset streams included
	sendWindow  int64
	peerWindow  int32 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	recvWindow  int32 // what the client may still send on the connection
	recvUnacked int32 // consumed, not yet given back with WINDOW_UPDATE
	goingAway   bool  // GOAWAY sent or received: no new streams
	ended       bool  // serve returned
	lastActive  time.Time
	idleTimer   *time.Timer
	// The streams this server reset last: frames the client sent before it learned of the
	// reset are ignored, not answered (RFC 9113 §5.1).
	resetIDs  [32]uint32
	resetNext int

	peerMaxFrame atomic.Uint32
	// unfinished counts the streams that have not sent END_STREAM or RST_STREAM yet: the
	// streams the client counts against SETTINGS_MAX_CONCURRENT_STREAMS.
	unfinished atomic.Int32

	stateMu sync.Mutex // orders the calls of the ConnState hook
	state   http.ConnState

	// The output queue: frames are appended to out under wmu, and the goroutine that finds
	// nobody writing writes out until it is empty, so frames queued meanwhile by others go in
	// the same write.
	wmu     sync.Mutex
	wdrain  sync.Cond // on wmu: out was written
	out     []byte
	spare   []byte
	writing bool
	werr    error
	// writeDeadline is the write deadline set on rwc; the goroutine writing owns it.
	writeDeadline time.Time
	enc           *hpack.Encoder
	encBuf        bytes.Buffer
}

func newConn(s *Server, rwc net.Conn, ctx context.Context) *conn {
	c := &conn{
		s:          s,
		rwc:        rwc,
		remoteAddr: rwc.RemoteAddr().String(),
		streams:    make(map[uint32]*stream),
		sendWindow: initialWindow,
		peerWindow: initialWindow,
		recvWindow: s.connWindow,
		lastActive: time.Now(),
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.window.L = &c.mu
	c.wdrain.L = &c.wmu
	c.peerMaxFrame.Store(minFrameSize)
	if tc, ok := rwc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	c.enc = hpack.NewEncoder(&c.encBuf)
	c.enc.SetMaxDynamicTableSizeLimit(s.encoderTable)
	return c
}

// serve reads the client preface and then every frame until the connection ends.
func (c *conn) serve() {
	defer c.end()
	if d := c.s.prefaceWait; d > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(d))
	}
	c.br = bufio.NewReaderSize(c.rwc, 16<<10)
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		if err == nil {
			c.logf("bogus client preface %q", preface[:])
		}
		return
	}
	c.rwc.SetReadDeadline(time.Time{})

	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetMaxReadFrameSize(c.s.maxReadFrame)
	c.dec = hpack.NewDecoder(c.s.decoderTable, c.emitField)
	c.dec.SetMaxStringLength(int(c.s.maxHeaderList))
	c.writeSettings()

	if c.s.idle > 0 {
		c.mu.Lock()
		c.idleTimer = time.AfterFunc(c.s.idle, c.onIdle)
		c.mu.Unlock()
	}
	for {
		fh, err := c.fr.ReadFrameHeader()
		var f http2.Frame
		if err == nil {
			f, err = c.fr.ReadFrameForHeader(fh)
		}
		if err != nil {
			ok := c.readError(fh, err)
			c.flush()
			if !ok {
				return
			}
			continue
		}
		if !c.sawSettings {
			// RFC 9113 §3.4: the client preface ends with a SETTINGS frame.
			if _, ok := f.(*http2.SettingsFrame); !ok {
				c.connError(http2.ErrCodeProtocol, "the client preface must end with SETTINGS")
				return
			}
			c.sawSettings = true
		}
		if err := c.frame(f); err != nil {
			c.readError(fh, err)
			return
		}
		if !c.nextBuffered() {
			c.flush()
		}
		if c.closing() {
			return
		}
	}
}

// nextBuffered reports whether the next frame is read whole already, so that what the
// frames so far queued can wait to go out in one write with what the next one queues.
func (c *conn) nextBuffered() bool {
	if c.br.Buffered() < 9 {
		return false
	}
	h, _ := c.br.Peek(9)
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	return c.br.Buffered() >= 9+n
}

// readError handles an error of the Framer; it reports whether to go on reading.
func (c *conn) readError(fh http2.FrameHeader, err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	var our *connError
	switch {
	case errors.As(err, &our):
		c.connError(our.code, our.reason)
	case errors.As(err, &se):
		if fh.Type == http2.FrameHeaders && se.StreamID > c.lastStream {
			if se.StreamID%2 == 0 {
				c.connError(http2.ErrCodeProtocol, "client opened an even stream")
				return false
			}
			// The stream was opened, and is reset at once.
			c.setLastStream(se.StreamID)
		}
		c.resetStream(se.StreamID, se.Code)
		return true
	case errors.As(err, &ce):
		reason := "frame error"
		if d := c.fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
		c.connError(http2.ErrCode(ce), reason)
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.connError(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
	}
	return false
}

// closing reports whether the connection should end: GOAWAY was exchanged and no stream is
// left.
func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.goingAway && c.active == 0 && len(c.streams) == 0
}

// frame handles one frame; a ConnectionError ends the connection with GOAWAY.
func (c *conn) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		err := c.readHeaderBlock(f)
		if err == errMalformed {
			return c.malformed(f.StreamID)
		}
		if err != nil {
			return err
		}
		return c.headers(&c.block)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.SettingsFrame:
		return c.settings(f)
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.writePing(f.Data)
		}
	case *http2.RSTStreamFrame:
		return c.rstStream(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.resetStream(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		c.mu.Unlock()
	case *http2.PushPromiseFrame:
		return connErr(http2.ErrCodeProtocol, "clients must not send PUSH_PROMISE")
	}
	// Unknown frame types are ignored (RFC 9113 §5.5).
	return nil
}

// connErr is a connection error with its reason.
func connErr(code http2.ErrCode, reason string) error {
	return &connError{code: code, reason: reason}
}

// connError ends the connection with GOAWAY carrying code; reason goes in its debug data.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e *connError) Error() string { return e.reason }

func (c *conn) settings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - int64(c.peerWindow)
			c.peerWindow = int32(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > 1<<31-1 {
					c.mu.Unlock()
					return connErr(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window")
				}
			}
			c.window.Broadcast()
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame.Store(s.Val)
		case http2.SettingHeaderTableSize:
			c.wmu.Lock()
			c.enc.SetMaxDynamicTableSize(s.Val)
			c.wmu.Unlock()
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.writeSettingsAck()
	return nil
}

func (c *conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > 1<<31-1 {
			return connErr(http2.ErrCodeFlowControl, "WINDOW_UPDATE overflows the connection's window")
		}
		c.window.Broadcast()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.lastStream {
			return connErr(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		}
		return nil // closed: allowed for a while after the stream ends
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > 1<<31-1 {
		c.resetLocked(st, http2.ErrCodeFlowControl)
		return nil
	}
	c.window.Broadcast()
	return nil
}

func (c *conn) rstStream(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID > c.lastStream {
		return connErr(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
	}
	if st := c.streams[f.StreamID]; st != nil {
		c.closeLocked(st)
	}
	return nil
}

// malformed resets the stream of a malformed header block, which opens the stream if it was
// idle.
func (c *conn) malformed(id uint32) error {
	if id > c.lastStream {
		if id%2 == 0 {
			return connErr(http2.ErrCodeProtocol, "client opened an even stream")
		}
		c.setLastStream(id)
	}
	c.resetStream(id, http2.ErrCodeProtocol)
	return nil
}

// headers opens a stream, or takes a stream's trailers.
func (c *conn) headers(f *headerBlock) error {
	id := f.id
	if id%2 == 0 {
		return connErr(http2.ErrCodeProtocol, "client opened an even stream")
	}
	if id <= c.lastStream {
		c.mu.Lock()
		defer c.mu.Unlock()
		st := c.streams[id]
		if st == nil {
			if c.resetByUs(id) {
				return nil
			}
			// A stream that ended, or an identifier the client skipped (RFC 9113 §5.1.1),
			// as net/http's server answers both.
			return connErr(http2.ErrCodeProtocol, "HEADERS on a stream that is not open")
		}
		if st.remoteDone {
			c.resetLocked(st, http2.ErrCodeStreamClosed)
			return nil
		}
		// Trailers: they end the stream, and carry no pseudo-header.
		if !f.endStream || f.pseudo > 0 {
			c.resetLocked(st, http2.ErrCodeProtocol)
			return nil
		}
		if !st.endBody(f.regular()) {
			c.resetLocked(st, http2.ErrCodeProtocol)
		}
		return nil
	}
	c.setLastStream(id)
	if f.selfDep {
		c.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}

	c.mu.Lock()
	if c.goingAway || c.ended {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	// The client's count of open streams (RFC 9113 §5.1.2) drops when END_STREAM or
	// RST_STREAM is queued, before the client can see it. Handlers still running after their
	// stream ended count too, up to twice the limit: a client that resets its streams as it
	// opens them (the rapid reset attack) cannot start handlers without end.
	if uint32(c.unfinished.Load()) >= c.s.maxStreams || uint32(c.active) >= 2*c.s.maxStreams {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	c.mu.Unlock()

	st, err := c.newStream(f)
	if err != nil {
		c.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	c.mu.Lock()
	c.streams[id] = st
	c.active++
	c.unfinished.Add(1)
	first := c.active == 1
	c.mu.Unlock()
	if first {
		c.setState(http.StateActive)
	}
	c.s.workers.Go(st)
	return nil
}

// data delivers a DATA frame's payload to its stream's body.
func (c *conn) data(f *http2.DataFrame) error {
	id := f.StreamID
	size := int32(f.Length)
	payload := f.Data()
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > c.recvWindow {
		return connErr(http2.ErrCodeFlowControl, "DATA beyond the connection's window")
	}
	c.recvWindow -= size
	st := c.streams[id]
	if st == nil || st.remoteDone {
		// Bytes the connection will never consume are given back at once.
		c.creditLocked(nil, size)
		if st == nil && id > c.lastStream {
			return connErr(http2.ErrCodeProtocol, "DATA on an idle stream")
		}
		if st != nil {
			c.resetLocked(st, http2.ErrCodeStreamClosed)
		} else if !c.resetByUs(id) {
			c.queueRST(id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if size > st.recvWindow {
		c.creditLocked(nil, size)
		c.resetLocked(st, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWindow -= size
	if pad := size - int32(len(payload)); pad > 0 {
		c.creditLocked(st, pad)
	}
	if !st.deliver(payload) {
		c.resetLocked(st, http2.ErrCodeProtocol)
		return nil
	}
	if f.StreamEnded() && !st.endBody(nil) {
		c.resetLocked(st, http2.ErrCodeProtocol)
	}
	return nil
}

// creditLocked accounts n bytes the connection (and st, unless nil) consumed, and gives them
// back to the client with WINDOW_UPDATE once half a window has gathered.
func (c *conn) creditLocked(st *stream, n int32) {
	c.recvUnacked += n
	if c.recvUnacked >= c.s.connWindow/2 {
		c.queueWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
	if st == nil || st.remoteDone {
		return
	}
	st.recvUnacked += n
	if st.recvUnacked >= c.s.streamWindow/2 {
		c.queueWindowUpdate(st.id, uint32(st.recvUnacked))
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
	}
}

// resetStream resets stream id with code, whether or not it is still known.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		c.resetLocked(st, code)
		return
	}
	c.queueRST(id, code)
}

// resetLocked sends RST_STREAM for st and closes it.
func (c *conn) resetLocked(st *stream, code http2.ErrCode) {
	c.closeLocked(st)
	c.queueRST(st.id, code)
	c.resetIDs[c.resetNext] = st.id
	c.resetNext = (c.resetNext + 1) % len(c.resetIDs)
}

// resetByUs reports whether stream id is one of those this server reset last. The caller
// holds c.mu.
func (c *conn) resetByUs(id uint32) bool {
	for _, r := range c.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}

// closeLocked forgets st: its body ends with errClientGone, its context is canceled, and
// writers waiting for its window give up. The handler, if running, still counts against the
// concurrency limit until it returns.
func (c *conn) closeLocked(st *stream) {
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	st.remoteDone = true
	st.abort(errClientGone)
	c.wmu.Lock()
	st.endWrite()
	c.wdrain.Broadcast()
	c.wmu.Unlock()
	if unread := st.discard(); unread > 0 {
		c.creditLocked(nil, unread)
	}
	c.window.Broadcast()
	c.touchLocked()
}

// touchLocked marks the moment the connection last had work, for the idle timeout.
func (c *conn) touchLocked() {
	if c.idleTimer != nil && c.active == 0 && len(c.streams) == 0 {
		c.lastActive = time.Now()
	}
}

// onIdle runs when the idle timeout may have passed: a connection without a stream for that
// long says GOAWAY and ends.
func (c *conn) onIdle() {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	if c.active > 0 || len(c.streams) > 0 {
		c.idleTimer.Reset(c.s.idle)
		c.mu.Unlock()
		return
	}
	if left := c.s.idle - time.Since(c.lastActive); left > 0 {
		c.idleTimer.Reset(left)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.goAway(http2.ErrCodeNo, true)
}

// goAway tells the client no stream after the last one it opened will be served. With now,
// or when no stream is in progress, the connection ends at once; otherwise it ends when the
// last stream does.
func (c *conn) goAway(code http2.ErrCode, now bool) {
	c.mu.Lock()
	if c.goingAway && !now {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	idle := c.active == 0 && len(c.streams) == 0
	c.mu.Unlock()
	// A HEADERS frame racing with this GOAWAY is refused, since goingAway is set: the last
	// stream GOAWAY names is the last that may be in progress.
	c.mu.Lock()
	last := c.lastStream
	c.mu.Unlock()
	c.writeGoAway(last, code, nil)
	if now || idle {
		c.rwc.Close()
	}
}

// connError ends the connection with GOAWAY carrying code.
func (c *conn) connError(code http2.ErrCode, reason string) {
	c.mu.Lock()
	c.goingAway = true
	c.mu.Unlock()
	c.writeGoAway(c.lastStream, code, []byte(reason))
}

// end runs when serve returns: every stream ends, the queued frames go out, and the
// connection closes.
func (c *conn) end() {
	c.mu.Lock()
	c.ended = true
	c.goingAway = true
	for _, st := range c.streams {
		c.closeLocked(st)
	}
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.window.Broadcast()
	c.mu.Unlock()
	c.cancel()
	c.closeWrite()
	c.rwc.Close()
}

// handlerDone runs when st's handler returned: a stream the client has not finished sending
// is reset with NO_ERROR (RFC 9113 §8.1), and the connection ends if it was going away and
// this was its last stream.
func (c *conn) handlerDone(st *stream) {
	c.mu.Lock()
	c.active--
	idle := c.active == 0
	if c.streams[st.id] == st {
		if !st.remoteDone {
			c.resetLocked(st, http2.ErrCodeNo)
		} else {
			c.closeLocked(st)
		}
	}
	c.touchLocked()
	last := c.goingAway && c.active == 0 && len(c.streams) == 0
	c.mu.Unlock()
	if idle {
		c.setState(http.StateIdle)
	}
	if last {
		// The reader may be blocked in a read that nothing will end: the client has been
		// told to go away. Closing after the queued frames go out ends it.
		c.closeWrite()
		c.rwc.Close()
	}
}

// setLastStream records the highest stream the client opened; the reader's to call.
func (c *conn) setLastStream(id uint32) {
	c.mu.Lock()
	c.lastStream = id
	c.mu.Unlock()
}

// setState reports a change of the connection's state to the server's ConnState hook, as
// net/http's HTTP/2 server does: active while a stream is served, idle between. The calls of
// one connection are made one at a time, in order, under a lock of their own.
func (c *conn) setState(state http.ConnState) {
	f := c.s.connState
	if f == nil {
		return
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.state == http.StateClosed || c.state == state {
		return
	}
	if state == http.StateIdle {
		// A stream may have begun since the handler that ended saw none running.
		c.mu.Lock()
		busy := c.active > 0
		c.mu.Unlock()
		if busy {
			return
		}
	}
	c.state = state
	f(c.rwc, state)
}
