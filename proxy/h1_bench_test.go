package proxy

import (
	"bufio"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkH1IdleClean measures the look at an idle connection that every reuse now costs:
// one recv(MSG_PEEK|MSG_DONTWAIT) on a socket with nothing pending.
func BenchmarkH1IdleClean(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1)) // until the client closes
		}
	}()
	cc, _, err := newTestH1().get(b.Context(), &h1Pool{}, ln.Addr().String(), time.Now(), time.Time{}, true)
	require.NoError(b, err)
	defer cc.nc.Close()
	b.ReportAllocs()
	for b.Loop() {
		if !cc.idleClean(time.Now()) {
			b.Fatal("a quiet connection was not clean")
		}
	}
}

// BenchmarkH1Header compares the lean client's in-place header parser with textproto's, on the
// head NGINX sends for a static file: eight fields.
func BenchmarkH1Header(b *testing.B) {
	const head = "Server: nginx/1.26.2\r\nDate: Thu, 03 Dec 2026 15:00:00 GMT\r\n" +
		"Content-Type: text/html\r\nContent-Length: 1024\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n" +
		"Connection: keep-alive\r\nETag: \"674c3b40-400\"\r\nAccept-Ranges: bytes\r\n\r\n"
	src := strings.NewReader(head)
	cc := &h1Conn{br: bufio.NewReaderSize(src, 16<<10)}
	cc.tp.R = cc.br
	var vals [8]string
	for _, parser := range []string{"textproto", "lean"} {
		b.Run(parser, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(head)
				cc.br.Reset(src)
				cc.br.Peek(1)
				var h textproto.MIMEHeader
				var err error
				if parser == "lean" {
					h, err = cc.readHeader(nil, vals[:])
				} else {
					h, err = cc.tp.ReadMIMEHeader()
				}
				if err != nil || len(h) != 8 {
					b.Fatalf("got %d fields, %v", len(h), err)
				}
			}
		})
	}
}
