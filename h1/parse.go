package h1

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// exchange holds one request and its response: one allocation for the URL, the response
// writer and the body reader. The Request is parsed into a template on the serving
// goroutine's stack, of which WithContext makes the one heap copy.
type exchange struct {
	url  url.URL
	res  response
	body body
	h2c  bool // the connection opened with the HTTP/2 preface
}

// requestError is a request the server answers itself and closes the connection after.
type requestError struct {
	code int
	why  string
}

func (e *requestError) Error() string { return e.why }

// errQuiet ends a connection without an answer: the client left, or stalled before a whole
// request head arrived.
var errQuiet = errors.New("h1: connection ended")

func badRequest(why string) error { return &requestError{http.StatusBadRequest, why} }

// readRequest reads the next request head into x.
func (c *conn) readRequest(x *exchange, req *http.Request, first bool) error {
	skipped := 0
	for {
		// RFC 9112 §2.2: empty lines before a request line are ignored.
		for c.r < c.w {
			if c.rbuf[c.r] == '\n' {
				c.r++
				skipped++
			} else if c.rbuf[c.r] == '\r' && c.r+1 < c.w && c.rbuf[c.r+1] == '\n' {
				c.r += 2
				skipped += 2
			} else {
				break
			}
		}
		if skipped > c.s.maxHead {
			return errQuiet
		}
		if end := headEnd(c.rbuf[:c.w], c.r, &c.scan); end >= 0 {
			if end-c.r > c.s.maxHead {
				return &requestError{http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"}
			}
			return c.parse(x, req, end, first)
		}
		if c.w-c.r > c.s.maxHead {
			return &requestError{http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"}
		}
		c.armHead()
		err := c.fill()
		if err == errBufferFull {
			// A head larger than the buffer: grow it, within MaxHeaderBytes.
			nb := make([]byte, min(2*len(c.rbuf), c.s.maxHead+bufSize))
			copy(nb, c.rbuf[:c.w])
			putBuf(c.rbuf)
			c.rbuf = nb
			err = c.fill()
		}
		if err != nil {
			return errQuiet
		}
	}
}

// headEnd returns the index just past the empty line that ends the head starting at start,
// or -1. *scan is where the search resumes next time.
func headEnd(b []byte, start int, scan *int) int {
	i := max(*scan, start)
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			*scan = len(b)
			return -1
		}
		k := i + j
		if k-1 >= start && b[k-1] == '\n' || k-2 >= start && b[k-1] == '\r' && b[k-2] == '\n' {
			*scan = k + 1
			return k + 1
		}
		i = k + 1
	}
}

// parse parses the head in rbuf[c.r:end] into x and req.
func (c *conn) parse(x *exchange, req *http.Request, end int, first bool) error {
	raw := c.rbuf[c.r:end]
	// The request line.
	nl := bytes.IndexByte(raw, '\n')
	line := raw[:nl]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if string(line) == "PRI * HTTP/2.0" {
		if first && c.s.h2c && c.tlsState == nil {
			x.h2c = true // the bytes stay in the buffer for srv
			return nil
		}
		return &requestError{http.StatusHTTPVersionNotSupported, "HTTP/2 is not served here"}
	}
	// One string holds the whole head; the method, target and fields are substrings of it.
	head := string(raw)
	c.r = end
	line1 := head[:len(line)]
	fields := head[nl+1:]

	method, rest, ok1 := strings.Cut(line1, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return badRequest("malformed request line")
	}
	if !validMethod(method) {
		return badRequest("invalid method")
	}
	major, minor, ok := parseVersion(proto)
	if !ok {
		return badRequest("malformed HTTP version")
	}
	if major != 1 {
		return &requestError{http.StatusHTTPVersionNotSupported, "unsupported HTTP version"}
	}
	if !validTarget(target) {
		return badRequest("invalid request target")
	}
	req.Method = method
	req.RequestURI = target
	req.ProtoMajor, req.ProtoMinor = 1, minor
	req.Proto = "HTTP/1.1"
	if minor == 0 {
		req.Proto = "HTTP/1.0"
	} else if minor != 1 {
		req.Proto = proto
	}
	if err := x.parseTarget(req, method, target); err != nil {
		return err
	}
	req.RemoteAddr = c.remoteAddr()
	req.TLS = c.tlsState

	// The header fields. One slice backs every field's first value.
	n := strings.Count(fields, "\n") - 1
	h := make(http.Header, n)
	strs := make([]string, n)
	var host string
	hosts := 0
	for len(fields) > 0 {
		var l string
		l, fields, _ = strings.Cut(fields, "\n")
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		if l == "" {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			return badRequest("obsolete line folding in the header")
		}
		colon := strings.IndexByte(l, ':')
		if colon <= 0 {
			return badRequest("malformed header field line")
		}
		name := l[:colon]
		if !validToken(name) {
			return badRequest("invalid header field name")
		}
		v := trimOWS(l[colon+1:])
		if !validValue(v) {
			return badRequest("invalid header field value")
		}
		key := canonicalKey(name)
		if key == "Host" {
			host = v
			hosts++
			continue
		}
		if vv := h[key]; vv == nil && len(strs) > 0 {
			vv, strs = strs[:1:1], strs[1:]
			vv[0] = v
			h[key] = vv
		} else {
			h[key] = append(vv, v)
		}
	}
	req.Header = h
	if hosts > 1 {
		return badRequest("too many Host headers")
	}
	if hosts == 0 && minor >= 1 && method != http.MethodConnect {
		return badRequest("missing required Host header")
	}
	if !httpguts.ValidHostHeader(host) {
		return badRequest("malformed Host header")
	}
	req.Host = host
	if x.url.Host != "" {
		req.Host = x.url.Host
	}
	return x.framing(c, req)
}

// parseTarget fills x.url from the request target: the origin form on a fast path, the
// others (and any target with a percent-encoding) through url.ParseRequestURI.
func (x *exchange) parseTarget(req *http.Request, method, target string) error {
	u := &x.url
	req.URL = u
	if target[0] == '/' && strings.IndexByte(target, '%') < 0 {
		path, query, hasQuery := strings.Cut(target, "?")
		u.Path = path
		u.RawQuery = query
		u.ForceQuery = hasQuery && query == ""
		return nil
	}
	raw, authority := target, false
	if method == http.MethodConnect && target[0] != '/' {
		raw, authority = "http://"+target, true
	}
	p, err := url.ParseRequestURI(raw)
	if err != nil {
		return badRequest("malformed request target")
	}
	if authority {
		p.Scheme = ""
	}
	*u = *p
	return nil
}

// framing decides how the request body is delimited (RFC 9112 §6), refusing every message
// whose framing is ambiguous: a sender that cannot frame its message is not trusted with
// the connection.
func (x *exchange) framing(c *conn, req *http.Request) error {
	h := req.Header
	b := &x.body
	b.c = c
	b.res = &x.res
	x.res.c = c
	x.res.body = b
	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	switch {
	case hasTE:
		if req.ProtoMinor == 0 {
			// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		}
		if hasCL {
			// RFC 9112 §6.3: the sign of a smuggling attempt; refused as NGINX does.
			return badRequest("both Transfer-Encoding and Content-Length")
		}
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return &requestError{http.StatusNotImplemented, "unsupported Transfer-Encoding"}
		}
		delete(h, "Transfer-Encoding")
		req.TransferEncoding = []string{"chunked"}
		req.ContentLength = -1
		b.mode = bodyChunked
	case hasCL:
		if len(cl) != 1 {
			return badRequest("more than one Content-Length")
		}
		n, ok := parseLength(cl[0])
		if !ok {
			return badRequest("invalid Content-Length")
		}
		req.ContentLength = n
		if n > 0 {
			b.mode = bodyLength
			b.n = n
			b.remain.Store(n)
		}
	}
	if b.mode == bodyNone {
		req.Body = http.NoBody
	} else {
		req.Body = b
		if tr := h["Trailer"]; len(tr) > 0 && b.mode == bodyChunked {
			if err := declareTrailers(req, tr); err != nil {
				return err
			}
		}
	}
	if e := h["Expect"]; len(e) > 0 {
		if len(e) != 1 || !strings.EqualFold(e[0], "100-continue") {
			return &requestError{http.StatusExpectationFailed, "unsupported Expect"}
		}
		// A 100 Continue goes out before the first read of a body; HTTP/1.0 has none.
		b.expect.Store(b.mode != bodyNone && req.ProtoMinor >= 1)
	}
	conn := h["Connection"]
	if req.ProtoMinor == 0 {
		req.Close = !hasToken(conn, "keep-alive")
		x.res.keepAlive10 = !req.Close
	} else {
		req.Close = hasToken(conn, "close")
	}
	return nil
}

// declareTrailers fills req.Trailer with the declared names, as net/http does, refusing the
// ones that may not be trailers.
func declareTrailers(req *http.Request, declared []string) error {
	req.Trailer = make(http.Header)
	for _, v := range declared {
		for name := range strings.SplitSeq(v, ",") {
			name = http.CanonicalHeaderKey(trimOWS(name))
			switch name {
			case "":
				continue
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return badRequest("bad trailer key " + name)
			}
			req.Trailer[name] = nil
		}
	}
	return nil
}

// parseVersion parses "HTTP/x.y" with one digit each.
func parseVersion(v string) (major, minor int, ok bool) {
	switch v {
	case "HTTP/1.1":
		return 1, 1, true
	case "HTTP/1.0":
		return 1, 0, true
	}
	if len(v) != 8 || v[:5] != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// parseLength parses a Content-Length value: digits only, at most 18 of them after any
// leading zeros.
func parseLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	digits := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		if n > 0 || s[i] != '0' {
			digits++
		}
		if digits > 18 {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// hasToken reports whether a comma-separated field holds token, case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(trimOWS(t), token) {
				return true
			}
		}
	}
	return false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// tchar marks the bytes of RFC 9110's token.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tchar[s[i]] {
			return false
		}
	}
	return true
}

func validMethod(m string) bool { return validToken(m) }

// validTarget reports whether a request target holds no control byte, space or DEL.
func validTarget(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b <= ' ' || b == 0x7f {
			return false
		}
	}
	return true
}

// validValue reports whether a field value holds no control byte but HTAB; DEL and
// obs-text pass, as with net/http.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' && b != '\t' {
			return false
		}
	}
	return true
}

// commonKeys interns the canonical names of common fields, so that a client sending them
// in lower case (as many do) costs no allocation per name.
var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Content-Encoding", "Content-Length", "Content-Type",
		"Cookie", "Date", "Expect", "Forwarded", "Host", "If-Match", "If-Modified-Since",
		"If-None-Match", "If-Range", "If-Unmodified-Since", "Keep-Alive", "Origin", "Pragma",
		"Range", "Referer", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "User-Agent",
		"Via", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip",
		"X-Request-Id", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol",
		"Sec-Websocket-Extensions", "Traceparent", "Tracestate", "Grpc-Timeout",
	} {
		m[k] = k
	}
	return m
}()

// canonicalKey returns the canonical form of a valid field name; a name already canonical
// is returned as it is, a common one is interned.
func canonicalKey(name string) string {
	upper := true
	canonical := true
	for i := 0; i < len(name); i++ {
		b := name[i]
		if upper && 'a' <= b && b <= 'z' || !upper && 'A' <= b && b <= 'Z' {
			canonical = false
			break
		}
		upper = b == '-'
	}
	if canonical {
		return name
	}
	if len(name) <= 64 {
		var buf [64]byte
		upper = true
		for i := 0; i < len(name); i++ {
			b := name[i]
			if upper && 'a' <= b && b <= 'z' {
				b -= 'a' - 'A'
			} else if !upper && 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			buf[i] = b
			upper = b == '-'
		}
		if k, ok := commonKeys[string(buf[:len(name)])]; ok {
			return k
		}
	}
	return http.CanonicalHeaderKey(name)
}
