package proxy

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// TestH1PutIntoRemovedPool checks that a connection whose response ends after its endpoint's
// pool was removed (unused for the idle timeout) goes to a pool that reaps it, rather than
// into the removed one, where it would stay open for ever.
func TestH1PutIntoRemovedPool(t *testing.T) {
	release := make(chan struct{})
	srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
		for {
			req, err := c.ReadRequest()
			if err != nil {
				return
			}
			if req.Target != "/slow" {
				c.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			c.Write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsl")
			select {
			case <-release:
			case <-c.Done():
				return
			}
			c.Write("ow")
		}
	})
	cl := newTestH1()
	cl.maxIdle, cl.idleTimeout = 4, 50*time.Millisecond
	defer cl.closeIdle()

	slow := make(chan error, 1)
	go func() {
		_, _, err := leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/slow")
		slow <- err
	}()
	require.Eventually(t, func() bool { return len(srv.Requests()) == 1 }, 5*time.Second, time.Millisecond)
	_, _, err := leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/fast")
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		_, ok := cl.pools.Load(srv.Addr())
		return !ok && srv.Closed() == 1
	}, 5*time.Second, time.Millisecond, "the idle connection was reaped and the unused pool removed")

	close(release)
	require.NoError(t, <-slow)
	assert.Eventually(t, func() bool { return srv.Closed() == 2 }, 5*time.Second, time.Millisecond,
		"the connection put back after its pool was removed was reaped too")
}
