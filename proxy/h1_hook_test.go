package proxy

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// The lean client hooks a request's context only once the request has run for hookDelay (see
// h1Conn.ctx). These tests check the two sides of that: a context that ends stops the
// upstream I/O whether it ends before the hook or after, and a request that outlasts
// hookDelay — its head, its body, its write — is not failed by the deadline that made it look.

// leanResult is what a leanSend run in the background returned.
type leanResult struct {
	body []byte
	err  error
}

// leanAsync runs leanSend on its own goroutine.
func leanAsync(ctx context.Context, c *h1Client, addr string, deadline time.Time, reqBody []byte) <-chan leanResult {
	done := make(chan leanResult, 1)
	go func() {
		method := http.MethodGet
		if reqBody != nil {
			method = http.MethodPost
		}
		_, body, err := leanSend(ctx, c, method, addr, "/", deadline, reqBody)
		done <- leanResult{body, err}
	}()
	return done
}

// within waits for the result, failing t if it takes longer than d.
func within(t *testing.T, done <-chan leanResult, d time.Duration, what string) leanResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(d):
		t.Fatalf("%s: no result after %v", what, d)
		return leanResult{}
	}
}

// TestH1HookCancel cancels the context of a request whose upstream has gone silent, in the
// middle of the head or of the body, before the context was hooked and after: the request
// fails soon after, and the upstream connection is closed, not left waiting.
func TestH1HookCancel(t *testing.T) {
	for _, phase := range []string{"head", "body"} {
		for _, when := range []struct {
			name  string
			after time.Duration
		}{
			{"before the hook", 0},
			{"once hooked", 3 * defaultHookDelay},
		} {
			t.Run(phase+"/"+when.name, func(t *testing.T) {
				arrived := make(chan struct{})
				srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
					if _, err := c.ReadRequest(); err != nil {
						return
					}
					if phase == "body" {
						c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
					}
					close(arrived)
					c.Stall() // until the proxy closes the connection
				})
				cl := newTestH1()
				defer cl.closeIdle()
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				done := leanAsync(ctx, cl, srv.Addr(), time.Time{}, nil)
				select {
				case <-arrived:
				case <-time.After(10 * time.Second):
					t.Fatal("the request never reached the upstream")
				}
				if when.after > 0 {
					<-time.After(when.after) // the request runs past hookDelay
				}
				cancel()
				// Without a hook, nothing would end the request: it has no deadline.
				r := within(t, done, 10*time.Second, "the canceled request")
				require.Error(t, r.err, "a canceled request fails")
				assert.ErrorIs(t, r.err, os.ErrDeadlineExceeded, "its I/O was stopped by a deadline")
				if phase == "body" {
					assert.Equal(t, "hello", string(r.body), "the body read before the cancel")
				}
				require.Eventually(t, func() bool { return srv.Closed() == 1 }, 10*time.Second,
					time.Millisecond, "the upstream connection is closed")
			})
		}
	}
}

// TestH1HookSlowUpstream has an upstream that takes longer than hookDelay for the head and
// between two pieces of the body: the request gets all of it, with a context that could be
// canceled and without, and the connection serves the next request. Quick requests that end
// before the hook leave hookAt's deadline on the idle connection; one reused after it passed
// must not fail on it.
func TestH1HookSlowUpstream(t *testing.T) {
	const pause = 3 * defaultHookDelay
	srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
		for {
			r, err := c.ReadRequest()
			if err != nil {
				return
			}
			if r.Target == "/quick" {
				c.Write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nquick")
				continue
			}
			<-time.After(pause)
			c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nslow\r\n")
			<-time.After(pause)
			c.Write("5\r\n body\r\n0\r\n\r\n")
		}
	})
	cl := newTestH1()
	defer cl.closeIdle()
	for _, step := range []struct {
		path     string
		cancel   bool
		idleLong bool // wait past hookDelay before the request
		want     string
	}{
		{"/slow", true, false, "slow body"},
		{"/quick", true, false, "quick"},
		{"/quick", true, true, "quick"},
		{"/slow", false, true, "slow body"},
		{"/quick", false, false, "quick"},
		{"/slow", true, true, "slow body"},
	} {
		if step.idleLong {
			<-time.After(pause)
		}
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if step.cancel {
			ctx, cancel = context.WithCancel(t.Context())
		}
		_, body, err := leanDo(ctx, cl, http.MethodGet, srv.Addr(), step.path)
		require.NoError(t, err, "%s (cancelable %v, after idling %v)", step.path, step.cancel, step.idleLong)
		assert.Equal(t, step.want, string(body))
		// The request is over: its context ending must not touch the connection, which
		// serves the next one.
		cancel()
	}
	assert.Equal(t, 1, srv.Accepted(), "every request reused the one connection")
}

// TestH1HookDeadline checks that the try's own deadline holds whether it comes before hookAt
// or after: the request fails when it passes, not at hookAt and not later.
func TestH1HookDeadline(t *testing.T) {
	for _, d := range []time.Duration{defaultHookDelay / 4, 4 * defaultHookDelay} {
		t.Run(d.String(), func(t *testing.T) {
			srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
				if _, err := c.ReadRequest(); err != nil {
					return
				}
				c.Stall()
			})
			cl := newTestH1()
			defer cl.closeIdle()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			start := time.Now()
			r := within(t, leanAsync(ctx, cl, srv.Addr(), start.Add(d), nil), 10*time.Second, "the request")
			assert.ErrorIs(t, r.err, os.ErrDeadlineExceeded, "the try timed out")
			assert.GreaterOrEqual(t, time.Since(start), d, "not before its deadline")
		})
	}
}
