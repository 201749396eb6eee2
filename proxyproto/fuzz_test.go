package proxyproto_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"

	"github.com/sluiceproxy/sluice/proxyproto"
)

// FuzzParse checks the parser on any bytes: it never panics; what it accepts is no longer
// than the input, reads the same without what follows it, is refused when cut short, and
// round-trips through Append; ReadHeader, over a plain reader and over a socket, accepts the
// same headers and consumes exactly their length.
func FuzzParse(f *testing.F) {
	for _, tc := range validHeaders {
		f.Add(append(bytes.Clone(tc.in), "GET / HTTP/1.1\r\n\r\n"...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := proxyproto.Parse(data)
		if err != nil {
			if n != 0 {
				t.Fatalf("Parse failed (%v) with n = %d", err, n)
			}
		} else {
			if n <= 0 || n > len(data) {
				t.Fatalf("Parse accepted %d bytes of %d", n, len(data))
			}
			h2, n2, err := proxyproto.Parse(data[:n])
			if err != nil || n2 != n || !equal(h, h2) {
				t.Fatalf("the header alone parses differently: %v, %d, %+v", err, n2, h2)
			}
			for _, k := range []int{n / 2, n - 1} {
				if _, _, err := proxyproto.Parse(data[:k]); !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("the header cut at %d of %d: %v, want io.ErrUnexpectedEOF", k, n, err)
				}
			}
			b, err := h.Append(nil)
			if err != nil {
				t.Fatalf("Append of a parsed header %+v: %v", h, err)
			}
			h3, n3, err := proxyproto.Parse(b)
			if err != nil || n3 != len(b) || !equal(h, h3) {
				t.Fatalf("round trip: %+v → %q → %+v, %d, %v", h, b, h3, n3, err)
			}
			if h.Version == 2 && !bytes.Equal(b, data[:n]) {
				t.Fatalf("version 2 written back differs: %q, read %q", b, data[:n])
			}
		}

		readers := map[string]io.Reader{
			"plain":    bytes.NewReader(data),
			"one byte": iotest.OneByteReader(bytes.NewReader(data)),
		}
		if sock := socketReader(t, data); sock != nil {
			readers["socket"] = sock
		}
		for name, r := range readers {
			rh, rerr := proxyproto.ReadHeader(r)
			if (rerr == nil) != (err == nil) {
				t.Fatalf("%s: ReadHeader says %v, Parse %v", name, rerr, err)
			}
			if rerr != nil {
				continue
			}
			if !equal(h, rh) {
				t.Fatalf("%s: ReadHeader read %+v, Parse %+v", name, rh, h)
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, data[n:]) {
				t.Fatalf("%s: after ReadHeader %d bytes are left, want the %d after the header", name, len(rest), len(data)-n)
			}
		}
	})
}

// FuzzAppend checks that whatever Append writes, Parse reads back as it was.
func FuzzAppend(f *testing.F) {
	f.Add(1, uint8(0), uint8(0x11), []byte{192, 0, 2, 7}, []byte{198, 51, 100, 1}, uint16(56324), uint16(443), []byte(nil))
	f.Add(2, uint8(1), uint8(0x00), []byte(nil), []byte(nil), uint16(0), uint16(0), []byte(nil))
	f.Add(2, uint8(0), uint8(0x21), bytes.Repeat([]byte{0x20}, 16), bytes.Repeat([]byte{0xfe}, 16), uint16(1), uint16(65535),
		[]byte("\x02\x00\x0bexample.com\x03\x00\x04\x00\x00\x00\x00"))
	f.Add(1, uint8(0), uint8(0x21), append(make([]byte, 10), 0xff, 0xff, 192, 0, 2, 7), bytes.Repeat([]byte{0xfe}, 16), uint16(1), uint16(2), []byte(nil))
	f.Fuzz(func(t *testing.T, version int, cmd, transport uint8, src, dst []byte, sport, dport uint16, tlvs []byte) {
		h := proxyproto.Header{Version: version, Command: proxyproto.Command(cmd), Transport: proxyproto.Transport(transport)}
		if a, ok := netip.AddrFromSlice(src); ok {
			h.Source = netip.AddrPortFrom(a, sport)
		}
		if a, ok := netip.AddrFromSlice(dst); ok {
			h.Destination = netip.AddrPortFrom(a, dport)
		}
		if len(tlvs) > 0 {
			h.TLVs = tlvs
		}
		b, err := h.Append(nil)
		if err != nil {
			return
		}
		got, n, err := proxyproto.Parse(b)
		if err != nil || n != len(b) {
			t.Fatalf("Append wrote %q for %+v, which Parse refuses: %d, %v", b, h, n, err)
		}
		if h.TLVs != nil {
			// A CRC32C TLV's value is what Append computed.
			h.TLVs = got.TLVs
		}
		if !equal(h, got) {
			t.Fatalf("Append wrote %q for %+v, which Parse reads as %+v", b, h, got)
		}
	})
}

// equal compares headers, TLVs by their bytes.
func equal(a, b proxyproto.Header) bool {
	return a.Version == b.Version && a.Command == b.Command && a.Transport == b.Transport &&
		a.Source == b.Source && a.Destination == b.Destination && bytes.Equal(a.TLVs, b.TLVs)
}
