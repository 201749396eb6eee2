package tcpproxy

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// ClientHello is what the proxy reads from a TLS ClientHello to route a connection.
type ClientHello struct {
	// ServerName is the host name the client asked for (SNI), in lower case; empty when the
	// client sent none (it connected by address, say).
	ServerName string

	// ALPN lists the application protocols the client offers ("h2", "http/1.1"), in its order
	// of preference; nil when it offers none.
	ALPN []string
}

// ErrNotTLS is returned by ReadClientHello when the first byte read is not that of a TLS
// handshake record: the client speaks something else (plain HTTP, SSH, a database protocol).
// The proxy routes such a connection to its catch-all route.
var ErrNotTLS = errors.New("tcpproxy: not a TLS connection")

// TLS record and handshake constants (RFC 8446 §5.1, §4).
const (
	recordHeaderLen     = 5
	recordTypeHandshake = 22
	maxPlaintext        = 1 << 14 // the largest TLS plaintext record fragment
	handshakeHeaderLen  = 4
	typeClientHello     = 1
	extServerName       = 0
	extALPN             = 16
	maxHostNameLen      = 253
)

// ReadClientHello reads a TLS ClientHello from r into buf without answering it, so that the
// connection can still be handed to whoever terminates TLS. The hello may arrive in pieces
// and span several TLS records. It returns what the hello says and n, the number of bytes it
// read into buf; buf[:n] must be replayed, in front of the rest of the stream, to whoever gets
// the connection. n can exceed the hello's length when the client sent more at once (TLS 1.3
// early data): those bytes belong to the stream too.
//
// len(buf) bounds the hello: a hello that does not fit in it is refused. The reader is strict
// about the framing it relies on and refuses, with an error, a record that is not a handshake
// record, a record longer than TLS allows, a handshake message that is not a ClientHello, one
// whose lengths disagree or that does not end on a record boundary, duplicate extensions, and
// a server name that is not a host name. When the first byte read is not that of a handshake
// record, it returns ErrNotTLS at once (with n ≥ 1), so that a plain-text client is never kept
// waiting. An error from r is returned as it is, wrapped; io.ErrUnexpectedEOF means the client
// closed the connection in the middle of its hello.
//
// ReadClientHello sets no deadline: callers bound it with the connection's read deadline.
func ReadClientHello(r io.Reader, buf []byte) (hello ClientHello, n int, err error) {
	return readClientHello(r, buf, 0)
}

// readClientHello is ReadClientHello for a buf whose first n bytes were read already.
func readClientHello(r io.Reader, buf []byte, n int) (hello ClientHello, _ int, err error) {
	// fill reads until buf holds at least want bytes.
	fill := func(want int) error {
		if n > 0 && buf[0] != recordTypeHandshake {
			return ErrNotTLS
		}
		if want > len(buf) {
			return fmt.Errorf("tcpproxy: ClientHello is larger than %d bytes", len(buf))
		}
		for empty := 0; n < want; {
			m, err := r.Read(buf[n:])
			n += m
			if m == 0 && err == nil {
				if empty++; empty == 100 { // a broken Reader, as bufio counts them
					return io.ErrNoProgress
				}
				continue
			}
			if n > 0 && buf[0] != recordTypeHandshake {
				return ErrNotTLS
			}
			if err != nil && n < want {
				if err == io.EOF {
					if n == 0 {
						return io.EOF
					}
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("tcpproxy: reading the ClientHello: %w", err)
			}
		}
		return nil
	}
	if len(buf) == 0 {
		return ClientHello{}, 0, errors.New("tcpproxy: ReadClientHello needs a buffer")
	}
	if err := fill(1); err != nil {
		return ClientHello{}, n, err
	}
	// msg holds the handshake message's bytes gathered from the records so far. When the hello
	// fits in one record (nearly always) it is a slice of buf; a hello spanning records is
	// gathered into a slice of its own, for buf[:n] must stay as it was read, to be replayed.
	var (
		msg     []byte
		off     int // where the next record starts in buf
		msgLen  = -1
		records int
	)
	for {
		if err := fill(off + recordHeaderLen); err != nil {
			return ClientHello{}, n, err
		}
		h := buf[off : off+recordHeaderLen]
		if h[0] != recordTypeHandshake {
			return ClientHello{}, n, fmt.Errorf("tcpproxy: record %d of the ClientHello has type %d, not handshake", records, h[0])
		}
		if h[1] != 3 {
			return ClientHello{}, n, fmt.Errorf("tcpproxy: record version %d.%d is not TLS", h[1], h[2])
		}
		rlen := int(h[3])<<8 | int(h[4])
		if rlen == 0 || rlen > maxPlaintext {
			return ClientHello{}, n, fmt.Errorf("tcpproxy: handshake record of %d bytes (1 to %d allowed)", rlen, maxPlaintext)
		}
		if err := fill(off + recordHeaderLen + rlen); err != nil {
			return ClientHello{}, n, err
		}
		payload := buf[off+recordHeaderLen : off+recordHeaderLen+rlen]
		if records == 0 {
			msg = payload
		} else {
			if records == 1 {
				msg = append(make([]byte, 0, 2*len(msg)+len(payload)), msg...)
			}
			msg = append(msg, payload...)
		}
		records++
		off += recordHeaderLen + rlen
		if msgLen < 0 && len(msg) >= handshakeHeaderLen {
			if msg[0] != typeClientHello {
				return ClientHello{}, n, fmt.Errorf("tcpproxy: handshake message of type %d, not ClientHello", msg[0])
			}
			msgLen = int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if recordHeaderLen+handshakeHeaderLen+msgLen > len(buf) {
				return ClientHello{}, n, fmt.Errorf("tcpproxy: ClientHello of %d bytes is larger than %d", msgLen, len(buf)-recordHeaderLen-handshakeHeaderLen)
			}
		}
		if msgLen < 0 || len(msg) < handshakeHeaderLen+msgLen {
			continue
		}
		if len(msg) > handshakeHeaderLen+msgLen {
			return ClientHello{}, n, errors.New("tcpproxy: the ClientHello does not end on a record boundary")
		}
		hello, err := parseClientHello(msg[handshakeHeaderLen:])
		return hello, n, err
	}
}

// parseClientHello parses the body of a ClientHello handshake message (RFC 8446 §4.1.2, RFC
// 5246 §7.4.1.2): every length must agree with the bytes present, and nothing may be left over.
func parseClientHello(b []byte) (ClientHello, error) {
	var hello ClientHello
	s := reader(b)
	var version uint16
	if !s.u16(&version) || version>>8 != 3 {
		return hello, errors.New("tcpproxy: ClientHello has no TLS legacy_version")
	}
	if !s.skip(32) {
		return hello, errors.New("tcpproxy: ClientHello is cut short in its random")
	}
	var sid, suites, comp reader
	if !s.vec8(&sid) || len(sid) > 32 {
		return hello, errors.New("tcpproxy: ClientHello has a bad session id")
	}
	if !s.vec16(&suites) || len(suites) < 2 || len(suites)%2 != 0 {
		return hello, errors.New("tcpproxy: ClientHello has a bad cipher suite list")
	}
	if !s.vec8(&comp) || len(comp) < 1 {
		return hello, errors.New("tcpproxy: ClientHello has a bad compression method list")
	}
	if len(s) == 0 {
		return hello, nil // no extensions: TLS 1.2 and older allow it
	}
	var exts reader
	if !s.vec16(&exts) || len(s) != 0 {
		return hello, errors.New("tcpproxy: ClientHello's extensions do not fill it")
	}
	// seen holds the extension types met so far, to refuse duplicates (RFC 8446 §4.2). A
	// hello has a few dozen extensions at most, so a scan beats a map.
	var seenBuf [64]uint16
	seen := seenBuf[:0]
	for len(exts) > 0 {
		var typ uint16
		var data reader
		if !exts.u16(&typ) || !exts.vec16(&data) {
			return hello, errors.New("tcpproxy: ClientHello has a truncated extension")
		}
		for _, t := range seen {
			if t == typ {
				return hello, fmt.Errorf("tcpproxy: ClientHello repeats extension %d", typ)
			}
		}
		if len(seen) == cap(seen) {
			return hello, errors.New("tcpproxy: ClientHello has too many extensions")
		}
		seen = append(seen, typ)
		var err error
		switch typ {
		case extServerName:
			hello.ServerName, err = parseServerName(data)
		case extALPN:
			hello.ALPN, err = parseALPN(data)
		}
		if err != nil {
			return hello, err
		}
	}
	return hello, nil
}

// parseServerName reads the server_name extension (RFC 6066 §3): a list holding at most one
// host_name, which must be a host name (letters, digits, '-', '_', '.'; no empty label, no
// trailing dot, as crypto/tls requires).
func parseServerName(data reader) (string, error) {
	var list reader
	if !data.vec16(&list) || len(data) != 0 || len(list) == 0 {
		return "", errors.New("tcpproxy: bad server_name extension")
	}
	name := ""
	for len(list) > 0 {
		var typ uint8
		var host reader
		if !list.u8(&typ) || !list.vec16(&host) {
			return "", errors.New("tcpproxy: bad server_name extension")
		}
		if typ != 0 {
			continue // an unknown name type: skipped, as crypto/tls does
		}
		if name != "" {
			return "", errors.New("tcpproxy: server_name extension has two host names")
		}
		if err := checkHostName(host); err != nil {
			return "", err
		}
		name = strings.ToLower(string(host))
	}
	return name, nil
}

func checkHostName(h []byte) error {
	if len(h) == 0 || len(h) > maxHostNameLen {
		return fmt.Errorf("tcpproxy: server name of %d bytes", len(h))
	}
	label := 0
	for _, c := range h {
		switch {
		case c == '.':
			if label == 0 {
				return fmt.Errorf("tcpproxy: server name %q has an empty label", h)
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("tcpproxy: server name %q is not a host name", h)
		}
		label++
		if label > 63 {
			return fmt.Errorf("tcpproxy: server name %q has a label over 63 bytes", h)
		}
	}
	if label == 0 {
		return fmt.Errorf("tcpproxy: server name %q ends with a dot", h)
	}
	return nil
}

// parseALPN reads the application_layer_protocol_negotiation extension (RFC 7301 §3.1): a
// non-empty list of non-empty names. The names share one string, so the list costs two
// allocations whatever its length.
func parseALPN(data reader) ([]string, error) {
	var list reader
	if !data.vec16(&list) || len(data) != 0 || len(list) == 0 {
		return nil, errors.New("tcpproxy: bad ALPN extension")
	}
	count := 0
	for l := list; len(l) > 0; count++ {
		var p reader
		if !l.vec8(&p) || len(p) == 0 {
			return nil, errors.New("tcpproxy: bad ALPN extension")
		}
	}
	all := string(list)
	protos := make([]string, 0, count)
	for i := 0; i < len(all); {
		m := int(all[i])
		protos = append(protos, all[i+1:i+1+m])
		i += 1 + m
	}
	return protos, nil
}

// reader reads big-endian integers and length-prefixed vectors, as cryptobyte.String does;
// each method reports false, consuming nothing useful, when the bytes run out.
type reader []byte

func (s *reader) skip(n int) bool {
	if len(*s) < n {
		return false
	}
	*s = (*s)[n:]
	return true
}

func (s *reader) u8(v *uint8) bool {
	if len(*s) < 1 {
		return false
	}
	*v = (*s)[0]
	*s = (*s)[1:]
	return true
}

func (s *reader) u16(v *uint16) bool {
	if len(*s) < 2 {
		return false
	}
	*v = uint16((*s)[0])<<8 | uint16((*s)[1])
	*s = (*s)[2:]
	return true
}

func (s *reader) vec(n int, out *reader) bool {
	if len(*s) < n {
		return false
	}
	l := 0
	for _, b := range (*s)[:n] {
		l = l<<8 | int(b)
	}
	if len(*s) < n+l {
		return false
	}
	*out = (*s)[n : n+l]
	*s = (*s)[n+l:]
	return true
}

func (s *reader) vec8(out *reader) bool  { return s.vec(1, out) }
func (s *reader) vec16(out *reader) bool { return s.vec(2, out) }
