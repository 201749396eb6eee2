package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"sync"
)

// ErrNoHeader says that a connection's first bytes are not a PROXY header: they start with
// neither version's signature.
var ErrNoHeader = errors.New("proxyproto: no PROXY header")

// Parse parses the header at the start of b and returns it with its length n: b[n:] is what
// follows it, untouched. The header's TLVs share b's memory.
//
// Parse is strict. A version-1 header is exactly "PROXY TCP4 " (or TCP6) followed by two
// addresses of that family and two decimal ports (0 to 65535, no leading zeros), separated by
// single spaces and ended by CRLF, or "PROXY UNKNOWN" followed by CRLF or by a space and
// printable text the receiver ignores; at most 107 bytes. A version-2 header has version 2,
// a LOCAL or PROXY command, a known family (AF_UNIX is refused, since Header cannot hold
// paths), a length of at most 4096 bytes in all that holds the family's address block, and
// TLVs that fill the rest exactly; a CRC32C TLV must match.
//
// When b holds only the start of what could be a header, Parse returns
// io.ErrUnexpectedEOF; when b starts with neither signature, ErrNoHeader. Any other error
// says what is wrong with the header.
func Parse(b []byte) (h Header, n int, err error) {
	n, err = size(b)
	if err != nil {
		return Header{}, 0, err
	}
	if n == 0 || len(b) < n {
		return Header{}, 0, io.ErrUnexpectedEOF
	}
	if b[0] == 'P' {
		h, err = parseV1(b[:n])
	} else {
		h, err = parseV2(b[:n])
	}
	if err != nil {
		return Header{}, 0, err
	}
	return h, n, nil
}

// sniff says what b, a connection's first bytes, begin with: a signature (header), not a
// signature (not header and decided), or too few bytes to tell (not decided).
func sniff(b []byte) (header, decided bool) {
	for _, sig := range [2]string{sigV1, sigV2} {
		m := min(len(b), len(sig))
		if string(b[:m]) != sig[:m] {
			continue
		}
		if m == len(sig) {
			return true, true
		}
		return false, false // a prefix of this signature, and of no other: they differ in byte 0
	}
	return false, true
}

// size returns the length of the header that b starts with, or 0 when b is too short to
// know it yet. It reads as little as it can: a version-2 header's length is known from its
// first 16 bytes, a version-1 header's at its LF. It refuses early what cannot become a
// valid header: a wrong signature, version or command, an oversized length, no CRLF within
// 107 bytes.
func size(b []byte) (int, error) {
	header, decided := sniff(b)
	switch {
	case !decided:
		return 0, nil
	case !header:
		return 0, ErrNoHeader
	case b[0] == 'P':
		i := bytes.IndexByte(b[:min(len(b), maxV1)], '\n')
		if i < 0 {
			if len(b) >= maxV1 {
				return 0, errors.New("proxyproto: v1 header: no CRLF within 107 bytes")
			}
			return 0, nil
		}
		if b[i-1] != '\r' {
			return 0, errors.New("proxyproto: v1 header: LF without CR")
		}
		return i + 1, nil
	}
	if len(b) < 13 {
		return 0, nil
	}
	if v := b[12] >> 4; v != 2 {
		return 0, fmt.Errorf("proxyproto: v2 header: version %d, want 2", v)
	}
	if c := b[12] & 0xF; c > 1 {
		return 0, fmt.Errorf("proxyproto: v2 header: command 0x%x is neither LOCAL (0) nor PROXY (1)", c)
	}
	if len(b) < 14 {
		return 0, nil
	}
	t := Transport(b[13])
	alen, ok := t.addrLen()
	switch {
	case t == 0x31 || t == 0x32:
		return 0, errors.New("proxyproto: v2 header: AF_UNIX addresses are not supported")
	case !ok:
		return 0, fmt.Errorf("proxyproto: v2 header: unknown family and transport 0x%02x", b[13])
	case len(b) < 16:
		return 0, nil
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	switch {
	case 16+n > maxV2:
		return 0, fmt.Errorf("proxyproto: v2 header: length %d is more than the %d accepted", n, maxV2-16)
	case n < alen:
		return 0, fmt.Errorf("proxyproto: v2 header: length %d is shorter than the %d bytes of a %v address block", n, alen, t)
	}
	return 16 + n, nil
}

// parseV1 parses a whole version-1 line, CRLF included.
func parseV1(line []byte) (Header, error) {
	rest := line[len(sigV1) : len(line)-2]
	if i := bytes.IndexAny(rest, "\r\n"); i >= 0 {
		return Header{}, errors.New("proxyproto: v1 header: CR or LF inside the line")
	}
	proto, rest, _ := bytes.Cut(rest, []byte{' '})
	h := Header{Version: 1}
	switch string(proto) {
	case "UNKNOWN":
		// The specification has the receiver ignore what follows; it must still be text.
		for _, c := range rest {
			if c < 0x20 || c > 0x7E {
				return Header{}, fmt.Errorf("proxyproto: v1 header: byte 0x%02x after UNKNOWN", c)
			}
		}
		return h, nil
	case "TCP4":
		h.Transport = TCP4
	case "TCP6":
		h.Transport = TCP6
	default:
		return Header{}, fmt.Errorf("proxyproto: v1 header: protocol %q is not TCP4, TCP6 or UNKNOWN", proto)
	}
	var f [4][]byte
	for i := range f {
		var ok bool
		f[i], rest, ok = bytes.Cut(rest, []byte{' '})
		if ok != (i < 3) {
			return Header{}, errors.New("proxyproto: v1 header: want 4 fields after the protocol, separated by single spaces")
		}
	}
	src, err := parseIP(f[0], h.Transport)
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: v1 header: source address: %w", err)
	}
	dst, err := parseIP(f[1], h.Transport)
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: v1 header: destination address: %w", err)
	}
	sport, err := parsePort(f[2])
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: v1 header: source port: %w", err)
	}
	dport, err := parsePort(f[3])
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: v1 header: destination port: %w", err)
	}
	h.Source = netip.AddrPortFrom(src, sport)
	h.Destination = netip.AddrPortFrom(dst, dport)
	return h, nil
}

// parseIP parses a version-1 address of t's family. IPv4 is parsed here, without the copy
// to a string that netip.ParseAddr needs: it is the common case, and Parse then allocates
// nothing.
func parseIP(b []byte, t Transport) (netip.Addr, error) {
	if t == TCP4 {
		a, ok := parseIPv4(b)
		if !ok {
			return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address", b)
		}
		return a, nil
	}
	a, err := netip.ParseAddr(string(b))
	switch {
	case err != nil:
		return netip.Addr{}, err
	case !a.Is6():
		return netip.Addr{}, fmt.Errorf("%q is not an IPv6 address", b)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q has a zone", b)
	}
	return a, nil
}

// parseIPv4 parses dotted-decimal IPv4 as netip.ParseAddr does: four decimal numbers up to
// 255, without leading zeros.
func parseIPv4(b []byte) (netip.Addr, bool) {
	var ip [4]byte
	for i := range ip {
		if i > 0 {
			if len(b) == 0 || b[0] != '.' {
				return netip.Addr{}, false
			}
			b = b[1:]
		}
		v, n := 0, 0
		for n < len(b) && b[n] >= '0' && b[n] <= '9' && n < 3 {
			v = v*10 + int(b[n]-'0')
			n++
		}
		if n == 0 || v > 255 || (n > 1 && b[0] == '0') {
			return netip.Addr{}, false
		}
		ip[i] = byte(v)
		b = b[n:]
	}
	return netip.AddrFrom4(ip), len(b) == 0
}

// parsePort parses a decimal port, 0 to 65535, without sign or leading zeros.
func parsePort(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, fmt.Errorf("%q is not a port", b)
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a port", b)
		}
		v = v*10 + int(c-'0')
	}
	if v > 0xFFFF {
		return 0, fmt.Errorf("%q is not a port", b)
	}
	return uint16(v), nil
}

// parseV2 parses a whole version-2 header, whose first 16 bytes size has checked.
func parseV2(b []byte) (Header, error) {
	h := Header{Version: 2, Transport: Transport(b[13])}
	if b[12]&0xF == 0 {
		h.Command = Local
	}
	alen, _ := h.Transport.addrLen()
	a := b[16 : 16+alen]
	switch alen {
	case 12:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	case 36:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), binary.BigEndian.Uint16(a[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), binary.BigEndian.Uint16(a[34:36]))
	}
	if tlvs := b[16+alen:]; len(tlvs) > 0 {
		h.TLVs = tlvs
	}
	crcAt, err := checkTLVs(h.TLVs)
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: v2 header: TLVs: %w", err)
	}
	if crcAt >= 0 {
		at := 16 + alen + crcAt
		var zero [4]byte
		sum := crc32.Update(0, castagnoli, b[:at])
		sum = crc32.Update(sum, castagnoli, zero[:])
		sum = crc32.Update(sum, castagnoli, b[at+4:])
		if got := binary.BigEndian.Uint32(b[at:]); got != sum {
			return Header{}, fmt.Errorf("proxyproto: v2 header: CRC32C is 0x%08x, the header's is 0x%08x", got, sum)
		}
	}
	return h, nil
}

// ReadHeader reads one header from r and nothing after it: what follows stays in r for
// its reader. A socket (a net.Conn with SyscallConn, on Unix) is read with a few system calls:
// the bytes after a version-1 header's fixed start are looked at with recv(MSG_PEEK) before
// exactly the line is read. Any other reader is read in exact counts, a version-1 line byte
// by byte after its first 15.
//
// A connection that ends before the header does gives an error wrapping io.EOF (nothing
// came) or io.ErrUnexpectedEOF; bytes that are not a header, ErrNoHeader. After an error
// r's state is unknown: close it. The header's TLVs are a copy of its own.
func ReadHeader(r io.Reader) (Header, error) {
	buf := bufPool.Get().(*[maxV2]byte)
	defer bufPool.Put(buf)
	h, err := readHeader(r, buf, nil)
	if err != nil {
		return Header{}, err
	}
	return cloneTLVs(h), nil
}

// bufPool holds the buffers headers are read into, as array pointers: putting one back
// allocates nothing.
var bufPool = sync.Pool{New: func() any { return new([maxV2]byte) }}

// cloneTLVs gives h a copy of its TLVs, so that it no longer shares a buffer.
func cloneTLVs(h Header) Header {
	if h.TLVs != nil {
		h.TLVs = bytes.Clone(h.TLVs)
	}
	return h
}

// readHeader reads one header into buf from r, after the bytes in pre, which were read from
// r already (a Listener's look at its peer's first bytes, fewer than 15), and returns it,
// sharing buf.
func readHeader(r io.Reader, buf *[maxV2]byte, pre []byte) (Header, error) {
	have := copy(buf[:], pre)
	// Every header is at least 15 bytes ("PROXY UNKNOWN\r\n"; version 2 has 16): reading that
	// many never takes a byte that follows one.
	if err := readFull(r, buf[have:15], have); err != nil {
		return Header{}, err
	}
	have = 15
	var peek peekFunc
	if buf[0] == 'P' {
		peek = peekerOf(r)
	}
	for {
		n, err := size(buf[:have])
		if err != nil {
			return Header{}, err
		}
		if n > 0 && n < have {
			// An LF within the first 15 bytes: a line shorter than any header.
			return Header{}, errors.New("proxyproto: v1 header: line too short")
		}
		if n > 0 {
			// have ≤ n: a version-1 line is read up to its LF and no further, and a version-2
			// length is known after 16 bytes, one past the first read.
			if err := readFull(r, buf[have:n], have); err != nil {
				return Header{}, err
			}
			h, _, err := Parse(buf[:n])
			return h, err
		}
		next := have + 1 // version 1 on anything but a socket: byte by byte
		if buf[0] != 'P' {
			next = 16 // version 2: its length is in bytes 14 and 15
		} else if peek != nil {
			// Version 1 on a socket: look at what has come, and read up to its LF, or all of
			// it when it holds none: every byte before the LF is the header's.
			m, err := peek(buf[have:maxV1], 0)
			switch {
			case err == errNoPeek:
				peek = nil
				continue
			case err == io.EOF:
				return Header{}, fmt.Errorf("proxyproto: the connection ended inside the PROXY header: %w", io.ErrUnexpectedEOF)
			case err != nil:
				return Header{}, fmt.Errorf("proxyproto: reading the header: %w", err)
			}
			next = have + m
			if i := bytes.IndexByte(buf[have:next], '\n'); i >= 0 {
				next = have + i + 1
			}
		}
		if err := readFull(r, buf[have:next], have); err != nil {
			return Header{}, err
		}
		have = next
	}
}

// readFull reads len(p) bytes from r, in reads of exactly what is missing, so that it never
// takes a byte more. have is how much of the header came before. Its errors say whether the
// connection ended before the header or inside it.
func readFull(r io.Reader, p []byte, have int) error {
	m, err := io.ReadFull(r, p)
	switch {
	case err == nil:
		return nil
	case err == io.EOF && have == 0:
		return fmt.Errorf("proxyproto: the connection ended before the PROXY header: %w", err)
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return fmt.Errorf("proxyproto: the connection ended inside the PROXY header, after %d bytes: %w", have+m, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("proxyproto: reading the header: %w", err)
}
