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

// handle adapts a handler func that needs no per-test state to differential's mk.
func handle(f http.HandlerFunc) func(*testing.T) http.Handler {
	return func(*testing.T) http.Handler { return f }
}

var (
	small = "hello, world\n"
	large = strings.Repeat("0123456789abcdef", 4<<10) // 64 KiB: more than either server buffers
)

// TestResponseFraming checks the head and framing a client sees for the responses handlers
// commonly write, request by request, against net/http's server.
func TestResponseFraming(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		method  string // of raw; GET if empty
		handler http.HandlerFunc
		check   func(t *testing.T, o outcome) // h1-specific, beyond matching net/http
		// differs says why h1 is not compared with net/http for this case, where both
		// answers are correct HTTP and h1's is the better one; check alone then judges h1.
		differs string
	}{{
		name:    "small body gets a Content-Length and a sniffed Content-Type",
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, small) },
		check: func(t *testing.T, o outcome) {
			r := o.responses[0]
			assert.Equal(t, []string{fmt.Sprint(len(small))}, r.header("Content-Length"))
			assert.Equal(t, []string{"text/plain; charset=utf-8"}, r.header("Content-Type"))
			assert.Len(t, r.header("Date"), 1, "a Date field")
			assert.False(t, o.closed, "the connection is kept")
		},
	}, {
		name:    "nothing written is a zero Content-Length",
		handler: func(w http.ResponseWriter, r *http.Request) {},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"0"}, o.responses[0].header("Content-Length"))
		},
	}, {
		name:    "large body is chunked",
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, large) },
		check: func(t *testing.T, o outcome) {
			r := o.responses[0]
			assert.Equal(t, []string{"chunked"}, r.header("Transfer-Encoding"))
			assert.Empty(t, r.header("Content-Length"))
			assert.Equal(t, large, r.body)
		},
	}, {
		name: "large first write is sniffed from its start",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<!DOCTYPE html><html><body>"+large)
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"text/html; charset=utf-8"}, o.responses[0].header("Content-Type"))
		},
	}, {
		name: "flushed body is chunked",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"chunked"}, o.responses[0].header("Transfer-Encoding"))
			assert.Equal(t, "ab", o.responses[0].body)
		},
	}, {
		name: "declared Content-Length is kept",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		},
	}, {
		name: "declared Content-Length with a large body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(large)))
			io.WriteString(w, large)
		},
		check: func(t *testing.T, o outcome) {
			assert.Empty(t, o.responses[0].header("Transfer-Encoding"))
		},
	}, {
		name: "invalid declared Content-Length is dropped",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "five")
			io.WriteString(w, "hello")
		},
		differs: "net/http chunks the body; h1 computes the length, as for any small body",
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"5"}, o.responses[0].header("Content-Length"))
			assert.Equal(t, "hello", o.responses[0].body)
		},
	}, {
		name:    "HEAD of a small body",
		method:  http.MethodHead,
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, small) },
		check: func(t *testing.T, o outcome) {
			r := o.responses[0]
			assert.Equal(t, []string{fmt.Sprint(len(small))}, r.header("Content-Length"))
			assert.Equal(t, []string{"text/plain; charset=utf-8"}, r.header("Content-Type"), "the Content-Type a GET gets")
			assert.Empty(t, r.body)
			assert.False(t, o.closed)
		},
	}, {
		name:    "HEAD with nothing written has no length",
		method:  http.MethodHead,
		handler: func(w http.ResponseWriter, r *http.Request) {},
		check: func(t *testing.T, o outcome) {
			assert.Empty(t, o.responses[0].header("Content-Length"))
			assert.Empty(t, o.responses[0].header("Transfer-Encoding"))
		},
	}, {
		name:   "HEAD with a declared length",
		method: http.MethodHead,
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"1000"}, o.responses[0].header("Content-Length"))
			assert.False(t, o.closed)
		},
	}, {
		name:    "HEAD of a large body",
		method:  http.MethodHead,
		handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, large) },
		differs: "net/http sends no length for a HEAD body larger than its buffer; h1 counts it, " +
			"the length a GET's body would have, which RFC 9110 §8.6 allows",
		check: func(t *testing.T, o outcome) {
			r := o.responses[0]
			assert.Equal(t, []string{fmt.Sprint(len(large))}, r.header("Content-Length"))
			assert.Equal(t, []string{"text/plain; charset=utf-8"}, r.header("Content-Type"))
			assert.False(t, o.closed)
		},
	}, {
		name: "204 has no body and no framing fields",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusNoContent)
			_, err := io.WriteString(w, "hello")
			w.Header().Set("X-Write-Error", fmt.Sprint(err)) // too late for the head: must not show
			if err != http.ErrBodyNotAllowed {
				panic(fmt.Sprintf("Write on a 204 returned %v, want http.ErrBodyNotAllowed", err))
			}
		},
		check: func(t *testing.T, o outcome) {
			r := o.responses[0]
			assert.Equal(t, "HTTP/1.1 204 No Content", r.status)
			assert.Empty(t, r.header("Content-Length"))
			assert.Empty(t, r.header("Transfer-Encoding"))
			assert.False(t, o.closed)
		},
	}, {
		name: "304 has no body and no framing fields",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Length", "100")
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusNotModified)
		},
		check: func(t *testing.T, o outcome) {
			r := o.responses[0]
			assert.Equal(t, []string{`"v1"`}, r.header("ETag"))
			assert.Empty(t, r.header("Transfer-Encoding"))
			assert.False(t, o.closed)
		},
	}, {
		name:    "status without a text",
		handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) },
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, "HTTP/1.1 599 status code 599", o.responses[0].status)
		},
	}, {
		name: "Date set by the handler",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"Mon, 02 Jan 2006 15:04:05 GMT"}, o.responses[0].header("Date"))
		},
	}, {
		name: "Date suppressed by a nil value",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Date"] = nil
			io.WriteString(w, small)
		},
		check: func(t *testing.T, o outcome) {
			assert.Empty(t, o.responses[0].header("Date"))
		},
	}, {
		name: "Content-Type suppressed by a nil value",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<html>")
		},
		check: func(t *testing.T, o outcome) {
			assert.Empty(t, o.responses[0].header("Content-Type"))
		},
	}, {
		name: "Content-Encoding is not sniffed",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
		},
		check: func(t *testing.T, o outcome) {
			assert.Empty(t, o.responses[0].header("Content-Type"))
		},
	}, {
		name: "handler asks to close",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, small)
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"close"}, o.responses[0].header("Connection"))
			assert.True(t, o.closed)
		},
	}, {
		name: "header changed after WriteHeader is not sent",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Early", "1")
			w.WriteHeader(http.StatusAccepted)
			w.Header().Set("X-Late", "1")
			io.WriteString(w, small)
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"1"}, o.responses[0].header("X-Early"))
			assert.Empty(t, o.responses[0].header("X-Late"))
		},
	}, {
		name: "WriteHeader twice keeps the first",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusInternalServerError)
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, "HTTP/1.1 201 Created", o.responses[0].status)
		},
	}, {
		name: "Transfer-Encoding chunked set by the handler",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Transfer-Encoding", "chunked")
			io.WriteString(w, small)
		},
		differs: "net/http chunks and does not sniff; h1 frames the body itself, with a length",
		check: func(t *testing.T, o outcome) {
			assert.Empty(t, o.responses[0].header("Transfer-Encoding"))
			assert.Equal(t, small, o.responses[0].body)
		},
	}, {
		name: "CR and LF in a field value do not split the head",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Split", "a\r\nX-Injected: 1")
		},
		check: func(t *testing.T, o outcome) {
			assert.Empty(t, o.responses[0].header("X-Injected"))
		},
	}, {
		name: "trailers declared before the body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Checksum, X-Count")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, small)
			w.Header().Set("X-Checksum", "abc")
			w.Header().Set("X-Count", "1")
		},
		check: func(t *testing.T, o outcome) {
			r := o.responses[0]
			assert.Equal(t, []string{"chunked"}, r.header("Transfer-Encoding"))
			assert.Empty(t, r.header("X-Checksum"), "a trailer is not in the head")
			assert.Equal(t, "abc", r.trailer.Get("X-Checksum"))
			assert.Equal(t, "1", r.trailer.Get("X-Count"))
		},
	}, {
		name: "trailers set with TrailerPrefix",
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, small)
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		},
		differs: "net/http drops the trailer of a body short enough to get a Content-Length, " +
			"though TrailerPrefix is for trailers not known before the body; h1 chunks the body to send it",
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, "yes", o.responses[0].trailer.Get("X-Late"))
		},
	}, {
		name: "OPTIONS * is answered by the server",
		raw:  "OPTIONS * HTTP/1.1\r\nHost: test.example\r\n\r\n",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, "HTTP/1.1 200 OK", o.responses[0].status)
			assert.Equal(t, []string{"0"}, o.responses[0].header("Content-Length"))
		},
	}, {
		name: "request asking to close",
		raw:  get("/", "Connection: close"),
		handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, small)
		},
		check: func(t *testing.T, o outcome) {
			assert.Equal(t, []string{"close"}, o.responses[0].header("Connection"))
			assert.True(t, o.closed)
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			raw := tc.raw
			if raw == "" {
				raw = request(method, "/", "")
			}
			var h outcome
			if tc.differs != "" {
				h = start(t, ours, &http.Server{Handler: tc.handler}).exchange(t, raw, method)
			} else {
				_, h = differential(t, handle(tc.handler), nil, raw, method)
			}
			if tc.check != nil && len(h.responses) > 0 {
				tc.check(t, h)
			}
		})
	}
}

// TestHTTP10 checks the responses to HTTP/1.0 clients: a body without a length ends with the
// connection, and keep-alive is echoed only when the body has a length.
func TestHTTP10(t *testing.T) {
	cases := []struct {
		name      string
		fields    []string
		body      string
		keepAlive bool // the response says Connection: keep-alive and the connection stays
	}{
		{name: "small", body: small},
		{name: "large", body: large},
		{name: "keep-alive small", fields: []string{"Connection: keep-alive"}, body: small, keepAlive: true},
		{name: "keep-alive large", fields: []string{"Connection: keep-alive"}, body: large},
		{name: "keep-alive empty", fields: []string{"Connection: keep-alive"}, keepAlive: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := "GET / HTTP/1.0\r\n" + strings.Join(append(tc.fields, ""), "\r\n") + "\r\n"
			_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, tc.body)
			}), nil, raw, http.MethodGet)
			require.Len(t, h.responses, 1)
			r := h.responses[0]
			assert.Equal(t, tc.body, r.body)
			assert.Empty(t, r.header("Transfer-Encoding"), "no chunking for HTTP/1.0")
			assert.Equal(t, !tc.keepAlive, h.closed, "connection closed")
			if tc.keepAlive {
				assert.Equal(t, []string{"keep-alive"}, r.header("Connection"))
			}
		})
	}
}

// TestKeepAlive checks that net/http's client reuses one connection for sequential requests.
func TestKeepAlive(t *testing.T) {
	for _, name := range fronts {
		t.Run(name, func(t *testing.T) {
			ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.URL.Path)
			})})
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			for i := range 5 {
				res, err := client.Get(fmt.Sprintf("%s/%d", ts.url(), i))
				require.NoError(t, err)
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				require.NoError(t, err)
				assert.Equal(t, fmt.Sprintf("/%d", i), string(body))
			}
			assert.Equal(t, 1, ts.states.count(http.StateNew), "connections opened for 5 requests")
			assert.Equal(t, 5, ts.states.count(http.StateActive), "requests served")
			// The last StateIdle comes after the response went out: waited for.
			eventually(t, func() bool { return ts.states.count(http.StateIdle) == 5 }, "the connection did not return to idle after each of 5 requests")
		})
	}
}

// TestPipelining writes several requests, with bodies, in one write and reads the responses
// in order.
func TestPipelining(t *testing.T) {
	raw := get("/one") +
		request("POST", "/two", "abc", "Content-Length: 3") +
		request("POST", "/three", "3\r\nxyz\r\n0\r\n\r\n", "Transfer-Encoding: chunked") +
		request("HEAD", "/four", "") +
		get("/five")
	methods := []string{"GET", "POST", "POST", "HEAD", "GET"}
	_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %s %q", r.Method, r.URL.Path, body)
	}), nil, raw, methods...)
	require.Len(t, h.responses, 5)
	want := []string{`GET /one ""`, `POST /two "abc"`, `POST /three "xyz"`, ``, `GET /five ""`}
	for i, r := range h.responses {
		assert.Equal(t, want[i], r.body, "response %d", i+1)
	}
	assert.False(t, h.closed)
}

// TestRequestFields checks the Request a handler gets, against net/http's.
func TestRequestFields(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		cfg  func(*http.Server)
		want []string // lines h1's handler must see, beyond matching net/http's
	}{
		{name: "origin form", raw: "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: test.example:8080\r\nuser-agent: t\r\nx-multi: 1\r\nX-MULTI: 2\r\naccept-encoding: gzip\r\nx-custom-name: v\r\nX-Empty:\r\n\r\n",
			want: []string{`Path="/a/b" RawPath="" RawQuery="x=1&y=%20"`, `RequestURI="/a/b?x=1&y=%20" Proto="HTTP/1.1" 1.1 Host="test.example:8080"`,
				`X-Multi: ["1" "2"]`, `X-Custom-Name: ["v"]`, `User-Agent: ["t"]`, `X-Empty: [""]`}},
		{name: "percent-encoded path", raw: get("/a%2Fb/%C3%A9/c%20d?q=%2F&r"),
			want: []string{`Path="/a/b/é/c d" RawPath="/a%2Fb/%C3%A9/c%20d" RawQuery="q=%2F&r"`}},
		{name: "query only", raw: get("/p?"), want: []string{`RawQuery="" ForceQuery=true`}},
		{name: "absolute form", raw: "GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
			want: []string{`Host="example.com:8080" Scheme="http"`, `RequestURI="http://example.com:8080/p?q=1" Proto="HTTP/1.1" 1.1 Host="example.com:8080"`}},
		{name: "CONNECT", raw: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			want: []string{`Path="" RawPath="" RawQuery="" ForceQuery=false Host="example.com:443" Scheme=""`}},
		{name: "OPTIONS * to the handler", raw: "OPTIONS * HTTP/1.1\r\nHost: test.example\r\n\r\n", cfg: func(s *http.Server) { s.DisableGeneralOptionsHandler = true },
			want: []string{`RequestURI="*"`}},
		{name: "body with a length", raw: request("POST", "/u", "hello", "Content-Length: 5", "Content-Type: text/plain"),
			want: []string{`Close=false ContentLength=5 TransferEncoding=[]`, `Body="hello" err=<nil>`}},
		{name: "chunked body", raw: request("PUT", "/u", "5\r\nhello\r\n0\r\n\r\n", "transfer-encoding: chunked"),
			want: []string{`ContentLength=-1 TransferEncoding=["chunked"]`, `Body="hello" err=<nil>`}},
		{name: "zero length", raw: request("POST", "/u", "", "Content-Length: 0"), want: []string{`ContentLength=0`, `NoBody=true`}},
		{name: "close", raw: get("/", "Connection: close"), want: []string{`Close=true`}},
		{name: "HTTP/1.0 without Host", raw: "GET /old HTTP/1.0\r\n\r\n", want: []string{`Proto="HTTP/1.0" 1.0 Host=""`, `Close=true`}},
		{name: "HTTP/1.0 keep-alive", raw: "GET /old HTTP/1.0\r\nHost: test.example\r\nConnection: Keep-Alive\r\n\r\n", want: []string{`Close=false`}},
		{name: "bare LF line ends", raw: "GET /lf HTTP/1.1\nHost: test.example\nX-A: 1\n\n", want: []string{`X-A: ["1"]`}},
		{name: "whitespace around values", raw: "GET / HTTP/1.1\r\nHost: test.example\r\nX-Space:   padded \t\r\n\r\n", want: []string{`X-Space: ["padded"]`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(r.Body)
				fmt.Fprintf(w, "Method=%q\nURL=%q\nPath=%q RawPath=%q RawQuery=%q ForceQuery=%v Host=%q Scheme=%q Opaque=%q\n",
					r.Method, r.URL.String(), r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.URL.ForceQuery, r.URL.Host, r.URL.Scheme, r.URL.Opaque)
				fmt.Fprintf(w, "RequestURI=%q Proto=%q %d.%d Host=%q\n", r.RequestURI, r.Proto, r.ProtoMajor, r.ProtoMinor, r.Host)
				fmt.Fprintf(w, "Close=%v ContentLength=%d TransferEncoding=%q TLS=%v Trailer=%v\n",
					r.Close, r.ContentLength, r.TransferEncoding, r.TLS != nil, r.Trailer)
				fmt.Fprintf(w, "Body=%q err=%v NoBody=%v\n", body, err, r.Body == http.NoBody)
				for _, k := range slices.Sorted(mapKeys(r.Header)) {
					fmt.Fprintf(w, "%s: %q\n", k, r.Header[k])
				}
			}), tc.cfg, tc.raw, methodOf(tc.raw))
			require.Len(t, h.responses, 1)
			for _, w := range tc.want {
				assert.Contains(t, h.responses[0].body, w)
			}
		})
	}

	t.Run("RemoteAddr", func(t *testing.T) {
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, r.RemoteAddr)
				})})
				c := ts.dial(t)
				c.send(get("/"))
				assert.Equal(t, c.conn.LocalAddr().String(), c.read("GET").body)
			})
		}
	})
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// methodOf returns the method of a raw request.
func methodOf(raw string) string {
	m, _, _ := strings.Cut(raw, " ")
	return m
}

// TestBadRequests checks requests both servers refuse: an error status, then the connection
// closes.
func TestBadRequests(t *testing.T) {
	cases := []struct {
		name   string
		raw    string
		status int
	}{
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"invalid method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"malformed request line", "GET /\r\nHost: a\r\n\r\n", 400},
		{"malformed version", "GET / HTTP/x\r\nHost: a\r\n\r\n", 400},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"field without colon", "GET / HTTP/1.1\r\nHost: a\r\nBogus\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400},
		{"control byte in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400},
		{"invalid Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400},
		{"negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"differing Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"unknown Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"unsupported Expect", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\na", 417},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.status, refusedBoth(t, nil, tc.raw))
		})
	}
}

// refusedBoth sends raw to each front end, whose handler must not run, and asserts that both
// answer it with the same error status and close the connection. It returns h1's status.
// The bodies of such answers are the servers' own words, not compared.
func refusedBoth(t *testing.T, cfg func(*http.Server), raw string) int {
	t.Helper()
	statuses := map[string]int{}
	for _, name := range fronts {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t.Errorf("%s: the handler got %s %s", name, r.Method, r.RequestURI)
		})}
		if cfg != nil {
			cfg(srv)
		}
		ts := start(t, name, srv)
		c := ts.dial(t)
		go func() {
			// The server may answer and close before it read all of raw.
			c.conn.SetWriteDeadline(time.Now().Add(waitFor))
			io.WriteString(c.conn, raw)
		}()
		r := c.read("GET")
		statuses[name] = r.res.StatusCode
		assert.True(t, c.eof(), "%s: the connection closes after %s", name, r.status)
	}
	assert.Equal(t, statuses[stdlib], statuses[ours], "h1's status differs from net/http's")
	return statuses[ours]
}

// TestStrictFraming checks the requests h1 refuses where net/http's server guesses: their
// framing is ambiguous (RFC 9112 §6.3, §5.2, §6.1), the stuff of request smuggling. h1 is
// deliberately stricter here, so only h1's answer is asserted: 400, then the connection
// closes. The HTTP/2 preface on a server without h2c is here too: net/http hands "PRI *"
// to the handler, h1 answers 505.
func TestStrictFraming(t *testing.T) {
	cases := []struct{ name, raw string }{
		{"Transfer-Encoding with Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"},
		{"duplicate equal Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na"},
		{"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"HTTP/2 preface without h2c", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := start(t, ours, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				t.Errorf("the handler got %s %s", r.Method, r.RequestURI)
			})})
			c := ts.dial(t)
			c.send(tc.raw)
			r := c.read("GET")
			want := http.StatusBadRequest
			if strings.HasPrefix(tc.raw, "PRI") {
				want = http.StatusHTTPVersionNotSupported
			}
			assert.Equal(t, want, r.res.StatusCode)
			assert.Equal(t, []string{"close"}, r.header("Connection"))
			assert.True(t, c.eof(), "the connection closes")
		})
	}
}

// TestContentLengthMismatch checks a handler that declares a Content-Length and writes more
// (the excess is refused with http.ErrContentLength) or less (the connection closes, since
// the client would wait for the rest).
func TestContentLengthMismatch(t *testing.T) {
	t.Run("more than declared", func(t *testing.T) {
		errs := make(chan error, 2)
		_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			_, err := io.WriteString(w, "hello")
			errs <- err
		}), nil, get("/"), "GET")
		assert.ErrorIs(t, recv(t, errs, "net/http's write"), http.ErrContentLength)
		assert.ErrorIs(t, recv(t, errs, "h1's write"), http.ErrContentLength)
		assert.True(t, h.closed, "a response short of its length closes the connection")
	})
	t.Run("less than declared", func(t *testing.T) {
		_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
		}), nil, get("/"), "GET")
		require.Len(t, h.responses, 1)
		assert.Equal(t, "hello", h.responses[0].body)
		assert.ErrorIs(t, h.responses[0].err, io.ErrUnexpectedEOF)
		assert.True(t, h.closed)
	})
	t.Run("less than declared, flushed", func(t *testing.T) {
		_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
		}), nil, get("/"), "GET")
		assert.True(t, h.closed)
	})
	t.Run("exact after a refused write", func(t *testing.T) {
		// h1 keeps the connection after a refused write when what went out matches the
		// declared length; net/http closes it. Both are correct framing: only the bytes are
		// compared here.
		for _, name := range fronts {
			t.Run(name, func(t *testing.T) {
				errs := make(chan error, 2)
				ts := start(t, name, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", "3")
					_, err1 := io.WriteString(w, "hel")
					_, err2 := io.WriteString(w, "lo")
					errs <- err1
					errs <- err2
				})})
				c := ts.dial(t)
				c.send(get("/"))
				assert.Equal(t, "hel", c.read("GET").body)
				assert.NoError(t, recv(t, errs, "first write"))
				assert.ErrorIs(t, recv(t, errs, "second write"), http.ErrContentLength)
			})
		}
	})
}

// TestSniffSmallWrites checks that the Content-Type is sniffed from the start of the body
// even when it arrives in small writes.
func TestSniffSmallWrites(t *testing.T) {
	_, h := differential(t, handle(func(w http.ResponseWriter, r *http.Request) {
		for _, s := range []string{"<ht", "ml><bo", "dy>hi"} {
			io.WriteString(w, s)
		}
	}), nil, get("/"), "GET")
	require.Len(t, h.responses, 1)
	assert.Equal(t, []string{"text/html; charset=utf-8"}, h.responses[0].header("Content-Type"))
	assert.Equal(t, "<html><body>hi", h.responses[0].body)
}
