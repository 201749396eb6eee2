package framing

import (
	"fmt"
	"strings"
	"time"
)

const hostLine = "Host: framing.test\r\n"

// smuggled is the request hidden in bodies: the upstream seeing it as its own request while
// the proxy did not is request smuggling.
const smuggled = "GET /smuggled HTTP/1.1\r\n" + hostLine + "\r\n"

func get(target string) string { return "GET " + target + " HTTP/1.1\r\n" + hostLine + "\r\n" }

// post builds a POST to /a; fields are complete lines ending in CRLF.
func post(fields, body string) string {
	return "POST /a HTTP/1.1\r\n" + hostLine + fields + "\r\n" + body
}

// withFields builds a GET /a with extra field lines.
func withFields(fields string) string {
	return "GET /a HTTP/1.1\r\n" + hostLine + fields + "\r\n"
}

const chunkedHello = "5\r\nhello\r\n0\r\n\r\n"

// clte is a body whose two framings disagree: chunked it ends at once and /smuggled follows;
// by Content-Length it holds /smuggled.
const clteBody = "0\r\n\r\n" + smuggled

var clteLen = fmt.Sprint(len(clteBody))

// allCases returns every case, request side first.
func allCases() []kase {
	cs := requestCases()
	for i := range cs {
		cs[i].side = "request"
	}
	rs := responseCases()
	for i := range rs {
		rs[i].side = "response"
	}
	return append(cs, rs...)
}

func requestCases() []kase {
	// net/http's server drops Transfer-Encoding from an HTTP/1.0 request before any handler
	// runs, so a request that also has Content-Length is framed by it and forwarded; the
	// connection is closed after it (see proxy's package doc), so nothing is smuggled.
	const limitHTTP10TE = "net/http drops HTTP/1.0 Transfer-Encoding unseen"
	cs := []kase{
		// Content-Length and Transfer-Encoding together: RFC 9112 §6.1 lets a server reject the
		// message or use chunked, and either way it MUST close the connection. NGINX answers 400.
		{name: "cl-te", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding: chunked\r\n", clteBody)},
		{name: "te-cl", expect: reject, mustClose: true,
			send: post("Transfer-Encoding: chunked\r\nContent-Length: "+clteLen+"\r\n", clteBody)},
		{name: "cl-te-value-upper", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding: CHUNKED\r\n", clteBody)},
		{name: "cl-te-name-upper", expect: reject, mustClose: true,
			send: post("CONTENT-LENGTH: "+clteLen+"\r\nTRANSFER-ENCODING: chunked\r\n", clteBody)},
		{name: "cl-te-no-space", expect: reject, mustClose: true,
			send: post("Content-Length:"+clteLen+"\r\nTransfer-Encoding:chunked\r\n", clteBody)},
		{name: "cl-te-tab", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding:\tchunked\t\r\n", clteBody)},
		{name: "cl-te-trailing-space", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding: chunked \r\n", clteBody)},
		{name: "cl0-te", expect: reject, mustClose: true,
			send: post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", chunkedHello)},
		{name: "cl-short-te", expect: reject, mustClose: true,
			send: post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", chunkedHello)},
		{name: "cl-te-identity", expect: reject, mustClose: true,
			send: post("Content-Length: 5\r\nTransfer-Encoding: identity\r\n", "hello")},
		{name: "cl-te-space-before-colon", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding : chunked\r\n", clteBody)},
		{name: "cl-te-xchunked", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding: xchunked\r\n", clteBody)},
		{name: "cl-te-obs-fold", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding:\r\n chunked\r\n", clteBody)},
		{name: "cl-te-chunked-identity", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding: chunked, identity\r\n", clteBody)},
		{name: "cl-te-duplicate-te", expect: reject, mustClose: true,
			send: post("Content-Length: "+clteLen+"\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", clteBody)},
		{name: "cl-te-http10", expect: reject, mustReject: true, knownDefect: limitHTTP10TE,
			send: "POST /a HTTP/1.0\r\n" + hostLine + "Content-Length: " + clteLen + "\r\nTransfer-Encoding: chunked\r\n\r\n" + clteBody},

		// Transfer-Encoding alone.
		{name: "te-chunked", expect: accept, targets: []string{"/a"},
			send: post("Transfer-Encoding: chunked\r\n", chunkedHello)},
		{name: "te-leading-spaces", expect: accept,
			send: post("Transfer-Encoding:    chunked\r\n", chunkedHello)},
		{name: "te-chunked-identity", expect: reject,
			send: post("Transfer-Encoding: chunked, identity\r\n", chunkedHello)},
		{name: "te-identity-chunked", expect: reject,
			send: post("Transfer-Encoding: identity, chunked\r\n", chunkedHello)},
		{name: "te-gzip-chunked", expect: reject,
			send: post("Transfer-Encoding: gzip, chunked\r\n", chunkedHello)},
		{name: "te-xchunked", expect: reject,
			send: post("Transfer-Encoding: xchunked\r\n", chunkedHello)},
		{name: "te-identity", expect: reject,
			send: post("Transfer-Encoding: identity\r\n", "hello")},
		{name: "te-duplicate-lines", expect: reject,
			send: post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunkedHello)},
		{name: "te-obs-fold", expect: reject,
			send: post("Transfer-Encoding:\r\n chunked\r\n", chunkedHello)},
		{name: "te-quoted", expect: reject,
			send: post("Transfer-Encoding: \"chunked\"\r\n", chunkedHello)},
		{name: "te-trailing-comma", expect: reject,
			send: post("Transfer-Encoding: chunked,\r\n", chunkedHello)},
		{name: "te-nul", expect: reject,
			send: post("Transfer-Encoding: chunked\x00\r\n", chunkedHello)},
		{name: "te-vertical-tab", expect: reject,
			send: post("Transfer-Encoding:\x0bchunked\r\n", chunkedHello)},
		{name: "te-http10", expect: reject, mustReject: true,
			send: "POST /a HTTP/1.0\r\n" + hostLine + "Transfer-Encoding: chunked\r\n\r\n" + chunkedHello},
		{name: "te-http10-keepalive-smuggle", expect: reject, mustReject: true,
			send: "POST /a HTTP/1.0\r\n" + hostLine + "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + clteBody},

		// Content-Length.
		{name: "cl-duplicate-equal", expect: reject,
			send: post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello")},
		{name: "cl-duplicate-conflict", expect: reject,
			send: post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")},
		{name: "cl-list-equal", expect: reject,
			send: post("Content-Length: 5, 5\r\n", "hello")},
		{name: "cl-list-conflict", expect: reject,
			send: post("Content-Length: 5, 6\r\n", "hello!")},
		{name: "cl-negative", expect: reject,
			send: post("Content-Length: -1\r\n", "hello")},
		{name: "cl-huge", expect: reject,
			send: post("Content-Length: 99999999999999999999\r\n", "hello")},
		{name: "cl-plus", expect: reject,
			send: post("Content-Length: +5\r\n", "hello")},
		{name: "cl-hex", expect: reject,
			send: post("Content-Length: 0x5\r\n", "hello")},
		{name: "cl-inner-space", expect: reject,
			send: post("Content-Length: 1 0\r\n", "helloworld")},
		{name: "cl-empty", expect: reject,
			send: post("Content-Length: \r\n", "hello")},
		{name: "cl-space-before-colon", expect: reject,
			send: post("Content-Length : 5\r\n", "hello")},
		{name: "cl-leading-zeros", expect: accept,
			send: post("Content-Length: 005\r\n", "hello")},
		{name: "cl-ows", expect: accept,
			send: post("Content-Length:  5 \t\r\n", "hello")},
		{name: "cl-underscore-name", expect: either,
			send: post("Content_Length: 5\r\n", "hello")},
		{name: "cl-more-than-sent", expect: either, incomplete: true, mayWait: true, timeout: time.Second,
			send: post("Content-Length: 10\r\n", "hello")},
		{name: "cl-truncated-half-close", expect: either, incomplete: true, halfClose: true,
			send: post("Content-Length: 10\r\n", "hello")},
		{name: "cl-truncated-upstream-answers-early", expect: either, incomplete: true, halfClose: true,
			up:   &script{early: true, valid: true, raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
			send: post("Content-Length: 10\r\n", "hello")},
		{name: "cl-then-pipelined", expect: accept, nresp: 2, targets: []string{"/a", "/b"},
			send: post("Content-Length: 5\r\n", "hello"+get("/b"))},
		{name: "cl-on-get", expect: accept, targets: []string{"/a"},
			send: withFields("Content-Length: 5\r\n") + "hello"},
		{name: "cl-on-head", expect: either, methods: []string{"HEAD"},
			send: "HEAD /a HTTP/1.1\r\n" + hostLine + "Content-Length: 5\r\n\r\nhello"},
		{name: "chunked-on-get", expect: either,
			send: withFields("Transfer-Encoding: chunked\r\n") + chunkedHello},
		{name: "cl-zero-post", expect: accept,
			send: post("Content-Length: 0\r\n", "")},
		{name: "post-no-length-then-get", expect: accept, nresp: 2, targets: []string{"/a", "/b"},
			send: post("", "") + get("/b")},

		// Line endings.
		{name: "bare-lf-everywhere", expect: either,
			send: "GET /a HTTP/1.1\nHost: framing.test\n\n"},
		{name: "bare-lf-end-of-head", expect: either,
			send: "GET /a HTTP/1.1\r\n" + hostLine + "\n"},
		{name: "bare-lf-hides-cl", expect: either,
			send: post("X-A: 1\nContent-Length: 5\r\n", "hello")},
		{name: "bare-cr-in-value", expect: reject,
			send: post("X-A: 1\rContent-Length: 5\r\n", "hello")},
		{name: "bare-cr-line-endings", expect: reject, mayWait: true, timeout: time.Second,
			send: "GET /a HTTP/1.1\rHost: framing.test\r\r"},
		{name: "leading-empty-lines", expect: accept,
			send: "\r\n\r\n" + get("/a")},
		{name: "leading-bare-lf", expect: either,
			send: "\n" + get("/a")},
		{name: "crlf-between-pipelined", expect: accept, nresp: 2, targets: []string{"/a", "/b"},
			send: get("/a") + "\r\n" + get("/b")},

		// Whitespace and folding.
		{name: "space-before-colon", expect: reject, send: withFields("X-A : 1\r\n")},
		{name: "tab-before-colon", expect: reject, send: withFields("X-A\t: 1\r\n")},
		{name: "space-before-first-field", expect: reject,
			send: "GET /a HTTP/1.1\r\n X-A: 1\r\n" + hostLine + "\r\n"},
		{name: "obs-fold-value", expect: either, send: withFields("X-A: 1\r\n 2\r\n")},
		{name: "obs-fold-cl", expect: reject, send: post("Content-Length:\r\n 5\r\n", "hello")},
		{name: "request-line-double-space", expect: either, send: "GET  /a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "request-line-tabs", expect: either, send: "GET\t/a\tHTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "request-line-trailing-space", expect: either, send: "GET /a HTTP/1.1 \r\n" + hostLine + "\r\n"},
		{name: "version-lowercase", expect: reject, send: "GET /a http/1.1\r\n" + hostLine + "\r\n"},
		{name: "version-1.2", expect: either, send: "GET /a HTTP/1.2\r\n" + hostLine + "\r\n"},
		{name: "version-2.0-text", expect: reject, send: "GET /a HTTP/2.0\r\n" + hostLine + "\r\n"},
		{name: "version-no-minor", expect: reject, send: "GET /a HTTP/1\r\n" + hostLine + "\r\n"},
		{name: "http-0.9", expect: reject, mayWait: true, noParse: true, timeout: time.Second, send: "GET /a\r\n"},
		{name: "http2-preface", expect: either, noParse: true,
			send: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},

		// Controls and odd bytes.
		{name: "nul-in-name", expect: reject, send: withFields("X-\x00A: 1\r\n")},
		{name: "nul-in-value", expect: reject, send: withFields("X-A: 1\x002\r\n")},
		{name: "ctl-in-value", expect: reject, send: withFields("X-A: 1\x01\r\n")},
		{name: "del-in-value", expect: either, send: withFields("X-A: 1\x7f\r\n")},
		{name: "obs-text-in-value", expect: accept, send: withFields("X-A: caf\xe9\r\n")},
		{name: "ctl-in-name", expect: reject, send: withFields("X\x01A: 1\r\n")},
		{name: "non-token-name", expect: either, send: withFields("X(A): 1\r\n")},
		{name: "empty-name", expect: reject, send: withFields(": 1\r\n")},
		{name: "no-colon", expect: reject, send: withFields("X-A 1\r\n")},
		{name: "nul-in-target", expect: reject, send: "GET /a\x00b HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "nul-in-method", expect: reject, send: "G\x00T /a HTTP/1.1\r\n" + hostLine + "\r\n"},

		// Methods and targets.
		{name: "unknown-method", expect: accept, send: "FROB /a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "lowercase-method", expect: either, send: "get /a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "long-method", expect: either, send: strings.Repeat("A", 1000) + " /a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "non-token-method", expect: reject, send: "G@T /a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "connect-authority-form", expect: reject, send: "CONNECT framing.test:443 HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "get-authority-form", expect: reject, send: "GET framing.test:80 HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "options-asterisk", expect: either, send: "OPTIONS * HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "get-asterisk", expect: reject, send: "GET * HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "pri-method-h1", expect: either, send: "PRI /a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "trace-with-body", expect: either, send: "TRACE /a HTTP/1.1\r\n" + hostLine + "Content-Length: 5\r\n\r\nhello"},
		{name: "absolute-form", expect: accept, targets: []string{"/a"},
			send: "GET http://framing.test/a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "absolute-form-host-mismatch", expect: accept, check: upstreamHost("other.test"),
			send: "GET http://other.test/a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "absolute-form-https", expect: either, send: "GET https://framing.test/a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "absolute-form-userinfo", expect: either, send: "GET http://u:p@framing.test/a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "target-no-slash", expect: reject, send: "GET a HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "target-fragment", expect: either, send: get("/a#frag")},
		{name: "target-space", expect: reject, send: "GET /a b HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "host-duplicate", expect: reject, send: withFields(hostLine)},
		{name: "host-duplicate-different", expect: reject, send: withFields("Host: other.test\r\n")},
		{name: "host-missing-http11", expect: reject, send: "GET /a HTTP/1.1\r\n\r\n"},
		{name: "host-missing-http10", expect: accept, send: "GET /a HTTP/1.0\r\n\r\n"},
		{name: "host-with-space", expect: reject, send: "GET /a HTTP/1.1\r\nHost: framing test\r\n\r\n"},
		{name: "host-with-slash", expect: reject, send: "GET /a HTTP/1.1\r\nHost: framing.test/x\r\n\r\n"},
		{name: "host-with-userinfo", expect: reject, send: "GET /a HTTP/1.1\r\nHost: u@framing.test\r\n\r\n"},
		{name: "long-target-16k", expect: either, send: get("/" + strings.Repeat("a", 16<<10))},
		{name: "long-field-64k", expect: either, send: withFields("X-A: " + strings.Repeat("a", 64<<10) + "\r\n")},
		{name: "head-2mib", expect: reject, timeout: 3 * time.Second,
			send: withFields(strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 2100))},
		{name: "many-fields-500", expect: either, send: withFields(strings.Repeat("X-A: 1\r\n", 500))},

		// Chunked request bodies.
		{name: "chunked-multi", expect: accept, send: post("Transfer-Encoding: chunked\r\n", "2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n")},
		{name: "chunk-extension", expect: accept, send: post("Transfer-Encoding: chunked\r\n", "5;name=value\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-extension-quoted-semicolon", expect: either,
			send: post("Transfer-Encoding: chunked\r\n", "5;a=\"x;y\"\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-extension-quoted-crlf", expect: reject,
			send: post("Transfer-Encoding: chunked\r\n", "5;a=\"\r\n\"\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-extension-bare-lf", expect: reject,
			send: post("Transfer-Encoding: chunked\r\n", "5;a=b\nhello\r\n0\r\n\r\n")},
		{name: "chunk-size-overflow", expect: reject,
			send: post("Transfer-Encoding: chunked\r\n", "fffffffffffffffff1\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-size-negative", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-size-0x", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-size-plus", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "+5\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-size-leading-space", expect: either, send: post("Transfer-Encoding: chunked\r\n", " 5\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-size-trailing-space", expect: either, send: post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-missing-crlf", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "5\r\nhelloX0\r\n\r\n")},
		{name: "chunk-data-too-long", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n")},
		{name: "chunk-size-bare-lf", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n")},
		{name: "chunk-data-bare-lf", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n")},
		{name: "chunk-hides-request", expect: reject,
			send: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n"+smuggled)},
		{name: "chunk-last-unterminated-half-close", expect: either, incomplete: true, halfClose: true,
			send: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n")},
		{name: "chunk-truncated-half-close", expect: either, incomplete: true, halfClose: true,
			send: post("Transfer-Encoding: chunked\r\n", "a\r\nhello")},
		{name: "chunk-truncated-upstream-answers-early", expect: either, incomplete: true, halfClose: true,
			up:   &script{early: true, valid: true, raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
			send: post("Transfer-Encoding: chunked\r\n", "a\r\nhello")},
		{name: "chunked-then-pipelined", expect: accept, nresp: 2, targets: []string{"/a", "/b"},
			send: post("Transfer-Encoding: chunked\r\n", chunkedHello+get("/b"))},
		{name: "chunk-trailer", expect: accept, send: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n")},
		{name: "chunk-trailer-bare-lf", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-Sum: 1\n\r\n")},
		{name: "chunk-trailer-obs-fold", expect: reject, send: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-Sum: 1\r\n 2\r\n\r\n")},
		{name: "chunk-size-long-extension", expect: either,
			send: post("Transfer-Encoding: chunked\r\n", "5;x="+strings.Repeat("a", 8<<10)+"\r\nhello\r\n0\r\n\r\n")},

		// Expect.
		{name: "expect-100-body-at-once", expect: accept, send: post("Content-Length: 5\r\nExpect: 100-continue\r\n", "hello")},
		{name: "expect-100-wait", expect: accept, send: post("Content-Length: 5\r\nExpect: 100-continue\r\n", ""), rest: "hello"},
		{name: "expect-100-case", expect: accept, send: post("Content-Length: 5\r\nExpect: 100-Continue\r\n", ""), rest: "hello"},
		{name: "expect-100-chunked-wait", expect: accept, send: post("Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n", ""), rest: chunkedHello},
		{name: "expect-unknown", expect: either, send: post("Content-Length: 5\r\nExpect: teapot\r\n", "hello")},
		{name: "expect-100-no-body", expect: accept, send: withFields("Expect: 100-continue\r\n")},
		{name: "expect-100-http10", expect: accept,
			send: "POST /a HTTP/1.0\r\n" + hostLine + "Content-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"},

		// Pipelining.
		{name: "pipeline-2", expect: accept, nresp: 2, targets: []string{"/a", "/b"}, send: get("/a") + get("/b")},
		{name: "pipeline-3", expect: accept, nresp: 3, targets: []string{"/a", "/b", "/c"}, send: get("/a") + get("/b") + get("/c")},
		{name: "pipeline-head-get", expect: accept, nresp: 2, methods: []string{"HEAD", "GET"}, targets: []string{"/a", "/b"},
			send: "HEAD /a HTTP/1.1\r\n" + hostLine + "\r\n" + get("/b")},
		{name: "pipeline-after-connection-close", expect: accept,
			send: withFields("Connection: close\r\n") + get("/b")},
		{name: "pipeline-http10", expect: accept,
			send: "GET /a HTTP/1.0\r\n" + hostLine + "\r\n" + get("/b")},
		{name: "pipeline-http10-keep-alive", expect: accept, nresp: 2, targets: []string{"/a", "/b"},
			send: "GET /a HTTP/1.0\r\n" + hostLine + "Connection: keep-alive\r\n\r\n" + get("/b")},

		// Connection, Upgrade and hop-by-hop tricks.
		{name: "connection-close", expect: accept, check: closedAfter, send: withFields("Connection: close\r\n")},
		{name: "connection-strips-xff", expect: accept, check: forwardedFor,
			send: withFields("Connection: X-Forwarded-For\r\nX-Forwarded-For: 203.0.113.9\r\n")},
		{name: "connection-names-content-length", expect: accept, targets: []string{"/a"},
			send: post("Connection: Content-Length\r\nContent-Length: 5\r\n", "hello")},
		{name: "connection-names-transfer-encoding", expect: accept, targets: []string{"/a"},
			send: post("Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", chunkedHello)},
		{name: "connection-names-host", expect: accept, send: withFields("Connection: Host\r\n")},
		{name: "upgrade-h2c", expect: accept,
			send: withFields("Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n")},
		{name: "upgrade-websocket-refused", expect: accept, upgrade: true,
			send: withFields("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")},
		{name: "upgrade-without-connection", expect: accept, send: withFields("Upgrade: websocket\r\n")},
		{name: "upgrade-http10", expect: accept,
			send: "GET /a HTTP/1.0\r\n" + hostLine + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{name: "proxy-connection", expect: accept, send: withFields("Proxy-Connection: keep-alive\r\n")},
		{name: "te-trailers", expect: accept, send: withFields("TE: trailers\r\n")},
	}
	cs = append(cs, []kase{
		// A body the client declared must never be read as a request, even when the upstream
		// answers before asking for it (client-side desync).
		{name: "expect-100-refused-body-holds-request", expect: either, check: neverSeen("/smuggled"),
			up:   &script{early: true, valid: true, raw: "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"},
			send: post("Content-Length: "+fmt.Sprint(len(smuggled))+"\r\nExpect: 100-continue\r\n", ""), rest: smuggled},
		{name: "early-answer-body-holds-request", expect: either, check: neverSeen("/smuggled"),
			up:   &script{early: true, valid: true, raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
			send: post("Content-Length: "+fmt.Sprint(len(smuggled))+"\r\n", smuggled)},
		{name: "upgrade-refused-body-holds-request", expect: either, upgrade: true, check: neverSeen("/smuggled"),
			send: post("Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: "+fmt.Sprint(len(smuggled))+"\r\n", smuggled)},
		// A refused upgrade must leave the connection in HTTP: a proxy that opened a tunnel
		// anyway would carry the next request to the upstream unseen.
		{name: "upgrade-refused-426-then-request", expect: either, upgrade: true, nresp: 2,
			up:   &script{valid: true, raw: "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"},
			send: withFields("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 99\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") + smuggled},
		{name: "forwarding-fields-not-believed", expect: accept, check: notForged,
			send: withFields("X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9;host=evil.test\r\n")},
		{name: "http10-client-gets-no-1xx", expect: accept, check: no1xx,
			up:   &script{valid: true, raw: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
			send: "GET /a HTTP/1.0\r\n" + hostLine + "\r\n"},
		// Targets: not framing, but a proxy and its upstream must agree on them too.
		{name: "target-dot-segments", expect: either, check: upstreamTarget("/a/../b"), send: get("/a/../b")},
		{name: "target-encoded-slash", expect: either, check: upstreamTarget("/a%2fb"), send: get("/a%2fb")},
		{name: "target-encoded-crlf", expect: either, check: upstreamTarget("/a%0d%0aX:%20y"), send: get("/a%0d%0aX:%20y")},
		{name: "target-non-ascii", expect: either, send: "GET /caf\xc3\xa9 HTTP/1.1\r\n" + hostLine + "\r\n"},
		{name: "target-query-hash", expect: either, check: upstreamTarget("/a?b#c"), send: get("/a?b#c")},
		{name: "absolute-form-port", expect: accept, check: upstreamHost("other.test:9999"),
			send: "GET http://other.test:9999/a HTTP/1.1\r\n" + hostLine + "\r\n"},
	}...)
	for _, name := range []string{"Content-Length: 50", "Transfer-Encoding: chunked", "Host: evil.test",
		"Authorization: Basic ZXZpbDpldmls", "Cookie: session=evil"} {
		short := strings.ToLower(strings.Split(name, ":")[0])
		cs = append(cs, kase{name: "chunk-trailer-" + short, expect: either,
			send: post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n"+name+"\r\n\r\n")})
		// The same, announced in a Trailer field, which is how net/http keeps trailers.
		cs = append(cs, kase{name: "chunk-trailer-declared-" + short, expect: either,
			send: post("Trailer: "+strings.Split(name, ":")[0]+"\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n"+name+"\r\n\r\n")})
	}
	return cs
}

// respond builds a response case: GET /r answered with raw.
func respond(name string, e expectation, raw string) kase {
	return kase{name: name, expect: e, send: get("/r"), up: &script{raw: raw}}
}

func responseCases() []kase {
	ok5 := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
	stray := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY"
	early := "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
	chunked := func(body string) string {
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
	}
	cs := []kase{
		respond("resp-length", accept, ok5),
		respond("resp-chunked", accept, chunked(chunkedHello)),
		respond("resp-close-delimited", accept, "HTTP/1.1 200 OK\r\n\r\nhello"),
		respond("resp-cl-te", reject, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"+chunkedHello),
		respond("resp-te-cl", reject, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"+chunkedHello),
		respond("resp-cl-duplicate-equal", reject, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-cl-duplicate-conflict", reject, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
		respond("resp-cl-list", reject, "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"),
		respond("resp-cl-negative", reject, "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"),
		respond("resp-cl-plus", reject, "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
		respond("resp-cl-hex", reject, "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"),
		// RFC 9112 §5.1 lets a proxy remove the whitespace before forwarding.
		respond("resp-cl-space-before-colon", either, "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"),
		respond("resp-te-chunked-identity", reject, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n"+chunkedHello),
		respond("resp-te-xchunked", reject, "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"+chunkedHello),
		respond("resp-te-gzip-chunked", either, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"+chunkedHello),
		respond("resp-te-duplicate-lines", reject, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"+chunkedHello),
		respond("resp-te-http10", reject, "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+chunkedHello),
		respond("resp-te-identity-close", either, "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello"),
		respond("resp-bare-lf-head", either, "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"),
		respond("resp-bare-lf-hides-cl", either, "HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-bare-cr-in-value", reject, "HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 5\r\n\r\nhello"),
		respond("resp-obs-fold", either, "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-nul-in-value", reject, "HTTP/1.1 200 OK\r\nX-A: 1\x002\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-http09", reject, "hello"),
		// Status lines.
		respond("resp-status-http10", accept, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-no-reason", accept, "HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-empty-reason", accept, "HTTP/1.1 200 \r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-099", reject, "HTTP/1.1 099 Low\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-600", either, "HTTP/1.1 600 High\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-999", either, "HTTP/1.1 999 Max\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-2-digits", reject, "HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-4-digits", reject, "HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-http2", reject, "HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-lowercase", reject, "http/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-status-double-space", reject, "HTTP/1.1  200 OK\r\nContent-Length: 5\r\n\r\nhello"),
		// Bodies that must not be.
		respond("resp-stray-after-length", accept, ok5+stray),
		respond("resp-stray-after-chunked", accept, chunked(chunkedHello)+stray),
		respond("resp-304-with-length", accept, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
		respond("resp-204-te-no-body", accept, "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"),
		respond("resp-cl0", accept, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
		respond("resp-100-unsolicited", accept, "HTTP/1.1 100 Continue\r\n\r\n"+ok5),
		respond("resp-1xx-3", accept, strings.Repeat(early, 3)+ok5),
		respond("resp-1xx-10", accept, strings.Repeat(early, 10)+ok5),
		respond("resp-1xx-with-body", either, "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nhello"+ok5),
		respond("resp-1xx-then-close", either, early),
		respond("resp-101-unasked", reject, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
		respond("resp-close-before-head", either, "-"),
		respond("resp-close-mid-head", either, "HTTP/1.1 200 OK\r\nContent-Le"),
		respond("resp-length-and-close", accept, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
		respond("resp-connection-close-kept-open", accept, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
		respond("resp-connection-close-stray", accept, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"+stray),
		respond("resp-chunked-unterminated-close", either, chunked("5\r\nhello\r\n0\r\n")),
		respond("resp-header-64k", either, "HTTP/1.1 200 OK\r\nX-A: "+strings.Repeat("a", 64<<10)+"\r\nContent-Length: 5\r\n\r\nhello"),
		respond("resp-head-2mib", reject, "HTTP/1.1 200 OK\r\n"+strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 2100)+"Content-Length: 5\r\n\r\nhello"),
		respond("resp-trailer", accept, chunked("5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n")),
	}
	for i := range cs {
		s := cs[i].up
		switch cs[i].name {
		case "resp-length", "resp-chunked", "resp-status-http10", "resp-status-no-reason",
			"resp-status-empty-reason", "resp-304-with-length", "resp-cl0", "resp-100-unsolicited",
			"resp-1xx-3", "resp-1xx-10", "resp-length-and-close", "resp-trailer":
			s.valid = true
			if strings.HasSuffix(s.raw, "hello") || strings.HasSuffix(s.raw, chunkedHello) {
				cs[i].fullBody = 5
			}
		}
		switch cs[i].name {
		case "resp-close-delimited", "resp-length-and-close", "resp-connection-close-stray",
			"resp-close-mid-head", "resp-1xx-then-close", "resp-http09", "resp-te-identity-close",
			"resp-chunked-unterminated-close":
			s.close = true
		}
	}
	cs = append(cs,
		// Bodies cut short: the client must see the break, never a clean short body.
		kase{name: "resp-early-close-length", expect: either, send: get("/r"), fullBody: 100,
			up: &script{raw: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 50), close: true}},
		kase{name: "resp-early-close-chunked", expect: either, send: get("/r"), fullBody: 32,
			up: &script{raw: chunked("10\r\n" + strings.Repeat("x", 16) + "\r\n"), close: true}},
		kase{name: "resp-early-close-mid-chunk", expect: either, send: get("/r"), fullBody: 32,
			up: &script{raw: chunked("20\r\n" + strings.Repeat("x", 16)), close: true}},
		kase{name: "resp-early-close-length-post", expect: either, send: post("Content-Length: 5\r\n", "hello"), fullBody: 100,
			up: &script{raw: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 50), close: true}},
		kase{name: "resp-close-before-head-post", expect: either, send: post("Content-Length: 5\r\n", "hello"),
			up: &script{raw: "-"}},
		kase{name: "resp-chunk-bad-size", expect: either, send: get("/r"), fullBody: 10,
			up: &script{raw: chunked("5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n")}},
		kase{name: "resp-chunk-overflow", expect: either, send: get("/r"), fullBody: 10,
			up: &script{raw: chunked("5\r\nhello\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n")}},
		kase{name: "resp-chunk-negative", expect: either, send: get("/r"), fullBody: 10,
			up: &script{raw: chunked("5\r\nhello\r\n-5\r\nhello\r\n0\r\n\r\n")}},
		kase{name: "resp-chunk-0x", expect: either, send: get("/r"), fullBody: 10,
			up: &script{raw: chunked("5\r\nhello\r\n0x5\r\nhello\r\n0\r\n\r\n")}},
		kase{name: "resp-chunk-bare-lf", expect: either, send: get("/r"), fullBody: 10,
			up: &script{raw: chunked("5\r\nhello\r\n5\nhello\r\n0\r\n\r\n")}},
		kase{name: "resp-chunk-missing-crlf", expect: either, send: get("/r"), fullBody: 10,
			up: &script{raw: chunked("5\r\nhelloX5\r\nhello\r\n0\r\n\r\n")}},
		kase{name: "resp-chunk-data-too-long", expect: either, send: get("/r"), fullBody: 10,
			up: &script{raw: chunked("5\r\nhello\r\n3\r\nhello\r\n0\r\n\r\n")}},
		// Bodiless responses followed by bytes: they must never reach the next request.
		kase{name: "resp-stray-after-204", expect: accept, send: get("/r"),
			up: &script{raw: "HTTP/1.1 204 No Content\r\n\r\n" + stray}},
		kase{name: "resp-stray-after-304", expect: accept, send: get("/r"),
			up: &script{raw: "HTTP/1.1 304 Not Modified\r\n\r\n" + stray}},
		kase{name: "resp-stray-after-head", expect: accept, send: "HEAD /r HTTP/1.1\r\n" + hostLine + "\r\n",
			up: &script{raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + stray}},
		kase{name: "resp-stray-after-204-later", expect: accept, send: get("/r"),
			up: &script{raw: "HTTP/1.1 204 No Content\r\n\r\n", after: stray}},
		kase{name: "resp-stray-after-304-later", expect: accept, send: get("/r"),
			up: &script{raw: "HTTP/1.1 304 Not Modified\r\n\r\n", after: stray}},
		kase{name: "resp-stray-after-head-later", expect: accept, send: "HEAD /r HTTP/1.1\r\n" + hostLine + "\r\n",
			up: &script{raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", after: stray}},
		kase{name: "resp-stray-after-length-later", expect: accept, send: get("/r"),
			up: &script{raw: ok5, after: stray}},
		kase{name: "resp-stray-after-chunked-later", expect: accept, send: get("/r"),
			up: &script{raw: chunked(chunkedHello), after: stray}},
		kase{name: "resp-204-chunked-terminator", expect: accept, send: get("/r"),
			up: &script{raw: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"}},
		kase{name: "resp-204-chunked-terminator-later", expect: accept, send: get("/r"),
			up: &script{raw: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", after: "0\r\n\r\n" + stray}},
		kase{name: "resp-body-on-204", expect: either, send: get("/r"),
			up: &script{raw: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nSTRAY"}},
		kase{name: "resp-body-on-304", expect: either, send: get("/r"),
			up: &script{raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nSTRAY"}},
		kase{name: "resp-chunked-body-on-204", expect: either, send: get("/r"),
			up: &script{raw: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nSTRAY\r\n0\r\n\r\n"}},
		kase{name: "resp-head-chunked-no-body", expect: accept, send: "HEAD /r HTTP/1.1\r\n" + hostLine + "\r\n",
			up: &script{raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", valid: true}},
		// 1xx floods.
		kase{name: "resp-1xx-30", expect: either, send: get("/r"),
			up: &script{raw: strings.Repeat(early, 30) + ok5, valid: true}},
		kase{name: "resp-1xx-500", expect: either, send: get("/r"), timeout: 3 * time.Second,
			up: &script{raw: strings.Repeat(early, 500) + ok5, valid: true}},
		kase{name: "resp-1xx-30-post", expect: either, send: post("Content-Length: 5\r\n", "hello"),
			up: &script{raw: strings.Repeat(early, 30) + ok5, valid: true}},
		// Protocol switches.
		kase{name: "resp-101-asked", expect: accept, upgrade: true,
			send: withFields("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
			up:   &script{raw: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"}},
		kase{name: "resp-early-answer-post", expect: accept, send: post("Content-Length: 5\r\n", "hello"),
			up: &script{raw: ok5, early: true, valid: true}},
	)
	// Trailers with fields that must not be trailers.
	for _, f := range []string{"Content-Length: 50", "Transfer-Encoding: chunked", "Host: evil.test",
		"Authorization: Basic ZXZpbDpldmls", "Set-Cookie: session=evil", "Content-Type: text/html",
		"Trailer: X-Sum", "Cache-Control: no-store"} {
		name := strings.ToLower(strings.Split(f, ":")[0])
		cs = append(cs, kase{name: "resp-trailer-" + name, expect: either, send: get("/r"),
			up: &script{raw: chunked("5\r\nhello\r\n0\r\n" + f + "\r\n\r\n"), valid: true}})
	}
	cs = append(cs, kase{name: "resp-trailer-declared-set-cookie", expect: either, send: get("/r"),
		up: &script{raw: "HTTP/1.1 200 OK\r\nTrailer: Set-Cookie\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nSet-Cookie: session=evil\r\n\r\n", valid: true}})
	// The same answers to a POST with a body: requests with bodies take a different client
	// in the proxy than bodiless GETs, with its own response parser.
	var posts []kase
	for _, c := range cs {
		if c.send != get("/r") || strings.HasPrefix(c.name, "resp-status-") {
			continue
		}
		p := c
		p.name += "-post"
		p.send = post("Content-Length: 5\r\n", "hello")
		// The body path's client discards stray bytes and survives 1xx floods.
		p.knownDefect = ""
		posts = append(posts, p)
	}
	return append(cs, posts...)
}

// upstreamHost requires the upstream to see Host: want (RFC 9112 §3.2.2: the absolute form's
// authority replaces the Host field).
func upstreamHost(want string) func(*result, *verdict) {
	return func(r *result, v *verdict) {
		for _, u := range r.up {
			if !strings.HasPrefix(u.Target, "/probe") && u.Complete {
				if h := u.Header["host"]; len(h) != 1 || h[0] != want {
					v.add(questionable, "upstream got Host %q, not the absolute form's %q", h, want)
				}
			}
		}
	}
}

// neverSeen requires the upstream never to parse a request for target.
func neverSeen(target string) func(*result, *verdict) {
	return func(r *result, v *verdict) {
		for _, u := range r.up {
			if u.Target == target && u.Complete {
				v.add(unsafe, "U1 upstream parsed %s %q from bytes the client sent as a body", u.Method, u.Target)
			}
		}
	}
}

// upstreamTarget wants the upstream to see the client's target unchanged.
func upstreamTarget(want string) func(*result, *verdict) {
	return func(r *result, v *verdict) {
		for _, u := range r.up {
			if !strings.HasPrefix(u.Target, "/probe") && u.Complete && originForm(u.Target) != want {
				v.add(questionable, "upstream got target %q for the client's %q", u.Target, want)
			}
		}
	}
}

// no1xx wants an HTTP/1.0 client to get no 1xx response (RFC 9110 §15.2).
func no1xx(r *result, v *verdict) {
	if r.x.Info > 0 {
		v.add(questionable, "an HTTP/1.0 client got %d 1xx responses", r.x.Info)
	}
}

// notForged wants the client's own forwarding fields replaced, since the client is not a
// trusted proxy.
func notForged(r *result, v *verdict) {
	for _, u := range r.up {
		if strings.HasPrefix(u.Target, "/probe") || !u.Complete {
			continue
		}
		for _, f := range []string{"x-forwarded-for", "x-forwarded-host", "forwarded"} {
			if s := strings.Join(u.Header[f], ","); strings.Contains(s, "203.0.113.9") || strings.Contains(s, "evil.test") {
				v.add(questionable, "the client's %s reached the upstream: %q", f, s)
			}
		}
	}
}

// closedAfter requires the connection to end after a request with Connection: close.
func closedAfter(r *result, v *verdict) {
	if r.x.ProbeSame != nil {
		v.add(questionable, "the connection carried another request after Connection: close")
	}
}

// forwardedFor requires X-Forwarded-For to survive a Connection field naming it, and the
// client's forged value not to be believed.
func forwardedFor(r *result, v *verdict) {
	for _, u := range r.up {
		if strings.HasPrefix(u.Target, "/probe") || !u.Complete {
			continue
		}
		xff := u.Header["x-forwarded-for"]
		switch {
		case len(xff) == 0:
			v.add(questionable, "Connection: X-Forwarded-For removed the proxy's X-Forwarded-For")
		case strings.Contains(strings.Join(xff, ","), "203.0.113.9"):
			v.add(questionable, "the client's forged X-Forwarded-For reached the upstream: %q", xff)
		}
	}
}
