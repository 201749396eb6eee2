package h2_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawConn is a client connection that writes frames exactly as a test builds them (invalid
// ones too) and records every frame the server sends, stream by stream.
type rawConn struct {
	t      *testing.T
	conn   net.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	next   uint32 // the next client stream ID

	settings map[http2.SettingID]uint32 // the server's first SETTINGS
	streams  map[uint32]*stream
	goAways  []goAway
	ended    error // how reading the connection ended: io.EOF, or another error
	window   int32 // the client's receive window per stream, as its SETTINGS said

	connWindowIncrement uint32 // the sum of the server's WINDOW_UPDATEs on stream 0
}

// goAway is one GOAWAY frame as received.
type goAway struct {
	lastStreamID uint32
	code         http2.ErrCode
}

// stream is what the server sent on one stream.
type stream struct {
	blocks    [][]hpack.HeaderField // each header block: 1xx, final, trailers
	blockAt   []int                 // how much of body had come before each block
	body      bytes.Buffer
	ended     bool // END_STREAM or RST_STREAM came
	endStream bool // the stream ended with END_STREAM
	rst       http2.ErrCode
	// rstAfterEnd are the codes of RST_STREAM frames that came after the stream ended: a
	// server sends one when it answered before the request's body ended (RFC 9113 §8.1).
	rstAfterEnd []http2.ErrCode
	received    int32  // DATA bytes not yet given back by a WINDOW_UPDATE
	overflow    bool   // the server sent more than the window allowed
	malformed   string // why the client's framer refused a header block the server sent
}

// rawOptions tune a raw exchange: the client's SETTINGS, and what a comparison leaves out.
type rawOptions struct {
	window   uint32 // SETTINGS_INITIAL_WINDOW_SIZE; zero for the default, 65,535
	noLength bool   // compare the streams without content-length (see stream.render)
}

// dialRaw opens a raw client connection to ts: the preface, the client's SETTINGS, and the
// server's SETTINGS read and acknowledged. It is closed when the test ends.
func (ts *testServer) dialRaw(t *testing.T) *rawConn {
	return ts.dialRawWith(t, rawOptions{})
}

// dialRawWith is dialRaw with the client's settings in opts.
func (ts *testServer) dialRawWith(t *testing.T, opts rawOptions) *rawConn {
	t.Helper()
	conn := ts.dial(t)
	c := &rawConn{t: t, conn: conn, fr: http2.NewFramer(conn, conn), next: 1, streams: map[uint32]*stream{}, window: 65535}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.encBuf)
	conn.SetDeadline(time.Now().Add(waitFor))
	_, err := io.WriteString(conn, http2.ClientPreface)
	require.NoError(t, err, "write the preface")
	var settings []http2.Setting
	if opts.window != 0 {
		settings = append(settings, http2.Setting{ID: http2.SettingInitialWindowSize, Val: opts.window})
		c.window = int32(opts.window)
	}
	require.NoError(t, c.fr.WriteSettings(settings...))
	f, err := c.fr.ReadFrame()
	require.NoError(t, err, "read the server's SETTINGS")
	sf, ok := f.(*http2.SettingsFrame)
	require.True(t, ok && !sf.IsAck(), "the server's first frame is SETTINGS (RFC 9113 §3.4), got %v", f)
	c.settings = map[http2.SettingID]uint32{}
	sf.ForeachSetting(func(s http2.Setting) error {
		c.settings[s.ID] = s.Val
		return nil
	})
	require.NoError(t, c.fr.WriteSettingsAck())
	return c
}

// newStream returns the next client stream ID.
func (c *rawConn) newStream() uint32 {
	id := c.next
	c.next += 2
	return id
}

// writeHeaders sends a header block of name, value pairs on stream id, in HEADERS and as
// many CONTINUATION frames as the default maximum frame size needs. Nothing is checked: the
// names and values go out as given.
func (c *rawConn) writeHeaders(id uint32, endStream bool, pairs ...string) {
	c.t.Helper()
	require.NoError(c.t, c.tryWriteHeaders(id, endStream, pairs...), "write a header block")
}

// tryWriteHeaders is writeHeaders returning the error, for a server that may close the
// connection before the block ends.
func (c *rawConn) tryWriteHeaders(id uint32, endStream bool, pairs ...string) error {
	if len(pairs)%2 != 0 {
		return fmt.Errorf("%d strings are not name, value pairs", len(pairs))
	}
	c.encBuf.Reset()
	for i := 0; i < len(pairs); i += 2 {
		if err := c.enc.WriteField(hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]}); err != nil {
			return err
		}
	}
	block := c.encBuf.Bytes()
	const max = 16384
	first := block[:min(len(block), max)]
	block = block[len(first):]
	c.conn.SetWriteDeadline(deadline())
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		frag := block[:min(len(block), max)]
		block = block[len(frag):]
		if err := c.fr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			return err
		}
	}
	return nil
}

// request sends a request's pseudo-header fields for method and path, then the fields in
// pairs, and returns its stream ID.
func (c *rawConn) request(method, path string, endStream bool, pairs ...string) uint32 {
	c.t.Helper()
	id := c.newStream()
	c.writeHeaders(id, endStream, append(pseudoFields(method, path), pairs...)...)
	return id
}

// pseudoFields is the pseudo-header fields of a request for method and path, in pairs.
func pseudoFields(method, path string) []string {
	return []string{":method", method, ":scheme", "https", ":authority", "test.example", ":path", path}
}

// writeData sends p on stream id.
func (c *rawConn) writeData(id uint32, endStream bool, p string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(waitFor))
	require.NoError(c.t, c.fr.WriteData(id, endStream, []byte(p)), "write DATA")
}

// writeRST resets stream id.
func (c *rawConn) writeRST(id uint32, code http2.ErrCode) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(waitFor))
	require.NoError(c.t, c.fr.WriteRSTStream(id, code), "write RST_STREAM")
}

// stream returns the record of stream id.
func (c *rawConn) stream(id uint32) *stream {
	s := c.streams[id]
	if s == nil {
		s = &stream{}
		c.streams[id] = s
	}
	return s
}

// step reads one frame and records it, answering PINGs and SETTINGS and giving back the
// flow-control window of every DATA frame at once. It returns false once the connection
// ended.
func (c *rawConn) step() bool {
	c.t.Helper()
	if c.ended != nil {
		return false
	}
	c.conn.SetReadDeadline(time.Now().Add(waitFor))
	f, err := c.fr.ReadFrame()
	var se http2.StreamError
	if errors.As(err, &se) {
		// A header block the framer refused: the server sent something malformed.
		s := c.stream(se.StreamID)
		s.ended, s.malformed = true, fmt.Sprint(se.Cause)
		return true
	}
	if err != nil {
		c.ended = err
		return false
	}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		s := c.stream(f.StreamID)
		s.blocks = append(s.blocks, slices.Clone(f.Fields))
		s.blockAt = append(s.blockAt, s.body.Len())
		if f.StreamEnded() {
			s.ended, s.endStream = true, true
		}
	case *http2.DataFrame:
		s := c.stream(f.StreamID)
		s.body.Write(f.Data())
		if n := int32(f.Length); n > 0 {
			s.received += n
			if s.received > c.window {
				s.overflow = true
			}
			c.fr.WriteWindowUpdate(0, uint32(n))
			if !f.StreamEnded() {
				c.fr.WriteWindowUpdate(f.StreamID, uint32(n))
				s.received -= n
			}
		}
		if f.StreamEnded() {
			s.ended, s.endStream = true, true
		}
	case *http2.RSTStreamFrame:
		s := c.stream(f.StreamID)
		if s.ended {
			s.rstAfterEnd = append(s.rstAfterEnd, f.ErrCode)
			break
		}
		s.ended, s.rst = true, f.ErrCode
	case *http2.GoAwayFrame:
		c.goAways = append(c.goAways, goAway{f.LastStreamID, f.ErrCode})
	case *http2.PingFrame:
		if !f.IsAck() {
			c.fr.WritePing(true, f.Data)
		}
	case *http2.SettingsFrame:
		if !f.IsAck() {
			c.fr.WriteSettingsAck()
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.connWindowIncrement += f.Increment
		}
	}
	return true
}

// wait reads frames until stream id ended, or the connection did or will (a GOAWAY for an
// error), and returns the stream.
func (c *rawConn) wait(id uint32) *stream {
	c.t.Helper()
	for !c.stream(id).ended && c.connError() == nil && c.step() {
	}
	return c.stream(id)
}

// connError returns the last GOAWAY if it ended the connection for an error, else nil.
func (c *rawConn) connError() *goAway {
	if n := len(c.goAways); n > 0 && c.goAways[n-1].code != http2.ErrCodeNo {
		return &c.goAways[n-1]
	}
	return nil
}

// finalGoAway reads frames until a GOAWAY names the last stream the server processes, and
// returns it, or nil if the connection ended first. RFC 9113 §6.8 lets a server announce a
// graceful shutdown with a GOAWAY naming stream 2^31-1 first; that one is passed over.
func (c *rawConn) finalGoAway() *goAway {
	c.t.Helper()
	final := func() bool {
		n := len(c.goAways)
		return n > 0 && c.goAways[n-1].lastStreamID < 1<<31-1
	}
	if !c.waitUntil(final) {
		return nil
	}
	return &c.goAways[len(c.goAways)-1]
}

// waitUntil reads frames until cond holds or the connection ended, and reports whether cond
// holds.
func (c *rawConn) waitUntil(cond func() bool) bool {
	c.t.Helper()
	for !cond() && c.step() {
	}
	return cond()
}

// waitEnd reads frames until the connection ends, and reports whether the server closed it
// (rather than the read timing out).
func (c *rawConn) waitEnd() bool {
	c.t.Helper()
	for c.step() {
	}
	return !isTimeout(c.ended)
}

// alive reports whether the connection still carries new streams: a probe request either
// gets its answer or the connection ends.
func (c *rawConn) alive() bool {
	c.t.Helper()
	s := c.wait(c.request("GET", probePath, true))
	return s.endStream && s.status() == "200" && s.body.String() == "probe"
}

// status is the :status of the stream's final header block.
func (s *stream) status() string {
	for _, b := range slices.Backward(s.blocks) {
		for _, f := range b {
			if f.Name == ":status" && !strings.HasPrefix(f.Value, "1") {
				return f.Value
			}
		}
	}
	return ""
}

// field returns the values of name in the stream's header blocks, the first block first.
func (s *stream) field(name string) []string {
	var vv []string
	for _, b := range s.blocks {
		for _, f := range b {
			if f.Name == name {
				vv = append(vv, f.Value)
			}
		}
	}
	return vv
}

// String is the stream with each block's fields sorted by name and Date's value elided, so
// that two servers' streams compare equal when a client could not tell them apart.
func (s *stream) String() string { return s.render(false) }

// render is String, leaving out content-length when noLength is set: a server may or may not
// compute the length of a body it has to stream, and both are right.
func (s *stream) render(noLength bool) string {
	var b strings.Builder
	body, at := s.body.String(), 0
	for i, block := range s.blocks {
		if s.blockAt[i] > at {
			fmt.Fprintf(&b, "[data] %s\n", abbrev(body[at:s.blockAt[i]]))
			at = s.blockAt[i]
		}
		fields := make([]string, 0, len(block))
		for _, f := range block {
			if noLength && f.Name == "content-length" {
				continue
			}
			v := f.Value
			if f.Name == "date" {
				v = "(present)"
			}
			fields = append(fields, f.Name+": "+v)
		}
		slices.Sort(fields)
		fmt.Fprintf(&b, "[headers] %s\n", strings.Join(fields, " | "))
	}
	if len(body) > at {
		fmt.Fprintf(&b, "[data] %s\n", abbrev(body[at:]))
	}
	switch {
	case s.endStream:
		b.WriteString("[end] END_STREAM")
	case s.ended:
		b.WriteString("[end] RST_STREAM " + s.rst.String())
	default:
		b.WriteString("[end] none")
	}
	if s.malformed != "" {
		b.WriteString("\n[malformed] " + s.malformed)
	}
	if s.overflow {
		b.WriteString("\n[flow control] the server sent more DATA than the window allowed")
	}
	return b.String()
}

// rawDifferential runs script on a raw connection to each front end (h2c: framing does not
// depend on TLS), each with a handler from mk and settings from cfg, asserts that the client
// saw the same of the stream script returns, and returns both.
func rawDifferential(t *testing.T, mk func(*testing.T) http.Handler, cfg func(*http.Server), script func(c *rawConn) uint32) (std, h *stream) {
	t.Helper()
	runs := rawRuns(t, mk, cfg, rawOptions{}, script)
	return runs[stdlib].s, runs[ours].s
}

// rawRun is one front end's part in a raw differential exchange.
type rawRun struct {
	ts *testServer
	c  *rawConn
	s  *stream // the stream the script returned, ended or not
}

// rawRuns is rawDifferential with the client's settings in opts, returning the runs by front
// end name for further checks.
func rawRuns(t *testing.T, mk func(*testing.T) http.Handler, cfg func(*http.Server), opts rawOptions, script func(c *rawConn) uint32) map[string]*rawRun {
	t.Helper()
	runs := make(map[string]*rawRun)
	for _, name := range fronts {
		srv := &http.Server{Handler: mk(t)}
		if cfg != nil {
			cfg(srv)
		}
		ts := start(t, name, h2c, srv)
		c := ts.dialRawWith(t, opts)
		s := c.wait(script(c))
		body := strings.NewReplacer(c.conn.LocalAddr().String(), "CLIENT", ts.addr, "SERVER").Replace(s.body.String())
		s.body.Reset()
		s.body.WriteString(body)
		runs[name] = &rawRun{ts: ts, c: c, s: s}
	}
	assert.Equal(t, runs[stdlib].s.render(opts.noLength), runs[ours].s.render(opts.noLength), "what a raw client sees of h2 (right) differs from net/http (left)")
	if n := runs[ours].s.field("content-length"); opts.noLength && len(n) > 0 {
		assert.Equal(t, []string{strconv.Itoa(runs[ours].s.body.Len())}, n, "h2's content-length, where it sent one")
	}
	return runs
}
