package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// goAwayGrace is how long Shutdown lets the peers of a WebSocket tunnel finish the closing
// handshake it started, before it closes the connections itself. A WebSocket server closes
// its connection as soon as it has answered a close frame, so a well-behaved tunnel ends in
// a round trip; the grace only bounds peers that do not answer.
const goAwayGrace = time.Second

// closeGoingAway is the status of the close frames Shutdown sends: 1001, "going away", as a
// server going down uses (RFC 6455 §7.4.1).
const closeGoingAway = 1001

// wsFrames follows the frame boundaries of one direction of a WebSocket byte stream (RFC 6455
// §5.2), so that a close frame can be put between two frames rather than into one. It reads
// only frame headers and skips payloads; it does not check them. Its zero value expects a
// frame header.
type wsFrames struct {
	hdr     [14]byte // the header read so far: 2 bytes, up to 8 of length, 4 of mask
	hn      int      // bytes in hdr
	payload uint64   // payload bytes of the current frame still to come
	closed  bool     // a close frame was seen: nothing may follow it
	bad     bool     // a length no WebSocket stream has: boundaries are unknown from here
}

// feed follows the frames in the next bytes of the stream.
func (f *wsFrames) feed(p []byte) {
	for len(p) > 0 && !f.bad {
		if f.payload > 0 {
			n := f.payload
			if uint64(len(p)) < n {
				n = uint64(len(p))
			}
			f.payload -= n
			p = p[n:]
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		p = p[1:]
		if f.hn < 2 || f.hn < wsHeaderLen(f.hdr[1]) {
			continue
		}
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.payload = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			f.payload = binary.BigEndian.Uint64(f.hdr[2:10])
			if f.payload>>63 != 0 { // RFC 6455 §5.2: the most significant bit must be 0
				f.bad = true
			}
		default:
			f.payload = uint64(n)
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.closed = true
		}
		f.hn = 0
	}
}

// wsHeaderLen returns the length of a frame header whose second byte is b1.
func wsHeaderLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// canClose reports whether a close frame may be sent now: the stream is between two frames
// and has not been closed already.
func (f *wsFrames) canClose() bool {
	return !f.bad && !f.closed && f.hn == 0 && f.payload == 0
}

// wsCloseFrame returns a close frame with status 1001 "going away". A frame to the upstream,
// which the proxy sends as a client, is masked with a fresh random key (RFC 6455 §5.3); one
// to the client is not.
func wsCloseFrame(masked bool) []byte {
	const reason = "going away"
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), closeGoingAway)
	payload = append(payload, reason...)
	frame := []byte{0x80 | 0x8, byte(len(payload))} // FIN, opcode close
	if !masked {
		return append(frame, payload...)
	}
	frame[1] |= 0x80
	var key [4]byte
	rand.Read(key[:])
	frame = append(frame, key[:]...)
	for i, b := range payload {
		frame = append(frame, b^key[i%4])
	}
	return frame
}

// wsStream is one direction of a WebSocket tunnel: the pump's writes and the close frame
// Shutdown sends go through it, so that the close frame lands between two frames.
type wsStream struct {
	mu     sync.Mutex // mu guards the fields below and orders writes to the destination
	frames wsFrames
	shut   bool // a close frame was sent: what the source sends after it is dropped

	// pending is set by a goAway that could not send its close frame at once (a write was
	// in progress, or the stream was inside a frame): 1 for an unmasked frame, 2 for a
	// masked one. The pump sends it after its write, at the next frame boundary.
	pending atomic.Int32
}

// write sends p to dst unless a close frame was sent, and follows its frames. A close frame
// that goAway left pending goes out as soon as the stream is between two frames.
func (s *wsStream) write(dst io.Writer, p []byte) (int, error) {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return 0, nil
	}
	n, err := dst.Write(p)
	s.frames.feed(p[:n])
	s.mu.Unlock()
	// Checked after unlocking: a goAway that found the lock taken set pending before it
	// tried, so either it got the lock after this write, or this check sees pending.
	if s.pending.Load() != 0 {
		s.sendPending(dst)
	}
	return n, err
}

// sendPending sends the pending close frame if the stream is free and between two frames.
func (s *wsStream) sendPending(dst io.Writer) bool {
	if !s.mu.TryLock() {
		return false
	}
	defer s.mu.Unlock()
	mode := s.pending.Load()
	if mode == 0 || s.shut || !s.frames.canClose() {
		return false
	}
	s.shut = true
	s.pending.Store(0)
	_, err := dst.Write(wsCloseFrame(mode == 2))
	return err == nil
}

// goAway sends dst a close frame at the next boundary between two frames: now if the stream
// is idle there, or else right after the frame being written. It never waits for a write in
// progress, which may be blocked by a peer that reads nothing; a stream that sends nothing
// more after being caught inside a frame gets no close frame. It reports whether the close
// frame was sent or is pending.
func (s *wsStream) goAway(dst io.Writer, masked bool) bool {
	mode := int32(1)
	if masked {
		mode = 2
	}
	if s.mu.TryLock() {
		done := s.shut || s.frames.bad || s.frames.closed // nothing a close frame can follow
		s.mu.Unlock()
		if done {
			return false
		}
	}
	s.pending.Store(mode)
	s.sendPending(dst)
	return true
}
