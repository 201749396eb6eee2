// Command l4bench is the backend and the load of scripts/bench-l4.sh, which measures TCP
// proxies (sluice's examples/tcp-proxy, HAProxy in mode tcp, NGINX's stream module) side by
// side.
//
//	l4bench serve -listen 127.0.0.1:9001,127.0.0.1:9002
//	l4bench load -addr 127.0.0.1:8080 -mode exchange -conns 64 -duration 4s
//	l4bench load -addr 127.0.0.1:8080 -mode bulk -conns 4 -duration 4s
//
// The backend reads the first byte of each connection to learn what the client wants:
//   - 'E' (exchange): the client sends -size bytes (1 KiB by default), 'E' first; the backend
//     reads them all, answers with as many bytes and closes the connection. The load makes a
//     new connection per exchange and reads the answer to EOF, so each exchange is a whole
//     connection's life through the proxy: accept, connect, 1 KiB each way, two closes. The
//     backend closes first, so the TIME_WAIT sockets land on the servers' side and the load
//     never runs out of ephemeral ports.
//   - 'B' (bulk): the backend sends 1 GiB and closes; the load reads it to EOF and starts over.
//
// load prints one line of figures for the script: connections completed, bytes received,
// elapsed milliseconds, the p50 and p99 of a connection's time in milliseconds (first byte
// sent to EOF read), and errors. A connection cut by the end of the run is not counted, but
// the bytes it received are.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// bulkSize is what one bulk connection carries.
const bulkSize = 1 << 30

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: l4bench serve|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want serve or load)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "l4bench:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9001", "comma-separated `host:port` list to serve on")
	size := fs.Int("size", 1024, "exchange size in `bytes`")
	fs.Parse(args)
	if *size < 1 {
		return fmt.Errorf("-size must be ≥ 1, got %d", *size)
	}
	chunk := bytes.Repeat([]byte("x"), 256<<10)
	errc := make(chan error, 1)
	for _, addr := range strings.Split(*listen, ",") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				go handle(c, *size, chunk)
			}
		}()
	}
	return <-errc
}

func handle(c net.Conn, size int, chunk []byte) {
	defer c.Close()
	buf := make([]byte, size)
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		return
	}
	switch buf[0] {
	case 'E':
		if _, err := io.ReadFull(c, buf[1:]); err != nil {
			return
		}
		c.Write(buf)
	case 'B':
		for left := bulkSize; left > 0; left -= len(chunk) {
			if _, err := c.Write(chunk[:min(left, len(chunk))]); err != nil {
				return
			}
		}
	}
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "the proxy's `host:port`")
	mode := fs.String("mode", "exchange", "exchange (a connection per 1 KiB exchange) or bulk (1 GiB per connection)")
	conns := fs.Int("conns", 64, "concurrent connections")
	size := fs.Int("size", 1024, "exchange size in `bytes`")
	duration := fs.Duration("duration", 4*time.Second, "how long to run")
	fs.Parse(args)
	if *mode != "exchange" && *mode != "bulk" {
		return fmt.Errorf("-mode must be exchange or bulk, got %q", *mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var (
		bytesIn atomic.Int64
		errs    atomic.Int64
		mu      sync.Mutex
		times   []time.Duration
		lastErr atomic.Value
		wg      sync.WaitGroup
	)
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			req := bytes.Repeat([]byte("x"), *size)
			req[0] = 'E'
			if *mode == "bulk" {
				req = []byte{'B'}
			}
			buf := make([]byte, 256<<10)
			// Dial with a timeout of its own, not under ctx: between the moment ctx's deadline
			// passes and the moment its timer cancels it, ctx.Err() is still nil while every
			// dial under it fails at once with "i/o timeout", and a loop that checks
			// ctx.Err() counted thousands of such failures at the end of each run.
			d := net.Dialer{Timeout: 5 * time.Second}
			for ctx.Err() == nil {
				t0 := time.Now()
				n, err := once(ctx, &d, *addr, req, buf)
				bytesIn.Add(n)
				if ctx.Err() != nil {
					break // cut by the end of the run
				}
				want := int64(len(req))
				if *mode == "bulk" {
					want = bulkSize
				}
				if err == nil && n != want {
					err = fmt.Errorf("got %d bytes, want %d", n, want)
				}
				if err != nil {
					errs.Add(1)
					lastErr.Store(err)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			times = append(times, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(times)
	pct := func(p int) float64 {
		if len(times) == 0 {
			return 0
		}
		return float64(times[(len(times)*p+99)/100-1]) / 1e6
	}
	fmt.Printf("%d %d %d %.3f %.3f %d\n", len(times), bytesIn.Load(), elapsed.Milliseconds(), pct(50), pct(99), errs.Load())
	if err, ok := lastErr.Load().(error); ok {
		fmt.Fprintln(os.Stderr, "last error:", err)
	}
	return nil
}

// once makes one connection, sends req and reads the answer to EOF, returning its length.
func once(ctx context.Context, d *net.Dialer, addr string, req, buf []byte) (int64, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
