// Package upstreamtest runs a scripted HTTP/1.1 upstream for tests: a real TCP listener on
// 127.0.0.1 whose every connection is handed to a script the test writes.
//
// net/http/httptest serves well-behaved responses. Proxies, caches and health checkers must
// also survive upstreams that misbehave: bytes nobody asked for after a response, framing that
// lies, heads that never end, connections that stall or are reset. A script drives one
// connection byte by byte with the helpers on Conn, and the Server records what it saw: every
// request exactly as it arrived (so a test can assert where one request ended and the next
// began) and how many connections were accepted and closed.
//
// A script runs on its own goroutine per connection. When it returns, the connection is
// closed. The server shuts down when the test ends (or at Close): the listener and every
// connection are closed, which unblocks any script waiting in a Conn method, and the server
// waits for the scripts to return. A script that also waits on channels of its own should select
// on Conn.Done as well.
package upstreamtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// maxHead bounds a request head, so that a runaway client fails the read instead of
// filling the test's memory.
const maxHead = 1 << 20

// Server is a scripted upstream listening on 127.0.0.1. Its methods are safe for concurrent
// use.
type Server struct {
	ln     net.Listener
	script func(*Conn)
	done   chan struct{} // closed at shutdown
	wg     sync.WaitGroup

	mu       sync.Mutex // mu guards everything below
	conns    map[*Conn]struct{}
	requests []Request
	accepted int
	closed   int
	shut     bool
}

// Start starts a server that runs script on every connection it accepts, and shuts it down
// when t ends, failing t if a script does not return.
func Start(t testing.TB, script func(c *Conn)) *Server {
	t.Helper()
	s, err := NewServer(script)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// NewServer starts a server that runs script on every connection it accepts. The caller
// must Close it; tests use Start instead.
func NewServer(script func(c *Conn)) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstreamtest: listen: %w", err)
	}
	s := &Server{ln: ln, script: script, done: make(chan struct{}), conns: map[*Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Respond is a script that answers every request on its connection with raw, until the peer
// closes it.
func Respond(raw string) func(*Conn) {
	return func(c *Conn) {
		for {
			if _, err := c.ReadRequest(); err != nil {
				return
			}
			if err := c.Write(raw); err != nil {
				return
			}
		}
	}
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.shut {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.accepted++
		c := &Conn{nc: nc.(*net.TCPConn), br: bufio.NewReader(nc), srv: s, id: s.accepted}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.script(c)
			c.nc.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.closed++
			s.mu.Unlock()
		}()
	}
}

// Addr returns the server's address, "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns "http://" and the server's address.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Requests returns a copy of every request read so far, in the order they were read.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Accepted returns the number of connections accepted so far.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Closed returns the number of connections whose script returned, which the server then
// closed. With a script that reads until the peer closes (as Respond does), it counts the
// connections the client closed.
func (s *Server) Closed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the server: it closes the listener, resets every connection and waits up to
// 10s for the scripts to return, with an error if one did not. Calling it again does
// nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return nil
	}
	s.shut = true
	close(s.done)
	s.ln.Close()
	for c := range s.conns {
		c.nc.SetLinger(0) // an RST: no TIME_WAIT left behind by thousands of test runs
		c.nc.Close()
	}
	s.mu.Unlock()
	waited := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("upstreamtest: a script did not return within 10s of shutdown")
	}
}

// Request is one request as the server read it.
type Request struct {
	// Conn is the number of the connection it came on, counted from 1 in accept order.
	Conn int
	// Raw holds the head and the body exactly as they arrived.
	Raw []byte
	// Method, Target and Proto are the request line's three parts.
	Method, Target, Proto string
	// Header holds the header fields, with canonical names.
	Header http.Header
	// Body is the body with its chunked framing, if any, removed.
	Body []byte
}

// Conn is one accepted connection, driven by the script. Its methods are meant for the
// script's goroutine.
type Conn struct {
	nc  *net.TCPConn
	br  *bufio.Reader
	srv *Server
	id  int
}

// ID returns the connection's number, counted from 1 in accept order.
func (c *Conn) ID() int { return c.id }

// Done returns a channel that is closed when the server shuts down.
func (c *Conn) Done() <-chan struct{} { return c.srv.done }

// ErrMalformed is returned by ReadRequest for bytes that are not an HTTP/1.1 request.
var ErrMalformed = errors.New("upstreamtest: malformed request")

// ReadRequest reads one request head and its body, framed by Content-Length or chunked
// Transfer-Encoding, and records it on the server. It returns io.EOF when the peer closed
// the connection between requests.
func (c *Conn) ReadRequest() (*Request, error) {
	var raw bytes.Buffer
	for {
		line, err := c.br.ReadSlice('\n')
		raw.Write(line)
		if err == bufio.ErrBufferFull {
			if raw.Len() > maxHead {
				return nil, fmt.Errorf("%w: head exceeds %d bytes", ErrMalformed, maxHead)
			}
			continue
		}
		if err != nil {
			if raw.Len() == 0 {
				return nil, err
			}
			return nil, fmt.Errorf("%w: head cut short: %v", ErrMalformed, err)
		}
		if raw.Len() > maxHead {
			return nil, fmt.Errorf("%w: head exceeds %d bytes", ErrMalformed, maxHead)
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			break
		}
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw.Bytes())))
	first, err := tp.ReadLine()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	parts := strings.Split(first, " ")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: request line %q", ErrMalformed, first)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	r := &Request{Conn: c.id, Method: parts[0], Target: parts[1], Proto: parts[2], Header: http.Header(hdr)}
	if te := r.Header.Get("Transfer-Encoding"); te != "" {
		if !strings.EqualFold(te, "chunked") {
			return nil, fmt.Errorf("%w: Transfer-Encoding %q", ErrMalformed, te)
		}
		if r.Body, err = c.readChunked(&raw); err != nil {
			return nil, err
		}
	} else if cl := r.Header.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: Content-Length %q", ErrMalformed, cl)
		}
		r.Body = make([]byte, n)
		if _, err := io.ReadFull(c.br, r.Body); err != nil {
			return nil, fmt.Errorf("%w: body cut short: %v", ErrMalformed, err)
		}
		raw.Write(r.Body)
	}
	r.Raw = raw.Bytes()
	c.srv.mu.Lock()
	c.srv.requests = append(c.srv.requests, *r)
	c.srv.mu.Unlock()
	return r, nil
}

// readChunked reads a chunked body, appending its raw bytes to raw and returning the data.
func (c *Conn) readChunked(raw *bytes.Buffer) ([]byte, error) {
	var body []byte
	for {
		line, err := c.br.ReadString('\n')
		raw.WriteString(line)
		if err != nil {
			return nil, fmt.Errorf("%w: chunk cut short: %v", ErrMalformed, err)
		}
		size, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 || n > maxHead {
			return nil, fmt.Errorf("%w: chunk size %q", ErrMalformed, line)
		}
		if n == 0 {
			break
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(c.br, chunk); err != nil {
			return nil, fmt.Errorf("%w: chunk cut short: %v", ErrMalformed, err)
		}
		raw.Write(chunk)
		body = append(body, chunk[:n]...)
	}
	for { // the trailer section
		line, err := c.br.ReadString('\n')
		raw.WriteString(line)
		if err != nil {
			return nil, fmt.Errorf("%w: trailer cut short: %v", ErrMalformed, err)
		}
		if line == "\r\n" || line == "\n" {
			return body, nil
		}
	}
}

// Write writes raw to the connection as it is: a response, part of one, or bytes nobody
// asked for.
func (c *Conn) Write(raw string) error {
	_, err := io.WriteString(c.nc, raw)
	return err
}

// Stall reads and discards whatever the peer sends, and returns once the peer closes the
// connection or the server shuts down.
func (c *Conn) Stall() {
	io.Copy(io.Discard, c.br)
}

// CloseWrite shuts down the sending side: the peer reads EOF, and may still write.
func (c *Conn) CloseWrite() error { return c.nc.CloseWrite() }

// Reset closes the connection abruptly: the peer gets a TCP RST rather than a FIN, and
// unread data is dropped. Called once the peer has closed its side, it also leaves no socket
// in TIME_WAIT on either side, which keeps tests that open thousands of connections (fuzz
// targets) from running out of ephemeral ports.
func (c *Conn) Reset() error {
	c.nc.SetLinger(0)
	return c.nc.Close()
}
