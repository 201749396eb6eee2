package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluiceproxy/sluice/proxy"
)

// TestServerHTTP2RapidReset opens and at once resets 10,000 streams on one h2c connection
// (CVE-2023-44487) in front of a Proxy, and counts what reached the upstream.
func TestServerHTTP2RapidReset(t *testing.T) {
	const streams = 10000
	var upstream atomic.Int64
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { upstream.Add(1) }))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	t.Cleanup(p.CloseIdleConnections)
	var started, finished atomic.Int64
	addr := serve(t, proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		defer finished.Add(1)
		p.ServeHTTP(w, r)
	}), proxy.ServerOptions{}))

	conn, _, _ := h2cConn(t, addr)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	bw := bufio.NewWriterSize(conn, 64<<10)
	fr := http2.NewFramer(bw, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)

	var goaway atomic.Pointer[http2.GoAwayFrame]
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for range 10 * streams {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				goaway.Store(ga)
			}
		}
	}()

	var block []byte
	{
		var buf bufferWriter
		enc := hpack.NewEncoder(&buf)
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
			{Name: ":authority", Value: "a"}, {Name: ":path", Value: "/"}} {
			enc.WriteField(hpack.HeaderField{Name: f.Name, Value: f.Value, Sensitive: true}) // never indexed: the same bytes every time
		}
		block = buf
	}
	start := time.Now()
	sent := 0
	for i := range streams {
		id := uint32(2*i + 1)
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		if i%100 == 99 && bw.Flush() != nil {
			break
		}
		sent = i + 1
	}
	bw.Flush()
	took := time.Since(start)

	// The server says GOAWAY and closes the connection once the streams it took have ended.
	select {
	case <-readDone:
	case <-time.After(10 * time.Second):
		t.Error("the connection is still open 10s after the resets")
	}
	deadline := time.Now().Add(10 * time.Second)
	for finished.Load() != started.Load() {
		require.True(t, time.Now().Before(deadline), "proxy handlers still running")
		time.Sleep(10 * time.Millisecond)
	}
	ga := goaway.Load()
	t.Logf("%d streams opened and reset in %v; the proxy served %d, %d reached the upstream; GOAWAY: %v",
		sent, took, started.Load(), upstream.Load(), ga)
	require.NotNil(t, ga, "the server must say GOAWAY")
	assert.Equal(t, http2.ErrCodeNo, ga.ErrCode, "a graceful GOAWAY")
	assert.Less(t, ga.LastStreamID, uint32(2*1000), "GOAWAY after a bounded number of streams")
	assert.Less(t, started.Load(), int64(500), "reset streams the proxy served")
	assert.Less(t, upstream.Load(), int64(100), "reset streams that reached the upstream")
}

// TestServerHTTP2ResetsTolerated checks that a client canceling some of its streams keeps its
// connection, and one canceling most of them past MaxStreamResets is sent GOAWAY.
func TestServerHTTP2ResetsTolerated(t *testing.T) {
	for _, tt := range []struct {
		name              string
		completed, cancel int
		wantConns         int64
	}{
		{"120 of 420 canceled: kept", 300, 120, 1},
		{"120 of 140 canceled: GOAWAY", 20, 120, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var holding, released, conns atomic.Int64
			srv := proxy.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hold" {
					holding.Add(1)
					<-r.Context().Done()
					released.Add(1)
					return
				}
				io.WriteString(w, "ok")
			}), proxy.ServerOptions{})
			srv.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			addr := serve(t, srv)
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			get := func(ctx context.Context, path string) error {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
				res, err := client.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, res.Body)
				return res.Body.Close()
			}
			for range tt.completed {
				require.NoError(t, get(context.Background(), "/"))
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for range tt.cancel {
				wg.Go(func() { get(ctx, "/hold") })
			}
			deadline := time.Now().Add(10 * time.Second)
			for holding.Load() < int64(tt.cancel) {
				require.True(t, time.Now().Before(deadline), "handlers started: %d", holding.Load())
				time.Sleep(5 * time.Millisecond)
			}
			cancel() // the client resets every held stream
			wg.Wait()
			deadline = time.Now().Add(10 * time.Second)
			for released.Load() < int64(tt.cancel) {
				require.True(t, time.Now().Before(deadline), "handlers released: %d", released.Load())
				time.Sleep(5 * time.Millisecond)
			}
			// A GOAWAY follows the handlers' return; new requests show when it arrived, or for
			// a second that none did.
			deadline = time.Now().Add(time.Second)
			for conns.Load() < 2 && time.Now().Before(deadline) {
				require.NoError(t, get(context.Background(), "/"))
				time.Sleep(10 * time.Millisecond)
			}
			assert.Equal(t, tt.wantConns, conns.Load(), "connections the client opened")
		})
	}
}

type bufferWriter []byte

func (b *bufferWriter) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
