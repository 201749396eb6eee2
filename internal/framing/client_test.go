package framing

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// response is one response as the raw client read it.
type response struct {
	StatusLine string
	Status     int
	Header     map[string][]string // lower-case names
	Framing    string              // "length", "chunked", "close" or "none"
	Body       string
	Trailer    map[string][]string
	Complete   bool   // the framing said where the body ends and it ended there
	Err        string // why reading stopped early
}

// echo is the body of the upstream's echo answer: which request of which case it answers.
type echo struct {
	Case, Method, Target string
	Seq, Body            int
}

func (r *response) echo() *echo {
	if r == nil {
		return nil
	}
	src := r.Body
	if !strings.HasPrefix(src, "echo ") {
		if h := r.Header["x-echo"]; len(h) == 1 {
			src = h[0]
		} else {
			return nil
		}
	}
	if !strings.HasPrefix(src, "echo ") {
		return nil
	}
	e := &echo{}
	for _, f := range strings.Fields(src)[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "case":
			e.Case = v
		case "seq":
			e.Seq, _ = strconv.Atoi(v)
		case "method":
			e.Method = v
		case "target":
			e.Target = v
		case "body":
			e.Body, _ = strconv.Atoi(v)
		}
	}
	return e
}

func (r *response) String() string {
	if r == nil {
		return "none"
	}
	s := fmt.Sprintf("%q %s", r.StatusLine, r.Framing)
	if !r.Complete {
		s += " cut short"
	}
	return s
}

// readResponse reads one response (a 1xx too). head says the request was HEAD. The error is
// non-nil when not even a status line and head could be read.
func readResponse(br *bufio.Reader, head bool) (*response, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	r := &response{StatusLine: strings.TrimRight(line, "\r\n"), Header: map[string][]string{}}
	f := strings.SplitN(r.StatusLine, " ", 3)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return r, fmt.Errorf("malformed status line %q", r.StatusLine)
	}
	r.Status, _ = strconv.Atoi(f[1])
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			r.Err = "head cut short"
			return r, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		k = strings.ToLower(k)
		r.Header[k] = append(r.Header[k], strings.TrimSpace(v))
	}
	switch {
	case r.Status >= 100 && r.Status < 200, r.Status == 204, r.Status == 304, head:
		r.Framing, r.Complete = "none", true
	case hasToken(r.Header["transfer-encoding"], "chunked"):
		r.Framing = "chunked"
		r.readChunked(br)
	case len(r.Header["content-length"]) > 0:
		r.Framing = "length"
		n, err := strconv.Atoi(r.Header["content-length"][0])
		if err != nil {
			r.Err = "bad Content-Length"
			return r, nil
		}
		b := make([]byte, n)
		m, err := io.ReadFull(br, b)
		r.Body = string(b[:m])
		r.Complete = err == nil
		if err != nil {
			r.Err = err.Error()
		}
	default:
		r.Framing = "close"
		b, err := io.ReadAll(br)
		r.Body = string(b)
		r.Complete = err == nil
		if err != nil {
			r.Err = err.Error()
		}
	}
	return r, nil
}

func (r *response) readChunked(br *bufio.Reader) {
	var body strings.Builder
	defer func() { r.Body = body.String() }()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			r.Err = "chunked body cut short"
			return
		}
		size, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		n, err := strconv.ParseUint(strings.TrimSpace(size), 16, 40)
		if err != nil {
			r.Err = fmt.Sprintf("bad chunk size %q", size)
			return
		}
		if n == 0 {
			break
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			r.Err = "chunk cut short"
			return
		}
		body.Write(b[:n])
	}
	r.Trailer = map[string][]string{}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			r.Err = "trailers cut short"
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			r.Complete = true
			return
		}
		k, v, _ := strings.Cut(line, ":")
		k = strings.ToLower(k)
		r.Trailer[k] = append(r.Trailer[k], strings.TrimSpace(v))
	}
}

// exchange is what the client saw in one case.
type exchange struct {
	Responses []*response // final responses on the main connection, in order
	Info      int         // 1xx responses before them
	Switched  bool        // a 101 arrived
	Closed    bool        // the proxy closed the main connection (or it broke)
	TimedOut  bool        // the deadline passed with fewer responses than requests
	Raw       string      // for cases that are not HTTP/1 (noParse): the first bytes received
	WriteErr  string
	// ProbeSame is the answer to GET /probe-same on the main connection afterwards, when it
	// was still open; ProbeSameErr says why there is none.
	ProbeSame    *response
	ProbeSameErr string
	ProbeNew     *response // the answer to GET /probe-new on a new connection
	ProbeNewErr  string
}

const (
	probeSame = "GET /probe-same HTTP/1.1\r\nHost: framing.test\r\n\r\n"
	probeNew  = "GET /probe-new HTTP/1.1\r\nHost: framing.test\r\n\r\n"
)

// run plays case c against the proxy at addr. Every read and write has a deadline. Before
// the probes it calls settle, which returns when the upstream has written everything the
// case scripts.
func run(c *kase, addr string, settle func()) *exchange {
	x := &exchange{}
	deadline := c.timeout
	if deadline == 0 {
		deadline = 1500 * time.Millisecond
	}
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		x.WriteErr = err.Error()
		x.Closed = true
		return x
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(deadline))
	br := bufio.NewReaderSize(conn, 64<<10)
	if _, err := io.WriteString(conn, c.send); err != nil {
		x.WriteErr = err.Error()
	}
	if c.halfClose {
		conn.(*net.TCPConn).CloseWrite()
	}
	if c.noParse {
		b := make([]byte, 256)
		n, err := io.ReadAtLeast(br, b, 1)
		x.Raw = string(b[:n])
		x.TimedOut = isTimeout(err)
		x.Closed = err != nil && !x.TimedOut
		x.probeNew(addr)
		return x
	}
	want := c.nresp
	if want == 0 {
		want = 1
	}
	sentRest := false
	for len(x.Responses) < want {
		i := len(x.Responses)
		r, err := readResponse(br, i < len(c.methods) && c.methods[i] == "HEAD" ||
			i == 0 && strings.HasPrefix(c.send, "HEAD "))
		if err != nil {
			if r != nil && r.Status != 0 {
				x.Responses = append(x.Responses, r)
			}
			x.TimedOut = isTimeout(err)
			x.Closed = !x.TimedOut
			if c.rest != "" && !sentRest && x.TimedOut {
				// The client waited for 100 Continue in vain: send the body now, as
				// clients do after a while.
				sentRest = true
				x.TimedOut = false
				conn.SetDeadline(time.Now().Add(deadline))
				io.WriteString(conn, c.rest)
				continue
			}
			break
		}
		if r.Status >= 100 && r.Status < 200 {
			x.Info++
			if r.Status == 101 {
				x.Switched = true
				break
			}
			if c.rest != "" && !sentRest && r.Status == 100 {
				sentRest = true
				io.WriteString(conn, c.rest)
			}
			if x.Info > 1000 {
				break
			}
			continue
		}
		x.Responses = append(x.Responses, r)
		if !r.Complete || r.Framing == "close" {
			x.Closed = true
			break
		}
	}
	settle()
	if !x.Closed && !x.TimedOut && !x.Switched {
		conn.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(conn, probeSame); err != nil {
			x.ProbeSameErr = "write: " + err.Error()
		} else {
			x.ProbeSame, x.ProbeSameErr = readFinal(br)
		}
	} else {
		x.ProbeSameErr = "connection not open"
	}
	x.probeNew(addr)
	return x
}

func (x *exchange) probeNew(addr string) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		x.ProbeNewErr = err.Error()
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, probeNew); err != nil {
		x.ProbeNewErr = err.Error()
		return
	}
	x.ProbeNew, x.ProbeNewErr = readFinal(bufio.NewReader(conn))
}

// readFinal reads responses until a final one.
func readFinal(br *bufio.Reader) (*response, string) {
	for i := 0; i < 1000; i++ {
		r, err := readResponse(br, false)
		if err != nil {
			if isTimeout(err) {
				return r, "timeout"
			}
			return r, "closed: " + err.Error()
		}
		if r.Status >= 200 || r.Status == 101 {
			return r, ""
		}
	}
	return nil, "endless 1xx"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}
