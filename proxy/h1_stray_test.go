package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/upstreamtest"
)

// newTestH1 returns a lean client with one idle connection per endpoint, the setting that
// makes every request after the first reuse the same connection.
func newTestH1() *h1Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &h1Client{dial: d.DialContext, maxIdle: 1, idleTimeout: time.Minute, hookDelay: defaultHookDelay}
}

// leanDo sends a bodiless request for path to addr through c, the way the proxy does, and
// reads the whole response. err is the round trip's or the body's error.
func leanDo(ctx context.Context, c *h1Client, method, addr, path string) (res *http.Response, body []byte, err error) {
	return leanSend(ctx, c, method, addr, path, time.Time{}, nil)
}

// leanSend is leanDo with the try's deadline (zero for none) and a request body sent whole,
// as the proxy sends one it read ahead.
func leanSend(ctx context.Context, c *h1Client, method, addr, path string, deadline time.Time,
	reqBody []byte) (res *http.Response, body []byte, err error) {
	in := httptest.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	x := &exchange{rw: httptest.NewRecorder(), in: in}
	x.out = *in
	x.out.Header = http.Header{}
	x.out.RequestURI = ""
	x.url = *in.URL
	x.reqBody = reqBody
	if err := c.roundTrip(x, addr, deadline); err != nil {
		return nil, nil, err
	}
	body, err = io.ReadAll(x.res.Body)
	x.res.Body.Close()
	return &x.res, body, err
}

// opaqueConn hides the descriptor of the conn it wraps, as a conn from a custom DialContext
// may: the lean client must then look at idle connections some other way.
type opaqueConn struct{ net.Conn }

// watcherDone reports whether the read that watches the one idle conn to addr has ended.
func watcherDone(c *h1Client, addr string) bool {
	v, ok := c.pools.Load(addr)
	if !ok {
		return false
	}
	p := v.(*h1Pool)
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) != 1 || p.idle[0].watching == nil {
		return false
	}
	select {
	case <-p.idle[0].watching:
		return true
	default:
		return false
	}
}

// TestH1StrayBytesNeverAnswerTheNextRequest checks that bytes an upstream sends after a
// response, with it or while the connection is idle, are never read as the response to the
// next request: the connection that carried them is closed and the next request gets a new
// one. The stray bytes are a whole response, the way one client would receive another's. It
// runs on sockets, which the client peeks at, and on conns that hide theirs.
func TestH1StrayBytesNeverAnswerTheNextRequest(t *testing.T) {
	t.Run("socket", func(t *testing.T) { testStrayBytes(t, false) })
	t.Run("opaque conn", func(t *testing.T) { testStrayBytes(t, true) })
}

func testStrayBytes(t *testing.T, opaque bool) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	const real = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"
	for _, first := range []struct {
		name, method, response string
	}{
		{"HEAD", http.MethodHead, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"},
		{"204", http.MethodGet, "HTTP/1.1 204 No Content\r\n\r\n"},
		{"304", http.MethodGet, "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"},
		{"200", http.MethodGet, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	} {
		for _, idle := range []bool{false, true} {
			name := first.name + "/with the response"
			if idle {
				name = first.name + "/while idle"
			}
			t.Run(name, func(t *testing.T) {
				consumed, strayed := make(chan struct{}), make(chan struct{})
				srv := upstreamtest.Start(t, func(c *upstreamtest.Conn) {
					for n := 0; ; n++ {
						if _, err := c.ReadRequest(); err != nil {
							return
						}
						if c.ID() > 1 || n > 0 {
							c.Write(real)
							continue
						}
						if !idle {
							c.Write(first.response + stray)
						} else {
							c.Write(first.response)
							select {
							case <-consumed:
							case <-c.Done():
								return
							}
							c.Write(stray)
						}
						close(strayed)
					}
				})
				cl := newTestH1()
				if opaque {
					dial := cl.dial
					cl.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
						c, err := dial(ctx, network, addr)
						return opaqueConn{c}, err
					}
				}
				defer cl.closeIdle()
				res, _, err := leanDo(t.Context(), cl, first.method, srv.Addr(), "/first")
				require.NoError(t, err)
				require.NotEqual(t, 0, res.StatusCode)
				close(consumed)
				<-strayed
				if opaque && idle {
					// Without a socket to peek at, the client learns of the bytes when the
					// goroutine reading the idle conn does, as net/http would: wait for it.
					require.Eventually(t, func() bool { return watcherDone(cl, srv.Addr()) },
						5*time.Second, time.Millisecond, "the idle conn's reader saw the stray bytes")
				}

				_, body, err := leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/second")
				require.NoError(t, err)
				assert.Equal(t, "real", string(body), "the second request got its own response")
				reqs := srv.Requests()
				require.Equal(t, 2, len(reqs), "two requests read")
				assert.Equal(t, 2, reqs[1].Conn, "the second request went on a new connection")
			})
		}
	}
}

// TestH1OpaqueConnReused checks that a conn hiding its socket is reused once its watcher
// goroutine saw nothing, and that reusing it touches the read buffer only after that
// goroutine stopped: under -race, an idleClean that looks at the buffer first is reported.
func TestH1OpaqueConnReused(t *testing.T) {
	srv := upstreamtest.Start(t, upstreamtest.Respond("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	cl := newTestH1()
	dial := cl.dial
	cl.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		return opaqueConn{c}, err
	}
	defer cl.closeIdle()
	for i := 0; i < 3; i++ {
		_, body, err := leanDo(t.Context(), cl, http.MethodGet, srv.Addr(), "/"+strconv.Itoa(i))
		require.NoError(t, err)
		assert.Equal(t, "ok", string(body))
	}
	assert.Equal(t, 1, srv.Accepted(), "every request went on the one connection")
}

// Response kinds of FuzzH1Differential's scripted upstream.
const (
	kindLength   = iota // Content-Length
	kindChunked         // Transfer-Encoding: chunked
	kindClose           // delimited by closing the connection
	kind204             // 204 No Content
	kind304             // 304 Not Modified with a Content-Length
	kindHEADBody        // a HEAD request answered with a body, which is stray bytes
	kinds
)

// diffStrays are the stray bytes the fuzz input picks from; the last choice is the input's
// own string.
var diffStrays = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray",
	"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	"x",
	"\r\n",
	"0\r\n\r\n",
}

// diffStep is one request of a differential run and the upstream's answer.
type diffStep struct {
	method string
	kind   int
	body   string
	stray  string
	idle   bool // stray is written once the client has read the response, not with it
}

// decodeSteps turns fuzz input into up to 8 steps, three bytes each.
func decodeSteps(prog []byte, stray string) []diffStep {
	var steps []diffStep
	for len(prog) >= 3 && len(steps) < 8 {
		b0, b1, b2 := prog[0], prog[1], prog[2]
		prog = prog[3:]
		s := diffStep{method: http.MethodGet, kind: int(b0>>1) % kinds}
		if b0&1 == 1 || s.kind == kindHEADBody {
			s.method = http.MethodHead
		}
		s.body = strings.Repeat("b", int(b2%64))
		switch b1 & 3 {
		case 1:
			s.stray = diffStrays[0]
		case 2:
			s.stray, s.idle = diffStrays[0], true
		}
		if s.stray != "" {
			if i := int(b1>>2) % (len(diffStrays) + 1); i < len(diffStrays) {
				s.stray = diffStrays[i]
			} else {
				s.stray = stray
			}
		}
		if s.stray == "" || s.kind == kindClose {
			// A connection that closes after the response has no idle time.
			s.idle = false
		}
		steps = append(steps, s)
	}
	return steps
}

// response returns the upstream's answer to request i of the step.
func (s diffStep) response(i int) string {
	head := "HTTP/1.1 200 OK\r\nX-Seq: " + strconv.Itoa(i) + "\r\n"
	get := s.method == http.MethodGet
	switch s.kind {
	case kindLength, kindHEADBody:
		r := head + "Content-Length: " + strconv.Itoa(len(s.body)) + "\r\n\r\n"
		if get || s.kind == kindHEADBody {
			r += s.body
		}
		return r
	case kindChunked:
		r := head + "Transfer-Encoding: chunked\r\n\r\n"
		if get {
			if s.body != "" {
				r += strconv.FormatInt(int64(len(s.body)), 16) + "\r\n" + s.body + "\r\n"
			}
			r += "0\r\n\r\n"
		}
		return r
	case kindClose:
		if get {
			return head + "\r\n" + s.body
		}
		return head + "\r\n"
	case kind204:
		return "HTTP/1.1 204 No Content\r\nX-Seq: " + strconv.Itoa(i) + "\r\n\r\n"
	}
	return "HTTP/1.1 304 Not Modified\r\nX-Seq: " + strconv.Itoa(i) + "\r\nContent-Length: " +
		strconv.Itoa(len(s.body)) + "\r\n\r\n"
}

// leftover reports whether the upstream sends bytes past the response's end, or ends the
// connection, after step s: a client must then not reuse the connection.
func (s diffStep) leftover() bool {
	return (s.stray != "" && s.kind != kindClose) || s.kind == kindClose ||
		(s.kind == kindHEADBody && s.body != "")
}

// diffRun is one client's run through the steps against its own scripted upstream.
type diffRun struct {
	steps    []diffStep
	mu       sync.Mutex      // mu orders the closing of the channels below
	consumed []chan struct{} // closed by the client once it has read response i
	strayed  []chan struct{} // closed by the upstream once it wrote the idle stray bytes of i
	dropped  []chan struct{} // closed by the upstream once the client closed the connection after i
}

func newDiffRun(steps []diffStep) *diffRun {
	r := &diffRun{steps: steps}
	for range steps {
		r.consumed = append(r.consumed, make(chan struct{}))
		r.strayed = append(r.strayed, make(chan struct{}))
		r.dropped = append(r.dropped, make(chan struct{}))
	}
	return r
}

func (r *diffRun) signal(chs []chan struct{}, i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-chs[i]:
	default:
		close(chs[i])
	}
}

// serve is the upstream's script: it answers request "/i" as step i says.
func (r *diffRun) serve(c *upstreamtest.Conn) {
	last := -1
	for {
		req, err := c.ReadRequest()
		if err != nil {
			// The client closed first: answer its FIN with an RST, so that its socket
			// leaves no TIME_WAIT behind. Thousands of runs would exhaust the ephemeral
			// ports otherwise.
			c.Reset()
			if last >= 0 {
				r.signal(r.dropped, last)
			}
			return
		}
		i, err := strconv.Atoi(strings.TrimPrefix(req.Target, "/"))
		if err != nil || i < 0 || i >= len(r.steps) {
			return
		}
		last = i
		s := r.steps[i]
		if !s.idle {
			c.Write(s.response(i) + s.stray)
		} else {
			c.Write(s.response(i))
			select {
			case <-r.consumed[i]:
			case <-c.Done():
				return
			}
			c.Write(s.stray)
			r.signal(r.strayed, i)
		}
		if s.kind == kindClose {
			c.CloseWrite()
			c.Stall()
			c.Reset()
			r.signal(r.dropped, i)
			return
		}
	}
}

// diffOutcome is what a client made of one response.
type diffOutcome struct {
	err    string // "" when the response was read whole
	status int
	header http.Header
	body   string
}

func (o diffOutcome) String() string {
	if o.err != "" {
		return "error: " + o.err
	}
	return fmt.Sprintf("%d %v %q", o.status, o.header, o.body)
}

func outcome(res *http.Response, body []byte, err error) diffOutcome {
	if err != nil {
		return diffOutcome{err: err.Error()}
	}
	h := res.Header.Clone()
	// net/http moves Transfer-Encoding out of the header into Response.TransferEncoding; the
	// lean client leaves it in the header, where the proxy removes it as hop-by-hop.
	delete(h, "Transfer-Encoding")
	return diffOutcome{status: res.StatusCode, header: h, body: string(body)}
}

// drive sends the steps' requests in order through do and returns the outcomes. Before each
// next request it waits for what the upstream was scripted to do meanwhile: the idle stray
// bytes written, and, when waitDrop, the client closing a connection it must not reuse.
func (r *diffRun) drive(t *testing.T, waitDrop bool, do func(method, path string) diffOutcome) []diffOutcome {
	var out []diffOutcome
	wait := func(ch chan struct{}, what string, i int) {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d (%+v): %s did not happen within 5s", i, r.steps[i], what)
		}
	}
	for i, s := range r.steps {
		o := do(s.method, "/"+strconv.Itoa(i))
		out = append(out, o)
		r.signal(r.consumed, i)
		if o.err != "" {
			continue
		}
		if s.idle {
			wait(r.strayed[i], "the upstream's idle stray write", i)
		}
		if waitDrop && s.leftover() {
			wait(r.dropped[i], "the client dropping the spoilt connection", i)
		}
	}
	return out
}

// FuzzH1Differential drives the same sequence of requests over one upstream connection through
// the lean client and through net/http's Transport (one connection per host), against the same
// scripted upstream that may misbehave: responses framed every way, HEAD answered with a body,
// and bytes nobody asked for, sent with a response or while the connection is idle. For every
// request both must give the same status, header and body, or both must fail. Stray bytes must
// never become the answer to a later request.
//
// net/http notices unsolicited bytes on its per-connection read goroutine, asynchronously: with
// the next request already queued on the connection it would take them for its response. The
// run waits for net/http to drop such a connection before sending the next request; the lean
// client gets no such help, since it must catch them itself.
func FuzzH1Differential(f *testing.F) {
	// Three bytes a step: method and kind; stray mode and choice; body length.
	f.Add([]byte{1 | kindLength<<1, 2, 5, 0, 0, 3}, "")                        // HEAD, stray while idle, GET
	f.Add([]byte{kind204 << 1, 1, 0, 0, 0, 3}, "")                             // 204 + stray in the same write
	f.Add([]byte{kind304 << 1, 2 | 1<<2, 7, kindChunked << 1, 0, 9}, "")       // 304, idle stray
	f.Add([]byte{kindHEADBody << 1, 0, 5, 0, 0, 3, kindClose << 1, 1, 4}, "")  // HEAD body; close
	f.Add([]byte{kindChunked << 1, 2 | 5<<2, 3, 1 | kindClose<<1, 0, 2}, "zz") // the input's stray
	f.Add([]byte{kindLength << 1, 2 | 3<<2, 1, kindLength << 1, 0, 1, kind204 << 1, 2, 0, 0, 0, 0}, "")
	f.Fuzz(func(t *testing.T, prog []byte, stray string) {
		steps := decodeSteps(prog, stray)
		if len(steps) == 0 {
			return
		}

		lr := newDiffRun(steps)
		lsrv := upstreamtest.Start(t, lr.serve)
		lc := newTestH1()
		lean := lr.drive(t, false, func(method, path string) diffOutcome {
			return outcome(leanDo(t.Context(), lc, method, lsrv.Addr(), path))
		})
		lc.closeIdle()

		sr := newDiffRun(steps)
		ssrv := upstreamtest.Start(t, sr.serve)
		tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true}
		defer tr.CloseIdleConnections()
		std := sr.drive(t, true, func(method, path string) diffOutcome {
			req, _ := http.NewRequestWithContext(t.Context(), method, ssrv.URL()+path, nil)
			res, err := tr.RoundTrip(req)
			if err != nil {
				return outcome(nil, nil, err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			return outcome(res, body, err)
		})

		for i := range steps {
			l, s := lean[i], std[i]
			if (l.err == "") != (s.err == "") {
				t.Fatalf("request %d (%+v): lean client %v, net/http %v", i, steps[i], l, s)
			}
			if l.err != "" {
				continue
			}
			assert.Equal(t, s.status, l.status, "request %d (%+v): status", i, steps[i])
			assert.Equal(t, s.header, l.header, "request %d (%+v): header", i, steps[i])
			assert.Equal(t, s.body, l.body, "request %d (%+v): body", i, steps[i])
			if t.Failed() {
				t.FailNow()
			}
		}
	})
}
