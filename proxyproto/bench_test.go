package proxyproto_test

import (
	"bytes"
	"testing"

	"github.com/sluiceproxy/sluice/proxyproto"
)

// benchHeaders are the headers the benchmarks parse and write: what AWS NLB (v2 with a TLV),
// HAProxy and classic ELB (v1) send.
func benchHeaders(b *testing.B) []struct {
	name string
	h    proxyproto.Header
} {
	tlvs, err := proxyproto.AppendTLV(nil, 0xEA, []byte("\x01vpce-0123456789abcdef0"))
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name string
		h    proxyproto.Header
	}{
		{"v1 TCP4", proxyproto.TCP(1, src4, dst4)},
		{"v1 TCP6", proxyproto.TCP(1, src6, dst6)},
		{"v2 TCP4", proxyproto.TCP(2, src4, dst4)},
		{"v2 TCP6 TLV", proxyproto.Header{Version: 2, Transport: proxyproto.TCP6, Source: src6, Destination: dst6, TLVs: tlvs}},
	}
}

func BenchmarkParse(b *testing.B) {
	for _, tc := range benchHeaders(b) {
		wire, err := tc.h.Append(nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				if _, _, err := proxyproto.Parse(wire); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadHeader(b *testing.B) {
	for _, tc := range benchHeaders(b) {
		wire, err := tc.h.Append(nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(wire)
			for b.Loop() {
				r.Reset(wire)
				if _, err := proxyproto.ReadHeader(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, tc := range benchHeaders(b) {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 256)
			for b.Loop() {
				var err error
				if buf, err = tc.h.Append(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAllocs holds Parse and Append to what BenchmarkParse and BenchmarkAppend report: Append
// allocates nothing into a buffer with room, and Parse nothing but the string an IPv6
// version-1 address is parsed from.
func TestAllocs(t *testing.T) {
	for _, tc := range []struct {
		h          proxyproto.Header
		parseAlloc float64
	}{
		{proxyproto.TCP(1, src4, dst4), 0},
		{proxyproto.TCP(1, src6, dst6), 2},
		{proxyproto.TCP(2, src6, dst6), 0},
	} {
		buf := make([]byte, 0, 256)
		wire, err := tc.h.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() { buf, _ = tc.h.Append(buf[:0]) }); n != 0 {
			t.Errorf("Append of %v v%d: %v allocs, want 0", tc.h.Transport, tc.h.Version, n)
		}
		if n := testing.AllocsPerRun(100, func() { proxyproto.Parse(wire) }); n > tc.parseAlloc {
			t.Errorf("Parse of %v v%d: %v allocs, want ≤ %v", tc.h.Transport, tc.h.Version, n, tc.parseAlloc)
		}
	}
}
