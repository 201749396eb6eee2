package h2_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// counting is a handler that counts its calls, reads the body and answers what it read.
type counting struct{ calls atomic.Int32 }

func (h *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.calls.Add(1)
	b, err := io.ReadAll(r.Body)
	fmt.Fprintf(w, "read %q, err=%v", b, err)
}

// malformed names how a server answered a malformed request, if in one of the ways RFC 9113
// §8.1.1 allows: "a stream error of type PROTOCOL_ERROR", which "for malformed requests" may
// follow a response ("a server MAY send an HTTP response prior to closing or resetting the
// stream"), so a whole 4xx response counts too (§8.2.1 even says a 400 SHOULD be sent for a
// bad field). It returns "" for any other answer.
func malformed(s *stream) string {
	st := s.status()
	switch {
	case s.endStream && strings.HasPrefix(st, "4"):
		return "a whole " + st + " response"
	case !s.ended || s.endStream || s.rst != http2.ErrCodeProtocol:
		return ""
	case st == "":
		return "RST_STREAM PROTOCOL_ERROR"
	case strings.HasPrefix(st, "4"):
		return "a " + st + " response cut by RST_STREAM PROTOCOL_ERROR"
	}
	return ""
}

// TestMalformed checks requests RFC 9113 calls malformed (§8.1.1, §8.2, §8.3): each must be
// answered as malformed (see malformed) and leave the connection working, and a request
// whose header is malformed never reaches the handler. The RFC allows several answers, so h2
// is held to the RFC, not to net/http's choice among them; the test logs where the two
// chose differently, and where net/http does not treat the request as malformed at all.
func TestMalformed(t *testing.T) {
	headers := func(end bool, pairs ...string) func(c *rawConn) uint32 {
		return func(c *rawConn) uint32 {
			id := c.newStream()
			c.writeHeaders(id, end, pairs...)
			return id
		}
	}
	getWith := func(pairs ...string) func(c *rawConn) uint32 {
		return headers(true, append(pseudoFields("GET", "/"), pairs...)...)
	}
	cases := []struct {
		name    string
		script  func(c *rawConn) uint32
		reaches bool // the handler may run: the header was fine, the body was not
	}{
		// Sections are RFC 9113's unless named otherwise.
		{"uppercase field name (§8.2.1)", getWith("X-Upper", "v"), false},
		{"field name with a space (§8.2.1)", getWith("x y", "v"), false},
		{"empty field name (§8.2.1)", getWith("", "v"), false},
		{"field value with LF (§8.2.1)", getWith("x-v", "a\nb"), false},
		{"field value with CR (§8.2.1)", getWith("x-v", "a\rb"), false},
		{"field value with NUL (§8.2.1)", getWith("x-v", "a\x00b"), false},
		{"field value with leading space (§8.2.1)", getWith("x-v", " v"), false},
		{"field value with trailing tab (§8.2.1)", getWith("x-v", "v\t"), false},
		{"connection (§8.2.2)", getWith("connection", "keep-alive"), false},
		{"keep-alive (§8.2.2)", getWith("keep-alive", "timeout=5"), false},
		{"proxy-connection (§8.2.2)", getWith("proxy-connection", "keep-alive"), false},
		{"transfer-encoding (§8.2.2)", getWith("transfer-encoding", "chunked"), false},
		{"upgrade (§8.2.2)", getWith("upgrade", "websocket"), false},
		{"te other than trailers (§8.2.2)", getWith("te", "gzip"), false},
		{"missing :path (§8.3.1)", headers(true, ":method", "GET", ":scheme", "https", ":authority", "a"), false},
		{"missing :method (§8.3.1)", headers(true, ":scheme", "https", ":authority", "a", ":path", "/"), false},
		{"missing :scheme (§8.3.1)", headers(true, ":method", "GET", ":authority", "a", ":path", "/"), false},
		{"empty :path (§8.3.1)", headers(true, pseudoFields("GET", "")...), false},
		{"two :path (§8.3.1)", getWith(":path", "/again"), false},
		{"unknown pseudo-header (§8.3)", getWith(":foo", "bar"), false},
		{"response pseudo-header (§8.3)", getWith(":status", "200"), false},
		{"pseudo-header after a field (§8.3)", headers(true, ":method", "GET", ":scheme", "https", "x-a", "b", ":path", "/"), false},
		{"CONNECT with :path (§8.5)", headers(true, ":method", "CONNECT", ":authority", "a:443", ":path", "/"), false},
		{"content-length not a number (RFC 9110 §8.6)", getWith("content-length", "five"), false},
		{"two content-lengths (RFC 9110 §8.6)", func(c *rawConn) uint32 {
			id := c.newStream()
			c.writeHeaders(id, false, append(pseudoFields("POST", "/"), "content-length", "1", "content-length", "2")...)
			c.writeData(id, true, "x")
			return id
		}, false},
		{"content-length with no DATA (§8.1.1)", headers(true, append(pseudoFields("POST", "/"), "content-length", "5")...), true},
		{"DATA over content-length (§8.1.1)", func(c *rawConn) uint32 {
			id := c.newStream()
			c.writeHeaders(id, false, append(pseudoFields("POST", "/"), "content-length", "2")...)
			c.writeData(id, true, "hello")
			return id
		}, true},
		{"DATA under content-length (§8.1.1)", func(c *rawConn) uint32 {
			id := c.newStream()
			c.writeHeaders(id, false, append(pseudoFields("POST", "/"), "content-length", "10")...)
			c.writeData(id, true, "hello")
			return id
		}, true},
		{"pseudo-header in trailers (§8.1)", func(c *rawConn) uint32 {
			id := c.newStream()
			c.writeHeaders(id, false, pseudoFields("POST", "/")...)
			c.writeData(id, false, "body")
			c.writeHeaders(id, true, ":path", "/", "x-t", "v")
			return id
		}, true},
		{"trailers without END_STREAM (§8.1)", func(c *rawConn) uint32 {
			id := c.newStream()
			c.writeHeaders(id, false, pseudoFields("POST", "/")...)
			c.writeData(id, false, "body")
			c.writeHeaders(id, false, "x-t", "v")
			return id
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			results := make(map[string]*stream)
			calls := make(map[string]int32)
			for _, name := range fronts {
				h := new(counting)
				ts := start(t, name, h2c, &http.Server{Handler: h})
				c := ts.dialRaw(t)
				s := c.wait(tc.script(c))
				assert.True(t, c.alive(), "%s: the connection carries on after a stream error", name)
				results[name], calls[name] = s, h.calls.Load()
			}
			std, h := results[stdlib], results[ours]
			switch ks, kh := malformed(std), malformed(h); {
			case ks == "":
				t.Logf("net/http does not treat this as malformed; it answers:\n%s", std)
			case ks != kh:
				t.Logf("net/http answers with %s, h2 with %q", ks, kh)
			}
			assert.NotEmpty(t, malformed(h), "h2: not answered as malformed:\n%s", h)
			if !tc.reaches {
				assert.Zero(t, calls[ours], "the handler ran for a malformed request")
			}
		})
	}
}

// TestMaxHeaderBytes checks the limit on a request's header list: a list well under
// MaxHeaderBytes reaches the handler, one well over it does not, and the connection keeps
// working with its HPACK state intact. net/http allows some slack over MaxHeaderBytes, so
// the sizes stay clear of the band between.
//
// RFC 9113 §10.5.1: a field block over SETTINGS_MAX_HEADER_LIST_SIZE risks "being treated as
// malformed", and a server "can send an HTTP 431"; net/http answers 431 when the block fits
// in one frame. A block far over the limit is also a denial-of-service risk, which §10.5 lets
// a server end as a connection error: net/http does so (PROTOCOL_ERROR) as soon as it sees a
// frame of the block it cannot take, to spare itself decoding a CONTINUATION flood. For those
// cases h2 may do either.
func TestMaxHeaderBytes(t *testing.T) {
	const limit = 4096
	// Letters in an order HPACK's Huffman code cannot shrink much.
	filler := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteByte("qzjxkvwy"[i*7%8])
		}
		return b.String()
	}
	fields := func(n, size int) []string {
		var pairs []string
		for i := range n {
			pairs = append(pairs, fmt.Sprintf("x-big-%d", i), filler(size))
		}
		return pairs
	}
	for _, tc := range []struct {
		name    string
		fields  []string
		fits    bool
		farOver bool // the server may end the connection instead
	}{
		{"under", fields(1, limit/2), true, false},
		{"over, in one frame", fields(8, 1000), false, false},
		{"far over, across CONTINUATION frames", fields(60, 1000), false, true},
		{"far over, in one field", fields(1, 10*limit), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results := make(map[string]*stream)
			for _, name := range fronts {
				h := new(counting)
				ts := start(t, name, h2c, &http.Server{Handler: h, MaxHeaderBytes: limit})
				c := ts.dialRaw(t)
				if n, ok := c.settings[http2.SettingMaxHeaderListSize]; ok {
					assert.GreaterOrEqual(t, n, uint32(limit), "%s: SETTINGS_MAX_HEADER_LIST_SIZE", name)
				}
				// The big fields first: x-probe goes into the HPACK table after them, and the
				// probe below refers to it by index.
				id := c.newStream()
				err := c.tryWriteHeaders(id, true, append(slices.Concat(pseudoFields("GET", "/"), tc.fields), "x-probe", "indexed")...)
				if !tc.farOver {
					require.NoError(t, err, "%s: write the request", name)
				}
				s := c.wait(id)
				results[name] = s
				if tc.fits {
					assert.Equal(t, "200", s.status(), "%s: %s", name, s)
					assert.Equal(t, int32(1), h.calls.Load(), "%s: the handler ran", name)
				} else {
					assert.Zero(t, h.calls.Load(), "%s: the handler ran for an oversized header", name)
				}
				if ga := c.connError(); tc.farOver && (ga != nil || c.ended != nil) {
					require.NotNil(t, ga, "%s: a GOAWAY before the connection closes", name)
					assert.Contains(t, []http2.ErrCode{http2.ErrCodeProtocol, http2.ErrCodeEnhanceYourCalm}, ga.code, "%s: the GOAWAY's code", name)
					t.Logf("%s: GOAWAY %v", name, ga.code)
					continue
				}
				if !tc.fits {
					if s.endStream {
						assert.Equal(t, "431", s.status(), "%s: a whole response can only be a 431: %s", name, s)
					} else {
						assert.True(t, s.ended, "%s: the stream ends: %s", name, s)
					}
				}
				probe := c.wait(c.request("GET", probePath, true, "x-probe", "indexed"))
				assert.Equal(t, "probe", probe.body.String(), "%s: the connection carries on: %s", name, probe)
				assert.Equal(t, []string{"indexed"}, probe.field("x-probe"), "%s: the HPACK tables agree", name)
				assert.Empty(t, c.goAways, "%s: no GOAWAY", name)
			}
			if !tc.farOver {
				assert.Equal(t, results[stdlib].String(), results[ours].String())
			}
		})
	}
}

// TestStreamIDs checks the stream identifiers RFC 9113 §5.1.1 forbids a client: an even one,
// and one lower than a stream it already opened, are connection errors of type
// PROTOCOL_ERROR: a GOAWAY, then the connection closes.
func TestStreamIDs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		valid uint32 // a stream served first; 0 for none
		bad   uint32
	}{
		{"even", 0, 2},
		{"decreasing", 5, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, name := range fronts {
				t.Run(name, func(t *testing.T) {
					t.Parallel() // net/http waits a second for the client to close first
					ts := start(t, name, h2c, &http.Server{Handler: new(counting)})
					c := ts.dialRaw(t)
					if tc.valid != 0 {
						c.writeHeaders(tc.valid, true, ":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/")
						require.True(t, c.wait(tc.valid).endStream, "stream %d is served", tc.valid)
					}
					c.writeHeaders(tc.bad, true, ":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/")
					assert.True(t, c.waitEnd(), "the connection closes")
					require.NotEmpty(t, c.goAways, "a GOAWAY")
					assert.Empty(t, c.stream(tc.bad).blocks, "no response on stream %d", tc.bad)
					last := c.goAways[len(c.goAways)-1]
					assert.Equal(t, http2.ErrCodeProtocol, last.code, "the GOAWAY's code")
					// §6.8: the last stream the server "might have taken some action on". net/http
					// names the even stream it refused; tc.valid would be exact.
					assert.GreaterOrEqual(t, last.lastStreamID, tc.valid, "the GOAWAY covers the stream served")
					t.Logf("GOAWAY %+v", last)
				})
			}
		})
	}
}
