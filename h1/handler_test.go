package h1_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInformational checks 1xx responses: a 103 Early Hints goes out at once with the
// header as it is, and the final response follows.
func TestInformational(t *testing.T) {
	_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/css")
		io.WriteString(w, "body{}")
	}), nil, get("/"), "GET", "GET")
	require.Len(t, h.responses, 2)
	hints, final := h.responses[0], h.responses[1]
	assert.Equal(t, "HTTP/1.1 103 Early Hints", hints.status)
	assert.Equal(t, []string{"</style.css>; rel=preload; as=style"}, hints.header("Link"))
	assert.Empty(t, hints.header("Content-Length"), "no framing in a 1xx")
	assert.Equal(t, "HTTP/1.1 200 OK", final.status)
	assert.Equal(t, "body{}", final.body)
}

// TestWriteHeaderTwice checks that a second WriteHeader is ignored and logged.
func TestWriteHeaderTwice(t *testing.T) {
	_, h, servers := differentialServers(t, handle(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, "created")
	}), nil, get("/"), "GET")
	require.Len(t, h.responses, 1)
	assert.Equal(t, "HTTP/1.1 201 Created", h.responses[0].status)
	eventually(t, func() bool { return strings.Contains(servers[ours].log.String(), "superfluous") },
		"h1 did not log the superfluous WriteHeader; log: %q", servers[ours].log.String())
}

// TestPanic checks handler panics: recovered, logged through ErrorLog (but for
// http.ErrAbortHandler), and the connection closed without a response the client could
// take for whole.
func TestPanic(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		log     string // what the log must hold; empty for nothing logged
	}{
		{"before writing", func(w http.ResponseWriter, r *http.Request) { panic("boom") }, "boom"},
		{"after writing", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			panic("boom")
		}, "boom"},
		{"after flushing", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom")
		}, "boom"},
		{"after the connection is watched", func(w http.ResponseWriter, r *http.Request) {
			// Past h1's 20 ms: the watch reads the connection when the panic comes.
			<-time.After(100 * time.Millisecond)
			panic("boom")
		}, "boom"},
		{"ErrAbortHandler", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }, ""},
		{"ErrAbortHandler after flushing", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, ""},
		{"invalid status 99", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(99) }, "invalid WriteHeader code 99"},
		{"invalid status 1000", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(1000) }, "invalid WriteHeader code 1000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, h, servers := differentialServers(t, handle(tc.handler), nil, get("/"), "GET")
			assert.True(t, h.closed, "the connection closes")
			if len(h.responses) > 0 {
				assert.Error(t, h.responses[0].err, "the body must not look complete")
			}
			logs := servers[ours].log
			if tc.log == "" {
				// Nothing to wait for: the connection closed after the handler's panic was
				// handled, and the log line would come first.
				assert.Empty(t, logs.String(), "nothing logged for ErrAbortHandler")
				return
			}
			eventually(t, func() bool { return strings.Contains(logs.String(), tc.log) },
				"h1 did not log %q; log: %q", tc.log, logs.String())
			assert.Contains(t, logs.String(), "goroutine ", "the log holds the stack")
		})
	}
}

// TestRequestContext checks the request's context: its values, and its cancellation when
// the handler returns or the client goes away.
func TestRequestContext(t *testing.T) {
	type key string

	t.Run("values", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				srv := &http.Server{
					BaseContext: func(ln net.Listener) context.Context {
						return context.WithValue(context.Background(), key("base"), ln.Addr().String())
					},
					ConnContext: func(ctx context.Context, c net.Conn) context.Context {
						return context.WithValue(ctx, key("conn"), c.RemoteAddr().String())
					},
				}
				srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctx := r.Context()
					fmt.Fprintf(w, "server=%v local=%v base=%v conn=%v",
						ctx.Value(http.ServerContextKey) == srv, ctx.Value(http.LocalAddrContextKey), ctx.Value(key("base")), ctx.Value(key("conn")))
				})
				ts := start(t, name, srv)
				c := ts.dial(t)
				c.send(get("/"))
				want := fmt.Sprintf("server=true local=%s base=%s conn=%s", ts.addr, ts.addr, c.conn.LocalAddr())
				assert.Equal(t, want, c.read("GET").body)
			})
		}
	})

	t.Run("canceled when the handler returns", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				ctxs := make(chan context.Context, 1)
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctxs <- r.Context()
				})})
				c := ts.dial(t)
				c.send(get("/"))
				c.read("GET")
				ctx := recv(t, ctxs, "the handler")
				// Both servers cancel before the response goes out.
				assert.ErrorIs(t, ctx.Err(), context.Canceled)
			})
		}
	})

	t.Run("canceled after a panic", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				ctxs := make(chan context.Context, 1)
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctxs <- r.Context()
					panic(http.ErrAbortHandler)
				})})
				c := ts.dial(t)
				c.send(get("/"))
				assert.True(t, c.eof())
				ctx := recv(t, ctxs, "the handler")
				select {
				case <-ctx.Done():
				case <-time.After(waitFor):
					t.Fatal("the context of a request whose handler panicked is never canceled")
				}
			})
		}
	})

	// waitCanceled is a handler that reports whether its context was canceled within
	// waitFor, after reading the body.
	waitCanceled := func(started chan<- struct{}, result chan<- error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				result <- r.Context().Err()
			case <-time.After(waitFor):
				result <- errors.New("not canceled")
			}
		}
	}

	for _, tc := range []struct{ name, raw string }{
		{"canceled when the client closes", get("/")},
		{"canceled when the client closes after sending a body", request("POST", "/", "hello", "Content-Length: 5")},
		{"canceled when the client closes after sending a chunked body", request("POST", "/", "5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range fronts {
				t.Run(name, func(t *testing.T) {
					started, result := make(chan struct{}, 1), make(chan error, 1)
					ts := start(t, name, &http.Server{Handler: waitCanceled(started, result)})
					c := ts.dial(t)
					c.send(tc.raw)
					recv(t, started, "the handler")
					// Past h1's 20 ms before it watches the connection: the close must be seen by
					// the watch, not only by a check when the handler starts.
					<-time.After(100 * time.Millisecond)
					c.conn.Close()
					assert.ErrorIs(t, recv(t, result, "the handler's result"), context.Canceled)
				})
			}
		})
	}

	t.Run("not canceled by a pipelined request", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				started, release := make(chan struct{}, 2), make(chan struct{})
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					started <- struct{}{}
					if r.URL.Path == "/second" {
						return
					}
					select {
					case <-r.Context().Done():
						io.WriteString(w, "canceled")
					case <-release:
						io.WriteString(w, "released")
					}
				})})
				c := ts.dial(t)
				c.send(get("/first"))
				recv(t, started, "the first request's handler")
				<-time.After(50 * time.Millisecond) // the watch runs
				c.send(get("/second"))
				<-time.After(50 * time.Millisecond) // and sees the second request
				close(release)
				assert.Equal(t, "released", c.read("GET").body)
				c.read("GET")
			})
		}
	})
}

// TestFlush checks that a flushed response reaches the client while the handler still
// runs.
func TestFlush(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ack := make(chan struct{})
			var returned atomic.Bool
			ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer returned.Store(true)
				rc := http.NewResponseController(w)
				for i := range 3 {
					fmt.Fprintf(w, "line %d\n", i)
					if err := rc.Flush(); err != nil {
						return
					}
					select {
					case <-ack:
					case <-time.After(waitFor):
						return
					}
				}
			})})
			res, err := http.Get(ts.url())
			require.NoError(t, err)
			defer res.Body.Close()
			assert.Equal(t, []string{"chunked"}, res.TransferEncoding)
			br := bufio.NewReader(res.Body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				require.NoError(t, err)
				assert.Equal(t, fmt.Sprintf("line %d\n", i), line)
				require.False(t, returned.Load(), "line %d came only after the handler returned", i)
				ack <- struct{}{}
			}
			rest, err := io.ReadAll(br)
			assert.NoError(t, err)
			assert.Empty(t, rest)
		})
	}
}

// TestDeadlines checks http.ResponseController's SetReadDeadline and SetWriteDeadline.
func TestDeadlines(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
				fmt.Fprintf(w, "SetReadDeadline: %v", err)
				return
			}
			body, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%q deadline exceeded: %v", body, errors.Is(err, os.ErrDeadlineExceeded))
		}), nil, request("POST", "/", "he", "Content-Length: 10"), "POST")
		require.Len(t, h.responses, 1)
		assert.Equal(t, `"he" deadline exceeded: true`, h.responses[0].body)
		assert.True(t, h.closed, "a body cut short closes the connection")
	})

	t.Run("write", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				errs := make(chan error, 1)
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					rc := http.NewResponseController(w)
					if err := rc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
						errs <- err
						return
					}
					errs <- writeUntilError(w)
				})})
				c := ts.dial(t)
				c.send(get("/")) // and never read
				assert.ErrorIs(t, recv(t, errs, "the handler's write error"), os.ErrDeadlineExceeded)
			})
		}
	})
}

// writeUntilError writes up to 1 GiB, more than any socket buffer holds, and returns the
// first write error: the response of a client that reads nothing must fail by a deadline.
func writeUntilError(w http.ResponseWriter) error {
	chunk := make([]byte, 64<<10)
	for range 16 << 10 {
		if _, err := w.Write(chunk); err != nil {
			return err
		}
	}
	return errors.New("wrote 1 GiB to a client that reads nothing")
}

// TestHijack checks Hijack: the handler gets the connection, with the bytes the client sent
// after the request head in the returned reader, and the server lets go of it.
func TestHijack(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			errs := make(chan error, 1)
			ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close()
				buffered := brw.Reader.Buffered()
				ping := make([]byte, 4)
				if _, err := io.ReadFull(brw, ping); err != nil {
					errs <- err
					return
				}
				_, werr := w.Write([]byte("after"))
				fmt.Fprintf(brw, "buffered=%d got=%s write-after-hijack=%v\n", buffered, ping, werr)
				brw.Flush()
				errs <- nil
			})})
			c := ts.dial(t)
			c.send(get("/") + "PING")
			require.NoError(t, recv(t, errs, "the handler"))
			c.conn.SetReadDeadline(time.Now().Add(waitFor))
			got, err := io.ReadAll(c.br)
			require.NoError(t, err)
			assert.Equal(t, fmt.Sprintf("buffered=4 got=PING write-after-hijack=%v\n", http.ErrHijacked), string(got))
			eventually(t, func() bool { return ts.states.count(http.StateHijacked) == 1 }, "no StateHijacked")
			assert.Equal(t, [][]http.ConnState{{http.StateNew, http.StateActive, http.StateHijacked}}, ts.states.byConn())
		})
	}
}

// TestConnState checks the ConnState hooks of a keep-alive connection.
func TestConnState(t *testing.T) {
	got := make(map[string][][]http.ConnState)
	for _, name := range fronts {
		ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})})
		c := ts.dial(t)
		c.send(get("/1"))
		c.read("GET")
		c.send(get("/2"))
		c.read("GET")
		c.conn.Close()
		eventually(t, func() bool { return ts.states.count(http.StateClosed) == 1 }, "%s: no StateClosed", name)
		got[name] = ts.states.byConn()
	}
	assert.Equal(t, got[stdlib], got[ours])
	assert.Equal(t, [][]http.ConnState{{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle, http.StateClosed}}, got[ours])
}

// TestEnableFullDuplex checks that a handler may write its response before it read the
// request body, once it asked to.
func TestEnableFullDuplex(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rc := http.NewResponseController(w)
				if err := rc.EnableFullDuplex(); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				io.WriteString(w, "echo: ")
				rc.Flush()
				io.Copy(w, r.Body)
			})})
			c := ts.dial(t)
			c.send(request("POST", "/", "", "Content-Length: 5"))
			// The head comes before the client sent any of the body.
			c.conn.SetReadDeadline(time.Now().Add(waitFor))
			line, err := c.br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "HTTP/1.1 200 OK\r\n", line)
			c.send("hello")
			var seen []string
			for !slices.Contains(seen, "hello\r\n") {
				line, err := c.br.ReadString('\n')
				require.NoError(t, err, "read the echo; so far %q", seen)
				seen = append(seen, line)
			}
			assert.Contains(t, seen, "echo: \r\n")
		})
	}
}
