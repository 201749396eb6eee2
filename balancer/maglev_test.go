package balancer

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
				s.pool = append(s.pool, entry{ep: &sluice.Endpoint{Addr: addr, Weight: w}})
			}
			table := Maglev{}.fill(s).table
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

// TestMaglevTableReused checks that an Update keeps a pool's table when the pool's addresses
// and weights did not change, builds a new one when they did, and that a kept table maps keys
// exactly as a table built afresh would.
func TestMaglevTableReused(t *testing.T) {
	eps := make([]sluice.Endpoint, 30)
	for i := range eps {
		eps[i] = sluice.Endpoint{Addr: "10.1.0." + strconv.Itoa(i) + ":80", Zone: string(rune('a' + i%3))}
	}
	b, err := New(Maglev{Key: HeaderKey("X-User")}, Options{Zone: "a"})
	require.NoError(t, err)
	b.Update(eps)
	tables := func() (local, all *maglevPicker) {
		s := b.snap.Load()
		return s.pk.(*maglevPicker), s.spill.pk.(*maglevPicker)
	}
	local, all := tables()

	eps[1].State = sluice.Unhealthy // zone b: the local pool stays, the spill-over pool shrinks
	b.Update(eps)
	local2, all2 := tables()
	assert.Same(t, local, local2, "local table rebuilt though the local pool did not change")
	assert.NotSame(t, all, all2, "spill-over table kept though an endpoint left")

	eps[1].Zone = "c" // a change the tables do not depend on
	b.Update(eps)
	local3, all3 := tables()
	assert.Same(t, local2, local3)
	assert.Same(t, all2, all3)

	// Kept tables map keys as tables built afresh for the same set do.
	fresh, err := New(Maglev{Key: HeaderKey("X-User")}, Options{Zone: "a"})
	require.NoError(t, err)
	fresh.Update(eps)
	want := fresh.snap.Load()
	assert.Equal(t, want.pk.(*maglevPicker).table, local3.table)
	assert.Equal(t, want.spill.pk.(*maglevPicker).table, all3.table)

	eps[3].Weight = 2 // zone a: the local table must follow
	b.Update(eps)
	local4, _ := tables()
	assert.NotSame(t, local3, local4, "local table kept though a weight changed")
}

// TestStickyTable checks the token table sticky lookups use: every token inserted is found at
// its index, tokens that collide on a slot (and wrap past the end) are found by probing, and
// a token never inserted is not found.
func TestStickyTable(t *testing.T) {
	tab := &stickyTable{slots: make([]stickySlot, 8), mask: 7}
	toks := []uint64{7, 15, 23, 3, 0} // 7, 15 and 23 share slot 7; the probe wraps to 0 and 1
	for i, tok := range toks {
		tab.insert(tok, int32(i))
	}
	tab.insert(15, 99) // a duplicate keeps the first
	for i, tok := range toks {
		assert.Equal(t, i, tab.find(tok), "token %d", tok)
	}
	assert.Equal(t, -1, tab.find(31), "absent token sharing slot 7")
	assert.Equal(t, -1, tab.find(5), "absent token in an empty slot")
}
