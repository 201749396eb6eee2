package h2_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluiceproxy/sluice/h2"
)

// BenchmarkServe measures one GET and its 1 KiB response on a connection that carries one
// stream at a time, through net/http's HTTP/2 server and through h2, over loopback TCP. The
// client writes pre-encoded frames and reads frames with no decoding beyond their headers, so
// nearly all of the allocations and CPU per op are the server's.
func BenchmarkServe(b *testing.B) {
	body := make([]byte, 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})
	for _, front := range []string{"net/http", "h2"} {
		b.Run(front, func(b *testing.B) {
			addr := listenH2C(b, front, &http.Server{Handler: handler})
			c := dialRaw(b, addr)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if n := c.get(b); n != len(body) {
					b.Fatalf("body of %d bytes, want %d", n, len(body))
				}
			}
		})
	}
}

// listenH2C serves srv on a loopback port with HTTP/2 prior knowledge through front,
// "net/http" (srv itself) or "h2", until tb ends, and returns the port's address.
func listenH2C(tb testing.TB, front string, srv *http.Server) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var s interface {
		Serve(net.Listener) error
		Close() error
	} = srv
	if front == "h2" {
		s = h2.New(srv)
	} else {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	}
	go s.Serve(ln)
	tb.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// rawClient speaks just enough HTTP/2 to send GETs one at a time and count their bodies.
type rawClient struct {
	conn    net.Conn
	br      *bufio.Reader
	block   []byte // the request's header block, encoded without the dynamic table
	frame   []byte
	id      uint32
	hdr     [9]byte
	pending uint32 // DATA bytes received and not yet given back with WINDOW_UPDATE
}

func dialRaw(tb testing.TB, addr string) *rawClient {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	enc.SetMaxDynamicTableSizeLimit(0)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "bench.test"},
		{":path", "/bench?x=1"}, {"user-agent", "bench"}, {"accept", "*/*"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	c := &rawClient{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), block: block.Bytes(), id: 1}
	fr := http2.NewFramer(conn, nil)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		tb.Fatal(err)
	}
	if err := fr.WriteSettings(); err != nil {
		tb.Fatal(err)
	}
	if err := fr.WriteWindowUpdate(0, 1<<30); err != nil {
		tb.Fatal(err)
	}
	return c
}

// get sends one GET and returns the length of its response's body.
func (c *rawClient) get(b *testing.B) int {
	c.frame = c.frame[:0]
	c.frame = append(c.frame, byte(len(c.block)>>16), byte(len(c.block)>>8), byte(len(c.block)),
		byte(http2.FrameHeaders), byte(http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream))
	c.frame = binary.BigEndian.AppendUint32(c.frame, c.id)
	c.frame = append(c.frame, c.block...)
	if c.pending > 1<<20 {
		// Give the stream-independent window back now and then, as a client does.
		c.frame = append(c.frame, 0, 0, 4, byte(http2.FrameWindowUpdate), 0, 0, 0, 0, 0)
		c.frame = binary.BigEndian.AppendUint32(c.frame, c.pending)
		c.pending = 0
	}
	if _, err := c.conn.Write(c.frame); err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
			b.Fatal(err)
		}
		length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
		t, flags := http2.FrameType(c.hdr[3]), http2.Flags(c.hdr[4])
		id := binary.BigEndian.Uint32(c.hdr[5:]) & (1<<31 - 1)
		if _, err := c.br.Discard(length); err != nil {
			b.Fatal(err)
		}
		if t == http2.FrameSettings && flags&http2.FlagSettingsAck == 0 {
			if _, err := c.conn.Write([]byte{0, 0, 0, byte(http2.FrameSettings), byte(http2.FlagSettingsAck), 0, 0, 0, 0}); err != nil {
				b.Fatal(err)
			}
			continue
		}
		if id != c.id {
			continue
		}
		switch t {
		case http2.FrameData:
			n += length
			c.pending += uint32(length)
		case http2.FrameRSTStream, http2.FrameGoAway:
			b.Fatalf("stream %d ended with frame type %v", id, t)
		}
		if flags&http2.FlagDataEndStream != 0 && (t == http2.FrameData || t == http2.FrameHeaders) {
			c.id += 2
			return n
		}
	}
}
