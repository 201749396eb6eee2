package balancer

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluiceproxy/sluice"
)

// TestMaglevTableStable pins the lookup tables Maglev builds for a few endpoint sets. Every
// replica of a proxy must map a key to the same endpoint, including replicas running another
// version of this package during a rollout, so a faster build must still produce exactly the
// table of the plain population loop (each endpoint in turn claims the next free slot of its
// permutation). The fingerprints were taken from that plain loop.
func TestMaglevTableStable(t *testing.T) {
	for _, tc := range []struct {
		n        int
		weighted bool
		size     int
		want     uint64
	}{
		{3, false, 65537, 0x704a13ad12a0113},
		{1000, false, 65537, 0x956efedb7155a237},
		{10_000, false, 100003, 0xc668da662cc6a73c},
		{3, true, 65537, 0x962a0e4dcbb13335},
		{1000, true, 65537, 0x4b1364d2ec244e3b},
		{10_000, true, 100003, 0x29ff4785dca6be72},
	} {
		t.Run(fmt.Sprintf("%d/weighted=%v", tc.n, tc.weighted), func(t *testing.T) {
			s := &snapshot{weighted: tc.weighted}
			for i := range tc.n {
				w := uint32(1)
				if tc.weighted {
					w = uint32(1 + i%5)
				}
				addr := "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":80"
				s.pool = append(s.pool, entry{ep: sluice.Endpoint{Addr: addr}, weight: w})
			}
			table := Maglev{}.build(s).(*maglevPicker).table
			assert.Len(t, table, tc.size, "table size")
			h := uint64(14695981039346656037) // FNV-1a over the slots' endpoint indexes
			for _, v := range table {
				h = (h ^ uint64(uint32(v))) * 1099511628211
			}
			assert.Equal(t, tc.want, h, "fingerprint of the lookup table")
		})
	}
}

// BenchmarkFillMaglev measures the population loop alone, for 10,000 endpoints in the default
// 100,003-slot table, without the rest of a snapshot build.
func BenchmarkFillMaglev(b *testing.B) {
	for _, weighted := range []bool{false, true} {
		b.Run(fmt.Sprintf("weighted=%v", weighted), func(b *testing.B) {
			const n, m = 10_000, 100003
			ws := make([]walker, n)
			var maxW uint64
			for i := range ws {
				w := uint32(1)
				if weighted {
					w = uint32(1 + i%5)
				}
				maxW = max(maxW, uint64(w))
				h := hashString("10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":80")
				ws[i] = walker{pos: uint32(h % m), skip: uint32(mix64(h^0x5bd1e995)%(m-1) + 1), weight: w}
			}
			table := make([]int32, m)
			scratch := make([]walker, n)
			b.ReportAllocs()
			for b.Loop() {
				copy(scratch, ws)
				fillMaglev(table, scratch, weighted, maxW)
			}
		})
	}
}
