package h1

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/internal/serving"
)

// Server serves HTTP/1.1 itself and hands HTTP/2 connections to its HTTP2 server, or to the
// http.Server it was made from. Create it with New; the zero value is not usable.
type Server struct {
	// HTTP2, if set before Serve, serves the HTTP/2 connections in srv's place: h2.New(srv)
	// is sluice's own HTTP/2 server. Nil hands them to srv.
	HTTP2 HTTP2Server

	srv       *http.Server
	handler   http.Handler
	connState func(net.Conn, http.ConnState) // the caller's hook
	h2c       bool                           // prior-knowledge HTTP/2 connections go to srv
	h2        bool                           // TLS connections that negotiate h2 go to srv
	h1        bool                           // HTTP/1 is served at all
	maxHead   int
	idle      time.Duration
	readHead  time.Duration

	// The listeners and connections Shutdown and Close act on, and whether they began.
	tracker *serving.Tracker[*conn]
	// Connections are served on goroutines that wait for the next one when theirs ends.
	workers *serving.Workers[*conn]

	mu   sync.Mutex    // protects h2ln and srv.TLSConfig's replacement
	h2ln *connListener // HTTP/2 connections handed to srv.Serve; nil until the first
}

// New returns a Server that takes its configuration from srv: Handler (nil means
// http.DefaultServeMux), ReadTimeout, ReadHeaderTimeout, WriteTimeout, IdleTimeout,
// MaxHeaderBytes, TLSConfig, ConnState, ConnContext, BaseContext, ErrorLog, Protocols and
// DisableGeneralOptionsHandler, with net/http's meaning and defaults. Connections that
// speak HTTP/2 — with prior knowledge in cleartext when srv.Protocols allows unencrypted
// HTTP/2, or negotiated with ALPN over TLS — are handed to the Server's HTTP2 field when it
// is set (h2.New(srv) takes srv's settings too), else to srv itself, so srv's HTTP2 settings
// apply to them either way.
//
// The caller serves through the returned Server (Serve, ServeTLS, Shutdown, Close), not
// through srv: srv serves only the HTTP/2 connections it is handed. Changing srv's fields
// after New has no effect on HTTP/1. New changes one of them: a ConnState hook is wrapped on
// srv so that it sees a connection handed to srv once, from StateNew (reported by the Server
// as it accepts it) to StateClosed, as the same net.Conn.
func New(srv *http.Server) *Server {
	s := &Server{
		srv:      srv,
		handler:  srv.Handler,
		maxHead:  srv.MaxHeaderBytes,
		idle:     srv.IdleTimeout,
		readHead: srv.ReadHeaderTimeout,
		tracker:  serving.NewTracker[*conn](),
		h1:       true,
		h2:       true,
	}
	s.workers = serving.NewWorkers((*conn).serve)
	if s.handler == nil {
		s.handler = http.DefaultServeMux
	}
	if s.maxHead <= 0 {
		s.maxHead = http.DefaultMaxHeaderBytes
	}
	// net/http's rules: an idle connection falls back to ReadTimeout, and so does the wait for
	// a request's header.
	if s.idle == 0 {
		s.idle = srv.ReadTimeout
	}
	if s.readHead == 0 {
		s.readHead = srv.ReadTimeout
	}
	if p := srv.Protocols; p != nil {
		s.h1 = p.HTTP1()
		s.h2 = p.HTTP2()
		s.h2c = p.UnencryptedHTTP2()
	}
	s.connState = srv.ConnState
	if orig, ok := connStates.Load(srv); ok {
		s.connState = orig.(func(net.Conn, http.ConnState))
	} else if f := srv.ConnState; f != nil {
		// srv sees only connections handed to it, which the hook has seen as new already:
		// its StateNew is dropped, and an h2c connection's wrapper is shown as the connection.
		connStates.Store(srv, f)
		srv.ConnState = func(nc net.Conn, st http.ConnState) {
			if st == http.StateNew {
				return
			}
			if pc, ok := nc.(*prefixConn); ok {
				nc = pc.Conn
			}
			f(nc, st)
		}
	}
	return s
}

// connStates holds the ConnState hooks New found on the servers it wrapped them on, so that
// a second New on the same server finds the caller's hook.
var connStates sync.Map // *http.Server → func(net.Conn, http.ConnState)

// Serve accepts connections on ln and serves each on its own goroutine until ln fails or
// the server is shut down; it then returns http.ErrServerClosed. Connections are plain text,
// unless ln is a tls.NewListener: then their handshake runs on their own goroutine and ALPN
// decides between HTTP/1.1 and HTTP/2.
func (s *Server) Serve(ln net.Listener) error {
	return s.serve(ln, nil)
}

// ServeTLS serves TLS connections on ln, with srv.TLSConfig (cloned) and, when certFile
// and keyFile are not empty, the certificate they name, as http.Server.ServeTLS does.
// NextProtos defaults to h2 (when srv.Protocols allows HTTP/2) and http/1.1. When it offers
// h2 and srv.TLSConfig does not, srv.TLSConfig is replaced by a copy that does, so that srv
// serves the HTTP/2 connections it is handed.
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	cfg := &tls.Config{}
	if s.srv.TLSConfig != nil {
		cfg = s.srv.TLSConfig.Clone()
	}
	if len(cfg.NextProtos) == 0 {
		if s.h2 {
			cfg.NextProtos = append(cfg.NextProtos, "h2")
		}
		if s.h1 {
			cfg.NextProtos = append(cfg.NextProtos, "http/1.1")
		}
	}
	if certFile != "" || keyFile != "" || (len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil) {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("h1: loading the certificate: %w", err)
		}
		cfg.Certificates = append(slices.Clip(cfg.Certificates), cert)
	}
	if s.h2 && slices.Contains(cfg.NextProtos, "h2") {
		s.mu.Lock()
		if t := s.srv.TLSConfig; s.h2ln == nil && t != nil && !slices.Contains(t.NextProtos, "h2") {
			// srv's Serve sets up its HTTP/2 server only when srv.TLSConfig offers h2 (or is
			// nil): without it, the h2 connections handed to srv would be dropped. srv gets a
			// copy that offers h2, as net/http's own ServeTLS adds h2 to srv.TLSConfig.
			t = t.Clone()
			t.NextProtos = append(t.NextProtos, "h2")
			s.srv.TLSConfig = t
		}
		s.mu.Unlock()
	}
	return s.serve(ln, cfg)
}

func (s *Server) serve(ln net.Listener, tlsConfig *tls.Config) error {
	if !s.tracker.AddListener(&ln) {
		return http.ErrServerClosed
	}
	defer s.tracker.RemoveListener(&ln)

	var wrap func(net.Conn) net.Conn
	if tlsConfig != nil {
		// Wrapped before anything sees the connection, so that ConnContext and every
		// ConnState call get the one *tls.Conn, as from net/http's ServeTLS.
		wrap = func(nc net.Conn) net.Conn { return tls.Server(nc, tlsConfig) }
	}
	return serving.Serve(ln, s.srv, "h1", s.tracker.Closing, s.logf, wrap, func(ctx context.Context, rw net.Conn) bool {
		c := newConn(s, rw, ctx)
		if !s.tracker.AddConn(c) {
			rw.Close()
			return false
		}
		s.setState(c, http.StateNew)
		s.workers.Go(c)
		return true
	})
}

func (s *Server) setState(c *conn, st http.ConnState) {
	if f := s.connState; f != nil {
		f(c.rwc, st)
	}
}

// HTTP2Server serves the HTTP/2 connections a Server hands it; h2.Server is one.
type HTTP2Server interface {
	// ServeConn serves HTTP/2 on nc, whose client preface has not been read, until the
	// connection ends, and closes nc. ctx is the connection's context, holding
	// http.ServerContextKey, http.LocalAddrContextKey and what srv.ConnContext added.
	ServeConn(ctx context.Context, nc net.Conn)
	// Shutdown and Close are called by the Server's own.
	Shutdown(ctx context.Context) error
	Close() error
}

// handOff gives an HTTP/2 connection to s.HTTP2 on this goroutine, or to srv, starting srv's
// Serve on the first one.
func (s *Server) handOff(ctx context.Context, nc net.Conn) {
	if s.HTTP2 != nil {
		if s.tracker.Closing() {
			nc.Close()
			return
		}
		s.HTTP2.ServeConn(ctx, nc)
		return
	}
	s.mu.Lock()
	if s.h2ln == nil {
		if s.tracker.Closing() {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.h2ln = newConnListener(nc.LocalAddr())
		go s.srv.Serve(s.h2ln)
	}
	ln := s.h2ln
	s.mu.Unlock()
	ln.push(nc)
}

// Shutdown stops the server gracefully, as http.Server.Shutdown does: it closes the
// listeners, then idle connections, and waits for the connections serving a request to
// finish it (their responses say Connection: close) before closing them too. HTTP/2
// connections are shut down by HTTP2's Shutdown, or srv's. If ctx ends first, Shutdown returns
// its error and leaves the remaining connections open; Close ends them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.workers.Stop()
	stopped, lerr := s.tracker.Close(nil)
	s.mu.Lock()
	h2 := s.h2ln != nil
	s.mu.Unlock()

	h2err := make(chan error, 1)
	if s.HTTP2 != nil {
		go func() { h2err <- s.HTTP2.Shutdown(ctx) }()
	} else if h2 {
		go func() { h2err <- s.srv.Shutdown(ctx) }()
	} else {
		h2err <- nil
	}
	// Idle connections close now; a connection that turns idle later closes itself, since
	// closing is set. Polling covers the few that were between the two.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for stopped != nil {
		s.closeIdle()
		select {
		case <-stopped:
			stopped = nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	if err := <-h2err; err != nil {
		return err
	}
	return lerr
}

// closeIdle closes the connections waiting for a request.
func (s *Server) closeIdle() {
	s.tracker.Each((*conn).closeIfIdle)
}

// Close closes the listeners and every connection at once, the HTTP/2 ones too (through
// HTTP2's Close, or srv's), as http.Server.Close does.
func (s *Server) Close() error {
	s.workers.Stop()
	_, err := s.tracker.Close(func(c *conn) { c.rwc.Close() })
	s.mu.Lock()
	h2 := s.h2ln != nil
	s.mu.Unlock()
	if s.HTTP2 != nil {
		if e := s.HTTP2.Close(); e != nil && err == nil {
			err = e
		}
	}
	if h2 {
		if e := s.srv.Close(); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// logf reports an error through srv.ErrorLog, or the log package's standard logger.
func (s *Server) logf(format string, args ...any) { serving.Logf(s.srv, format, args...) }

// connListener is the net.Listener srv serves HTTP/2 connections from.
type connListener struct {
	addr   net.Addr
	ch     chan net.Conn
	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(nc net.Conn) {
	select {
	case l.ch <- nc:
	case <-l.done:
		nc.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.ch:
		return nc, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// prefixConn replays bytes already read from a connection before reading it further.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
