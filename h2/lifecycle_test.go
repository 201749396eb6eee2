package h2_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/sluiceproxy/sluice/h2"
)

// blocking is a handler whose requests to /block wait until release is closed (or waitFor
// passes) and then answer "finished"; every other request is answered at once. It counts the
// requests it got.
type blocking struct {
	started chan string // each /block request's path, as its handler starts
	release chan struct{}
	calls   atomic.Int32
}

func newBlocking() *blocking {
	return &blocking{started: make(chan string, 100), release: make(chan struct{})}
}

func (b *blocking) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.calls.Add(1)
	if r.URL.Path != "/block" {
		io.WriteString(w, "at once")
		return
	}
	b.started <- r.URL.Path
	select {
	case <-b.release:
		io.WriteString(w, "finished")
	case <-r.Context().Done():
	case <-afterWait():
		http.Error(w, "never released", http.StatusInternalServerError)
	}
}

// TestShutdown checks a graceful shutdown with a stream in flight: a GOAWAY names it as the
// last stream the server processes, a stream the client opens after the GOAWAY is never
// served, the stream in flight finishes, and then the connection closes and Shutdown and
// Serve return.
func TestShutdown(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // net/http waits a second for the client to close first
			b := newBlocking()
			ts := start(t, name, h2c, &http.Server{Handler: b})
			c := ts.dialRaw(t)
			id := c.request("GET", "/block", true)
			recv(t, b.started, "the handler")

			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				shut <- ts.s.Shutdown(ctx)
			}()
			ga := c.finalGoAway()
			require.NotNil(t, ga, "no GOAWAY; the connection ended: %v", c.ended)
			assert.Equal(t, goAway{lastStreamID: id, code: http2.ErrCodeNo}, *ga)

			late := c.request("GET", "/late", true)
			close(b.release)
			s := c.wait(id)
			assert.True(t, s.endStream, "the stream in flight finishes: %s", s)
			assert.Equal(t, "finished", s.body.String())
			assert.True(t, c.waitEnd(), "the connection closes once its streams ended")

			ls := c.stream(late)
			if ls.ended {
				// Ignoring the stream is what the GOAWAY announced; a server may also say so.
				assert.Equal(t, http2.ErrCodeRefusedStream, ls.rst, "the stream opened after the GOAWAY: %s", ls)
			}
			assert.Empty(t, ls.blocks, "the stream opened after the GOAWAY gets no response")
			assert.Equal(t, int32(1), b.calls.Load(), "only the stream in flight reached the handler")

			assert.NoError(t, recv(t, shut, "Shutdown"))
			assert.ErrorIs(t, ts.serveErr(t), http.ErrServerClosed)
			_, err := net.DialTimeout("tcp", ts.addr, waitFor)
			assert.Error(t, err, "the listener is closed")
		})
	}
}

// TestShutdownIdle checks that Shutdown ends an idle connection, with a GOAWAY.
func TestShutdownIdle(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		t.Parallel()
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				t.Parallel() // net/http waits a second for the client to close first
				ts := start(t, name, mode, &http.Server{Handler: newBlocking()})
				c := ts.dialRaw(t)
				require.True(t, c.alive())
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				assert.NoError(t, ts.s.Shutdown(ctx))
				ga := c.finalGoAway()
				require.NotNil(t, ga, "a GOAWAY before the connection closes")
				assert.Equal(t, goAway{lastStreamID: 1, code: http2.ErrCodeNo}, *ga)
				assert.True(t, c.waitEnd(), "the connection closes")
				assert.ErrorIs(t, ts.serveErr(t), http.ErrServerClosed)
			})
		}
	})
}

// TestShutdownContext checks that Shutdown gives up when its context ends before the streams
// do, and returns the context's error.
func TestShutdownContext(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			b := newBlocking()
			ts := start(t, name, h2c, &http.Server{Handler: b})
			c := ts.dialRaw(t)
			c.request("GET", "/block", true)
			recv(t, b.started, "the handler")
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			assert.ErrorIs(t, ts.s.Shutdown(ctx), context.DeadlineExceeded)
			close(b.release)
		})
	}
}

// TestClose checks that Close ends every connection at once, streams in flight too, whose
// handlers see their contexts canceled, and that Serve returns.
func TestClose(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				b := newBlocking()
				ts := start(t, name, mode, &http.Server{Handler: b})
				c := ts.dialRaw(t)
				id := c.request("GET", "/block", true)
				recv(t, b.started, "the handler")
				idle := ts.dialRaw(t)
				assert.NoError(t, ts.s.Close())
				assert.True(t, c.waitEnd(), "the busy connection closes")
				assert.False(t, c.stream(id).endStream, "the stream in flight does not look whole")
				assert.True(t, idle.waitEnd(), "the idle connection closes")
				assert.ErrorIs(t, ts.serveErr(t), http.ErrServerClosed)
				eventually(t, func() bool { return b.calls.Load() == 1 }, "the handler ran once")
			})
		}
	})
}

// TestCloseCancelsHandlers checks that a handler in flight when Close comes sees its
// request's context end.
func TestCloseCancelsHandlers(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			started, result := make(chan struct{}, 1), make(chan error, 1)
			ts := start(t, name, h2c, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				select {
				case <-r.Context().Done():
					result <- r.Context().Err()
				case <-afterWait():
					result <- fmt.Errorf("not canceled")
				}
			})})
			c := ts.dialRaw(t)
			c.request("GET", "/", true)
			recv(t, started, "the handler")
			ts.s.Close()
			assert.ErrorIs(t, recv(t, result, "the handler's result"), context.Canceled)
		})
	}
}

// TestIdleTimeout checks that a connection with no streams closes after IdleTimeout, or
// ReadTimeout when IdleTimeout is zero, as net/http documents, with a GOAWAY first (RFC 9113
// §6.8: endpoints SHOULD send one before closing).
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
			t.Parallel()
			for _, name := range fronts {
				t.Run(name, func(t *testing.T) {
					t.Parallel() // net/http waits a second for the client to close first
					srv := &http.Server{Handler: newBlocking()}
					cfg.set(srv)
					ts := start(t, name, h2c, srv)
					c := ts.dialRaw(t)
					require.True(t, c.alive())
					begin := time.Now()
					ga := c.finalGoAway()
					require.NotNil(t, ga, "a GOAWAY before the connection closes")
					assert.GreaterOrEqual(t, time.Since(begin), timeout*3/4, "GOAWAY before the timeout")
					assert.Equal(t, goAway{lastStreamID: 1, code: http2.ErrCodeNo}, *ga)
					assert.True(t, c.waitEnd(), "the idle connection closes")
				})
			}
		})
	}
}

// TestIdleTimeoutBusy checks that IdleTimeout does not close a connection whose stream is
// still running.
func TestIdleTimeoutBusy(t *testing.T) {
	const timeout = 100 * time.Millisecond
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			b := newBlocking()
			ts := start(t, name, h2c, &http.Server{Handler: b, IdleTimeout: timeout})
			c := ts.dialRaw(t)
			id := c.request("GET", "/block", true)
			recv(t, b.started, "the handler")
			<-time.After(3 * timeout) // the timeout would have struck by now, were it wrongly armed
			close(b.release)
			s := c.wait(id)
			assert.True(t, s.endStream, "the stream finishes: %s", s)
			assert.Equal(t, "finished", s.body.String())
		})
	}
}

// TestMaxConcurrentStreams checks srv.HTTP2.MaxConcurrentStreams: the server advertises it,
// and refuses a stream beyond it (RFC 9113 §5.1.2: a stream error of type PROTOCOL_ERROR or
// REFUSED_STREAM).
func TestMaxConcurrentStreams(t *testing.T) {
	t.Run("raw", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				b := newBlocking()
				ts := start(t, name, h2c, &http.Server{Handler: b, HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 2}})
				c := ts.dialRaw(t)
				assert.Equal(t, uint32(2), c.settings[http2.SettingMaxConcurrentStreams], "SETTINGS_MAX_CONCURRENT_STREAMS")
				first, second := c.request("GET", "/block", true), c.request("GET", "/block", true)
				recv(t, b.started, "the first handler")
				recv(t, b.started, "the second handler")
				over := c.wait(c.request("GET", "/block", true))
				assert.True(t, over.ended && !over.endStream, "the third stream is reset: %s", over)
				assert.Contains(t, []http2.ErrCode{http2.ErrCodeProtocol, http2.ErrCodeRefusedStream}, over.rst)
				assert.Equal(t, int32(2), b.calls.Load(), "the third stream never reached the handler")
				close(b.release)
				assert.True(t, c.wait(first).endStream)
				assert.True(t, c.wait(second).endStream)
				assert.True(t, c.alive(), "the connection carries on")
			})
		}
	})
	t.Run("client", func(t *testing.T) {
		// x/net's client waits for a free stream; the server never runs more than 3 at once.
		const max, n = 3, 20
		forModes(t, func(t *testing.T, mode string) {
			for _, name := range fronts {
				t.Run(name, func(t *testing.T) {
					var running, peak atomic.Int32
					ts := start(t, name, mode, &http.Server{
						HTTP2: &http.HTTP2Config{MaxConcurrentStreams: max},
						Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							now := running.Add(1)
							defer running.Add(-1)
							for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
							}
							io.WriteString(w, r.URL.Path)
						}),
					})
					c := ts.client(t)
					// Once the server's SETTINGS came, the client keeps to its limit; before,
					// streams over it would be refused.
					require.True(t, c.alive())
					var wg sync.WaitGroup
					for i := range n {
						wg.Go(func() {
							r := c.get(fmt.Sprintf("/%d", i))
							assert.Equal(t, fmt.Sprintf("/%d", i), r.body, "%s", r)
						})
					}
					wg.Wait()
					assert.LessOrEqual(t, peak.Load(), int32(max), "streams running at once")
				})
			}
		})
	})
}

// TestSettings checks that srv.HTTP2 becomes the server's SETTINGS and connection window, as
// net/http advertises them.
func TestSettings(t *testing.T) {
	got := make(map[string]string)
	for _, name := range fronts {
		ts := start(t, name, h2c, &http.Server{Handler: newBlocking(), HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          7,
			MaxReadFrameSize:              1 << 20,
			MaxReceiveBufferPerStream:     200_000,
			MaxReceiveBufferPerConnection: 300_000,
			MaxDecoderHeaderTableSize:     8192,
		}})
		c := ts.dialRaw(t)
		require.True(t, c.alive())
		set := c.settings
		got[name] = fmt.Sprintf("MAX_CONCURRENT_STREAMS=%d MAX_FRAME_SIZE=%d INITIAL_WINDOW_SIZE=%d HEADER_TABLE_SIZE=%d connection window=%d",
			set[http2.SettingMaxConcurrentStreams], set[http2.SettingMaxFrameSize], set[http2.SettingInitialWindowSize],
			set[http2.SettingHeaderTableSize], 65535+c.connWindowIncrement)
	}
	assert.Equal(t, "MAX_CONCURRENT_STREAMS=7 MAX_FRAME_SIZE=1048576 INITIAL_WINDOW_SIZE=200000 HEADER_TABLE_SIZE=8192 connection window=300000", got[stdlib])
	assert.Equal(t, got[stdlib], got[ours])
}

// TestLargeFrames checks that the server reads DATA frames up to the size it advertised.
func TestLargeFrames(t *testing.T) {
	body := randomBody(100_000)
	_, h := rawDifferential(t, handle(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d %v %v", len(b), err, string(b) == body)
	}), func(s *http.Server) {
		s.HTTP2 = &http.HTTP2Config{MaxReadFrameSize: 1 << 20, MaxReceiveBufferPerStream: 1 << 20}
	}, func(c *rawConn) uint32 {
		require.Equal(c.t, uint32(1<<20), c.settings[http2.SettingMaxFrameSize])
		id := c.request("POST", "/", false)
		c.writeData(id, true, body) // one frame
		return id
	})
	assert.Equal(t, "100000 <nil> true", h.body.String())
}

// TestServeConn checks h2's ServeConn: it serves one connection whose client preface is still
// unread, and returns once the client closed it.
func TestServeConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
	})}
	s := h2.New(srv)
	defer s.Close()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		s.ServeConn(context.Background(), conn)
	}()
	ts := &testServer{front: ours, mode: h2c, addr: ln.Addr().String()}
	c := ts.client(t)
	assert.Equal(t, "HTTP/2.0 /a", c.get("/a").body)
	assert.Equal(t, "HTTP/2.0 /b", c.get("/b").body)
	c.cc.Close()
	recv(t, returned, "ServeConn to return")
}

// TestTLSWithoutH2 checks that a TLS connection that did not negotiate "h2" is not served
// HTTP/2: the server sends nothing and closes it.
func TestTLSWithoutH2(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, overTLS, &http.Server{Handler: newBlocking()})
			conn, err := net.DialTimeout("tcp", ts.addr, waitFor)
			require.NoError(t, err)
			defer conn.Close()
			cfg := ts.clientTLS.Clone()
			cfg.NextProtos = nil // no ALPN at all: the handshake succeeds with no protocol
			tc := tls.Client(conn, cfg)
			tc.SetDeadline(deadline())
			require.NoError(t, tc.Handshake())
			require.Empty(t, tc.ConnectionState().NegotiatedProtocol)
			io.WriteString(tc, http2.ClientPreface)
			b, err := io.ReadAll(tc)
			assert.False(t, isTimeout(err), "the server closes the connection: %v", err)
			if name == ours {
				assert.Empty(t, b, "h2 sends nothing on a connection that did not negotiate h2")
			} else {
				t.Logf("net/http, HTTP/1 off, answers %q", b)
			}
		})
	}
}
