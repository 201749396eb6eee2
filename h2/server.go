package h2

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluiceproxy/sluice/internal/serving"
)

// Defaults where srv.HTTP2 leaves a setting at zero, net/http's own.
const (
	defaultMaxStreams    = 250
	defaultStreamWindow  = 1 << 20 // receive window of each stream
	defaultConnWindow    = 1 << 20 // receive window of the connection
	defaultMaxReadFrame  = 1 << 20
	defaultEncoderTable  = 4096
	defaultDecoderTable  = 4096
	initialWindow        = 65535 // RFC 9113's initial window, before SETTINGS
	maxFrameSizeLimit    = 1<<24 - 1
	minFrameSize         = 1 << 14 // RFC 9113's initial SETTINGS_MAX_FRAME_SIZE
	headerListOverhead   = 320     // net/http adds this to MaxHeaderBytes for HPACK's 32 bytes a field
	maxQueuedOutput      = 64 << 10
	maxQueuedControl     = 1 << 20 // control frames queued for a peer that does not read
	shutdownPollInterval = 50 * time.Millisecond
)

// Server serves HTTP/2 for an http.Handler. Create it with New; the zero value is not usable.
// A Server is safe for concurrent use.
type Server struct {
	srv     *http.Server
	handler http.Handler

	maxStreams    uint32
	streamWindow  int32
	connWindow    int32
	maxReadFrame  uint32
	maxHeaderList uint32
	encoderTable  uint32
	decoderTable  uint32
	idle          time.Duration
	readTimeout   time.Duration
	writeTimeout  time.Duration
	prefaceWait   time.Duration
	// writeByteTimeout closes a connection nothing could be written to for that long.
	writeByteTimeout time.Duration
	connState        func(net.Conn, http.ConnState)

	// The listeners and connections Shutdown and Close act on, and whether they began.
	tracker *serving.Tracker[*conn]
	// Handlers run on goroutines that wait for the next stream when theirs ends.
	workers *serving.Workers[*stream]
}

// New returns a Server that takes its configuration from srv: Handler (nil means
// http.DefaultServeMux), ReadTimeout and WriteTimeout (per stream, as net/http's HTTP/2 server
// applies them), IdleTimeout, ReadHeaderTimeout (for the client preface), MaxHeaderBytes,
// TLSConfig, ConnContext, BaseContext, ErrorLog and the HTTP2 settings MaxConcurrentStreams,
// MaxReadFrameSize, MaxReceiveBufferPerConnection, MaxReceiveBufferPerStream,
// MaxEncoderHeaderTableSize and MaxDecoderHeaderTableSize, with net/http's meaning and
// defaults. Changing srv's fields after New has no effect.
func New(srv *http.Server) *Server {
	s := &Server{
		srv:           srv,
		handler:       srv.Handler,
		maxStreams:    defaultMaxStreams,
		streamWindow:  defaultStreamWindow,
		connWindow:    defaultConnWindow,
		maxReadFrame:  defaultMaxReadFrame,
		encoderTable:  defaultEncoderTable,
		decoderTable:  defaultDecoderTable,
		idle:          srv.IdleTimeout,
		readTimeout:   srv.ReadTimeout,
		writeTimeout:  srv.WriteTimeout,
		prefaceWait:   srv.ReadHeaderTimeout,
		workers:       serving.NewWorkers((*stream).run),
		tracker:       serving.NewTracker[*conn](),
		maxHeaderList: uint32(http.DefaultMaxHeaderBytes + headerListOverhead),
	}
	if s.handler == nil {
		s.handler = http.DefaultServeMux
	}
	if srv.MaxHeaderBytes > 0 {
		s.maxHeaderList = uint32(min(srv.MaxHeaderBytes, 1<<30) + headerListOverhead)
	}
	if s.idle == 0 {
		s.idle = srv.ReadTimeout
	}
	if s.prefaceWait == 0 {
		s.prefaceWait = srv.ReadTimeout
	}
	s.connState = srv.ConnState
	if c := srv.HTTP2; c != nil {
		s.writeByteTimeout = c.WriteByteTimeout
		if v := c.MaxConcurrentStreams; v > 0 {
			s.maxStreams = uint32(min(v, 1<<31-1))
		}
		if v := c.MaxReadFrameSize; v >= minFrameSize && v <= maxFrameSizeLimit {
			s.maxReadFrame = uint32(v)
		}
		if v := c.MaxReceiveBufferPerConnection; v >= initialWindow && v < 4<<20 {
			s.connWindow = int32(v)
		}
		if v := c.MaxReceiveBufferPerStream; v > 0 && v < 4<<20 {
			s.streamWindow = int32(v)
		}
		if v := c.MaxEncoderHeaderTableSize; v > 0 && v < 4<<20 {
			s.encoderTable = uint32(v)
		}
		if v := c.MaxDecoderHeaderTableSize; v > 0 && v < 4<<20 {
			s.decoderTable = uint32(v)
		}
	}
	return s
}

// Serve accepts connections on ln and serves HTTP/2 on each until ln fails or the server is
// shut down; it then returns http.ErrServerClosed. Plain connections speak HTTP/2 with prior
// knowledge (h2c); if ln is a tls.NewListener, each handshake runs on the connection's own
// goroutine and must negotiate "h2" with ALPN, so the tls.Config must offer it.
func (s *Server) Serve(ln net.Listener) error {
	if !s.tracker.AddListener(&ln) {
		return http.ErrServerClosed
	}
	defer s.tracker.RemoveListener(&ln)

	return serving.Serve(ln, s.srv, "h2", s.tracker.Closing, s.logf, nil, func(ctx context.Context, nc net.Conn) bool {
		if f := s.connState; f != nil {
			f(nc, http.StateNew)
		}
		go s.serveAccepted(ctx, nc)
		return true
	})
}

// serveAccepted completes a TLS handshake, if nc is a TLS connection, and serves it.
func (s *Server) serveAccepted(ctx context.Context, nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		if d := s.prefaceWait; d > 0 {
			tc.SetDeadline(time.Now().Add(d))
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			s.logf("h2: TLS handshake error from %s: %v", nc.RemoteAddr(), err)
			nc.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			s.logf("h2: %s negotiated %q, not h2", nc.RemoteAddr(), p)
			nc.Close()
			return
		}
	}
	s.ServeConn(ctx, nc)
}

// ServeConn serves HTTP/2 on nc, whose client connection preface has not been read, and
// returns when the connection ends; it closes nc. A *tls.Conn must have completed its
// handshake. ctx is the connection's context: each request's context derives from it, so it
// should carry what an http.Server puts there (http.ServerContextKey,
// http.LocalAddrContextKey and whatever ConnContext adds); Serve passes such a context.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	c := newConn(s, nc, ctx)
	if !s.tracker.AddConn(c) {
		nc.Close()
		return
	}
	defer s.tracker.RemoveConn(c)
	c.serve()
	c.setState(http.StateClosed)
}

// Shutdown stops the server gracefully: it closes the listeners, tells every connection's
// client with GOAWAY that no new stream will be served, and waits for the streams in progress
// to finish before closing each connection. If ctx ends first, Shutdown returns its error and
// leaves the remaining connections open; Close ends them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.workers.Stop()
	var conns []*conn
	stopped, lerr := s.tracker.Close(func(c *conn) { conns = append(conns, c) })
	// GOAWAY is written outside the tracker's lock: a connection that ends meanwhile leaves
	// the tracker, which waits for the lock.
	for _, c := range conns {
		c.goAway(http2.ErrCodeNo, false)
	}
	if stopped == nil {
		return lerr
	}
	select {
	case <-stopped:
		return lerr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, as http.Server.Close does.
func (s *Server) Close() error {
	s.workers.Stop()
	_, err := s.tracker.Close(func(c *conn) { c.rwc.Close() })
	return err
}

// logf reports an error through srv.ErrorLog, or the log package's standard logger.
func (s *Server) logf(format string, args ...any) { serving.Logf(s.srv, format, args...) }

// errorf is logf for the errors of a connection.
func (c *conn) logf(format string, args ...any) {
	c.s.logf("h2: %s: %s", c.remoteAddr, fmt.Sprintf(format, args...))
}
