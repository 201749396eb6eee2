package balancer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClientTableBounded checks what ClientIPAffinity's memory bound rests on: however many
// clients arrive, the table holds at most max pins in at most 4 × max slots, every pin can
// be found, and pins that have timed out are swept as new clients arrive.
func TestClientTableBounded(t *testing.T) {
	c := &clientTable{timeout: 1000, max: 100}
	now := int64(1)
	for i := range uint64(100_000) {
		key := mix64(i + 1)
		c.pin(key, i, now)
		p := c.find(key)
		require.NotNil(t, p, "a client just pinned must be found")
		require.Equal(t, i, p.id.Load())
		now++ // one client a tick: each pin outlives the next 999
	}
	tab := c.tab.Load()
	assert.LessOrEqual(t, c.live, 100, "pins kept")
	assert.LessOrEqual(t, len(tab.slots), 400, "slots")
	found := 0
	for i := range tab.slots {
		if p := tab.slots[i].Load(); p != nil && p != tombstone {
			found++
			assert.Same(t, p, c.find(p.key), "every pin in the table is found by its key")
		}
	}
	assert.Equal(t, c.live, found, "live counts the pins")

	// Let every pin time out; new clients sweep the old ones a few slots at a time, so by the
	// time as many new clients as slots / sweepSlots have come, none of the old is left.
	now += 1000
	for i := range uint64(len(tab.slots) / sweepSlots) {
		c.pin(mix64(1<<40+i), 0, now)
	}
	old := 0
	for i := range uint64(100_000) {
		if c.find(mix64(i+1)) != nil {
			old++
		}
	}
	assert.Zero(t, old, "expired pins should have been swept")
}
