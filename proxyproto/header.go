package proxyproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"strconv"
)

// Command says whether a header speaks for a client or for the sender itself.
type Command uint8

const (
	// Proxy says the connection was relayed for a client: Source is the client and
	// Destination the address it connected to. It is the zero value.
	Proxy Command = iota
	// Local says the sender opened the connection on its own account (a health check): the
	// receiver keeps the connection's real addresses. Only version 2 can say it.
	Local
)

// String returns "PROXY" or "LOCAL", the names the specification gives the commands.
func (c Command) String() string {
	switch c {
	case Proxy:
		return "PROXY"
	case Local:
		return "LOCAL"
	}
	return "Command(" + strconv.Itoa(int(c)) + ")"
}

// Transport is the transport protocol and address family of the proxied connection. Its
// values are version 2's byte for them.
type Transport uint8

const (
	// Unspec says the sender does not know, or does not say, who the client is: version 1's
	// UNKNOWN, version 2's AF_UNSPEC. The receiver keeps the connection's real addresses. It
	// is the zero value.
	Unspec Transport = 0x00
	// TCP4 is TCP over IPv4.
	TCP4 Transport = 0x11
	// UDP4 is UDP over IPv4. Only version 2 can say it.
	UDP4 Transport = 0x12
	// TCP6 is TCP over IPv6.
	TCP6 Transport = 0x21
	// UDP6 is UDP over IPv6. Only version 2 can say it.
	UDP6 Transport = 0x22
)

// String returns "UNKNOWN", "TCP4", "UDP4", "TCP6" or "UDP6".
func (t Transport) String() string {
	switch t {
	case Unspec:
		return "UNKNOWN"
	case TCP4:
		return "TCP4"
	case UDP4:
		return "UDP4"
	case TCP6:
		return "TCP6"
	case UDP6:
		return "UDP6"
	}
	return fmt.Sprintf("Transport(0x%02x)", uint8(t))
}

// addrLen returns the length of t's address block in version 2, and whether t is known.
func (t Transport) addrLen() (int, bool) {
	switch t {
	case Unspec:
		return 0, true
	case TCP4, UDP4:
		return 12, true
	case TCP6, UDP6:
		return 36, true
	}
	return 0, false
}

func (t Transport) is4() bool { return t == TCP4 || t == UDP4 }

// TLVType is the type of a version-2 TLV (type-length-value) extension.
type TLVType uint8

// The TLV types the specification defines. Types 0xE0 to 0xEF are left to applications
// (cloud load balancers put their endpoint or link identifiers there); 0xF0 to 0xF7 are
// experimental.
const (
	TypeALPN      TLVType = 0x01 // the application protocol the client negotiated (TLS ALPN)
	TypeAuthority TLVType = 0x02 // the host name the client asked for (TLS SNI), UTF-8
	TypeCRC32C    TLVType = 0x03 // a CRC-32C of the whole header; checked when present
	TypeNoop      TLVType = 0x04 // padding, ignored
	TypeUniqueID  TLVType = 0x05 // an opaque identifier of the connection, up to 128 bytes
	TypeSSL       TLVType = 0x20 // the client's TLS session: flags, verify result, sub-TLVs
	TypeNetNS     TLVType = 0x30 // the network namespace the connection was accepted in
)

// Header is one PROXY protocol header: what a proxy in front says about the connection it
// relays, before the connection's own bytes.
//
// A Header is a small value. The zero Header is invalid (Version 0); a version-2 Header with
// only Version set says "PROXY, address unknown", which receivers take as "use the real
// peer".
type Header struct {
	// Version is 1 (the text form) or 2 (the binary form).
	Version int

	// Command is Proxy (the zero value) or Local. Version 1 can only say Proxy.
	Command Command

	// Transport is the protocol and address family of Source and Destination. With Unspec
	// both addresses are unset. Version 1 can say TCP4, TCP6 and Unspec.
	Transport Transport

	// Source is the client's address and Destination the address it connected to: IPv4
	// addresses for TCP4 and UDP4, IPv6 ones (IPv4-mapped allowed) for TCP6 and UDP6, none
	// with a zone.
	Source, Destination netip.AddrPort

	// TLVs holds version 2's extensions as they are on the wire: one after the other, each a
	// type byte, a big-endian 16-bit length and the value. Parse checks that they fill the
	// header exactly, and the specification's rules for the types it defines; TLV returns one
	// by type, AppendTLV adds one. A header that Parse returns shares this slice with the
	// bytes it parsed.
	TLVs []byte
}

// maxV2 is the longest version-2 header this package writes or accepts, its 16 fixed bytes
// included. The wire format allows 65,551; real senders stay far below (addresses and a few
// short TLVs), and the cap bounds what a peer can make a receiver buffer before it has said
// anything of use.
const maxV2 = 4096

// maxV1 is the longest version-1 header, its CRLF included, as the specification fixes it.
const maxV1 = 107

// The two signatures: version 1's line starts with the first, version 2's header with the
// second.
const (
	sigV1 = "PROXY "
	sigV2 = "\r\n\r\n\x00\r\nQUIT\n"
)

// castagnoli is the CRC-32C table, which crc32 computes with the CPU's instruction where it
// has one.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Proxied reports whether h carries a client's addresses the receiver should use in place of
// the connection's: Command Proxy and a Transport other than Unspec.
func (h Header) Proxied() bool {
	return h.Command == Proxy && h.Transport != Unspec
}

// TLV returns the value of h's first TLV of type t, and whether it has one. The value shares
// h.TLVs' memory.
func (h Header) TLV(t TLVType) ([]byte, bool) {
	for b := h.TLVs; len(b) >= 3; {
		n := 3 + int(binary.BigEndian.Uint16(b[1:3]))
		if n > len(b) {
			break
		}
		if TLVType(b[0]) == t {
			return b[3:n], true
		}
		b = b[n:]
	}
	return nil, false
}

// AppendTLV appends one TLV of type t and value v to tlvs, the value of a Header's TLVs. For a
// TypeCRC32C TLV, pass 4 zero bytes: Append computes the checksum. The error names a value
// too long for the 16-bit length.
func AppendTLV(tlvs []byte, t TLVType, v []byte) ([]byte, error) {
	if len(v) > 0xFFFF {
		return tlvs, fmt.Errorf("proxyproto: TLV 0x%02x: value of %d bytes is longer than 65535", uint8(t), len(v))
	}
	tlvs = append(tlvs, byte(t), byte(len(v)>>8), byte(len(v)))
	return append(tlvs, v...), nil
}

// Append appends h's wire form to b and returns the extended slice. It allocates nothing
// beyond b's growth. The error names the field that cannot be written: an unknown Version,
// Command or Transport, a Source or Destination that does not match Transport, something
// version 1 cannot say (Local, UDP, TLVs), malformed TLVs, or a header longer than the 4 KiB
// that receivers of this package accept. For a version-2 header with a TypeCRC32C TLV,
// Append writes the checksum of what it appends in that TLV's value.
func (h Header) Append(b []byte) ([]byte, error) {
	if err := h.checkAddrs(); err != nil {
		return b, err
	}
	switch h.Version {
	case 1:
		return h.appendV1(b)
	case 2:
		return h.appendV2(b)
	}
	return b, fmt.Errorf("proxyproto: Version must be 1 or 2, got %d", h.Version)
}

// checkAddrs checks that Source and Destination fit Transport.
func (h Header) checkAddrs() error {
	if _, ok := h.Transport.addrLen(); !ok {
		return fmt.Errorf("proxyproto: Transport 0x%02x is not one of Unspec, TCP4, UDP4, TCP6, UDP6", uint8(h.Transport))
	}
	if h.Transport == Unspec {
		if h.Source.IsValid() || h.Destination.IsValid() {
			return errors.New("proxyproto: Source and Destination must be unset when Transport is Unspec")
		}
		return nil
	}
	for _, a := range [2]struct {
		name string
		ap   netip.AddrPort
	}{{"Source", h.Source}, {"Destination", h.Destination}} {
		ip := a.ap.Addr()
		switch {
		case !ip.IsValid():
			return fmt.Errorf("proxyproto: %s must be set when Transport is %v", a.name, h.Transport)
		case ip.Zone() != "":
			return fmt.Errorf("proxyproto: %s %v has a zone, which the protocol cannot carry", a.name, a.ap)
		case h.Transport.is4() && !ip.Is4():
			return fmt.Errorf("proxyproto: %s %v is not an IPv4 address, as Transport %v needs", a.name, a.ap, h.Transport)
		case !h.Transport.is4() && !ip.Is6():
			return fmt.Errorf("proxyproto: %s %v is not an IPv6 address, as Transport %v needs", a.name, a.ap, h.Transport)
		}
	}
	return nil
}

func (h Header) appendV1(b []byte) ([]byte, error) {
	switch {
	case h.Command != Proxy:
		return b, fmt.Errorf("proxyproto: Command %v needs Version 2", h.Command)
	case len(h.TLVs) > 0:
		return b, errors.New("proxyproto: TLVs need Version 2")
	case h.Transport == UDP4 || h.Transport == UDP6:
		return b, fmt.Errorf("proxyproto: Transport %v needs Version 2", h.Transport)
	case h.Transport == Unspec:
		return append(b, "PROXY UNKNOWN\r\n"...), nil
	}
	b = append(b, sigV1...)
	b = append(b, h.Transport.String()...)
	b = append(b, ' ')
	b = h.Source.Addr().AppendTo(b)
	b = append(b, ' ')
	b = h.Destination.Addr().AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Source.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Destination.Port()), 10)
	return append(b, '\r', '\n'), nil
}

func (h Header) appendV2(b []byte) ([]byte, error) {
	var cmd byte
	switch h.Command {
	case Proxy:
		cmd = 0x21
	case Local:
		cmd = 0x20
	default:
		return b, fmt.Errorf("proxyproto: Command %d is neither Proxy nor Local", uint8(h.Command))
	}
	crcAt, err := checkTLVs(h.TLVs)
	if err != nil {
		return b, fmt.Errorf("proxyproto: TLVs: %w", err)
	}
	alen, _ := h.Transport.addrLen()
	n := alen + len(h.TLVs)
	if 16+n > maxV2 {
		return b, fmt.Errorf("proxyproto: header of %d bytes is longer than the %d a receiver accepts: shorten TLVs", 16+n, maxV2)
	}
	start := len(b)
	b = append(b, sigV2...)
	b = append(b, cmd, byte(h.Transport), byte(n>>8), byte(n))
	switch alen {
	case 12:
		s, d := h.Source.Addr().As4(), h.Destination.Addr().As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	case 36:
		s, d := h.Source.Addr().As16(), h.Destination.Addr().As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	if alen > 0 {
		b = binary.BigEndian.AppendUint16(b, h.Source.Port())
		b = binary.BigEndian.AppendUint16(b, h.Destination.Port())
	}
	tlvs := len(b)
	b = append(b, h.TLVs...)
	if crcAt >= 0 {
		v := b[tlvs+crcAt : tlvs+crcAt+4]
		clear(v)
		binary.BigEndian.PutUint32(v, crc32.Checksum(b[start:], castagnoli))
	}
	return b, nil
}

// checkTLVs checks that tlvs is a sequence of whole TLVs that obey the specification's rules
// for the types it defines, and returns the offset of the one TypeCRC32C value, or -1.
func checkTLVs(tlvs []byte) (crcAt int, err error) {
	crcAt = -1
	for off := 0; off < len(tlvs); {
		if len(tlvs)-off < 3 {
			return -1, fmt.Errorf("%d bytes left at offset %d, too few for a TLV", len(tlvs)-off, off)
		}
		t := TLVType(tlvs[off])
		n := int(binary.BigEndian.Uint16(tlvs[off+1 : off+3]))
		if n > len(tlvs)-off-3 {
			return -1, fmt.Errorf("TLV 0x%02x at offset %d says %d bytes, %d are left", uint8(t), off, n, len(tlvs)-off-3)
		}
		v := tlvs[off+3 : off+3+n]
		switch t {
		case TypeCRC32C:
			if n != 4 {
				return -1, fmt.Errorf("CRC32C TLV has %d bytes, want 4", n)
			}
			if crcAt >= 0 {
				return -1, errors.New("two CRC32C TLVs")
			}
			crcAt = off + 3
		case TypeUniqueID:
			if n > 128 {
				return -1, fmt.Errorf("UNIQUE_ID TLV has %d bytes, more than 128", n)
			}
		case TypeSSL:
			// client (1 byte), verify (4 bytes), then sub-TLVs filling the rest.
			if n < 5 {
				return -1, fmt.Errorf("SSL TLV has %d bytes, fewer than 5", n)
			}
			if _, err := checkTLVs(v[5:]); err != nil {
				return -1, fmt.Errorf("SSL TLV: %w", err)
			}
		}
		off += 3 + n
	}
	return crcAt, nil
}

// TCP returns the version-v header of a TCP connection from source to destination, as a
// sender writes it before a client's bytes: TCP4 when both addresses are IPv4 (IPv4-mapped
// ones are unmapped), TCP6 when either is IPv6 (the other is then IPv4-mapped), Unspec when
// either is invalid. Zones are dropped, since the protocol cannot carry them.
func TCP(v int, source, destination netip.AddrPort) Header {
	return addrHeader(v, source, destination, false)
}

// FromConn returns the version-v header that tells an upstream about client connection c,
// as [TCP] builds it from c.RemoteAddr() and c.LocalAddr(). A *net.UDPAddr gives UDP4 or
// UDP6, which only version 2 can carry; addresses that are not IP (a Unix socket, net.Pipe)
// give Unspec. A c accepted by a [Listener] gives the addresses its own header said, so a
// chain of proxies passes the client on.
func FromConn(v int, c net.Conn) Header {
	src, udp := netAddrPort(c.RemoteAddr())
	dst, _ := netAddrPort(c.LocalAddr())
	return addrHeader(v, src, dst, udp)
}

// netAddrPort returns a's address and port, and whether it is a UDP address.
func netAddrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort(), false
	case *net.UDPAddr:
		return a.AddrPort(), true
	}
	return netip.AddrPort{}, false
}

func addrHeader(v int, src, dst netip.AddrPort, udp bool) Header {
	h := Header{Version: v}
	if !src.IsValid() || !dst.IsValid() {
		return h
	}
	s, d := src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
	if s.Is4() && d.Is4() {
		h.Transport = TCP4
	} else {
		h.Transport = TCP6
		if s.Is4() {
			s = netip.AddrFrom16(s.As16())
		}
		if d.Is4() {
			d = netip.AddrFrom16(d.As16())
		}
	}
	if udp {
		h.Transport++ // TCP4 → UDP4, TCP6 → UDP6
	}
	h.Source = netip.AddrPortFrom(s, src.Port())
	h.Destination = netip.AddrPortFrom(d, dst.Port())
	return h
}
