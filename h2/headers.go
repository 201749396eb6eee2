package h2

import (
	"errors"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock is a decoded HEADERS frame with its CONTINUATION frames. Its fields live in a
// slice the connection reuses: they are valid until the next block is read.
type headerBlock struct {
	id        uint32
	endStream bool
	selfDep   bool // the frame's priority made the stream depend on itself
	fields    []hpack.HeaderField
	pseudo    int  // fields[:pseudo] are the pseudo-header fields
	truncated bool // the block went over the header list limit: its fields are incomplete

	// While decoding:
	budget     uint32 // what is left of the header list limit
	invalid    bool   // a field broke RFC 9113 §8.2
	sawRegular bool
}

func (b *headerBlock) regular() []hpack.HeaderField { return b.fields[b.pseudo:] }

// errMalformed is a header block that decoded but breaks RFC 9113 §8.2: the stream is reset
// with PROTOCOL_ERROR.
var errMalformed = errors.New("h2: malformed header block")

// readHeaderBlock decodes the header block that f starts, reading its CONTINUATION frames,
// into c.block. It returns a *connError for what ends the connection (a block that does not
// decode, or one far over the limit) and errMalformed for what resets the stream.
//
// It is x/net/http2's Framer.ReadMetaHeaders done with a field slice reused from block to
// block, since a MetaHeadersFrame and its growing slice cost five allocations a request.
func (c *conn) readHeaderBlock(f *http2.HeadersFrame) error {
	b := &c.block
	*b = headerBlock{
		id:        f.StreamID,
		endStream: f.StreamEnded(),
		selfDep:   f.HasPriority() && f.Priority.StreamDep == f.StreamID,
		fields:    b.fields[:0],
		budget:    c.s.maxHeaderList,
	}
	frag := f.HeaderBlockFragment()
	ended := f.HeadersEnded()
	for {
		// A block far over the limit, or more of one already known to be bad, is not worth
		// decoding (x/net/http2's defence against endless CONTINUATION frames).
		if int64(len(frag)) > 4*int64(b.budget) {
			return connErr(http2.ErrCodeProtocol, "header block too large")
		}
		if b.invalid && !ended {
			return connErr(http2.ErrCodeProtocol, "invalid header field followed by CONTINUATION")
		}
		if _, err := c.dec.Write(frag); err != nil {
			if errors.Is(err, hpack.ErrStringLength) {
				return connErr(http2.ErrCodeProtocol, "header field over the header list limit")
			}
			return connErr(http2.ErrCodeCompression, "header block does not decode")
		}
		if ended {
			break
		}
		next, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		cf := next.(*http2.ContinuationFrame) // the Framer checks the order
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := c.dec.Close(); err != nil {
		return connErr(http2.ErrCodeCompression, "header block ends mid-field")
	}
	if b.invalid || !validPseudos(b.fields[:b.pseudo]) {
		return errMalformed
	}
	return nil
}

// emitField takes a field the decoder read: the connection's hpack.Decoder calls it.
func (c *conn) emitField(hf hpack.HeaderField) {
	b := &c.block
	if b.invalid || b.truncated {
		return
	}
	// RFC 9113 §8.2.1: no control characters, and no white space at either end.
	if v := hf.Value; !httpguts.ValidHeaderFieldValue(v) ||
		v != "" && (isSpace(v[0]) || isSpace(v[len(v)-1])) {
		b.invalid = true
		return
	}
	if hf.IsPseudo() {
		if b.sawRegular {
			b.invalid = true
			return
		}
		b.pseudo++
	} else {
		b.sawRegular = true
		if !validWireName(hf.Name) {
			b.invalid = true
			return
		}
	}
	size := hf.Size()
	if size > b.budget {
		// Decoding goes on, to keep the decoder's table in step, but fields are dropped.
		b.truncated = true
		b.budget = 0
		return
	}
	b.budget -= size
	b.fields = append(b.fields, hf)
}

// validWireName reports whether name is a valid field name in lower case, as HTTP/2 requires.
func validWireName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// validPseudos reports whether the pseudo-header fields are a request's, none twice.
func validPseudos(pf []hpack.HeaderField) bool {
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority":
		default:
			return false
		}
		for _, prev := range pf[:i] {
			if prev.Name == hf.Name {
				return false
			}
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }
