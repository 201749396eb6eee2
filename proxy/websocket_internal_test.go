package proxy

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// frame encodes a WebSocket frame with opcode op and n payload bytes.
func frame(op byte, n int, masked bool) []byte {
	b := []byte{0x80 | op, 0}
	switch {
	case n < 126:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b[1] |= 0x80
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, bytes.Repeat([]byte{0x88}, n)...) // payload bytes that look like headers
}

// wsFrames finds every frame boundary, whatever the header form and however the stream is cut.
func TestWSFramesBoundaries(t *testing.T) {
	var stream []byte
	ends := map[int]bool{0: true}
	for _, f := range [][]byte{
		frame(0x1, 0, false), frame(0x2, 5, true), frame(0x2, 125, false), frame(0x2, 126, true),
		frame(0x9, 3, false), frame(0x0, 0xffff, true), frame(0x2, 0x10000, false),
	} {
		stream = append(stream, f...)
		ends[len(stream)] = true
	}
	var f wsFrames
	for i, b := range stream {
		f.feed([]byte{b})
		require.Equal(t, ends[i+1], f.canClose(), "after byte %d of %d", i+1, len(stream))
	}
	for _, cut := range []int{1, 2, 3, 7, 130, 1000, len(stream) - 1} {
		var g wsFrames
		g.feed(stream[:cut])
		assert.Equal(t, ends[cut], g.canClose(), "cut at %d", cut)
		g.feed(stream[cut:])
		assert.True(t, g.canClose(), "the stream ends on a boundary (cut at %d)", cut)
	}
}

func TestWSFramesNoCloseAfterClose(t *testing.T) {
	var f wsFrames
	f.feed(frame(0x8, 2, false))
	assert.False(t, f.canClose(), "a stream the peer closed gets no second close frame")

	var g wsFrames
	g.feed([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0})
	assert.False(t, g.canClose(), "a length with the top bit set is no WebSocket stream")
	g.feed(frame(0x2, 1, false))
	assert.False(t, g.canClose(), "and its boundaries stay unknown")
}

func TestWSCloseFrame(t *testing.T) {
	want := append([]byte{0x03, 0xe9}, "going away"...)
	plain := wsCloseFrame(false)
	assert.Equal(t, append([]byte{0x88, byte(len(want))}, want...), plain, "a server's close frame is not masked")

	masked := wsCloseFrame(true)
	require.Len(t, masked, 2+4+len(want))
	assert.Equal(t, []byte{0x88, 0x80 | byte(len(want))}, masked[:2], "a client's close frame is masked")
	key, payload := masked[2:6], append([]byte(nil), masked[6:]...)
	for i := range payload {
		payload[i] ^= key[i%4]
	}
	assert.Equal(t, want, payload)

	var f wsFrames
	f.feed(masked)
	assert.False(t, f.canClose(), "wsFrames reads the close frame as one whole frame")
	assert.True(t, f.closed && f.hn == 0 && f.payload == 0)
}

// FuzzWSFrames feeds what a peer may send through a tunnel, cut in two anywhere: wsFrames must
// never panic, and cutting must not change what it concludes.
func FuzzWSFrames(f *testing.F) {
	f.Add(frame(0x1, 5, true), 3)
	f.Add(append(frame(0x2, 200, false), frame(0x8, 2, true)...), 100)
	f.Add(frame(0x2, 0x10000, false), 9)
	f.Add([]byte{0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 5)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), 4)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		var whole, split wsFrames
		whole.feed(data)
		split.feed(data[:cut])
		split.feed(data[cut:])
		if whole != split {
			t.Fatalf("state after one feed %+v, after two %+v", whole, split)
		}
	})
}

// textFrame returns an unmasked text frame carrying payload (under 126 bytes).
func textFrame(payload string) []byte {
	return append([]byte{0x81, byte(len(payload))}, payload...)
}

// lockedBuffer is a bytes.Buffer whose writes may be held back by the test.
type lockedBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	gate chan struct{} // when not nil, each Write waits for a receive
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	if b.gate != nil {
		<-b.gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func TestWSStreamGoAway(t *testing.T) {
	closeFrame := wsCloseFrame(false)

	t.Run("between frames, at once", func(t *testing.T) {
		var s wsStream
		var dst lockedBuffer
		s.write(&dst, textFrame("a"))
		require.True(t, s.goAway(&dst, false))
		assert.Equal(t, append(textFrame("a"), closeFrame...), dst.bytes())
		n, _ := s.write(&dst, textFrame("late"))
		assert.Zero(t, n, "nothing is forwarded after the close frame")
		assert.Equal(t, append(textFrame("a"), closeFrame...), dst.bytes())
	})

	t.Run("inside a frame, right after it", func(t *testing.T) {
		var s wsStream
		var dst lockedBuffer
		f := textFrame("hello")
		s.write(&dst, f[:4])
		require.True(t, s.goAway(&dst, false), "the close frame is pending")
		assert.Equal(t, f[:4], dst.bytes(), "never inside a frame")
		s.write(&dst, f[4:])
		assert.Equal(t, append(f, closeFrame...), dst.bytes(), "the close frame follows the frame's end")
	})

	t.Run("behind a blocked write, without waiting for it", func(t *testing.T) {
		var s wsStream
		dst := lockedBuffer{gate: make(chan struct{})}
		wrote := make(chan struct{})
		go func() {
			s.write(&dst, textFrame("slow"))
			close(wrote)
		}()
		// Wait until the pump holds the stream's lock inside its write.
		require.Eventually(t, func() bool {
			if s.mu.TryLock() {
				s.mu.Unlock()
				return false
			}
			return true
		}, 10*time.Second, time.Millisecond)
		returned := make(chan bool)
		go func() { returned <- s.goAway(&dst, false) }()
		select {
		case ok := <-returned:
			assert.True(t, ok, "the close frame is pending")
		case <-time.After(10 * time.Second):
			t.Fatal("goAway waited for a blocked write")
		}
		close(dst.gate) // the peer reads again
		<-wrote
		assert.Equal(t, append(textFrame("slow"), closeFrame...), dst.bytes(),
			"the close frame goes out once the write in progress is done")
	})
}
