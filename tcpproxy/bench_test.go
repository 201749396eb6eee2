package tcpproxy_test

import (
	"io"
	"net"
	"testing"

	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/benchcpu"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// sinkBackend reads and discards everything, then closes; it returns its address.
func sinkBackend(b *testing.B) string {
	ln := listen(b)
	serveConns(b, ln, func(c net.Conn) { io.Copy(io.Discard, c) })
	return ln.Addr().String()
}

// BenchmarkThroughput streams 64 KiB writes through one proxied connection to a backend that
// discards them, with each way of copying, beside a direct connection (no proxy: the floor).
// The client, the proxy and the backend share this process, so the figures (wall time and
// cpu-ns/op, the process's CPU time) are the whole loopback path's; compare the modes with
// each other, by CPU on a busy machine.
//
//	go test -run '^$' -bench Throughput -benchtime 2000x ./tcpproxy/
func BenchmarkThroughput(b *testing.B) {
	chunk := make([]byte, 64<<10)
	run := func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		b.ResetTimer()
		stop := benchcpu.Start(b)
		for b.Loop() {
			if _, err := c.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		stop()
	}
	b.Run("direct", func(b *testing.B) { run(b, sinkBackend(b)) })
	for _, mode := range []string{"splice", "io.Copy", "copy"} {
		b.Run(mode, func(b *testing.B) {
			_, addr := start(b, []tcpproxy.Route{{Name: "sink", Picker: pool(b, balancer.RoundRobin{}, sinkBackend(b))}}, tcpproxy.Options{}, mode)
			run(b, addr)
		})
	}
}

// BenchmarkConnection opens a connection, exchanges 1 KiB each way with an echo backend and
// closes it, through the proxy (passthrough by SNI is BenchmarkConnection/sni) and directly.
// Allocations are the whole process's: the client's and the backend's too.
//
//	go test -run '^$' -bench Connection -benchtime 2000x ./tcpproxy/
func BenchmarkConnection(b *testing.B) {
	msg := make([]byte, 1<<10)
	run := func(b *testing.B, addr string, first []byte) {
		buf := make([]byte, len(first)+len(msg))
		b.ReportAllocs()
		b.ResetTimer()
		stop := benchcpu.Start(b)
		for b.Loop() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			if len(first) > 0 {
				c.Write(first)
			}
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		stop()
	}
	b.Run("direct", func(b *testing.B) { run(b, echoBackend(b), nil) })
	b.Run("default-route", func(b *testing.B) {
		_, addr := start(b, []tcpproxy.Route{{Name: "echo", Picker: pool(b, balancer.LeastRequest{}, echoBackend(b))}}, tcpproxy.Options{})
		run(b, addr, nil)
	})
	b.Run("sni", func(b *testing.B) {
		hello := clientHello(b, helloConfigs()["sni-alpn"])
		_, addr := start(b, []tcpproxy.Route{{Name: "api", ServerNames: []string{"api.example.com"}, Picker: pool(b, balancer.LeastRequest{}, echoBackend(b))}}, tcpproxy.Options{})
		run(b, addr, hello)
	})
}
