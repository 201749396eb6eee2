package h1_test

import (
	"bufio"
	"net"
	"net/http"
	"testing"

	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/internal/rawhttp"
)

// BenchmarkServe measures one keep-alive request and its 1 KiB response through each server
// over loopback TCP: the client writes raw requests and reads raw responses on one
// connection, so nearly all of the allocations and CPU per op are the server's.
func BenchmarkServe(b *testing.B) {
	body := make([]byte, 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})
	for _, front := range []string{"net/http", "h1"} {
		b.Run(front, func(b *testing.B) {
			addr := listenFront(b, front, &http.Server{Handler: handler})
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			req := []byte("GET /bench?x=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				if n := mustReadBody(b, br); n != len(body) {
					b.Fatalf("body of %d bytes, want %d", n, len(body))
				}
			}
		})
	}
}

// BenchmarkServeClose measures a request on a new connection with Connection: close: the
// accept, the connection's setup and its close, through each server over loopback TCP.
func BenchmarkServeClose(b *testing.B) {
	body := make([]byte, 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})
	for _, front := range []string{"net/http", "h1"} {
		b.Run(front, func(b *testing.B) {
			addr := listenFront(b, front, &http.Server{Handler: handler})
			req := []byte("GET /bench HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
			b.ReportAllocs()
			for b.Loop() {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				if n := mustReadBody(b, bufio.NewReader(conn)); n != len(body) {
					b.Fatalf("body of %d bytes, want %d", n, len(body))
				}
				conn.Close()
			}
		})
	}
}

// listenFront serves srv on a loopback port through front, "net/http" (srv itself) or "h1",
// until tb ends, and returns the port's address.
func listenFront(tb testing.TB, front string, srv *http.Server) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var s interface {
		Serve(net.Listener) error
		Close() error
	} = srv
	if front == "h1" {
		s = h1.New(srv)
	}
	go s.Serve(ln)
	tb.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// mustReadBody reads one response and returns its body's length, failing b on an error.
func mustReadBody(b *testing.B, br *bufio.Reader) int {
	n, err := rawhttp.ReadBody(br)
	if err != nil {
		b.Fatal(err)
	}
	return n
}
