package proxy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// openFDs counts this process's open descriptors, or returns -1 where /proc is missing.
func openFDs() int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(fds)
}

// barrier is a script that holds every response until n requests have arrived, so that n
// requests in flight at once take n connections; it then serves its connection until the
// client closes it.
func barrier(n int) func(*upstreamtest.Conn) {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	return func(c *upstreamtest.Conn) {
		for {
			if _, err := c.ReadRequest(); err != nil {
				return
			}
			mu.Lock()
			if arrived++; arrived == n {
				close(all)
			}
			mu.Unlock()
			select {
			case <-all:
			case <-c.Done():
				return
			}
			if c.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") != nil {
				return
			}
		}
	}
}

// TestIdleConnectionsReaped checks that idle upstream connections are closed once
// IdleConnTimeout passes with no traffic at all, on the lean client (GET) and on the
// http.Transport (POST) alike, and that every descriptor they held is released.
func TestIdleConnectionsReaped(t *testing.T) {
	const n = 6 // connections per transport
	srv := upstreamtest.Start(t, barrier(2*n))
	runtime.GC() // let finalizers of earlier tests' descriptors run before the baseline
	baseline := openFDs()

	p := &Proxy{Picker: onePicker(srv.Addr()), Retry: Retry{MaxTries: 1},
		IdleConnTimeout: 100 * time.Millisecond}
	var wg sync.WaitGroup
	codes := make(chan int, 2*n)
	for i := range 2 * n {
		wg.Go(func() {
			req := httptest.NewRequest(http.MethodGet, "http://shop.example/", nil)
			if i%2 == 1 {
				req = httptest.NewRequest(http.MethodPost, "http://shop.example/", strings.NewReader("x"))
			}
			rw := httptest.NewRecorder()
			p.ServeHTTP(rw, req)
			codes <- rw.Code
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, http.StatusOK, c)
	}
	require.Equal(t, 2*n, srv.Accepted(), "each request in flight took its own connection")

	require.Eventually(t, func() bool { return srv.Closed() == 2*n }, 10*time.Second, 5*time.Millisecond,
		"every idle connection was closed by the proxy (closed %d of %d)", srv.Closed(), 2*n)
	if baseline < 0 {
		t.Skip("no /proc/self/fd to count descriptors")
	}
	assert.Eventually(t, func() bool { return openFDs() <= baseline }, 10*time.Second, 5*time.Millisecond,
		"open descriptors return to the baseline of %d", baseline)
}

// TestNegativeIdleConnTimeout checks that a negative IdleConnTimeout keeps no connection idle:
// each request, on either transport, takes a new connection that is closed after it.
func TestNegativeIdleConnTimeout(t *testing.T) {
	srv := upstreamtest.Start(t, upstreamtest.Respond("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	p := &Proxy{Picker: onePicker(srv.Addr()), Retry: Retry{MaxTries: 1}, IdleConnTimeout: -1}
	defer p.CloseIdleConnections()
	for i := range 6 {
		req := httptest.NewRequest(http.MethodGet, "http://shop.example/", nil) // lean
		switch i % 3 {
		case 1:
			req = httptest.NewRequest(http.MethodPost, "http://shop.example/", strings.NewReader("x")) // lean
		case 2:
			req = httptest.NewRequest(http.MethodPost, "http://shop.example/", strings.NewReader("x"))
			req.ContentLength = -1 // of unknown length: net/http's Transport
		}
		rw := httptest.NewRecorder()
		p.ServeHTTP(rw, req)
		require.Equal(t, http.StatusOK, rw.Code)
		assert.Eventually(t, func() bool { return srv.Closed() == i+1 }, 5*time.Second, time.Millisecond,
			"the connection of request %d was closed after it", i)
	}
	assert.Equal(t, 6, srv.Accepted(), "no connection was reused")
}

// TestH1ReusedPastTryDeadline checks that a connection left idle past the deadline of the try
// that last used it is reused: the lean client leaves a try's deadline on the socket as the
// connection goes idle, and must clear it before it peeks, which fails past a deadline.
func TestH1ReusedPastTryDeadline(t *testing.T) {
	const perTry = 100 * time.Millisecond
	srv := upstreamtest.Start(t, upstreamtest.Respond("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	p := &Proxy{Picker: onePicker(srv.Addr()), Retry: Retry{MaxTries: 1, PerTryTimeout: perTry}}
	defer p.CloseIdleConnections()
	for i := range 2 {
		if i > 0 {
			<-time.After(2 * perTry) // idle past the first try's deadline
		}
		rw := httptest.NewRecorder()
		p.ServeHTTP(rw, httptest.NewRequest(http.MethodGet, "http://shop.example/", nil))
		require.Equal(t, http.StatusOK, rw.Code, "request %d", i)
	}
	assert.Equal(t, 1, srv.Accepted(), "the idle connection was reused")
}

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
