package h2

import (
	"time"

	"golang.org/x/net/http2"
)

// The output queue. Frames are appended to c.out holding c.wmu (taken after c.mu when both
// are held, never before), in the order they must reach the client: HPACK's dynamic table
// depends on it. flush writes the queue out on the calling goroutine unless another is
// already writing, which then writes what was added before it returns. So a response's
// HEADERS and DATA frames, and the control frames other goroutines queued meanwhile, leave
// in one write.

// appendFrameHeader appends the 9-byte header of a frame (RFC 9113 §4.1).
func appendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// flush writes the queue out, unless another goroutine is writing it.
func (c *conn) flush() {
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
}

func (c *conn) flushLocked() {
	if c.writing {
		return
	}
	c.writing = true
	for len(c.out) > 0 && c.werr == nil {
		buf := c.out
		c.out, c.spare = c.spare[:0], nil
		c.wmu.Unlock()
		c.moveWriteDeadline()
		_, err := c.rwc.Write(buf)
		c.wmu.Lock()
		if cap(buf) <= 4*maxQueuedOutput {
			c.spare = buf[:0]
		}
		if err != nil {
			c.werr = err
		}
	}
	if c.werr != nil {
		c.out = c.out[:0]
	}
	c.writing = false
	c.wdrain.Broadcast()
}

// closeWrite writes what is queued (a GOAWAY, say), within a second, and fails later
// writes: a client that reads nothing cannot hold the connection open past its end.
func (c *conn) closeWrite() {
	c.rwc.SetWriteDeadline(time.Now().Add(time.Second))
	c.wmu.Lock()
	c.flushLocked()
	for c.writing {
		c.wdrain.Wait()
	}
	if c.werr == nil {
		c.werr = errClientGone
	}
	c.wdrain.Broadcast()
	c.wmu.Unlock()
}

// queueControl appends a control frame, unless the client has left more than
// maxQueuedControl bytes unread: a client that sends PINGs or SETTINGS and reads nothing
// loses the connection rather than growing the queue without end.
func (c *conn) queueControl(t http2.FrameType, flags http2.Flags, id uint32, payload ...[]byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	if len(c.out) > maxQueuedControl {
		c.werr = errClientGone
		c.rwc.Close()
		return
	}
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	c.out = appendFrameHeader(c.out, n, t, flags, id)
	for _, p := range payload {
		c.out = append(c.out, p...)
	}
}

// writeSettings sends the server's SETTINGS, and opens the connection's receive window
// beyond RFC 9113's initial 65,535 bytes.
func (c *conn) writeSettings() {
	var p []byte
	setting := func(id http2.SettingID, v uint32) {
		p = append(p, byte(id>>8), byte(id))
		p = appendUint32(p, v)
	}
	setting(http2.SettingMaxFrameSize, c.s.maxReadFrame)
	setting(http2.SettingMaxConcurrentStreams, c.s.maxStreams)
	setting(http2.SettingMaxHeaderListSize, c.s.maxHeaderList)
	setting(http2.SettingHeaderTableSize, c.s.decoderTable)
	setting(http2.SettingInitialWindowSize, uint32(c.s.streamWindow))
	c.queueControl(http2.FrameSettings, 0, 0, p)
	if d := c.s.connWindow - initialWindow; d > 0 {
		c.queueControl(http2.FrameWindowUpdate, 0, 0, appendUint32(nil, uint32(d)))
	}
	c.flush()
}

func (c *conn) writeSettingsAck() {
	c.queueControl(http2.FrameSettings, http2.FlagSettingsAck, 0)
	c.flush()
}

func (c *conn) writePing(data [8]byte) {
	c.queueControl(http2.FramePing, http2.FlagPingAck, 0, data[:])
	c.flush()
}

// queueWindowUpdate queues WINDOW_UPDATE; the caller flushes.
func (c *conn) queueWindowUpdate(id, n uint32) {
	var p [4]byte
	c.queueControl(http2.FrameWindowUpdate, 0, id, appendUint32(p[:0], n))
}

// queueRST queues RST_STREAM; the caller flushes.
func (c *conn) queueRST(id uint32, code http2.ErrCode) {
	var p [4]byte
	c.queueControl(http2.FrameRSTStream, 0, id, appendUint32(p[:0], uint32(code)))
}

func (c *conn) writeGoAway(last uint32, code http2.ErrCode, debug []byte) {
	var p [8]byte
	appendUint32(appendUint32(p[:0], last), uint32(code))
	c.queueControl(http2.FrameGoAway, 0, 0, p[:], debug)
	c.flush()
}

// appendHeaderBlockLocked appends HEADERS, and CONTINUATION frames if the block in c.encBuf
// exceeds the client's largest frame, for stream id.
func (c *conn) appendHeaderBlockLocked(id uint32, end bool) {
	block := c.encBuf.Bytes()
	most := int(c.peerMaxFrame.Load())
	t := http2.FrameHeaders
	for {
		n := min(len(block), most)
		var flags http2.Flags
		if t == http2.FrameHeaders && end {
			flags |= http2.FlagHeadersEndStream
		}
		if n == len(block) {
			flags |= http2.FlagHeadersEndHeaders
		}
		c.out = appendFrameHeader(c.out, n, t, flags, id)
		c.out = append(c.out, block[:n]...)
		block = block[n:]
		t = http2.FrameContinuation
		if len(block) == 0 {
			break
		}
	}
	c.encBuf.Reset()
}

// appendDataLocked appends data as DATA frames no larger than the client's largest frame,
// the last with END_STREAM if end.
func (c *conn) appendDataLocked(id uint32, data []byte, end bool) {
	most := int(c.peerMaxFrame.Load())
	for {
		n := min(len(data), most)
		var flags http2.Flags
		if end && n == len(data) {
			flags = http2.FlagDataEndStream
		}
		c.out = appendFrameHeader(c.out, n, http2.FrameData, flags, id)
		c.out = append(c.out, data[:n]...)
		data = data[n:]
		if len(data) == 0 {
			break
		}
	}
}

// moveWriteDeadline bounds the next write by the server's WriteByteTimeout: a connection
// nothing can be written to for that long is closed, whatever its streams' deadlines. The
// deadline moves only once half of it has passed, so most writes do not touch it: a stalled
// write fails after between half and all of WriteByteTimeout. Only the goroutine writing
// calls it.
func (c *conn) moveWriteDeadline() {
	d := c.s.writeByteTimeout
	if d <= 0 {
		return
	}
	now := time.Now()
	if c.writeDeadline.Sub(now) > d/2 {
		return
	}
	c.writeDeadline = now.Add(d)
	c.rwc.SetWriteDeadline(c.writeDeadline)
}
