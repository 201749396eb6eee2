package proxyproto_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/proxyproto"
)

const sigV2 = "\r\n\r\n\x00\r\nQUIT\n"

// v2 builds a version-2 header by hand, from its command and family bytes and the bytes
// after its length, which it computes.
func v2(verCmd, fam byte, body ...[]byte) []byte {
	b := append([]byte(sigV2), verCmd, fam, 0, 0)
	for _, p := range body {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint16(b[14:16], uint16(len(b)-16))
	return b
}

// v2Len is v2 with a length of its own, which may lie.
func v2Len(verCmd, fam byte, n uint16, body ...[]byte) []byte {
	b := v2(verCmd, fam, body...)
	binary.BigEndian.PutUint16(b[14:16], n)
	return b
}

func addrs4() []byte {
	return []byte{192, 0, 2, 7, 198, 51, 100, 1, 0xDC, 0x04, 0x01, 0xBB} // 192.0.2.7:56324 → 198.51.100.1:443
}

func addrs6() []byte {
	s, d := netip.MustParseAddr("2001:db8::7").As16(), netip.MustParseAddr("2001:db8::1").As16()
	b := append(s[:], d[:]...)
	return append(b, 0xDC, 0x04, 0x01, 0xBB)
}

func tlv(t byte, v string) []byte {
	return append([]byte{t, byte(len(v) >> 8), byte(len(v))}, v...)
}

// withCRC returns h, a version-2 header whose last TLV is a CRC32C with a zero value, with
// the checksum filled in.
func withCRC(h []byte) []byte {
	binary.BigEndian.PutUint32(h[len(h)-4:], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	return h
}

var (
	src4 = netip.MustParseAddrPort("192.0.2.7:56324")
	dst4 = netip.MustParseAddrPort("198.51.100.1:443")
	src6 = netip.MustParseAddrPort("[2001:db8::7]:56324")
	dst6 = netip.MustParseAddrPort("[2001:db8::1]:443")
)

// validHeaders are headers Parse must accept, with what it must return.
var validHeaders = []struct {
	name string
	in   []byte
	want proxyproto.Header
}{
	{"v1 TCP4", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"),
		proxyproto.Header{Version: 1, Transport: proxyproto.TCP4, Source: src4, Destination: dst4}},
	{"v1 TCP6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n"),
		proxyproto.Header{Version: 1, Transport: proxyproto.TCP6, Source: src6, Destination: dst6}},
	{"v1 TCP6 IPv4-mapped, ports 0 and 65535", []byte("PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 0 65535\r\n"),
		proxyproto.Header{Version: 1, Transport: proxyproto.TCP6,
			Source: netip.MustParseAddrPort("[::ffff:192.0.2.7]:0"), Destination: netip.MustParseAddrPort("[2001:db8::1]:65535")}},
	{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), proxyproto.Header{Version: 1}},
	{"v1 UNKNOWN, 107 bytes of ignored text", []byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		proxyproto.Header{Version: 1}},
	{"v2 PROXY TCP4", v2(0x21, 0x11, addrs4()),
		proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Source: src4, Destination: dst4}},
	{"v2 PROXY UDP4", v2(0x21, 0x12, addrs4()),
		proxyproto.Header{Version: 2, Transport: proxyproto.UDP4, Source: src4, Destination: dst4}},
	{"v2 PROXY TCP6", v2(0x21, 0x21, addrs6()),
		proxyproto.Header{Version: 2, Transport: proxyproto.TCP6, Source: src6, Destination: dst6}},
	{"v2 PROXY UDP6", v2(0x21, 0x22, addrs6()),
		proxyproto.Header{Version: 2, Transport: proxyproto.UDP6, Source: src6, Destination: dst6}},
	{"v2 LOCAL", v2(0x20, 0x00), proxyproto.Header{Version: 2, Command: proxyproto.Local}},
	{"v2 LOCAL with addresses", v2(0x20, 0x11, addrs4()),
		proxyproto.Header{Version: 2, Command: proxyproto.Local, Transport: proxyproto.TCP4, Source: src4, Destination: dst4}},
	{"v2 PROXY AF_UNSPEC", v2(0x21, 0x00), proxyproto.Header{Version: 2}},
	{"v2 TLVs", v2(0x21, 0x11, addrs4(), tlv(0x02, "example.com"), tlv(0x01, "h2"), tlv(0x04, ""), tlv(0xEA, "vpce-0123")),
		proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Source: src4, Destination: dst4,
			TLVs: slicesConcat(tlv(0x02, "example.com"), tlv(0x01, "h2"), tlv(0x04, ""), tlv(0xEA, "vpce-0123"))}},
	{"v2 SSL TLV with sub-TLVs", v2(0x21, 0x00, tlv(0x20, "\x07\x00\x00\x00\x00"+string(tlv(0x21, "TLSv1.3"))+string(tlv(0x22, "client")))),
		proxyproto.Header{Version: 2, TLVs: tlv(0x20, "\x07\x00\x00\x00\x00"+string(tlv(0x21, "TLSv1.3"))+string(tlv(0x22, "client")))}},
	{"v2 CRC32C", withCRC(v2(0x21, 0x11, addrs4(), tlv(0x05, "id-1"), tlv(0x03, "\x00\x00\x00\x00"))), proxyproto.Header{}}, // want filled in by init
}

func init() {
	for i := range validHeaders {
		if v := &validHeaders[i]; v.name == "v2 CRC32C" {
			v.want = proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Source: src4, Destination: dst4, TLVs: v.in[28:]}
		}
	}
}

func slicesConcat(s ...[]byte) []byte { return bytes.Join(s, nil) }

func TestParseValid(t *testing.T) {
	const after = "GET / HTTP/1.1\r\n\r\n"
	for _, tc := range validHeaders {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := proxyproto.Parse(append(bytes.Clone(tc.in), after...))
			require.NoError(t, err)
			assert.Equal(t, len(tc.in), n, "the length is the header's, not a byte more")
			assert.Equal(t, tc.want, h)

			for k := range len(tc.in) {
				_, _, err := proxyproto.Parse(tc.in[:k])
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the first %d bytes are the start of a header", k)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	long := make([]byte, 4200)
	cases := []struct {
		name string
		in   string
		want string // in the error
	}{
		{"not a header", "GET / HTTP/1.1\r\n\r\n", "no PROXY header"},
		{"PRI preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "no PROXY header"},
		{"CRLF then text", "\r\n\r\nGET / HTTP/1.1\r\n", "no PROXY header"},
		{"v1 no space after PROXY", "PROXY\r\n", "no PROXY header"},
		{"v1 lower case", "PROXY tcp4 192.0.2.7 198.51.100.1 56324 443\r\n", `protocol "tcp4"`},
		{"v1 TCP5", "PROXY TCP5 192.0.2.7 198.51.100.1 56324 443\r\n", `protocol "TCP5"`},
		{"v1 double space", "PROXY TCP4  192.0.2.7 198.51.100.1 56324 443\r\n", "separated by single spaces"},
		{"v1 trailing space", "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 \r\n", "want 4 fields"},
		{"v1 missing port", "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n", "want 4 fields"},
		{"v1 extra field", "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 1\r\n", "want 4 fields"},
		{"v1 LF without CR", "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n", "LF without CR"},
		{"v1 CR inside", "PROXY TCP4 192.0.2.7\r198.51.100.1 56324 443\r\n", "CR or LF inside"},
		{"v1 short line", "PROXY TCP4\r\n", "want 4 fields"},
		{"v1 leading zero in port", "PROXY TCP4 192.0.2.7 198.51.100.1 056324 443\r\n", "source port"},
		{"v1 port 65536", "PROXY TCP4 192.0.2.7 198.51.100.1 56324 65536\r\n", "destination port"},
		{"v1 signed port", "PROXY TCP4 192.0.2.7 198.51.100.1 +5 443\r\n", "source port"},
		{"v1 six-digit port", "PROXY TCP4 192.0.2.7 198.51.100.1 000443 443\r\n", "source port"},
		{"v1 leading zero in IPv4", "PROXY TCP4 192.0.2.07 198.51.100.1 56324 443\r\n", "source address"},
		{"v1 IPv4 octet 256", "PROXY TCP4 192.0.2.7 198.51.100.256 56324 443\r\n", "destination address"},
		{"v1 IPv4 three octets", "PROXY TCP4 192.0.2 198.51.100.1 56324 443\r\n", "source address"},
		{"v1 TCP4 with IPv6", "PROXY TCP4 2001:db8::7 198.51.100.1 56324 443\r\n", "source address"},
		{"v1 TCP6 with IPv4", "PROXY TCP6 2001:db8::7 198.51.100.1 56324 443\r\n", "destination address"},
		{"v1 TCP6 with a zone", "PROXY TCP6 fe80::1%eth0 2001:db8::1 56324 443\r\n", "zone"},
		{"v1 UNKNOWN with control bytes", "PROXY UNKNOWN \x00\x01\r\n", "after UNKNOWN"},
		{"v1 no CRLF within 107 bytes", "PROXY UNKNOWN " + strings.Repeat("a", 100), "no CRLF within 107"},
		{"v1 CRLF at byte 109", "PROXY UNKNOWN " + strings.Repeat("a", 93) + "\r\n", "no CRLF within 107"},
		{"v2 version 1", string(v2(0x11, 0x11, addrs4())), "version 1"},
		{"v2 version 3", string(v2(0x31, 0x11, addrs4())), "version 3"},
		{"v2 command 2", string(v2(0x22, 0x11, addrs4())), "command 0x2"},
		{"v2 AF_UNIX", string(v2(0x21, 0x31, make([]byte, 216))), "AF_UNIX"},
		{"v2 family 4", string(v2(0x21, 0x41, addrs4())), "unknown family"},
		{"v2 transport 3", string(v2(0x21, 0x13, addrs4())), "unknown family"},
		{"v2 length below the address block", string(v2Len(0x21, 0x11, 11, addrs4()[:11])), "shorter than the 12"},
		{"v2 IPv6 length of an IPv4 block", string(v2(0x21, 0x21, addrs4())), "shorter than the 36"},
		{"v2 length above the cap", string(v2Len(0x21, 0x11, 4081, long)), "more than the 4080"},
		{"v2 length 65535", string(v2Len(0x21, 0x11, 0xFFFF)), "more than the 4080"},
		{"v2 TLV longer than the header", string(v2(0x21, 0x11, addrs4(), []byte{0x02, 0x00, 0x10, 'a'})), "says 16 bytes, 1 are left"},
		{"v2 bytes after the TLVs", string(v2(0x21, 0x11, addrs4(), tlv(0x02, "a"), []byte{0x01, 0x00})), "too few for a TLV"},
		{"v2 CRC32C wrong", string(v2(0x21, 0x11, addrs4(), tlv(0x03, "\x01\x02\x03\x04"))), "CRC32C is 0x01020304"},
		{"v2 CRC32C of 3 bytes", string(v2(0x21, 0x11, addrs4(), tlv(0x03, "abc"))), "want 4"},
		{"v2 two CRC32C", string(withCRC(v2(0x21, 0x11, addrs4(), tlv(0x03, "abcd"), tlv(0x03, "\x00\x00\x00\x00")))), "two CRC32C"},
		{"v2 UNIQUE_ID of 129 bytes", string(v2(0x21, 0x11, addrs4(), tlv(0x05, strings.Repeat("u", 129)))), "more than 128"},
		{"v2 SSL TLV of 4 bytes", string(v2(0x21, 0x11, addrs4(), tlv(0x20, "\x01\x00\x00\x00"))), "fewer than 5"},
		{"v2 SSL sub-TLV overrun", string(v2(0x21, 0x11, addrs4(), tlv(0x20, "\x01\x00\x00\x00\x00\x21\x00\x09TLS"))), "SSL TLV"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := proxyproto.Parse([]byte(tc.in))
			require.Error(t, err)
			assert.Zero(t, n)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotErrorIs(t, err, io.ErrUnexpectedEOF, "a refused header is not an incomplete one")
			_, err = proxyproto.ReadHeader(strings.NewReader(tc.in + "after"))
			assert.Error(t, err, "ReadHeader refuses it too")
		})
	}
}

func TestAppendRoundTrip(t *testing.T) {
	for _, tc := range validHeaders {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.want.Append([]byte("prefix"))
			require.NoError(t, err)
			require.True(t, bytes.HasPrefix(b, []byte("prefix")), "Append appends")
			h, n, err := proxyproto.Parse(b[len("prefix"):])
			require.NoError(t, err)
			assert.Equal(t, len(b)-len("prefix"), n)
			assert.Equal(t, tc.want, h)
			if tc.want.Version == 2 || tc.want.Transport != proxyproto.Unspec {
				assert.Equal(t, string(tc.in), string(b[len("prefix"):]), "the wire form is the canonical one")
			}
		})
	}
}

func TestAppendErrors(t *testing.T) {
	cases := []struct {
		name string
		h    proxyproto.Header
		want string
	}{
		{"zero", proxyproto.Header{}, "Version must be 1 or 2, got 0"},
		{"version 3", proxyproto.Header{Version: 3}, "Version must be 1 or 2, got 3"},
		{"v1 LOCAL", proxyproto.Header{Version: 1, Command: proxyproto.Local}, "Command LOCAL needs Version 2"},
		{"v1 UDP", proxyproto.Header{Version: 1, Transport: proxyproto.UDP4, Source: src4, Destination: dst4}, "Transport UDP4 needs Version 2"},
		{"v1 TLVs", proxyproto.Header{Version: 1, TLVs: tlv(0x02, "a")}, "TLVs need Version 2"},
		{"unknown command", proxyproto.Header{Version: 2, Command: 7}, "Command 7"},
		{"unknown transport", proxyproto.Header{Version: 2, Transport: 0x31}, "Transport 0x31"},
		{"TCP4 without source", proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Destination: dst4}, "Source must be set"},
		{"TCP4 with IPv6", proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Source: src4, Destination: dst6}, "Destination [2001:db8::1]:443 is not an IPv4 address"},
		{"TCP6 with IPv4", proxyproto.Header{Version: 1, Transport: proxyproto.TCP6, Source: src4, Destination: dst6}, "Source 192.0.2.7:56324 is not an IPv6 address"},
		{"zone", proxyproto.Header{Version: 2, Transport: proxyproto.TCP6, Source: netip.MustParseAddrPort("[fe80::1%eth0]:1"), Destination: dst6}, "has a zone"},
		{"Unspec with addresses", proxyproto.Header{Version: 2, Source: src4}, "must be unset when Transport is Unspec"},
		{"TLV overrun", proxyproto.Header{Version: 2, TLVs: []byte{0x02, 0x00, 0x05, 'a'}}, "TLVs: TLV 0x02"},
		{"too long", proxyproto.Header{Version: 2, TLVs: tlv(0xE0, strings.Repeat("x", 4080))}, "longer than the 4096"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.h.Append([]byte("x"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, "x", string(b), "nothing is appended on error")
		})
	}
}

func TestAppendCRC32C(t *testing.T) {
	tlvs, err := proxyproto.AppendTLV(nil, proxyproto.TypeAuthority, []byte("example.com"))
	require.NoError(t, err)
	tlvs, err = proxyproto.AppendTLV(tlvs, proxyproto.TypeCRC32C, make([]byte, 4))
	require.NoError(t, err)
	h := proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Source: src4, Destination: dst4, TLVs: tlvs}
	b, err := h.Append(nil)
	require.NoError(t, err)
	got, _, err := proxyproto.Parse(b)
	require.NoError(t, err, "the checksum Append wrote matches")
	sum, ok := got.TLV(proxyproto.TypeCRC32C)
	require.True(t, ok)
	assert.NotEqual(t, []byte{0, 0, 0, 0}, sum)
	name, ok := got.TLV(proxyproto.TypeAuthority)
	assert.True(t, ok)
	assert.Equal(t, "example.com", string(name))
	_, ok = got.TLV(proxyproto.TypeALPN)
	assert.False(t, ok, "no ALPN TLV was sent")

	b[20]++ // the source address changes in transit
	_, _, err = proxyproto.Parse(b)
	assert.ErrorContains(t, err, "CRC32C", "a header changed in transit is refused")

	_, err = proxyproto.AppendTLV(nil, proxyproto.TypeNoop, make([]byte, 70000))
	assert.ErrorContains(t, err, "longer than 65535")
}

func TestTCPHeader(t *testing.T) {
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.7]:56324")
	cases := []struct {
		name     string
		src, dst netip.AddrPort
		want     proxyproto.Header
	}{
		{"IPv4", src4, dst4, proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Source: src4, Destination: dst4}},
		{"IPv4-mapped is unmapped", mapped, dst4, proxyproto.Header{Version: 2, Transport: proxyproto.TCP4, Source: src4, Destination: dst4}},
		{"IPv6", src6, dst6, proxyproto.Header{Version: 2, Transport: proxyproto.TCP6, Source: src6, Destination: dst6}},
		{"mixed families map the IPv4 one", src4, dst6, proxyproto.Header{Version: 2, Transport: proxyproto.TCP6, Source: mapped, Destination: dst6}},
		{"zone dropped", netip.MustParseAddrPort("[fe80::1%eth0]:1"), dst6,
			proxyproto.Header{Version: 2, Transport: proxyproto.TCP6, Source: netip.MustParseAddrPort("[fe80::1]:1"), Destination: dst6}},
		{"unknown source", netip.AddrPort{}, dst4, proxyproto.Header{Version: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := proxyproto.TCP(2, tc.src, tc.dst)
			assert.Equal(t, tc.want, h)
			_, err := h.Append(nil)
			assert.NoError(t, err, "what TCP builds can be written")
		})
	}
}

func TestReadHeaderExact(t *testing.T) {
	const after = "after the header"
	readers := map[string]func([]byte) io.Reader{
		"whole":    func(b []byte) io.Reader { return bytes.NewReader(b) },
		"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
		"half":     func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
	}
	for _, tc := range validHeaders {
		for name, reader := range readers {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				r := reader(append(bytes.Clone(tc.in), after...))
				h, err := proxyproto.ReadHeader(r)
				require.NoError(t, err)
				assert.Equal(t, tc.want, h)
				rest, err := io.ReadAll(r)
				require.NoError(t, err)
				assert.Equal(t, after, string(rest), "ReadHeader read the header and not a byte more")
			})
		}
	}
}

func TestReadHeaderTruncated(t *testing.T) {
	for _, tc := range validHeaders {
		t.Run(tc.name, func(t *testing.T) {
			for k := range len(tc.in) {
				_, err := proxyproto.ReadHeader(bytes.NewReader(tc.in[:k]))
				switch {
				case k == 0:
					assert.ErrorIs(t, err, io.EOF, "nothing came")
				default:
					assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "%d bytes of the header came", k)
				}
			}
		})
	}
	_, err := proxyproto.ReadHeader(strings.NewReader("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	assert.True(t, errors.Is(err, proxyproto.ErrNoHeader), "not a header: %v", err)
}
