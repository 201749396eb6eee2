package h1

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzConn is a connection whose client sent in and then closed its side: the server reads
// in, and what it writes is kept. It is not a socket, so the server serves it without the
// idle peek and without lingering: one input is one synchronous run of conn.serve.
type fuzzConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *fuzzConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *fuzzConn) Close() error                { return nil }
func (c *fuzzConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *fuzzConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *fuzzConn) SetDeadline(t time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(t time.Time) error { return nil }

// FuzzRequest feeds arbitrary bytes to the server as what a client sent on one connection.
// Properties: the server never panics; every request the handler gets has a body that
// matches its framing (a Content-Length body read to its end holds exactly that many bytes;
// a chunked one has no Content-Length); and every answer the client gets is either the
// handler's or an error status the server chose, in a stream the client can parse.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /p?q=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello",
		"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
		"POST /u HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
		"GET http://example.com/p HTTP/1.1\r\nHost: other\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
		"GET /a%2Fb HTTP/1.1\nhost: a\nx-lower: 1\n\n",
		"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}

	var mu sync.Mutex
	var violations []string // what the handler saw wrong; mu protects it
	var logs bytes.Buffer   // the server's log; mu protects it
	srv := &http.Server{
		DisableGeneralOptionsHandler: true, // every answer below 400 is the handler's
		ErrorLog: log.New(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logs.Write(p)
		}), "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			var bad []string
			switch {
			case r.ContentLength >= 0 && len(r.TransferEncoding) > 0:
				bad = append(bad, fmt.Sprintf("ContentLength %d with TransferEncoding %q", r.ContentLength, r.TransferEncoding))
			case err == nil && r.ContentLength >= 0 && int64(len(body)) != r.ContentLength:
				bad = append(bad, fmt.Sprintf("a body of %d bytes read to its end, for a ContentLength of %d", len(body), r.ContentLength))
			case r.ContentLength < 0 && (len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked"):
				bad = append(bad, fmt.Sprintf("ContentLength %d without chunked framing: %q", r.ContentLength, r.TransferEncoding))
			}
			if cl := r.Header["Content-Length"]; len(cl) == 1 {
				digits := strings.TrimLeft(cl[0], "0")
				if digits == "" {
					digits = "0"
				}
				if n, err := strconv.ParseInt(digits, 10, 64); err != nil || n != r.ContentLength {
					bad = append(bad, fmt.Sprintf("ContentLength %d for the field Content-Length: %s", r.ContentLength, cl[0]))
				}
			}
			if len(r.Header["Content-Length"]) > 1 || len(r.Header["Transfer-Encoding"]) > 0 {
				bad = append(bad, fmt.Sprintf("framing fields left for the handler: %q", r.Header))
			}
			if len(bad) > 0 {
				mu.Lock()
				violations = append(violations, fmt.Sprintf("%s %q: %s", r.Method, r.RequestURI, strings.Join(bad, "; ")))
				mu.Unlock()
			}
			w.Header().Set("X-Handler", "1")
			if r.Method == http.MethodHead {
				// The client parses every answer as a GET's: a HEAD's says it has no body.
				w.Header().Set("Content-Length", "0")
				return
			}
			fmt.Fprintf(w, "%d", len(body))
		}),
	}
	s := New(srv)

	f.Fuzz(func(t *testing.T, in []byte) {
		mu.Lock()
		violations, logs = nil, bytes.Buffer{}
		mu.Unlock()

		fc := &fuzzConn{in: bytes.NewReader(in)}
		c := newConn(s, fc, context.Background())
		if !s.tracker.AddConn(c) {
			t.Fatal("the server refused the connection")
		}
		c.serve()

		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(logs.String(), "panic") {
			t.Fatalf("the server panicked on %q:\n%s", in, logs.String())
		}
		for _, v := range violations {
			t.Errorf("on %q the handler got %s", in, v)
		}
		// Every answer parses, and is the handler's, a 1xx, or an error status.
		br := bufio.NewReader(bytes.NewReader(fc.out.Bytes()))
		for br.Buffered() > 0 || peekable(br) {
			res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatalf("on %q the server wrote what a client cannot read (%v):\n%q", in, err, fc.out.Bytes())
			}
			if res.StatusCode >= 200 && res.Header.Get("X-Handler") == "" && res.StatusCode < 400 {
				t.Errorf("on %q the server answered %s itself", in, res.Status)
			}
			// A HEAD answer has no body; the rest are framed by their own fields.
			if _, err := io.Copy(io.Discard, res.Body); err != nil && res.Header.Get("X-Handler") == "" {
				t.Errorf("on %q the server's own answer %s has a body the client cannot read: %v", in, res.Status, err)
			}
			if res.Close {
				break
			}
		}
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// peekable reports whether br has another byte to read.
func peekable(br *bufio.Reader) bool {
	_, err := br.Peek(1)
	return err == nil
}
