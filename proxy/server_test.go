package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/proxy"
)

// serve starts srv on a loopback port and returns its address.
func serve(t testing.TB, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// closedWithin reads conn until the server closes it and returns how long that took after
// start, or fails the test when it is still open at limit.
func closedWithin(t *testing.T, conn net.Conn, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	conn.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", limit)
	}
	return time.Since(start)
}

func TestServerSlowlorisHeader(t *testing.T) {
	const timeout = 200 * time.Millisecond
	var called atomic.Bool
	addr := serve(t, proxy.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		called.Store(true)
	}), proxy.ServerOptions{ReadHeaderTimeout: timeout}))

	// Before the dial: the server starts its clock once it has accepted the connection,
	// which may be before Dial returns.
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	closed := make(chan time.Duration, 1)
	go func() { closed <- closedWithin(t, conn, start, 5*time.Second) }()

	// Trickle a header field one byte every 10ms, the way slowloris keeps a connection:
	// the server must cut it off at ReadHeaderTimeout however steadily the bytes come.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "))
	var took time.Duration
trickle:
	for i := 0; i < 500; i++ {
		select {
		case took = <-closed:
			break trickle
		case <-tick.C:
			conn.Write([]byte("a"))
		}
	}
	require.NotZero(t, took, "the server kept a trickling client for 5s")
	assert.GreaterOrEqual(t, took, timeout, "cut off before ReadHeaderTimeout")
	assert.Less(t, took, 10*timeout, "cut off near ReadHeaderTimeout")
	assert.False(t, called.Load(), "the handler must never see a request whose header never ended")
}

func TestServerIdleKeepAlivesReaped(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr := serve(t, proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), proxy.ServerOptions{IdleTimeout: timeout}))

	const n = 20
	var wg sync.WaitGroup
	took := make([]time.Duration, n)
	for i := range n {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		require.NoError(t, err)
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
		require.False(t, res.Close, "the connection is kept alive")
		start := time.Now()
		wg.Go(func() { took[i] = closedWithin(t, conn, start, 5*time.Second) })
	}
	wg.Wait()
	for i, d := range took {
		assert.Less(t, d, 10*timeout, "idle connection %d reaped near IdleTimeout", i)
	}
}

// rawRequest writes head (and then body, from another goroutine, since the server may stop
// reading it) on a new connection and returns the response.
func rawRequest(t *testing.T, addr, head string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(conn, head) // the server may answer and stop reading before the end
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestServerHeaderLimits(t *testing.T) {
	addr := serve(t, proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), proxy.ServerOptions{}))
	field := func(name string, n int) string { return name + ": " + strings.Repeat("v", n) + "\r\n" }
	tests := []struct {
		name   string
		target string
		fields string
		want   int
		guard  bool // answered by NewServer's handler (plain text, Connection: close)
	}{
		{"small", "/", "", http.StatusOK, false},
		{"1 MiB header field", "/", field("X-Big", 1<<20), http.StatusRequestHeaderFieldsTooLarge, false},
		{"1 MiB target: net/http's header limit answers first", "/" + strings.Repeat("a", 1<<20), "",
			http.StatusRequestHeaderFieldsTooLarge, false},
		{"16 KiB target", "/" + strings.Repeat("a", 16<<10), "", http.StatusRequestURITooLong, true},
		{"8 KiB target", "/" + strings.Repeat("a", 8<<10-1), "", http.StatusOK, false},
		{"9 KiB field line", "/", field("X-Long", 9<<10), http.StatusRequestHeaderFieldsTooLarge, true},
		{"8 KiB field line", "/", field("X-Long", 8<<10-len("X-Long: ")), http.StatusOK, false},
		{"33 KiB of short lines", "/", strings.Repeat(field("X-Many", 8<<10-len("X-Many: ")), 4) + field("X-More", 1<<10),
			http.StatusRequestHeaderFieldsTooLarge, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := rawRequest(t, addr, "GET "+tt.target+" HTTP/1.1\r\nHost: a\r\n"+tt.fields+"\r\n")
			assert.Equal(t, tt.want, res.StatusCode, body)
			if tt.guard {
				assert.True(t, res.Close, "a refused request closes the connection")
				assert.Equal(t, "text/plain; charset=utf-8", res.Header.Get("Content-Type"))
				assert.Contains(t, body, "limit", "the reason is given")
			}
		})
	}
}

// slowBody is an upload that sends one chunk per tick, then stalls when stall is set.
type slowBody struct {
	chunks int
	tick   time.Duration
	stall  bool
	stop   chan struct{}
}

func (b *slowBody) reader() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		t := time.NewTicker(b.tick)
		defer t.Stop()
		for range b.chunks {
			select {
			case <-t.C:
			case <-b.stop:
				pw.CloseWithError(errors.New("test over"))
				return
			}
			if _, err := pw.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
				return
			}
		}
		if b.stall {
			<-b.stop
			pw.CloseWithError(errors.New("test over"))
			return
		}
		pw.Close()
	}()
	return pr
}

func TestServerBodyReadTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			type result struct {
				n    int64
				err  error
				wait time.Duration // from the last byte read to the error
			}
			results := make(chan result, 1)
			srv := proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var n int64
				var last time.Time
				buf := make([]byte, 4096)
				var err error
				for {
					var m int
					m, err = r.Body.Read(buf)
					if m > 0 {
						n += int64(m)
						last = time.Now()
					}
					if err != nil {
						break
					}
				}
				if err == io.EOF {
					err = nil
				}
				results <- result{n, err, time.Since(last)}
				if err != nil {
					w.WriteHeader(http.StatusRequestTimeout)
					return
				}
				fmt.Fprint(w, n)
			}), proxy.ServerOptions{BodyReadTimeout: timeout})
			addr := serve(t, srv)
			tr := &http.Transport{}
			if proto == "h2c" {
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}

			t.Run("steady upload longer than the timeout", func(t *testing.T) {
				// 24 chunks 50ms apart: 1.2s of upload, three times the timeout.
				b := &slowBody{chunks: 24, tick: 50 * time.Millisecond, stop: make(chan struct{})}
				defer close(b.stop)
				start := time.Now()
				res, err := client.Post("http://"+addr+"/", "text/plain", b.reader())
				require.NoError(t, err)
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				r := <-results
				require.NoError(t, r.err, "a steady upload must not time out (%d bytes read, %v after the last)", r.n, r.wait)
				assert.Equal(t, http.StatusOK, res.StatusCode)
				assert.Equal(t, "24000", string(body))
				assert.Greater(t, time.Since(start), 2*timeout, "the upload outlasted the timeout")
			})
			t.Run("stalled upload", func(t *testing.T) {
				b := &slowBody{chunks: 2, tick: 20 * time.Millisecond, stall: true, stop: make(chan struct{})}
				defer close(b.stop)
				go func() {
					res, err := client.Post("http://"+addr+"/", "text/plain", b.reader())
					if err == nil {
						res.Body.Close()
					}
				}()
				var r result
				select {
				case r = <-results:
				case <-time.After(10 * time.Second):
					t.Fatal("a stalled upload was waited for 10s")
				}
				assert.Equal(t, int64(2000), r.n, "the bytes before the stall were read")
				assert.ErrorIs(t, r.err, os.ErrDeadlineExceeded)
				assert.GreaterOrEqual(t, r.wait, timeout*7/8-10*time.Millisecond, "failed before the timeout")
				assert.Less(t, r.wait, 8*timeout, "failed near the timeout")
			})
		})
	}
}

// h2cConn opens an h2c connection with prior knowledge and returns its framer and the
// server's first SETTINGS frame.
func h2cConn(t *testing.T, addr string) (net.Conn, *http2.Framer, *http2.SettingsFrame) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	require.NoError(t, fr.WriteSettings())
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	sf, ok := f.(*http2.SettingsFrame)
	require.True(t, ok, "first frame is SETTINGS, got %v", f)
	require.NoError(t, fr.WriteSettingsAck())
	return conn, fr, sf
}

// headerBlock encodes a GET request's fields.
func headerBlock(extra ...hpack.HeaderField) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "a"}, {Name: ":path", Value: "/"},
	}, extra...) {
		enc.WriteField(f)
	}
	return buf.Bytes()
}

// writeHeaders sends a header block on stream id, split into CONTINUATION frames of the
// largest size the server reads.
func writeHeaders(fr *http2.Framer, id uint32, block []byte, frameSize int) error {
	first := block[:min(len(block), frameSize)]
	block = block[len(first):]
	err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first,
		EndStream: true, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		frag := block[:min(len(block), frameSize)]
		block = block[len(frag):]
		err = fr.WriteContinuation(id, len(block) == 0, frag)
	}
	return err
}

func TestServerHTTP2Limits(t *testing.T) {
	release := make(chan struct{})
	var open, most atomic.Int64
	addr := serve(t, proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("hold") {
			n := open.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release
			open.Add(-1)
		}
	}), proxy.ServerOptions{}))

	t.Run("settings", func(t *testing.T) {
		_, _, sf := h2cConn(t, addr)
		want := map[http2.SettingID]uint32{
			http2.SettingMaxConcurrentStreams: 128,
			http2.SettingMaxFrameSize:         16 << 10,
			// net/http's figure: MaxHeaderBytes and 32 bytes for each of ten fields.
			http2.SettingMaxHeaderListSize: 32<<10 + 320,
		}
		for id, v := range want {
			got, ok := sf.Value(id)
			assert.True(t, ok, "%v advertised", id)
			assert.Equal(t, v, got, "%v", id)
		}
	})

	t.Run("streams past 128 refused", func(t *testing.T) {
		_, fr, _ := h2cConn(t, addr)
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for i := range 129 {
			buf.Reset()
			for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
				{Name: ":authority", Value: "a"}, {Name: ":path", Value: "/?hold"}} {
				enc.WriteField(f)
			}
			require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1),
				BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true}))
		}
		var reset *http2.RSTStreamFrame
		for range 1000 {
			f, err := fr.ReadFrame()
			require.NoError(t, err)
			if rf, ok := f.(*http2.RSTStreamFrame); ok {
				reset = rf
				break
			}
		}
		close(release)
		require.NotNil(t, reset, "the 129th stream must be reset")
		assert.Equal(t, uint32(257), reset.StreamID, "the 129th stream is the one reset")
		assert.LessOrEqual(t, most.Load(), int64(128), "handlers running at once")
	})

	t.Run("just over 32 KiB of fields", func(t *testing.T) {
		// The field that crosses the limit must come in the last fragment, and that fragment
		// must be at most twice the room left: net/http ends the connection on any more
		// (its guard against CONTINUATION floods).
		_, fr, _ := h2cConn(t, addr)
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
			{Name: ":authority", Value: "a"}, {Name: ":path", Value: "/"}} {
			enc.WriteField(f)
		}
		for i := range 7 {
			enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-f%d", i), Value: strings.Repeat("v", 4000)})
		}
		head := bytes.Clone(buf.Bytes())
		buf.Reset()
		enc.WriteField(hpack.HeaderField{Name: "x-last", Value: strings.Repeat("v", 6000)})
		require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: head[:16<<10], EndStream: true}))
		require.NoError(t, fr.WriteContinuation(1, false, head[16<<10:]))
		require.NoError(t, fr.WriteContinuation(1, true, buf.Bytes()))
		status, err := h2Status(fr, 1)
		require.NoError(t, err)
		assert.Equal(t, "431", status)
	})

	for _, tt := range []struct {
		name  string
		field func(i int) hpack.HeaderField
		n     int
		want  string
	}{
		// A list far over the limit cannot be skipped cheaply: net/http ends the connection.
		{"1 MiB in 4 KiB fields", func(i int) hpack.HeaderField {
			return hpack.HeaderField{Name: fmt.Sprintf("x-f%d", i), Value: strings.Repeat("v", 4<<10)}
		}, 256, "GOAWAY: PROTOCOL_ERROR"},
		// One string longer than the limit cannot be decoded at all.
		{"1 MiB field", func(int) hpack.HeaderField {
			return hpack.HeaderField{Name: "x-big", Value: strings.Repeat("v", 1<<20)}
		}, 1, "GOAWAY: COMPRESSION_ERROR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, fr, _ := h2cConn(t, addr)
			var fields []hpack.HeaderField
			for i := range tt.n {
				fields = append(fields, tt.field(i))
			}
			require.NoError(t, writeHeaders(fr, 1, headerBlock(fields...), 16<<10))
			_, err := h2Status(fr, 1)
			assert.ErrorContains(t, err, tt.want)
		})
	}

	t.Run("9 KiB field line", func(t *testing.T) {
		_, fr, _ := h2cConn(t, addr)
		block := headerBlock(hpack.HeaderField{Name: "x-long", Value: strings.Repeat("v", 9<<10)})
		require.NoError(t, writeHeaders(fr, 1, block, 16<<10))
		status, err := h2Status(fr, 1)
		require.NoError(t, err)
		assert.Equal(t, "431", status)
	})

	t.Run("idle connection closed", func(t *testing.T) {
		addr := serve(t, proxy.NewServer(http.NotFoundHandler(), proxy.ServerOptions{IdleTimeout: 300 * time.Millisecond}))
		conn, fr, _ := h2cConn(t, addr)
		start := time.Now()
		connIdleClosed(t, conn, fr, start)
	})

	t.Run("unfinished header block closed as idle", func(t *testing.T) {
		// ReadHeaderTimeout is HTTP/1's; net/http's HTTP/2 server holds a connection without
		// a complete stream for IdleTimeout, however the header block trickles in.
		addr := serve(t, proxy.NewServer(http.NotFoundHandler(), proxy.ServerOptions{IdleTimeout: 300 * time.Millisecond}))
		conn, fr, _ := h2cConn(t, addr)
		require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headerBlock()[:3], EndStream: true}))
		start := time.Now()
		connIdleClosed(t, conn, fr, start)
	})
}

// connIdleClosed reads frames until the server closes an idle HTTP/2 connection, and checks
// that it said GOAWAY first and closed it within 3s of start.
func connIdleClosed(t *testing.T, conn net.Conn, fr *http2.Framer, start time.Time) {
	t.Helper()
	conn.SetReadDeadline(start.Add(5 * time.Second))
	var goaway bool
	for range 100 {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "idle h2c connection still open after 5s")
			break
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			goaway = true
		}
	}
	assert.True(t, goaway, "the server says GOAWAY before it closes")
	assert.Less(t, time.Since(start), 3*time.Second, "idle h2c connection closed near IdleTimeout")
}

// h2Status reads frames until the response header of stream id and returns its :status.
func h2Status(fr *http2.Framer, id uint32) (string, error) {
	for range 1000 {
		f, err := fr.ReadFrame()
		if err != nil {
			return "", err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status"), nil
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", fmt.Errorf("stream reset: %v", f.ErrCode)
			}
		case *http2.GoAwayFrame:
			return "", fmt.Errorf("GOAWAY: %v", f.ErrCode)
		}
	}
	return "", errors.New("no response in 1000 frames")
}

func ExampleNewServer() {
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:8080")}
	srv := proxy.NewServer(p, proxy.ServerOptions{})
	srv.Addr = ":8080"
	// go srv.ListenAndServe()
	fmt.Println(srv.ReadHeaderTimeout, srv.IdleTimeout, srv.ReadTimeout, srv.WriteTimeout)
	fmt.Println(srv.MaxHeaderBytes, srv.HTTP2.MaxConcurrentStreams, srv.Protocols)
	// Output:
	// 10s 1m0s 0s 0s
	// 32768 128 {HTTP1,HTTP2,UnencryptedHTTP2}
}

func TestServerResponseWriteTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	type result struct {
		n    int64
		err  error
		wait time.Duration // how long the failing write waited
	}
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			results := make(chan result, 1)
			addr := serve(t, proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				buf := make([]byte, 32<<10)
				var n int64
				for range 4096 { // at most 128 MiB: far more than socket buffers hold
					start := time.Now()
					m, err := w.Write(buf)
					n += int64(m)
					if err != nil {
						results <- result{n, err, time.Since(start)}
						return
					}
				}
				results <- result{n, nil, 0}
			}), proxy.ServerOptions{ResponseWriteTimeout: timeout}))

			// A client that asks for a response and never reads it.
			if proto == "h2c" {
				// Flow control stops the stream once the client's 64 KiB window is used up:
				// it never sends WINDOW_UPDATE.
				_, fr, _ := h2cConn(t, addr)
				require.NoError(t, writeHeaders(fr, 1, headerBlock(), 16<<10))
			} else {
				conn, err := net.Dial("tcp", addr)
				require.NoError(t, err)
				defer conn.Close()
				_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				require.NoError(t, err)
			}
			var r result
			select {
			case r = <-results:
			case <-time.After(20 * time.Second):
				t.Fatal("a write to a client that does not read was waited for 20s")
			}
			require.Error(t, r.err, "a client that never reads cannot take 128 MiB")
			assert.Positive(t, r.n, "the response started")
			assert.Less(t, r.wait, 3*timeout, "the stalled write failed near the timeout")
			if proto == "HTTP/1.1" {
				assert.ErrorIs(t, r.err, os.ErrDeadlineExceeded)
			}
		})
	}
}

func TestServerSteadyDownloadOutlastsWriteTimeout(t *testing.T) {
	// The timeout leaves ten ticks of slack, so that a loaded machine delaying a tick cannot
	// pass for a stall.
	const timeout = 500 * time.Millisecond
	srv := proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// 24 chunks 50ms apart: 1.2s of response, more than twice the timeout.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for range 24 {
			<-tick.C
			if _, err := w.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
		}
	}), proxy.ServerOptions{ResponseWriteTimeout: timeout})
	addr := serve(t, srv)
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			tr := &http.Transport{}
			if proto == "h2c" {
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			defer tr.CloseIdleConnections()
			res, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
			require.NoError(t, err)
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			require.NoError(t, err)
			assert.Len(t, body, 24000, "the whole stream arrived")
		})
	}
}

// TestServerTimeoutsSpareTunnels checks that the deadlines the body and response timeouts
// set on a keep-alive connection do not follow it into an upgraded tunnel.
func TestServerTimeoutsSpareTunnels(t *testing.T) {
	const timeout = 200 * time.Millisecond
	c := newCluster()
	c.backend(t, "10.0.0.1:80", newWSBackend())
	c.backend(t, "10.0.0.2:80", echo("plain"))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	t.Cleanup(p.CloseIdleConnections)
	plain := &proxy.Proxy{Picker: newPicker("10.0.0.2:80"), DialContext: c.dial}
	t.Cleanup(plain.CloseIdleConnections)
	addr := serve(t, proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			plain.ServeHTTP(w, r)
			return
		}
		p.ServeHTTP(w, r)
	}), proxy.ServerOptions{BodyReadTimeout: timeout, ResponseWriteTimeout: timeout}))

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	br := bufio.NewReader(conn)
	// A request with a body and a response arms both deadlines on the connection.
	_, err = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
	require.NoError(t, err)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)

	_, err = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	require.NoError(t, err)
	res, err = http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)

	// The tunnel is idle for several timeouts (time passing is the point, not a wait for
	// behaviour), then must still carry data both ways.
	<-time.After(3 * timeout)
	_, err = io.WriteString(conn, "still there?\n")
	require.NoError(t, err)
	got, err := readLine(br, 5*time.Second)
	require.NoError(t, err, "the tunnel outlives the body and response timeouts")
	assert.Equal(t, "still there?\n", got)
}

// TestServerHijackClearsDeadlines checks that a handler asserting http.Flusher and
// http.Hijacker, as older WebSocket libraries do, can flush (arming the response timeout)
// and then take the connection over without a deadline on it.
func TestServerHijackClearsDeadlines(t *testing.T) {
	const timeout = 200 * time.Millisecond
	werr := make(chan error, 1)
	addr := serve(t, proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, fok := w.(http.Flusher)
		hj, hok := w.(http.Hijacker)
		if !fok || !hok {
			werr <- errors.New("the ResponseWriter is not a Flusher and a Hijacker")
			return
		}
		f.Flush()
		conn, brw, err := hj.Hijack()
		if err != nil {
			werr <- err
			return
		}
		defer conn.Close()
		// Time passing is the point: past the deadline the flush set.
		<-time.After(3 * timeout)
		brw.WriteString("late\n")
		werr <- brw.Flush()
	}), proxy.ServerOptions{ResponseWriteTimeout: timeout}))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	require.NoError(t, err)
	select {
	case err = <-werr:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never wrote")
	}
	assert.NoError(t, err, "a hijacked connection carries no deadline")
}

// The server's own errors (here a failed TLS handshake) reach ServerOptions.Logger.
func TestServerLogger(t *testing.T) {
	var buf syncBuffer
	ca := testcert.NewCA(t)
	srv := proxy.NewServer(http.NotFoundHandler(), proxy.ServerOptions{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "localhost").TLS}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // plain HTTP to a TLS port
	io.Copy(io.Discard, conn)
	conn.Close()
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), "TLS handshake error") }, 10*time.Second, 5*time.Millisecond,
		"the handshake error is logged through the Logger")
	assert.Contains(t, buf.String(), `"level":"WARN"`)
}

// syncBuffer is a bytes.Buffer safe for a logger writing while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
