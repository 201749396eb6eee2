package h2_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluiceproxy/sluice/h2"
)

// FuzzConn feeds what follows the client preface on a connection to the server: any frames,
// well formed or not. The server must neither panic nor hang: once the input ends, the
// connection ends, however the frames left its streams.
func FuzzConn(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "hello")
		w.Header().Set("X-Sum", "1")
	})
	s := h2.New(&http.Server{Handler: handler, ErrorLog: log.New(io.Discard, "", 0)})
	f.Fuzz(func(t *testing.T, input []byte) {
		nc := &inputConn{r: io.MultiReader(bytes.NewReader([]byte(http2.ClientPreface)), bytes.NewReader(input))}
		done := make(chan struct{})
		go func() {
			s.ServeConn(context.Background(), nc)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ServeConn still running 10s after its input ended")
		}
	})
}

// fuzzSeeds are client frames of the kinds the server handles, each a whole exchange.
func fuzzSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	block := func(fields ...string) []byte {
		var b bytes.Buffer
		enc := hpack.NewEncoder(&b)
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return b.Bytes()
	}
	get := block(":method", "GET", ":scheme", "http", ":authority", "a.test", ":path", "/")
	post := block(":method", "POST", ":scheme", "http", ":authority", "a.test", ":path", "/up",
		"content-length", "5", "trailer", "x-t")
	for _, write := range []func(fr *http2.Framer){
		func(fr *http2.Framer) {
			fr.WriteSettings()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndStream: true, EndHeaders: true})
		},
		func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post, EndHeaders: true})
			fr.WriteData(1, false, []byte("hel"))
			fr.WriteData(1, false, []byte("lo"))
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-t", "v"), EndStream: true, EndHeaders: true})
			fr.WriteWindowUpdate(1, 100)
			fr.WriteWindowUpdate(0, 100)
		},
		func(fr *http2.Framer) {
			fr.WriteSettings()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: get[:2], EndStream: true})
			fr.WriteContinuation(3, true, get[2:])
			fr.WritePing(false, [8]byte{1})
			fr.WriteRSTStream(3, http2.ErrCodeCancel)
			fr.WritePriority(5, http2.PriorityParam{StreamDep: 5})
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		},
		func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post, EndHeaders: true})
			fr.WriteData(1, true, []byte("too long for five"))
			fr.WriteRawFrame(0x20, 0, 0, []byte("unknown"))
		},
	} {
		var b bytes.Buffer
		write(http2.NewFramer(&b, nil))
		seeds = append(seeds, b.Bytes())
	}
	return seeds
}

// inputConn is a connection whose client sends the bytes of r and then closes its side; what
// the server writes is dropped. A fake is right here: the fuzz target tests the server's
// handling of bytes, not the network.
type inputConn struct {
	r      io.Reader
	mu     sync.Mutex
	closed bool
}

func (c *inputConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *inputConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (c *inputConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *inputConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *inputConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *inputConn) SetDeadline(time.Time) error      { return nil }
func (c *inputConn) SetReadDeadline(time.Time) error  { return nil }
func (c *inputConn) SetWriteDeadline(time.Time) error { return nil }
