package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// leanUsed reports whether p's lean client has sent a request to addr: only it keeps pools.
func leanUsed(p *Proxy, addr string) bool {
	if p.fast == nil {
		return false
	}
	_, ok := p.fast.pools.Load(addr)
	return ok
}

// A request body of known length up to 64 KiB (and MaxBodyBytes) takes the lean client and
// reaches the upstream whole, framed by Content-Length; larger ones, and bodies awaiting
// 100 Continue, go through net/http's Transport, and arrive whole too.
func TestLeanBodyForwardedWhole(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		header  http.Header
		retry   Retry
		wantFit bool // the lean client sends it
	}{
		{name: "1 B", size: 1, wantFit: true},
		{name: "1 KiB", size: 1 << 10, wantFit: true},
		{name: "head and body just over the copied size", size: maxCopiedBody, wantFit: true},
		{name: "64 KiB", size: 64 << 10, wantFit: true},
		{name: "64 KiB and 1 B", size: 64<<10 + 1},
		{name: "over MaxBodyBytes", size: 1 << 10, retry: Retry{MaxBodyBytes: 512}},
		{name: "Expect: 100-continue", size: 1 << 10, header: http.Header{"Expect": {"100-continue"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type got struct {
				method, te string
				length     int64
				body       []byte
			}
			seen := make(chan got, 4)
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				seen <- got{r.Method, strings.Join(r.TransferEncoding, ","), r.ContentLength, b}
				io.WriteString(w, "ok")
			}))
			t.Cleanup(up.Close)
			addr := up.Listener.Addr().String()
			p := &Proxy{Picker: onePicker(addr), Retry: tt.retry}
			t.Cleanup(p.CloseIdleConnections)
			front := httptest.NewServer(p)
			t.Cleanup(front.Close)

			payload := bytes.Repeat([]byte("0123456789abcdef"), tt.size/16+1)[:tt.size]
			req, err := http.NewRequest(http.MethodPost, front.URL+"/upload", bytes.NewReader(payload))
			require.NoError(t, err)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			res, err := front.Client().Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode, "response: %s", body)
			g := <-seen
			assert.Equal(t, http.MethodPost, g.method)
			assert.Equal(t, "", g.te, "framed by Content-Length, not chunked")
			assert.EqualValues(t, tt.size, g.length, "Content-Length upstream")
			assert.True(t, bytes.Equal(payload, g.body), "the upstream got the body whole (%d of %d bytes)",
				len(g.body), len(payload))
			assert.Equal(t, tt.wantFit, leanUsed(p, addr), "which client sent it")
		})
	}
}

// leanScript is an upstream whose first connection answers /warm, so that the proxy pools
// it, and then reads the next request whole and closes the connection without a word, as an
// upstream that acted on a request and crashed, or timed out its idle connection just as the
// request arrived, does. Every later connection answers everything.
func leanScript(c *upstreamtest.Conn) {
	for {
		r, err := c.ReadRequest()
		if err != nil {
			return
		}
		if c.ID() == 1 && r.Target != "/warm" {
			return
		}
		if c.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") != nil {
			return
		}
	}
}

// targets returns the requests srv read for target, in order.
func targets(srv *upstreamtest.Server, target string) []upstreamtest.Request {
	var out []upstreamtest.Request
	for _, r := range srv.Requests() {
		if r.Target == target {
			out = append(out, r)
		}
	}
	return out
}

// A request the lean client wrote whole on a reused connection, which the upstream then
// closed without answering, may have been acted on: a POST is never sent again, neither by
// the lean client on a new connection nor by the proxy's retries. A request that may be
// resent unasked (a safe method, an Idempotency-Key) goes again on a new connection, as
// net/http's Transport would send it. A PUT is idempotent, but resending it is left to the
// proxy's retries, here turned off.
func TestLeanBodyNotSentTwice(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		body     string
		header   http.Header
		maxTries int
		wantSent int
		want     int
	}{
		{name: "POST", method: http.MethodPost, body: "order=1", wantSent: 1, want: http.StatusBadGateway},
		{name: "POST without a body", method: http.MethodPost, wantSent: 1, want: http.StatusBadGateway},
		{name: "PATCH", method: http.MethodPatch, body: "a=1", wantSent: 1, want: http.StatusBadGateway},
		{name: "PUT", method: http.MethodPut, body: "v=1", maxTries: 1, wantSent: 1, want: http.StatusBadGateway},
		{name: "POST with Idempotency-Key", method: http.MethodPost, body: "order=1",
			header: http.Header{"Idempotency-Key": {"k1"}}, wantSent: 2, want: http.StatusOK},
		{name: "GET", method: http.MethodGet, wantSent: 2, want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := upstreamtest.Start(t, leanScript)
			p := &Proxy{Picker: onePicker(srv.Addr()), Retry: Retry{Backoff: -1, MaxTries: tt.maxTries}}
			t.Cleanup(p.CloseIdleConnections)
			front := httptest.NewServer(p)
			t.Cleanup(front.Close)

			res, err := front.Client().Get(front.URL + "/warm")
			require.NoError(t, err)
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)

			req, err := http.NewRequest(tt.method, front.URL+"/order", strings.NewReader(tt.body))
			require.NoError(t, err)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			res, err = front.Client().Do(req)
			require.NoError(t, err)
			io.Copy(io.Discard, res.Body)
			res.Body.Close()

			assert.True(t, leanUsed(p, srv.Addr()), "the lean client sent it")
			assert.Equal(t, tt.want, res.StatusCode)
			sent := targets(srv, "/order")
			assert.Equal(t, tt.wantSent, len(sent), "times the upstream got the request")
			for _, r := range sent {
				assert.Equal(t, tt.body, string(r.Body), "the body, whole")
			}
			if len(sent) == 2 {
				assert.Equal(t, 2, sent[1].Conn, "resent on a new connection")
			}
		})
	}
}

// failingConn fails its failAt'th write with EPIPE, after passing on keep bytes of it.
type failingConn struct {
	net.Conn
	writes, failAt, keep int
}

func (c *failingConn) Write(p []byte) (int, error) {
	c.writes++
	if c.writes != c.failAt {
		return c.Conn.Write(p)
	}
	n, _ := c.Conn.Write(p[:min(c.keep, len(p))])
	return n, &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}
}

// When the write of a POST on a reused connection fails before the kernel took any of it,
// nothing of the request left: the lean client sends it on a new connection. When part of it
// left, the upstream may have read enough to act, and it is not sent again.
func TestLeanBodyResentOnlyWhenNothingWritten(t *testing.T) {
	for _, tt := range []struct {
		name     string
		keep     int
		wantSent int
		want     int
	}{
		{"nothing written", 0, 1, http.StatusOK},
		{"part written", 20, 0, http.StatusBadGateway},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
				for {
					if _, err := c.ReadRequest(); err != nil {
						return
					}
					if c.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") != nil {
						return
					}
				}
			})
			var dials atomic.Int32
			var d net.Dialer
			dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if err != nil || dials.Add(1) > 1 {
					return c, err
				}
				return &failingConn{Conn: c, failAt: 2, keep: tt.keep}, nil // the reused conn's write
			}
			p := &Proxy{Picker: onePicker(srv.Addr()), DialContext: dial, Retry: Retry{Backoff: -1}}
			t.Cleanup(p.CloseIdleConnections)
			front := httptest.NewServer(p)
			t.Cleanup(front.Close)

			res, err := front.Client().Get(front.URL + "/warm")
			require.NoError(t, err)
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)

			res, err = front.Client().Post(front.URL+"/order", "text/plain", strings.NewReader("order=1"))
			require.NoError(t, err)
			io.Copy(io.Discard, res.Body)
			res.Body.Close()

			assert.Equal(t, tt.want, res.StatusCode)
			sent := targets(srv, "/order")
			require.Equal(t, tt.wantSent, len(sent), "whole requests the upstream got")
			if len(sent) == 1 {
				assert.Equal(t, 2, sent[0].Conn, "sent on a new connection")
				assert.Equal(t, "order=1", string(sent[0].Body))
			} else {
				assert.Equal(t, 1, srv.Accepted(), "no second connection")
			}
		})
	}
}

// A body the lean client sends is read under the server's BodyReadTimeout, between two reads
// as for any body: a steady upload longer than the timeout arrives whole, and one that stalls
// is answered 408 without any of it reaching an upstream.
func TestLeanBodyReadTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv := upstreamtest.Start(t, upstreamtest.Respond("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	p := &Proxy{Picker: onePicker(srv.Addr())}
	t.Cleanup(p.CloseIdleConnections)
	hs := NewServer(p, ServerOptions{BodyReadTimeout: timeout})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	// send writes a POST whose 40-byte body comes in pieces gap apart, the last one left out
	// when stall is set, and returns the response.
	send := func(t *testing.T, gap time.Duration, stall bool) *http.Response {
		conn, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n")
		require.NoError(t, err)
		pieces := 4
		if stall {
			pieces = 3
		}
		for i := 0; i < pieces; i++ {
			if i > 0 {
				time.Sleep(gap) // pace the upload, as a slow client does
			}
			_, err = io.WriteString(conn, strings.Repeat(strconv.Itoa(i), 10))
			require.NoError(t, err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		res.Body.Close()
		return res
	}

	t.Run("steady upload longer than the timeout", func(t *testing.T) {
		res := send(t, timeout/2, false)
		assert.Equal(t, http.StatusOK, res.StatusCode)
		sent := targets(srv, "/up")
		require.Len(t, sent, 1)
		assert.Equal(t, strings.Repeat("0", 10)+strings.Repeat("1", 10)+strings.Repeat("2", 10)+
			strings.Repeat("3", 10), string(sent[0].Body))
	})
	t.Run("stalled upload", func(t *testing.T) {
		before, reqs := srv.Accepted(), len(srv.Requests())
		start := time.Now()
		res := send(t, 0, true)
		assert.Equal(t, http.StatusRequestTimeout, res.StatusCode)
		assert.GreaterOrEqual(t, time.Since(start), timeout*7/8, "answered once the timeout passed")
		assert.Len(t, srv.Requests(), reqs, "the stalled request never reached the upstream")
		assert.Equal(t, before, srv.Accepted(), "nor was a connection opened for it")
	})
}

// A body a handler before the proxy replaced without fixing ContentLength is never sent with
// the wrong length: shorter or longer, the request fails before an endpoint is tried.
func TestLeanBodyLengthMismatch(t *testing.T) {
	srv := upstreamtest.Start(t, upstreamtest.Respond("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	p := &Proxy{Picker: onePicker(srv.Addr())}
	t.Cleanup(p.CloseIdleConnections)
	for _, body := range []string{"short", "far too long"} {
		t.Run(body, func(t *testing.T) {
			in := httptest.NewRequest(http.MethodPost, "http://app.example/a", strings.NewReader(body))
			in.ContentLength = 8
			rw := httptest.NewRecorder()
			p.ServeHTTP(rw, in)
			assert.Equal(t, http.StatusBadRequest, rw.Code)
			assert.Zero(t, srv.Accepted(), "no upstream was tried")
		})
	}
}

// Read-ahead bodies lie in pooled buffers: concurrent requests of every size class each reach
// the upstream with their own body, never another's or a recycled buffer's.
func TestLeanBodyConcurrent(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body) // whole, before writing: an HTTP/1 server may stop the body then
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(up.Close)
	addr := up.Listener.Addr().String()
	p := &Proxy{Picker: onePicker(addr)}
	t.Cleanup(p.CloseIdleConnections)
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)

	sizes := []int{1, 1000, 1024, 1025, 3000, 5000, 20000, 40000, 64 << 10}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 20 {
				size := sizes[(g+i)%len(sizes)]
				body := bytes.Repeat([]byte{byte('a' + g), byte('0' + i%10)}, size/2+1)[:size]
				res, err := front.Client().Post(front.URL, "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || !bytes.Equal(got, body) {
					errs <- fmt.Errorf("goroutine %d request %d (%d bytes): got %d bytes back, %v", g, i, size, len(got), err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		assert.NoError(t, <-errs)
	}
	assert.True(t, leanUsed(p, addr), "the lean client sent them")
}

func TestBodyClass(t *testing.T) {
	for _, tt := range []struct{ n, size int }{
		{1, 1 << 10}, {1 << 10, 1 << 10}, {1<<10 + 1, 2 << 10}, {5000, 8 << 10}, {64 << 10, 64 << 10},
	} {
		b := getBodyBuf(tt.n)
		assert.Equal(t, tt.size, cap(*b), "buffer for %d bytes", tt.n)
		putBodyBuf(b)
	}
}
