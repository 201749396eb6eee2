package h1_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bodyDump is a handler that reads the request body and answers what it read, with the
// request's trailers before and after the read.
func bodyDump(w http.ResponseWriter, r *http.Request) {
	before := fmt.Sprint(r.Trailer)
	body, err := io.ReadAll(r.Body)
	// Only whether the read failed: the two servers word their errors differently.
	fmt.Fprintf(w, "body=%q err=%v\ntrailer before=%s after=", body, err != nil, before)
	for _, k := range slices.Sorted(mapKeys(r.Trailer)) {
		fmt.Fprintf(w, "%s=%q ", k, r.Trailer[k])
	}
}

// TestRequestBody checks how request bodies are framed and read.
func TestRequestBody(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		want string // what the handler read; checked on h1
	}{
		{"length", request("POST", "/", "hello", "Content-Length: 5"), `body="hello" err=false`},
		{"length with leading zeros", request("POST", "/", "hello", "Content-Length: 005"), `body="hello" err=false`},
		{"chunked", request("POST", "/", "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), `body="hello, world" err=false`},
		{"chunked with extensions", request("POST", "/", "5;name=value\r\nhello\r\n0;last\r\n\r\n", "Transfer-Encoding: chunked"), `body="hello" err=false`},
		{"chunked in upper-case hex", request("POST", "/", "A\r\n0123456789\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), `body="0123456789" err=false`},
		{"chunked with declared trailers", request("POST", "/", "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
			"Transfer-Encoding: chunked", "Trailer: X-Checksum, x-other"), `trailer before=map[X-Checksum:[] X-Other:[]] after=X-Checksum=["abc"] X-Other=["1"]`},
		{"chunked with an undeclared trailer", request("POST", "/", "5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
			"Transfer-Encoding: chunked"), `after=X-Checksum=["abc"]`},
		{"chunked, malformed size", request("POST", "/", "5x\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), `err=true`},
		{"chunked, missing CRLF after data", request("POST", "/", "5\r\nhelloXX0\r\n\r\n", "Transfer-Encoding: chunked"), `err=true`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, h := differential(t, handle(bodyDump), nil, tc.raw, "POST")
			require.NotEmpty(t, h.responses, "a response")
			assert.Contains(t, h.responses[0].body, tc.want)
		})
	}
}

// TestUnreadBody checks a handler that does not read the request body: the server reads a
// short one to keep the connection, and closes the connection after a long one, saying so.
func TestUnreadBody(t *testing.T) {
	long := strings.Repeat("x", 300<<10) // more than the 256 KiB both servers read for the next request
	chunked := func(s string) string {
		var b strings.Builder
		for len(s) > 0 {
			n := min(len(s), 16<<10)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
			s = s[n:]
		}
		return b.String() + "0\r\n\r\n"
	}
	cases := []struct {
		name   string
		raw    string
		closed bool
	}{
		{"short with a length", request("POST", "/", "0123456789", "Content-Length: 10"), false},
		{"short chunked", request("POST", "/", chunked("0123456789"), "Transfer-Encoding: chunked"), false},
		{"long with a length", request("POST", "/", long, fmt.Sprintf("Content-Length: %d", len(long))), true},
		{"long chunked", request("POST", "/", chunked(long), "Transfer-Encoding: chunked"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "not read")
			}), nil, tc.raw, "POST")
			require.Len(t, h.responses, 1)
			assert.Equal(t, "not read", h.responses[0].body)
			assert.Equal(t, tc.closed, h.closed, "connection closed")
			if tc.closed {
				assert.Equal(t, []string{"close"}, h.responses[0].header("Connection"), "the response says it closes")
			}
		})
	}
}

// TestExpectContinue checks "Expect: 100-continue": the 100 goes out on the handler's first
// read of the body, and never if the handler answers without reading, which then closes
// the connection (the client may never send the body).
func TestExpectContinue(t *testing.T) {
	head := "POST / HTTP/1.1\r\nHost: test.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"

	t.Run("sent on the first read", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				gate := make(chan struct{})
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					<-gate
					body, err := io.ReadAll(r.Body)
					fmt.Fprintf(w, "%s %v", body, err)
				})})
				c := ts.dial(t)
				c.send(head)
				// Nothing may come before the handler reads: a 100 now would be the server's
				// own, not the handler's.
				c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				_, err := c.br.Peek(1)
				require.True(t, isTimeout(err), "bytes before the handler read the body: %v", err)
				close(gate)
				r := c.read("POST")
				assert.Equal(t, "HTTP/1.1 100 Continue", r.status)
				c.send("hello")
				r = c.read("POST")
				assert.Equal(t, "hello <nil>", r.body)
				assert.Empty(t, r.header("Connection"))
				assert.False(t, c.closed(), "the connection is kept")
			})
		}
	})

	t.Run("not sent when the handler does not read", func(t *testing.T) {
		// net/http answers the same, but then waits for the body it never asked for before
		// it closes; h1 closes at once.
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "no thanks", http.StatusForbidden)
				})})
				c := ts.dial(t)
				c.send(head)
				r := c.read("POST")
				assert.Equal(t, "HTTP/1.1 403 Forbidden", r.status)
				assert.Equal(t, []string{"close"}, r.header("Connection"))
				if name == ours {
					assert.True(t, c.eof(), "the connection closes")
				}
			})
		}
	})

	t.Run("sent once for several reads", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					var got []byte
					buf := make([]byte, 2)
					for {
						n, err := r.Body.Read(buf)
						got = append(got, buf[:n]...)
						if err != nil {
							break
						}
					}
					fmt.Fprintf(w, "%s", got)
				})})
				c := ts.dial(t)
				c.send(head)
				assert.Equal(t, "HTTP/1.1 100 Continue", c.read("POST").status)
				c.send("hel")
				c.send("lo")
				r := c.read("POST")
				assert.Equal(t, "HTTP/1.1 200 OK", r.status, "a second 100 would come here")
				assert.Equal(t, "hello", r.body)
			})
		}
	})

	t.Run("with net/http's client", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					fmt.Fprintf(w, "%d", len(body))
				})})
				tr := &http.Transport{ExpectContinueTimeout: waitFor}
				defer tr.CloseIdleConnections()
				req, err := http.NewRequest("POST", ts.url(), strings.NewReader(strings.Repeat("b", 1000)))
				require.NoError(t, err)
				req.Header.Set("Expect", "100-continue")
				start := time.Now()
				res, err := tr.RoundTrip(req)
				require.NoError(t, err)
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				assert.Equal(t, "1000", string(body))
				assert.Less(t, time.Since(start), waitFor/2, "the client waited out its ExpectContinueTimeout: no 100 came")
			})
		}
	})
}

// TestBodyReadAfterClose checks that a handler's Close ends its reads of the body, as the
// http.Request documentation promises.
func TestBodyReadAfterClose(t *testing.T) {
	_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, r.Body.Close())
		n, err := r.Body.Read(make([]byte, 10))
		fmt.Fprintf(w, "%d %v", n, err)
	}), nil, request("POST", "/", "hello", "Content-Length: 5"), "POST")
	require.Len(t, h.responses, 1)
	assert.Equal(t, "0 "+http.ErrBodyReadAfterClose.Error(), h.responses[0].body)
}
