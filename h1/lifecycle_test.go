package h1_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadHeaderTimeout checks that a client sending its request head slowly (slowloris)
// is cut off once ReadHeaderTimeout has passed, however steadily it trickles.
func TestReadHeaderTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, &http.Server{
				ReadHeaderTimeout: timeout,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					t.Errorf("the handler ran for a head that never ended")
				}),
			})
			c := ts.dial(t)
			begin := time.Now()
			c.send("GET / HTTP/1.1\r\nHost: test.example\r\n")
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := fmt.Fprintf(c.conn, "X-%d: %d\r\n", i, i); err != nil {
							return
						}
					}
				}
			}()
			assert.True(t, c.eof(), "the connection closes")
			assert.GreaterOrEqual(t, time.Since(begin), timeout*3/4, "closed before ReadHeaderTimeout")
		})
	}
}

// TestIdleTimeout checks that a keep-alive connection waiting for its next request closes
// after IdleTimeout, or ReadTimeout when IdleTimeout is zero.
func TestIdleTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, cfg := range []struct {
		name string
		set  func(*http.Server)
	}{
		{"IdleTimeout", func(s *http.Server) { s.IdleTimeout = timeout }},
		{"ReadTimeout", func(s *http.Server) { s.ReadTimeout = timeout }},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			for _, name := range fronts {
				t.Run(name, func(t *testing.T) {
					srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
					cfg.set(srv)
					ts := start(t, name, srv)
					c := ts.dial(t)
					c.send(get("/"))
					c.read("GET")
					begin := time.Now()
					assert.True(t, c.eof(), "the idle connection closes")
					assert.GreaterOrEqual(t, time.Since(begin), timeout*3/4, "closed before the timeout")
					eventually(t, func() bool { return ts.states.count(http.StateClosed) == 1 }, "no StateClosed")
				})
			}
		})
	}
}

// TestReadTimeout checks that ReadTimeout bounds the reading of a request body.
func TestReadTimeout(t *testing.T) {
	_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q deadline exceeded: %v", body, errors.Is(err, os.ErrDeadlineExceeded))
	}), func(s *http.Server) { s.ReadTimeout = 200 * time.Millisecond },
		request("POST", "/", "he", "Content-Length: 10"), "POST")
	require.Len(t, h.responses, 1)
	assert.Equal(t, `"he" deadline exceeded: true`, h.responses[0].body)
}

// TestWriteTimeout checks that WriteTimeout bounds the writing of a response to a client
// that does not read it.
func TestWriteTimeout(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			errs := make(chan error, 1)
			ts := start(t, name, &http.Server{
				WriteTimeout: 200 * time.Millisecond,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					errs <- writeUntilError(w)
				}),
			})
			c := ts.dial(t)
			c.send(get("/")) // and never read
			assert.ErrorIs(t, recv(t, errs, "the handler's write error"), os.ErrDeadlineExceeded)
		})
	}
}

// TestMaxHeaderBytes checks the limit on a request head: a head over it is answered 431.
// net/http allows 4 KiB more than MaxHeaderBytes (its read buffer's slack); h1 allows
// MaxHeaderBytes exactly, so the sizes here stay clear of the band between.
func TestMaxHeaderBytes(t *testing.T) {
	cases := []struct {
		name   string
		max    int
		field  int // bytes in one field's value
		status int
	}{
		{"under a small limit", 4 << 10, 3 << 10, http.StatusOK},
		{"over a small limit", 4 << 10, 20 << 10, http.StatusRequestHeaderFieldsTooLarge},
		{"large head under the default", 0, 64 << 10, http.StatusOK},
		{"over the default", 0, 2 << 20, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := get("/", "X-Big: "+strings.Repeat("b", tc.field))
			cfg := func(s *http.Server) { s.MaxHeaderBytes = tc.max }
			if tc.status != http.StatusOK {
				assert.Equal(t, tc.status, refusedBoth(t, cfg, raw))
				return
			}
			_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, len(r.Header.Get("X-Big")))
			}), cfg, raw, "GET")
			require.Len(t, h.responses, 1)
			assert.Equal(t, fmt.Sprint(tc.field), h.responses[0].body)
		})
	}
}

// TestShutdown checks a graceful shutdown: listeners close, idle connections close at once,
// a request in flight finishes with Connection: close, and Shutdown returns after it.
func TestShutdown(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			started, release := make(chan struct{}, 1), make(chan struct{})
			ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					started <- struct{}{}
					<-release
				}
				io.WriteString(w, r.URL.Path)
			})})
			idle := ts.dial(t)
			idle.send(get("/fast"))
			assert.Equal(t, "/fast", idle.read("GET").body)
			busy := ts.dial(t)
			busy.send(get("/slow"))
			recv(t, started, "the slow handler")

			done := make(chan error, 1)
			go func() { done <- ts.s.Shutdown(context.Background()) }()
			assert.True(t, idle.eof(), "the idle connection closes at once")
			eventually(t, func() bool {
				c, err := net.Dial("tcp", ts.addr)
				if err == nil {
					c.Close()
				}
				return err != nil
			}, "new connections are still accepted")
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
			default:
			}
			close(release)
			r := busy.read("GET")
			assert.Equal(t, "/slow", r.body)
			assert.Equal(t, []string{"close"}, r.header("Connection"), "the last response says the connection closes")
			assert.True(t, busy.eof())
			assert.NoError(t, recv(t, done, "Shutdown"))
			assert.ErrorIs(t, ts.serveErr(t), http.ErrServerClosed)
		})
	}
}

// TestShutdownDeadline checks that Shutdown gives up when its context ends, leaving the
// connections to Close.
func TestShutdownDeadline(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			started, release := make(chan struct{}, 1), make(chan struct{})
			defer close(release)
			ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				<-release
			})})
			busy := ts.dial(t)
			busy.send(get("/"))
			recv(t, started, "the handler")
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			assert.ErrorIs(t, ts.s.Shutdown(ctx), context.DeadlineExceeded)
			require.NoError(t, ts.s.Close())
			_, err := busy.tryRead("GET")
			assert.Error(t, err, "Close ends the connection")
			assert.False(t, isTimeout(err), "Close ends the connection: %v", err)
		})
	}
}

// TestClose checks that Close ends every connection at once, a request in flight included.
func TestClose(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			started, release := make(chan struct{}, 1), make(chan struct{})
			defer close(release)
			ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					started <- struct{}{}
					<-release
				}
			})})
			idle := ts.dial(t)
			idle.send(get("/"))
			idle.read("GET")
			busy := ts.dial(t)
			busy.send(get("/slow"))
			recv(t, started, "the handler")
			require.NoError(t, ts.s.Close())
			assert.True(t, idle.eof(), "the idle connection closes")
			_, err := busy.tryRead("GET")
			assert.Error(t, err, "the busy connection closes")
			assert.False(t, isTimeout(err), "the busy connection closes: %v", err)
			assert.ErrorIs(t, ts.serveErr(t), http.ErrServerClosed)
			_, err = net.Dial("tcp", ts.addr)
			assert.Error(t, err, "the listener is closed")
		})
	}
}
