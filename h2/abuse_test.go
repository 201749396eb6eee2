package h2_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestRapidReset opens streams and resets each at once, far more than the stream limit,
// against handlers that block until the test ends (CVE-2023-44487). The handlers running at
// once must stay bounded (h2 bounds them at twice SETTINGS_MAX_CONCURRENT_STREAMS), and the
// connection keeps serving.
func TestRapidReset(t *testing.T) {
	const limit = 10
	var running, most atomic.Int32
	release := make(chan struct{})
	defer close(release)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == probePath {
			return
		}
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-release:
		case <-r.Context().Done(): // the reset cancels it, but it ends only when released
			<-release
		}
	})
	ts := start(t, ours, h2c, &http.Server{Handler: handler, HTTP2: &http.HTTP2Config{MaxConcurrentStreams: limit}})
	c := ts.dialRaw(t)
	for range 200 {
		id := c.request("GET", "/slow", true)
		c.writeRST(id, http2.ErrCodeCancel)
	}
	// A request after the flood: its answer, or its refusal, shows the server read it all.
	last := c.wait(c.request("GET", "/last", true))
	refused := 0
	for _, s := range c.streams {
		if s.rst == http2.ErrCodeRefusedStream {
			refused++
		}
	}
	require.Nil(t, c.connError(), "the connection survives")
	assert.LessOrEqual(t, most.Load(), int32(2*limit), "handlers running at once")
	assert.Positive(t, refused, "streams past the bound were refused")
	assert.Equal(t, http2.ErrCodeRefusedStream, last.rst, "handlers are still blocked: a new stream is refused")
}

// TestPingFlood sends PINGs without reading the acknowledgements. The server must not take
// them in without end, queueing answers nobody reads: it stops reading once its answers back
// up (or ends the connection), so the client's writes stall once the sockets' buffers are
// full (some 18 MiB of PINGs here), long before 136 MiB.
func TestPingFlood(t *testing.T) {
	ts := start(t, ours, h2c, &http.Server{Handler: http.NotFoundHandler()})
	c := ts.dialRaw(t)
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	const frames = 8 << 20 // 17 bytes each: 136 MiB
	var err error
	sent := 0
	for ; sent < frames && err == nil; sent++ {
		err = c.fr.WritePing(false, [8]byte{byte(sent)})
	}
	require.Error(t, err, "all %d PINGs were taken in", frames)
	assert.Less(t, sent, frames/4, "PINGs taken in before the client's writes stalled")
}

// TestEndWhileWriteBlocked has a client open a stream with a window large enough for a big
// response, read nothing, and close its side: the connection's end must not wait without
// bound for the handler's write to a socket nobody reads. The handler's write fails soon
// after.
func TestEndWhileWriteBlocked(t *testing.T) {
	failed := make(chan error, 1)
	wrote := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1<<20)
		for i := 0; ; i++ {
			if _, err := w.Write(chunk); err != nil {
				failed <- err
				return
			}
			if i == 1 {
				// 2 MiB are out: about what loopback socket buffers take (4 MiB do not
				// go through), so the writes that follow block.
				close(wrote)
			}
		}
	})
	ts := start(t, ours, h2c, &http.Server{Handler: handler})
	conn := ts.dial(t)
	fr := http2.NewFramer(conn, conn)
	_, err := io.WriteString(conn, http2.ClientPreface)
	require.NoError(t, err)
	require.NoError(t, fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}))
	require.NoError(t, fr.WriteWindowUpdate(0, 1<<31-1-65535))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}))
	select {
	case <-wrote:
	case <-time.After(waitFor):
		t.Fatal("the handler did not write 2 MiB")
	}
	require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // and read nothing
	select {
	case err := <-failed:
		assert.Error(t, err)
	case <-time.After(waitFor):
		t.Fatal("the handler's write still blocks after the connection ended")
	}
}
