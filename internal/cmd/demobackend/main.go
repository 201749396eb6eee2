// Command demobackend serves fixed-size responses on one or more addresses, as the backends
// of scripts/bench-process.sh. Every listener answers every request with -size bytes of
// application/octet-stream, after reading and discarding the request body; a size query
// parameter (?size=1048576) asks for a body of that many bytes instead, up to 64 MiB, so one
// set of backends serves both the small and the large responses of the benchmark.
//
//	go run ./internal/cmd/demobackend -listen 127.0.0.1:9001,127.0.0.1:9002 -size 1024
//	curl -s 'http://127.0.0.1:9001/?size=1048576' | wc -c
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003", "comma-separated `host:port` list to serve on")
	size := flag.Int("size", 1024, "response body size in `bytes`")
	flag.Parse()
	if err := run(*listen, *size); err != nil {
		fmt.Fprintln(os.Stderr, "demobackend:", err)
		os.Exit(1)
	}
}

// maxSize bounds the size query parameter.
const maxSize = 64 << 20

func run(listen string, size int) error {
	if size < 0 {
		return fmt.Errorf("-size must be ≥ 0, got %d", size)
	}
	body := bytes.Repeat([]byte("x"), size)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		q := r.URL.Query().Get("size")
		if q == "" {
			w.Write(body)
			return
		}
		n, err := strconv.Atoi(q)
		if err != nil || n < 0 || n > maxSize {
			http.Error(w, fmt.Sprintf("size must be an integer from 0 to %d, got %q", maxSize, q), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)

	var servers []*http.Server
	errc := make(chan error, 1)
	for _, addr := range strings.Split(listen, ",") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("-listen: %w", err)
		}
		srv := &http.Server{Handler: h, Protocols: &protos, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				select {
				case errc <- err:
				default:
				}
			}
		}()
		fmt.Printf("demobackend serving %d bytes on http://%s\n", size, ln.Addr())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, srv := range servers {
		srv.Close()
	}
	return err
}
