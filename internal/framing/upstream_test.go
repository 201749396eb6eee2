package framing

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// upReq is one request as the scripted upstream parsed it.
type upReq struct {
	Seq      int
	Case     string
	Method   string
	Target   string
	Proto    string
	Header   map[string][]string // lower-case names
	Head     string              // the raw request line and fields, as received
	BodyLen  int
	Complete bool     // the head and the whole body arrived
	Flags    []string // framing a next hop could read differently (see flagHead)
	Answered bool     // a complete, well-formed final response was written for it
}

// script is the upstream's answer to the requests of a case's main exchange (every request
// whose target does not start with /probe). A nil script means the echo answer.
type script struct {
	raw   string // bytes written for each request; "" means the echo answer
	close bool   // close the connection after writing raw
	early bool   // answer as soon as the head is read, before the body
	valid bool   // raw is one complete, well-formed final response: resending after it is UNSAFE
	// after is written on the same connection a moment after raw, once the proxy has taken
	// the response as complete: bytes that arrive while the connection sits idle in a pool.
	after string
}

// afterDelay is how long the upstream waits before writing a script's after bytes.
const afterDelay = 30 * time.Millisecond

// upstream is a raw HTTP/1.1 server on 127.0.0.1 that records every request it parses and
// answers by script. Its parser is strict where a backend's must be (chunked framing,
// Content-Length digits) and flags everything a more lenient backend could read differently.
type upstream struct {
	ln      net.Listener
	pending atomic.Int64 // connections in the middle of a request

	mu    sync.Mutex // mu protects the fields below
	seq   int
	name  string
	scr   *script
	reqs  []upReq
	conns map[net.Conn]struct{}
	after chan struct{} // closed when the case's after bytes were written
	once  *sync.Once
}

// startUpstream listens on addr ("127.0.0.1:0" for any port) until the test ends.
func startUpstream(tb testing.TB, addr string) *upstream {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(tb, err, "listen for the upstream on %s", addr)
	u := &upstream{ln: ln, conns: make(map[net.Conn]struct{})}
	go u.serve()
	tb.Cleanup(u.close)
	return u
}

func (u *upstream) addr() string { return u.ln.Addr().String() }

func (u *upstream) close() {
	u.ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
}

// begin starts a case: later requests are recorded under name and answered by s.
func (u *upstream) begin(name string, s *script) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.name, u.scr, u.reqs = name, s, nil
	u.after, u.once = make(chan struct{}), new(sync.Once)
}

// waitAfter waits until the case's after bytes were written, for at most d. Cases without
// them do not wait.
func (u *upstream) waitAfter(d time.Duration) {
	u.mu.Lock()
	s, ch := u.scr, u.after
	u.mu.Unlock()
	if s == nil || s.after == "" {
		return
	}
	select {
	case <-ch:
	case <-time.After(d):
	}
}

// requests returns the requests parsed since begin.
func (u *upstream) requests() []upReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upReq(nil), u.reqs...)
}

// quiet waits until no connection is in the middle of a request, for at most d.
func (u *upstream) quiet(d time.Duration) {
	end := time.Now().Add(d)
	for u.pending.Load() > 0 && time.Now().Before(end) {
		time.Sleep(2 * time.Millisecond) // polling with a deadline: the upstream has no event to wait on
	}
}

func (u *upstream) serve() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		u.conns[c] = struct{}{}
		u.mu.Unlock()
		go u.serveConn(c)
	}
}

// maxLine bounds one line of a head, so that a runaway client cannot exhaust memory.
const maxLine = 4 << 20

func (u *upstream) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
	}()
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		// Wait for the first byte before counting the connection as busy: an idle pooled
		// connection is not a request in progress.
		if _, err := br.Peek(1); err != nil {
			return
		}
		u.pending.Add(1)
		keep := u.one(c, br)
		u.pending.Add(-1)
		if !keep {
			return
		}
	}
}

// one reads one request and answers it. It reports whether the connection may carry another.
func (u *upstream) one(c net.Conn, br *bufio.Reader) bool {
	var head bytes.Buffer
	r := upReq{Header: make(map[string][]string)}
	defer func() { u.record(&r) }()

	line, err := readLine(br, &head)
	for err == nil && line == "" { // RFC 9112 §2.2: ignore at least one empty line before a request
		line, err = readLine(br, &head)
	}
	if err != nil {
		r.Head = head.String()
		return false
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 {
		r.Flags = append(r.Flags, "malformed-request-line")
		r.Head = head.String()
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return false
	}
	r.Method, r.Target, r.Proto = parts[0], parts[1], parts[2]
	last := ""
	for {
		line, err = readLine(br, &head)
		if err != nil {
			r.Head = head.String()
			return false
		}
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			r.Flags = append(r.Flags, "obs-fold")
			if last != "" {
				vv := r.Header[last]
				vv[len(vv)-1] += " " + strings.TrimSpace(line)
			}
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || !isToken(name) {
			r.Flags = append(r.Flags, "bad-field-name")
			continue
		}
		last = strings.ToLower(name)
		r.Header[last] = append(r.Header[last], strings.Trim(value, " \t"))
	}
	r.Head = head.String()
	r.Flags = append(r.Flags, flagHead(r.Head, r.Header, r.Proto)...)

	s := u.scriptFor(r.Target)
	if s != nil && s.early {
		u.answer(c, &r, s)
	}
	te, cl := r.Header["transfer-encoding"], r.Header["content-length"]
	switch {
	case len(te) > 0:
		if !strings.EqualFold(te[len(te)-1], "chunked") {
			io.WriteString(c, "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return false
		}
		n, trailers, err := readChunked(br)
		r.BodyLen = n
		for _, t := range trailers {
			if forbiddenTrailer[strings.ToLower(t)] {
				r.Flags = append(r.Flags, "trailer:"+strings.ToLower(t))
			}
		}
		if err != nil {
			if err != io.EOF && err != io.ErrUnexpectedEOF {
				r.Flags = append(r.Flags, "bad-chunked: "+err.Error())
			}
			return false
		}
	case len(cl) > 0:
		n, err := strconv.ParseUint(cl[0], 10, 62)
		if err != nil {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return false
		}
		m, _ := io.CopyN(io.Discard, br, int64(n))
		r.BodyLen = int(m)
		if m < int64(n) {
			return false
		}
	}
	r.Complete = true
	if s == nil || !s.early {
		return u.answer(c, &r, s)
	}
	return !s.close
}

// scriptFor returns the script for a request of the current case; probes get the echo.
func (u *upstream) scriptFor(target string) *script {
	if strings.HasPrefix(target, "/probe") {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.scr
}

// answer writes the response for r and reports whether the connection may carry another.
func (u *upstream) answer(c net.Conn, r *upReq, s *script) bool {
	u.mu.Lock()
	u.seq++
	r.Seq, r.Case = u.seq, u.name
	u.mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(3 * time.Second))
	if s == nil || s.raw == "" {
		body := fmt.Sprintf("echo case=%s seq=%d method=%s target=%s body=%d\n",
			r.Case, r.Seq, r.Method, r.Target, r.BodyLen)
		// The echo is in a field too, so that answers to HEAD carry it.
		content := body
		if r.Method == "HEAD" {
			content = ""
		}
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Echo: %s\r\nContent-Length: %d\r\n\r\n%s",
			strings.TrimSpace(body), len(body), content)
		r.Answered = err == nil
		return err == nil && !hasToken(r.Header["connection"], "close") && (s == nil || !s.close)
	}
	if s.raw == "-" {
		return false // close without a byte
	}
	_, err := io.WriteString(c, s.raw)
	r.Answered = err == nil && s.valid
	if s.after != "" {
		u.mu.Lock()
		ch, once := u.after, u.once
		u.mu.Unlock()
		time.AfterFunc(afterDelay, func() {
			io.WriteString(c, s.after)
			once.Do(func() { close(ch) })
		})
	}
	return err == nil && !s.close
}

func (u *upstream) record(r *upReq) {
	if r.Head == "" && r.Method == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if r.Case == "" {
		r.Case = u.name
	}
	u.reqs = append(u.reqs, *r)
}

// readLine reads a line ending in LF, appends its raw bytes to raw and returns it without
// the line ending.
func readLine(br *bufio.Reader, raw *bytes.Buffer) (string, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if err == bufio.ErrBufferFull && len(line) < maxLine {
			continue
		}
		raw.Write(line)
		if err != nil {
			return "", err
		}
		break
	}
	s := strings.TrimSuffix(string(line), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// flagHead lists what in a forwarded head a next hop could read differently from this one.
func flagHead(head string, h map[string][]string, proto string) []string {
	var f []string
	if strings.Contains(strings.ReplaceAll(head, "\r\n", ""), "\n") {
		f = append(f, "bare-lf")
	}
	if strings.Contains(strings.ReplaceAll(head, "\r\n", ""), "\r") {
		f = append(f, "bare-cr")
	}
	for i := 0; i < len(head); i++ {
		if c := head[i]; (c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f {
			f = append(f, fmt.Sprintf("ctl-0x%02x", c))
			break
		}
	}
	te, cl := h["transfer-encoding"], h["content-length"]
	if len(te) > 0 && len(cl) > 0 {
		f = append(f, "cl+te")
	}
	if len(cl) > 1 {
		f = append(f, "duplicate-cl")
	}
	if len(te) > 1 || (len(te) == 1 && !strings.EqualFold(te[0], "chunked")) {
		f = append(f, fmt.Sprintf("te=%q", te))
	}
	if len(te) > 0 && proto == "HTTP/1.0" {
		f = append(f, "te-in-http/1.0")
	}
	for name := range h {
		// Some backends read an underscore as a dash: Content_Length would frame the body.
		if d := strings.ReplaceAll(name, "_", "-"); d != name && (d == "content-length" || d == "transfer-encoding") {
			f = append(f, "underscored-"+d)
		}
	}
	if len(h["host"]) > 1 {
		f = append(f, "duplicate-host")
	}
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		f = append(f, "proto="+proto)
	}
	return f
}

// forbiddenTrailer lists the fields a sender must not put in trailers (RFC 9110 §6.5.1):
// framing, routing, authentication, cookies, content and caching controls. A recipient
// that merged them into the header would be misled.
var forbiddenTrailer = map[string]bool{
	"content-length": true, "transfer-encoding": true, "trailer": true, "host": true,
	"authorization": true, "proxy-authorization": true, "www-authenticate": true,
	"set-cookie": true, "cookie": true, "content-type": true, "content-encoding": true,
	"content-range": true, "cache-control": true, "expect": true, "te": true,
	"connection": true, "upgrade": true, "location": true,
}

// readChunked reads a chunked body strictly (CRLF line endings, hex sizes, no overflow) and
// returns its length and the names of its trailer fields.
func readChunked(br *bufio.Reader) (int, []string, error) {
	var raw bytes.Buffer
	total := 0
	for {
		line, err := readLine(br, &raw)
		if err != nil {
			return total, nil, io.ErrUnexpectedEOF
		}
		if !bytes.HasSuffix(raw.Bytes(), []byte("\r\n")) {
			return total, nil, fmt.Errorf("chunk line %q ends in a bare LF", line)
		}
		raw.Reset()
		size, _, _ := strings.Cut(line, ";")
		size = strings.TrimRight(size, " \t")
		n, err := strconv.ParseUint(size, 16, 40)
		if err != nil || size == "" || size[0] == '+' {
			return total, nil, fmt.Errorf("chunk size %q", size)
		}
		if n == 0 {
			break
		}
		m, _ := io.CopyN(io.Discard, br, int64(n))
		total += int(m)
		if m < int64(n) {
			return total, nil, io.ErrUnexpectedEOF
		}
		crlf := make([]byte, 2)
		if _, err := io.ReadFull(br, crlf); err != nil {
			return total, nil, io.ErrUnexpectedEOF
		}
		if string(crlf) != "\r\n" {
			return total, nil, fmt.Errorf("chunk data not followed by CRLF: %q", crlf)
		}
	}
	var names []string
	for {
		line, err := readLine(br, &raw)
		if err != nil {
			return total, names, io.ErrUnexpectedEOF
		}
		if !bytes.HasSuffix(raw.Bytes(), []byte("\r\n")) {
			return total, names, fmt.Errorf("trailer line %q ends in a bare LF", line)
		}
		raw.Reset()
		if line == "" {
			return total, names, nil
		}
		name, _, _ := strings.Cut(line, ":")
		names = append(names, name)
	}
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

// hasToken reports whether a comma-separated list in lines holds tok, ignoring case.
func hasToken(lines []string, tok string) bool {
	for _, l := range lines {
		for _, t := range strings.Split(l, ",") {
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}
