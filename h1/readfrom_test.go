package h1_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/h1"
)

// tcpSource is a *net.TCPConn whose peer has written data and closed its side.
func tcpSource(t *testing.T, data []byte) *net.TCPConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		c.Write(data)
		c.Close()
	}()
	c, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestReadFrom checks the ResponseWriter's io.ReaderFrom, on both servers: a body with a
// Content-Length spliced from a TCP socket takes exactly that many bytes, leaving the rest in
// the socket, and any other source, or a response without a length, is copied.
func TestReadFrom(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	cases := []struct {
		name    string
		only    string // the one front end the case is for, or ""
		handler func(t *testing.T, w http.ResponseWriter)
		want    string
	}{
		// net/http's ReadFrom copies all its source gives, past the Content-Length.
		{"TCP source, Content-Length below what it holds", ours, func(t *testing.T, w http.ResponseWriter) {
			src := tcpSource(t, data)
			w.Header().Set("Content-Length", "100000")
			n, err := w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: src, N: int64(len(data))})
			assert.NoError(t, err)
			assert.Equal(t, int64(100000), n)
			rest, _ := io.ReadAll(src)
			assert.Equal(t, data[100000:], rest, "what the length did not take stays in the socket")
		}, string(data[:100000])},
		{"TCP source, after bytes written", "", func(t *testing.T, w http.ResponseWriter) {
			src := tcpSource(t, data)
			w.Header().Set("Content-Length", "200005")
			io.WriteString(w, "head:")
			n, err := w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: src, N: 200000})
			assert.NoError(t, err)
			assert.Equal(t, int64(200000), n)
		}, "head:" + string(data[:200000])},
		{"no Content-Length", "", func(t *testing.T, w http.ResponseWriter) {
			src := tcpSource(t, data)
			n, err := w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: src, N: 70000})
			assert.NoError(t, err)
			assert.Equal(t, int64(70000), n)
		}, string(data[:70000])},
		{"not a socket", "", func(t *testing.T, w http.ResponseWriter) {
			w.Header().Set("Content-Length", "11")
			n, err := w.(io.ReaderFrom).ReadFrom(strings.NewReader("hello world"))
			assert.NoError(t, err)
			assert.Equal(t, int64(11), n)
		}, "hello world"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, front := range fronts {
				if tc.only != "" && front != tc.only {
					continue
				}
				t.Run(front, func(t *testing.T) {
					ts := start(t, front, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						tc.handler(t, w)
					})})
					res, err := http.Get(ts.url() + "/")
					require.NoError(t, err)
					got, err := io.ReadAll(res.Body)
					res.Body.Close()
					require.NoError(t, err)
					assert.Equal(t, len(tc.want), len(got))
					assert.True(t, string(got) == tc.want, "the body differs")
				})
			}
		})
	}
}

// readFromConn is a connection that wraps a TCP socket and hands ReadFrom to it, as
// proxyproto.Conn does.
type readFromConn struct {
	net.Conn
	rf io.ReaderFrom
}

func (c readFromConn) ReadFrom(r io.Reader) (int64, error) { return c.rf.ReadFrom(r) }

// wrapListener returns its connections as readFromConns.
type wrapListener struct{ net.Listener }

func (l wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return readFromConn{Conn: c, rf: c.(*net.TCPConn)}, nil
}

// TestReadFromWrappedConn checks that a connection wrapping the socket keeps the splice: the
// body goes through the connection's ReadFrom, which takes exactly the Content-Length from
// the source and leaves the rest in it, where a copy through a buffer would read past it.
func TestReadFromWrappedConn(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := tcpSource(t, data)
		w.Header().Set("Content-Length", "100000")
		n, err := w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: src, N: int64(len(data))})
		assert.NoError(t, err)
		assert.Equal(t, int64(100000), n)
		rest, _ := io.ReadAll(src)
		assert.Equal(t, len(data)-100000, len(rest), "what the length did not take stays in the socket")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := h1.New(srv)
	go s.Serve(wrapListener{ln})
	t.Cleanup(func() { s.Close() })

	res, err := http.Get("http://" + ln.Addr().String() + "/")
	require.NoError(t, err)
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(got, data[:100000]), "the body is the source's first 100000 bytes")
}
