package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"sync"
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
}

// write sends p to dst unless a close frame was sent, and follows its frames.
func (s *wsStream) write(dst io.Writer, p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return 0, nil
	}
	n, err := dst.Write(p)
	s.frames.feed(p[:n])
	return n, err
}

// goAway sends dst a close frame if the stream is between two frames, and reports whether it
// did. It does not wait for a write in progress, which may be blocked by a peer that reads
// nothing: that stream gets no close frame.
func (s *wsStream) goAway(dst io.Writer, masked bool) bool {
	if !s.mu.TryLock() {
		return false
	}
	defer s.mu.Unlock()
	if s.shut || !s.frames.canClose() {
		return false
	}
	s.shut = true
	_, err := dst.Write(wsCloseFrame(masked))
	return err == nil
}
