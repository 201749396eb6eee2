package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// onePicker always picks the same endpoint.
type onePicker string

func (p onePicker) Pick(sluice.PickInfo) (sluice.PickResult, error) {
	return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: string(p)}}, nil
}

// pipeUpstream is an upstream on the far side of a net.Pipe: for every connection the proxy
// dials, it reads one request head, writes response, and closes the connection.
type pipeUpstream struct {
	response []byte
	dials    atomic.Int32
	done     chan struct{} // closed by each connection's goroutine; one slot per dial
}

func (u *pipeUpstream) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	u.dials.Add(1)
	client, server := net.Pipe()
	go func() {
		defer func() { u.done <- struct{}{} }()
		defer server.Close()
		br := bufio.NewReader(server)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		server.Write(u.response)
	}()
	return client, nil
}

// result is what a client of the proxy got.
type result struct {
	status  int
	header  http.Header // trailers included
	body    []byte
	aborted bool // the response was broken off
}

// serveRaw sends one request through a Proxy, served by a real server, whose only upstream
// answers with raw.
func serveRaw(t testing.TB, method string, raw []byte) result {
	u := &pipeUpstream{response: raw, done: make(chan struct{}, 4)}
	p := &Proxy{Picker: onePicker("10.0.0.1:80"), DialContext: u.dial, Retry: Retry{MaxTries: 1}}
	front := httptest.NewServer(p)
	req, _ := http.NewRequest(method, front.URL+"/a", nil)
	var r result
	res, err := front.Client().Do(req)
	if err != nil {
		r.aborted = true
	} else {
		r.status, r.header = res.StatusCode, res.Header
		r.body, err = io.ReadAll(res.Body)
		res.Body.Close()
		r.aborted = err != nil
		for k, vv := range res.Trailer {
			r.header[k] = vv
		}
	}
	front.Close()
	p.CloseIdleConnections()
	for range u.dials.Load() {
		select {
		case <-u.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the upstream connection was left hanging for response %q", raw)
		}
	}
	return r
}

func TestH1Responses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		method     string
		raw        string
		wantStatus int
		wantBody   string
		wantHeader map[string]string
		wantAbort  bool
	}{
		{name: "content-length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
			wantStatus: 200, wantBody: "hello", wantHeader: map[string]string{"X-A": "1"}},
		{name: "chunked with trailer", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" +
			"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-T: done\r\n\r\n",
			wantStatus: 200, wantBody: "hello", wantHeader: map[string]string{"X-T": "done"}},
		{name: "until close", raw: "HTTP/1.0 200 OK\r\n\r\nstream", wantStatus: 200, wantBody: "stream"},
		{name: "no content", raw: "HTTP/1.1 204 No Content\r\n\r\n", wantStatus: 204},
		{name: "not modified with length", raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", wantStatus: 304},
		{name: "head", method: http.MethodHead, raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
			wantStatus: 200, wantHeader: map[string]string{"Content-Length": "10"}},
		{name: "early hints then ok", raw: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", wantStatus: 200, wantBody: "ok"},
		{name: "custom reason", raw: "HTTP/1.1 299 Fine Thanks\r\nContent-Length: 0\r\n\r\n", wantStatus: 299},
		{name: "hop-by-hop removed", raw: "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nContent-Length: 0\r\n\r\n",
			wantStatus: 200, wantHeader: map[string]string{"X-Hop": "", "Keep-Alive": "", "Connection": ""}},
		{name: "malformed status line", raw: "HTTP/1.1 2x0 OK\r\n\r\n", wantStatus: 502},
		{name: "not http", raw: "SSH-2.0-OpenSSH\r\n\r\n", wantStatus: 502},
		{name: "no response", raw: "", wantStatus: 502},
		{name: "conflicting lengths", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", wantStatus: 502},
		{name: "unknown transfer coding", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", wantStatus: 502},
		{name: "negative length", raw: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantStatus: 502},
		{name: "switching protocols unasked", raw: "HTTP/1.1 101 Switching Protocols\r\n\r\n", wantStatus: 502},
		{name: "truncated body aborts", raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel", wantAbort: true},
		{name: "bad chunk size aborts", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantAbort: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			if tc.wantStatus == http.StatusBadGateway {
				tc.wantBody = "Bad Gateway\n"
			}
			r := serveRaw(t, method, []byte(tc.raw))
			assert.Equal(t, tc.wantAbort, r.aborted, "whether the client connection is aborted")
			if tc.wantAbort {
				return
			}
			assert.Equal(t, tc.wantStatus, r.status, "status for %q", tc.raw)
			assert.Equal(t, tc.wantBody, string(r.body))
			for k, v := range tc.wantHeader {
				assert.Equal(t, v, r.header.Get(k), "field %s", k)
			}
		})
	}
}

// TestH1StaleConnection checks that a GET on a pooled connection the upstream has closed is
// sent again on a new connection: nothing was processed, as no byte came back.
func TestH1StaleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				// Answer one request as if keeping the connection, then close it, the way a
				// server whose idle timeout just fired does.
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil || len(line) <= 2 {
						break
					}
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	p := &Proxy{Picker: onePicker(ln.Addr().String()), Retry: Retry{MaxTries: 1}}
	defer p.CloseIdleConnections()
	srv := httptest.NewServer(p)
	defer srv.Close()
	for i := range 3 {
		res, err := srv.Client().Get(srv.URL)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode, "request %d", i)
		assert.Equal(t, "ok", string(body))
	}
	assert.EqualValues(t, 3, accepted.Load(), "each request after the first needed a new connection")
}

// FuzzH1Response feeds arbitrary upstream responses to the lean HTTP/1.1 client. The proxy
// must never panic (other than the abort that cuts a truncated response), never hang, answer
// 502 to what it cannot parse, and forward only what net/http's own parser reads the same way:
// the same status and the same body.
func FuzzH1Response(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nFolded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 999 Whatever\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		// Found by this target: faulty framings the proxy once forwarded or broke off (the
		// last one tripped the check itself).
		"HTTP/1.0 200 \nTrAnsfer-EnCoding:Chunked\n\n000",
		"HTTP/1.1 200 \nTrAnsfer-EnCoding:Chunked\nContent-Length:\n\n",
		"HTTP/1.1 200 \nTrAnsfer-EnCoding:Chunked\n\r\n0\n\n",
		"HTTP/1.1 200 \nTrAnsfer-EnCoding:Chunked\n\n0\r\n\n",
		"HTTP/1.1 200 \nTrAnsfer-EnCoding:Chunked \n\n5\r\n00000\r\n0\r\n\n0",
		"HTTP/1.0 100 \n\nHTTP/1.0 200 \n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r := serveRaw(t, http.MethodGet, raw)
		if r.status == http.StatusBadGateway && string(r.body) == "Bad Gateway\n" {
			return // refused: always allowed
		}
		// Forwarded, maybe in part: net/http must read the same response.
		br := bufio.NewReader(bytes.NewReader(raw))
		std, err := http.ReadResponse(br, nil)
		for err == nil && std.StatusCode < 200 && std.StatusCode != http.StatusSwitchingProtocols {
			std, err = http.ReadResponse(br, nil) // the proxy passes 1xx responses on apart
		}
		if err != nil {
			t.Fatalf("forwarded a response net/http rejects (%v): %q", err, raw)
		}
		body, err := io.ReadAll(std.Body)
		if r.aborted {
			if err == nil {
				t.Fatalf("broke off a response net/http reads whole: %q", raw)
			}
			return
		}
		if err != nil && strings.Contains(err.Error(), "trailer") && bytes.Equal(body, r.body) {
			// The proxy reads a trailer section ended by a bare LF, as RFC 9112 §2.2 lets
			// a recipient do; net/http wants CRLFs there.
			return
		}
		if err != nil {
			t.Fatalf("forwarded a whole body that net/http fails to read (%v): %q", err, raw)
		}
		if std.StatusCode != r.status || !bytes.Equal(body, r.body) {
			t.Fatalf("forwarded %d %q, net/http reads %d %q, for %q", r.status, r.body, std.StatusCode, body, raw)
		}
	})
}

// TestH1InformationalResponses checks that 1xx responses are bounded by their bytes, not their
// number: twenty 103s, each passed on, precede a response that is forwarded; an upstream that
// sends 103s without end fails once they pass the head budget, on the one connection it was
// given; and a reused connection that sends a 103 and closes is not taken for a stale one and
// the request is not sent again.
func TestH1InformationalResponses(t *testing.T) {
	const hint = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
	t.Run("twenty 103s", func(t *testing.T) {
		srv := upstreamtest.Start(t, upstreamtest.Respond(strings.Repeat(hint, 20)+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		p := &Proxy{Picker: onePicker(srv.Addr()), Retry: Retry{MaxTries: 1}}
		defer p.CloseIdleConnections()
		front := httptest.NewServer(p)
		defer front.Close()
		hints := 0
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
				hints++
				return nil
			},
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL, nil)
		res, err := front.Client().Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode, "a response after twenty 1xx is forwarded")
		assert.Equal(t, "ok", string(body))
		assert.Equal(t, 20, hints, "every 103 reached the client")
	})
	t.Run("endless 103s", func(t *testing.T) {
		srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
			if _, err := c.ReadRequest(); err != nil {
				return
			}
			for c.Write(hint) == nil {
			}
		})
		cl := newTestH1()
		defer cl.closeIdle()
		_, _, err := leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/")
		assert.ErrorIs(t, err, errHeaderTooLarge, "a flood of 1xx fails by size")
		assert.Equal(t, 1, srv.Accepted(), "the client did not dial again")
	})
	t.Run("103 then close on a reused connection", func(t *testing.T) {
		srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
			for n := 0; ; n++ {
				if _, err := c.ReadRequest(); err != nil {
					return
				}
				if n == 1 || c.ID() > 1 {
					c.Write(hint)
					return
				}
				c.Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		})
		cl := newTestH1()
		defer cl.closeIdle()
		_, _, err := leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/")
		require.NoError(t, err)
		_, _, err = leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/")
		assert.Error(t, err, "a response cut off after its 103")
		assert.Len(t, srv.Requests(), 2, "the request was sent once: a 103 came back, so it was processed")
	})
}

// TestH1BodyTimeout checks bodyTimeout: a body whose upstream stalls fails with an error that
// matches os.ErrDeadlineExceeded and its connection is closed, while a body that trickles in
// for longer than bodyTimeout, but never pauses that long, is read whole; and a connection left
// idle after such a body is reused without tripping the body's old deadline.
func TestH1BodyTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	t.Run("stall", func(t *testing.T) {
		srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
			if _, err := c.ReadRequest(); err != nil {
				return
			}
			c.Write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
			c.Stall()
		})
		cl := newTestH1()
		cl.bodyTimeout = timeout
		defer cl.closeIdle()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second) // fail, not hang, without it
		defer cancel()
		start := time.Now()
		_, body, err := leanDo(ctx, cl, http.MethodGet, srv.Addr(), "/")
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "a stalled body times out")
		assert.Equal(t, "hello", string(body), "the bytes before the stall were read")
		assert.GreaterOrEqual(t, time.Since(start), timeout, "not before bodyTimeout")
		assert.Less(t, time.Since(start), 3*time.Second, "by bodyTimeout, not the request's end")
		require.Eventually(t, func() bool { return srv.Closed() == 1 }, 5*time.Second, time.Millisecond,
			"the connection was closed")
	})
	t.Run("trickle", func(t *testing.T) {
		const pieces = 8 // 8 × 40ms = 320ms, over three times bodyTimeout
		srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
			for {
				if _, err := c.ReadRequest(); err != nil {
					return
				}
				c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				tick := time.NewTicker(timeout * 2 / 5)
				for range pieces {
					<-tick.C
					c.Write("1\r\nx\r\n")
				}
				tick.Stop()
				c.Write("0\r\n\r\n")
			}
		})
		cl := newTestH1()
		cl.bodyTimeout = timeout
		defer cl.closeIdle()
		_, body, err := leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/")
		require.NoError(t, err, "a body that never pauses for bodyTimeout is read whole")
		assert.Equal(t, strings.Repeat("x", pieces), string(body))

		// Idle past the last deadline the body set; the connection must still serve.
		<-time.After(2 * timeout)
		_, body, err = leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/")
		require.NoError(t, err, "the reused connection kept no body deadline")
		assert.Equal(t, strings.Repeat("x", pieces), string(body))
		assert.Equal(t, 1, srv.Accepted(), "the connection was reused")
	})
}

// FuzzH1Header checks the lean client's in-place header parser against textproto, which
// net/http's client reads with: whatever it accepts must come out field for field as
// textproto reads it, with the same bytes left after it; what it refuses is left to textproto.
// The input is given whole, and cut short, so that a head still arriving is refused too; it
// is parsed into a map left over from another response, as a pooled exchange's is.
func FuzzH1Header(f *testing.F) {
	for _, s := range []string{
		"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"content-type:text/plain\nx-a:  1 \t\nX-A: 2\n\nrest",
		"A: 1\r\n b\r\n\r\n",        // obs-fold
		" A: 1\r\n\r\n",             // a leading space
		"A : 1\r\n\r\n",             // a space before the colon
		"A: 1\r\x00\r\n\r\n",        // a control byte
		"A: \x80\xff\r\nB:\r\n\r\n", // obs-text, an empty value
		"A\r\n\r\n",                 // no colon
		": 1\r\n\r\n",               // no name
		"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
		"A: 1\r\r\n\r\n",
		"\r\n",
		"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\nI: 9\r\nJ: 10\r\nK: 11\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, in := range []string{raw, raw[:len(raw)/2]} {
			var vals [4]string
			cc := &h1Conn{br: bufio.NewReaderSize(strings.NewReader(in), 16<<10)}
			cc.br.Peek(1) // fill the buffer, as reading the status line does
			stale := textproto.MIMEHeader{"Stale": {"from the last response"}}
			got, ok := cc.parseBufferedHeader(stale, vals[:])
			rest, _ := io.ReadAll(cc.br)
			if !ok {
				if string(rest) != in {
					t.Fatalf("refused %q but consumed input, left %q", in, rest)
				}
				continue
			}
			tr := textproto.NewReader(bufio.NewReader(strings.NewReader(in)))
			want, err := tr.ReadMIMEHeader()
			if err != nil {
				t.Fatalf("accepted %q, which textproto refuses: %v", in, err)
			}
			if !reflect.DeepEqual(map[string][]string(got), map[string][]string(want)) {
				t.Fatalf("%q: got %q, textproto reads %q", in, got, want)
			}
			wantRest, _ := io.ReadAll(tr.R)
			if string(rest) != string(wantRest) {
				t.Fatalf("%q: left %q, textproto leaves %q", in, rest, wantRest)
			}
		}
	})
}
