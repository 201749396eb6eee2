package upstreamtest_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// TestRequestsKeepTheirBoundaries checks that requests sent back to back on one connection,
// framed by Content-Length, chunked coding and nothing, are read apart and recorded raw.
func TestRequestsKeepTheirBoundaries(t *testing.T) {
	srv := upstreamtest.Start(t, upstreamtest.Respond("HTTP/1.1 204 No Content\r\n\r\n"))
	reqs := []string{
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;e=1\r\nde\r\n1\r\nf\r\n0\r\nT: 1\r\n\r\n",
		"GET /c HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n",
	}
	nc, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer nc.Close()
	_, err = io.WriteString(nc, strings.Join(reqs, ""))
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	for range reqs {
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		assert.Equal(t, http.StatusNoContent, res.StatusCode)
	}

	got := srv.Requests()
	require.Len(t, got, 3, "three requests read")
	for i, r := range got {
		assert.Equal(t, reqs[i], string(r.Raw), "raw bytes of request %d", i)
		assert.Equal(t, 1, r.Conn, "request %d came on the first connection", i)
	}
	assert.Equal(t, "abc", string(got[0].Body))
	assert.Equal(t, "def", string(got[1].Body), "chunked body decoded")
	assert.Equal(t, "/c", got[2].Target)
	assert.Equal(t, "1", got[2].Header.Get("X-A"))
	assert.Equal(t, 1, srv.Accepted())
}

// TestCountsAndHelpers checks the accepted and closed counts, Stall returning when the peer
// closes, CloseWrite's EOF and Reset's RST.
func TestCountsAndHelpers(t *testing.T) {
	srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
		switch c.ID() {
		case 1:
			c.Stall()
		case 2:
			c.Write("partial")
			c.CloseWrite()
			c.Stall()
		case 3:
			c.ReadRequest()
			c.Reset()
		}
	})

	stalled, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return srv.Accepted() == 1 }, 5*time.Second, time.Millisecond)
	stalled.Close()
	require.Eventually(t, func() bool { return srv.Closed() == 1 }, 5*time.Second, time.Millisecond,
		"Stall returns once the peer closes")

	half, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	b, err := io.ReadAll(half)
	assert.NoError(t, err, "CloseWrite ends the stream with EOF")
	assert.Equal(t, "partial", string(b))
	half.Close()

	reset, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer reset.Close()
	io.WriteString(reset, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	reset.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = reset.Read(make([]byte, 1))
	assert.ErrorIs(t, err, syscall.ECONNRESET, "Reset sends an RST")

	require.Eventually(t, func() bool { return srv.Closed() == 3 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, 3, srv.Accepted())
}

// TestCloseUnblocksScripts checks that shutting the server down ends scripts blocked in
// ReadRequest and Stall, and that a malformed head is an error.
func TestCloseUnblocksScripts(t *testing.T) {
	errs := make(chan error, 2)
	srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
		_, err := c.ReadRequest()
		errs <- err
		c.Stall()
	})
	bad, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer bad.Close()
	io.WriteString(bad, "NOT A REQUEST LINE AT ALL\r\n\r\n")
	assert.ErrorIs(t, <-errs, upstreamtest.ErrMalformed)

	idle, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer idle.Close()
	require.Eventually(t, func() bool { return srv.Accepted() == 2 }, 5*time.Second, time.Millisecond)
	require.NoError(t, srv.Close(), "scripts return at shutdown")
	assert.Error(t, <-errs, "ReadRequest fails once the server shuts down")
	assert.Equal(t, 2, srv.Closed(), "every script returned")
}
