//go:build unix

package proxyproto_test

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/proxyproto"
)

// TestSyscallConn checks the raw socket of a Listener's connection: its reads start after
// the header, and for an untrusted peer the first one refuses a header.
func TestSyscallConn(t *testing.T) {
	read := func(t *testing.T, c *proxyproto.Conn) (string, error) {
		raw, err := c.SyscallConn()
		require.NoError(t, err)
		c.SetReadDeadline(time.Now().Add(waitFor))
		buf := make([]byte, 100)
		var n int
		var rerr error
		err = raw.Read(func(fd uintptr) bool {
			n, rerr = syscall.Read(int(fd), buf)
			return rerr != syscall.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		return string(buf[:max(n, 0)]), err
	}
	t.Run("trusted", func(t *testing.T) {
		l := listen(t, "socket", &proxyproto.Listener{Trusted: trust(t, "127.0.0.1")})
		dial(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nhello"))
		got, err := read(t, accept(t, l))
		require.NoError(t, err)
		assert.Equal(t, "hello", got)
	})
	t.Run("untrusted", func(t *testing.T) {
		l := listen(t, "socket", &proxyproto.Listener{})
		dial(t, l, []byte("hello"))
		got, err := read(t, accept(t, l))
		require.NoError(t, err)
		assert.Equal(t, "hello", got)
	})
	t.Run("untrusted header", func(t *testing.T) {
		l := listen(t, "socket", &proxyproto.Listener{})
		dial(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nhello"))
		_, err := read(t, accept(t, l))
		assert.ErrorIs(t, err, proxyproto.ErrUntrusted)
	})
	t.Run("not a socket", func(t *testing.T) {
		l := listen(t, "not a socket", &proxyproto.Listener{})
		dial(t, l, nil)
		_, err := accept(t, l).SyscallConn()
		assert.ErrorContains(t, err, "has no SyscallConn")
	})
}

// socketReader returns one end of a Unix socket pair that holds data and then its end, for
// ReadHeader to read as it reads sockets, peeking.
func socketReader(t *testing.T, data []byte) net.Conn {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	r, w := conn(fds[0]), conn(fds[1])
	go func() {
		w.Write(data)
		w.Close()
	}()
	r.SetReadDeadline(time.Now().Add(waitFor))
	return r
}
