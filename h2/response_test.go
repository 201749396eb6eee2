package h2_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestResponse checks responses as a raw client sees their frames (header blocks, DATA,
// END_STREAM) and as x/net's client sees them over h2c and TLS.
func TestResponse(t *testing.T) {
	big := randomBody(1 << 20)
	cases := []struct {
		name     string
		method   string
		handler  http.HandlerFunc
		check    func(t *testing.T, s *stream) // on h2's frames, beside the comparison
		noLength bool                          // h2 may send a content-length where net/http does not
	}{
		{"implicit 200, no body", "GET", func(w http.ResponseWriter, r *http.Request) {}, func(t *testing.T, s *stream) {
			assert.Equal(t, "200", s.status())
			assert.Empty(t, s.field("content-type"), "nothing to sniff")
		}, false},
		{"implicit 200 with a body", "GET", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, []string{"5"}, s.field("content-length"), "computed for a body written before the handler returned")
			assert.Equal(t, []string{"text/plain; charset=utf-8"}, s.field("content-type"), "sniffed")
		}, false},
		{"sniffed HTML", "GET", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<!DOCTYPE html><p>hello</p>")
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, []string{"text/html; charset=utf-8"}, s.field("content-type"))
		}, false},
		{"sniffed binary in two writes", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte{0, 1})
			w.Write([]byte{2, 3})
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, []string{"application/octet-stream"}, s.field("content-type"))
		}, false},
		{"Content-Type set", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "<html>")
		}, nil, false},
		{"Content-Type nil suppresses sniffing", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<html>")
		}, func(t *testing.T, s *stream) {
			assert.Empty(t, s.field("content-type"))
		}, false},
		{"Content-Length set", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		}, nil, false},
		// net/http computes the length only of a body that fit its 4 KiB buffer; a server
		// that buffers more may compute more, and that is right too.
		{"large body", "GET", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, strings.Repeat("x", 64<<10))
		}, nil, true},
		{"1 MiB", "GET", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, big)
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, len(big), s.body.Len())
			assert.True(t, s.body.String() == big, "the body as written")
		}, true},
		{"status and fields", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("X-Empty", "")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "short and stout")
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, []string{"a=1", "b=2"}, s.field("set-cookie"), "one field a value")
		}, false},
		{"http.Error", "GET", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no such thing", http.StatusNotFound)
		}, nil, false},
		{"field values a client must not get", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Newline", "a\nb")
			w.Header().Set("X-Nul", "a\x00b")
			w.Header().Set("X Space", "v")
			w.Header().Set("X-Fine", "ok")
		}, func(t *testing.T, s *stream) {
			// RFC 9113 §8.2.1: field names are tokens, values hold no CR, LF or NUL.
			assert.Empty(t, s.field("x-newline"))
			assert.Empty(t, s.field("x-nul"))
			assert.Empty(t, s.field("x space"))
			assert.Equal(t, []string{"ok"}, s.field("x-fine"))
		}, false},
		{"WriteHeader twice", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, "created")
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, "201", s.status())
		}, false},
		{"103 Early Hints", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Link", "</style.css>; rel=preload; as=style")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("Content-Type", "text/css")
			io.WriteString(w, "body{}")
		}, func(t *testing.T, s *stream) {
			require.Len(t, s.blocks, 2, "an informational block, then the final one")
			assert.Equal(t, []string{"103", "200"}, s.field(":status"))
			assert.Equal(t, []string{"</style.css>; rel=preload; as=style", "</style.css>; rel=preload; as=style"}, s.field("link"),
				"the 103's fields, and the final response's, which still holds them")
			assert.Equal(t, "body{}", s.body.String())
		}, false},
		{"two 1xx", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("Link", "</b.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, []string{"103", "103", "200"}, s.field(":status"))
		}, false},
		{"204 with a body", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
			io.WriteString(w, "not allowed")
		}, func(t *testing.T, s *stream) {
			assert.Empty(t, s.body.String(), "RFC 9110 §15.3.5: no content")
			assert.True(t, s.endStream)
		}, false},
		{"304 with a body", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
			io.WriteString(w, "not allowed")
		}, func(t *testing.T, s *stream) {
			assert.Empty(t, s.body.String(), "RFC 9110 §15.4.5: no content")
		}, false},
		{"HEAD with a body written", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}, func(t *testing.T, s *stream) {
			assert.Empty(t, s.body.String(), "no body for HEAD")
			assert.True(t, s.endStream)
		}, false},
		{"HEAD with Content-Length set", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, []string{"1000"}, s.field("content-length"), "kept: it is the length a GET would get")
			assert.Empty(t, s.body.String())
		}, false},
		{"trailer declared in Trailer", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Checksum, X-Count")
			io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc")
			w.Header().Set("X-Count", "1")
		}, func(t *testing.T, s *stream) {
			require.Len(t, s.blocks, 2, "a header block, then the trailer")
			assert.Equal(t, []string{"abc"}, s.field("x-checksum"))
			for _, f := range s.blocks[1] {
				assert.False(t, strings.HasPrefix(f.Name, ":"), "RFC 9113 §8.1: no pseudo-header in a trailer, got %s", f.Name)
			}
		}, false},
		{"trailer by TrailerPrefix", "GET", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		}, func(t *testing.T, s *stream) {
			assert.Equal(t, []string{"late"}, s.field("x-late"))
		}, false},
		{"trailer without a body", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T")
			w.Header().Set("X-T", "v")
		}, nil, false},
		{"trailer declared, never set", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "body")
		}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("raw", func(t *testing.T) {
				h := rawRuns(t, handle(tc.handler), nil, rawOptions{noLength: tc.noLength}, func(c *rawConn) uint32 {
					return c.request(tc.method, "/", true)
				})[ours].s
				assert.True(t, h.endStream, "the stream ends with END_STREAM")
				if tc.check != nil {
					tc.check(t, h)
				}
			})
			forModes(t, func(t *testing.T, mode string) {
				got := make(map[string]*response)
				for _, name := range fronts {
					c := start(t, name, mode, &http.Server{Handler: tc.handler}).client(t)
					got[name] = c.do(c.request(tc.method, "/", nil))
				}
				assert.Equal(t, got[stdlib].render(tc.noLength), got[ours].render(tc.noLength), "what a client sees of h2 (right) differs from net/http (left)")
				assert.NoError(t, got[ours].err)
			})
		})
	}
}

// TestBodyNotAllowed checks what Write returns to a handler whose response may have no body.
func TestBodyNotAllowed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		status int
	}{
		{"204", "GET", http.StatusNoContent},
		{"304", "GET", http.StatusNotModified},
		{"HEAD", "HEAD", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(map[string]string)
			for _, name := range fronts {
				errs := make(chan string, 1)
				ts := start(t, name, h2c, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(tc.status)
					n, err := io.WriteString(w, "body")
					errs <- fmt.Sprintf("n=%d ErrBodyNotAllowed=%v", n, errors.Is(err, http.ErrBodyNotAllowed))
				})})
				c := ts.client(t)
				res := c.do(c.request(tc.method, "/", nil))
				require.NoError(t, res.err)
				got[name] = recv(t, errs, "the handler's write")
			}
			assert.Equal(t, got[stdlib], got[ours])
			t.Logf("net/http: %s", got[stdlib])
		})
	}
}

// TestConnectionHeaders checks that connection-specific fields a handler sets stay off the
// wire. RFC 9113 §8.2.2: a message holding Connection, Keep-Alive, Proxy-Connection,
// Transfer-Encoding or Upgrade is malformed, so a server must not generate one. net/http
// drops only some of them (see the log), so this asserts the RFC on h2, not equality.
func TestConnectionHeaders(t *testing.T) {
	forbidden := []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, h2c, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "keep-alive")
				w.Header().Set("Keep-Alive", "timeout=5")
				w.Header().Set("Proxy-Connection", "keep-alive")
				w.Header().Set("Transfer-Encoding", "chunked")
				w.Header().Set("Upgrade", "websocket")
				w.Header().Set("X-Kept", "yes")
				io.WriteString(w, "body")
			})})
			c := ts.dialRaw(t)
			s := c.wait(c.request("GET", "/", true))
			require.True(t, s.endStream, "a complete response: %s", s)
			assert.Equal(t, []string{"yes"}, s.field("x-kept"))
			assert.Equal(t, "body", s.body.String())
			var sent []string
			for _, f := range forbidden {
				if len(s.field(f)) > 0 {
					sent = append(sent, f)
				}
			}
			if name == stdlib {
				t.Logf("net/http sends %q", sent)
				return
			}
			assert.Empty(t, sent, "connection-specific fields sent")
		})
	}
}

// TestConnectionClose checks that a handler's Connection: close, which HTTP/2 cannot send,
// still ends the connection as net/http does: the field is dropped, the response completes,
// and a GOAWAY tells the client to open no more streams on the connection.
func TestConnectionClose(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, h2c, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close")
				io.WriteString(w, "bye")
			})})
			c := ts.dialRaw(t)
			s := c.wait(c.request("GET", "/", true))
			require.True(t, s.endStream, "a complete response: %s", s)
			assert.Equal(t, "bye", s.body.String())
			assert.Empty(t, s.field("connection"))
			// net/http closes the connection a second after its GOAWAY, unless the client
			// does first; the GOAWAY is what matters.
			ga := c.finalGoAway()
			require.NotNil(t, ga, "a GOAWAY")
			assert.Equal(t, goAway{lastStreamID: 1, code: http2.ErrCodeNo}, *ga)
		})
	}
}
