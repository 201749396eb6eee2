//go:build unix

package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestH1HookSlowWrite sends a 64 KiB body to an upstream that starts reading only after three
// times hookDelay, through socket buffers too small to take the body at once: a write that
// reaches hookAt goes on, and the upstream gets the body whole and once; a write whose context
// is canceled while it waits fails.
func TestH1HookSlowWrite(t *testing.T) {
	payload := strings.Repeat("0123456789abcdef", 4<<10)
	for _, cancelIt := range []bool{false, true} {
		name := "slow"
		if cancelIt {
			name = "canceled"
		}
		t.Run(name, func(t *testing.T) {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				return c.Control(func(fd uintptr) {
					syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
				})
			}}
			ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			start := make(chan struct{})
			got := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				<-start
				tp := textproto.NewReader(bufio.NewReader(c))
				if _, err := tp.ReadLine(); err != nil {
					return
				}
				h, err := tp.ReadMIMEHeader()
				if err != nil {
					return
				}
				n, _ := strconv.Atoi(h.Get("Content-Length"))
				body := make([]byte, n)
				if _, err := io.ReadFull(tp.R, body); err != nil {
					return
				}
				got <- string(body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				io.Copy(io.Discard, c)
			}()

			cl := newTestH1()
			cl.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				var d net.Dialer
				nc, err := d.DialContext(ctx, network, addr)
				if err == nil {
					nc.(*net.TCPConn).SetWriteBuffer(4 << 10)
				}
				return nc, err
			}
			defer cl.closeIdle()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := leanAsync(ctx, cl, ln.Addr().String(), time.Now().Add(time.Minute), []byte(payload))
			<-time.After(3 * defaultHookDelay) // the write waits past hookDelay
			if cancelIt {
				cancel()
				r := within(t, done, 10*time.Second, "the canceled write")
				assert.Error(t, r.err, "the write was stopped")
				close(start)
				return
			}
			select {
			case r := <-done:
				t.Fatalf("the request ended before the upstream read it: %v", r.err)
			default:
			}
			close(start)
			r := within(t, done, 10*time.Second, "the slow write")
			require.NoError(t, r.err)
			assert.Equal(t, "ok", string(r.body))
			assert.Equal(t, payload, <-got, "the body arrived whole")
		})
	}
}
