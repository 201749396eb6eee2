package proxy

import (
	"net"
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
	cc, _, err := newTestH1().get(b.Context(), &h1Pool{}, ln.Addr().String(), time.Time{}, true)
	require.NoError(b, err)
	defer cc.nc.Close()
	b.ReportAllocs()
	for b.Loop() {
		if !cc.idleClean(time.Now()) {
			b.Fatal("a quiet connection was not clean")
		}
	}
}
