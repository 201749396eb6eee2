package e2e

import (
	"bufio"
	"net"
	"net/http"
	"testing"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/internal/rawhttp"
	"github.com/sluiceproxy/sluice/proxy"
)

// BenchmarkChain forwards one keep-alive GET with a 1 KiB response through the whole chain
// an embedder serves — proxy.NewServer's guard and the Proxy, behind each HTTP/1.1 front end
// — to a backend served by h1, over loopback TCP. The client writes raw requests, so the
// allocations per op are the front end's, the proxy's and the backend's.
func BenchmarkChain(b *testing.B) {
	body := make([]byte, 1024)
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bs := h1.New(backend)
	go bs.Serve(bln)
	b.Cleanup(func() { bs.Close() })
	ep := sluice.Endpoint{Addr: bln.Addr().String()}
	p := &proxy.Proxy{Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
		return sluice.PickResult{Endpoint: ep}, nil
	})}
	b.Cleanup(p.CloseIdleConnections)
	for _, front := range []string{"net/http", "h1"} {
		b.Run(front, func(b *testing.B) {
			srv := proxy.NewServer(p, proxy.ServerOptions{})
			var s proxy.Server = srv
			serve := srv.Serve
			if front == "h1" {
				hs := h1.New(srv)
				s, serve = hs, hs.Serve
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go serve(ln)
			defer s.Close()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			req := []byte("GET /bench?x=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			b.ReportAllocs()
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

// mustReadBody reads one response and returns its body's length, failing b on an error.
func mustReadBody(b *testing.B, br *bufio.Reader) int {
	n, err := rawhttp.ReadBody(br)
	if err != nil {
		b.Fatal(err)
	}
	return n
}
