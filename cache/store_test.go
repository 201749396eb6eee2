package cache

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testEntry(body string, tags ...string) *Entry {
	e := &Entry{Status: 200, Header: http.Header{"Cache-Control": {"max-age=60"}}, Body: []byte(body), Tags: tags}
	e.prepare()
	return e
}

func TestMemoryStore_BytesBoundAndLRU(t *testing.T) {
	one := testEntry(strings.Repeat("x", 1000)).size("k0")
	s, err := NewMemoryStore(MemoryOptions{MaxBytes: 3 * one})
	require.NoError(t, err)
	for _, k := range []string{"k0", "k1", "k2"} {
		s.Set(k, testEntry(strings.Repeat("x", 1000)), time.Hour)
	}
	require.Equal(t, 3, s.Len())
	_, ok := s.Get("k0") // k0 is now the most recently used
	require.True(t, ok)
	s.Set("k3", testEntry(strings.Repeat("x", 1000)), time.Hour)
	assert.Equal(t, 3, s.Len(), "bounded by bytes")
	_, ok = s.Get("k1")
	assert.False(t, ok, "the least recently used entry was evicted")
	_, ok = s.Get("k0")
	assert.True(t, ok)
	assert.LessOrEqual(t, s.Bytes(), 3*one)

	s.Set("k0", testEntry("small"), time.Hour)
	assert.Less(t, s.Bytes(), 3*one, "replacing an entry replaces its size")
	s.Set("huge", testEntry(strings.Repeat("x", 10_000)), time.Hour)
	_, ok = s.Get("huge")
	assert.False(t, ok, "an entry larger than the store is refused")
}

func TestMemoryStore_Expiry(t *testing.T) {
	clock := newClock()
	s, err := NewMemoryStore(MemoryOptions{Now: clock.Now})
	require.NoError(t, err)
	s.Set("k", testEntry("x"), time.Minute)
	clock.Advance(59 * time.Second)
	_, ok := s.Get("k")
	assert.True(t, ok)
	clock.Advance(2 * time.Second)
	_, ok = s.Get("k")
	assert.False(t, ok, "expired")
	assert.Equal(t, 0, s.Len())
	assert.Zero(t, s.Bytes())
}

func TestMemoryStore_Purge(t *testing.T) {
	s, err := NewMemoryStore(MemoryOptions{})
	require.NoError(t, err)
	s.Set("1|http://a/x", testEntry("1", "red"), time.Hour)
	s.Set("1|http://a/y", testEntry("2", "blue"), time.Hour)
	s.Set("1|http://b/x", testEntry("3", "red"), time.Hour)
	assert.Equal(t, 1, s.Purge(Selector{Prefix: "1|http://a/", Tag: "red"}))
	assert.Equal(t, 1, s.Purge(Selector{Tag: "red"}))
	assert.Equal(t, 1, s.Purge(Selector{}))
	assert.Equal(t, 0, s.Len())
}

func TestEntry_EncodingRoundTrip(t *testing.T) {
	e := &Entry{Status: 203, Header: http.Header{"B": {"2"}, "A": {"1", "x"}}, Body: []byte("hello"),
		RequestTime: time.Unix(100, 5), ResponseTime: time.Unix(101, 7), Vary: []string{"Accept"},
		VaryKey: "Accept=x\x00", Tags: []string{"t1", "t2"}}
	b, err := e.MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, byte(entryVersion), b[0], "the first byte is the version")
	var got Entry
	require.NoError(t, got.UnmarshalBinary(b))
	assert.Equal(t, e.Status, got.Status)
	assert.Equal(t, e.Header, got.Header)
	assert.Equal(t, e.Body, got.Body)
	assert.True(t, e.RequestTime.Equal(got.RequestTime))
	assert.True(t, e.ResponseTime.Equal(got.ResponseTime))
	assert.Equal(t, e.Vary, got.Vary)
	assert.Equal(t, e.VaryKey, got.VaryKey)
	assert.Equal(t, e.Tags, got.Tags)

	b[0] = 9
	assert.ErrorIs(t, got.UnmarshalBinary(b), ErrBadEntry, "an unknown version is refused")
	assert.ErrorIs(t, got.UnmarshalBinary(b[:0]), ErrBadEntry)
}

// A store holding encoded entries (as Redis would) works behind the cache.
type encodingStore struct{ *MemoryStore }

func (s encodingStore) Set(key string, e *Entry, ttl time.Duration) {
	b, err := e.MarshalBinary()
	if err != nil {
		panic(err)
	}
	var d Entry
	if err := d.UnmarshalBinary(b); err != nil {
		panic(err)
	}
	s.MemoryStore.Set(key, &d, ttl)
}

func TestCache_WithEncodingStore(t *testing.T) {
	ms, err := NewMemoryStore(MemoryOptions{})
	require.NoError(t, err)
	hs := newHarness(t, Options{Store: encodingStore{ms}}, nil)
	hs.setHandler(hs.counter("Cache-Control", "max-age=60", "Vary", "Accept"))
	hs.get("/enc", "Accept", "a")
	r := hs.get("/enc", "Accept", "a")
	assert.EqualValues(t, 1, hs.hits.Load())
	assert.Equal(t, "body 1", r.body)
	assert.Contains(t, r.header.Get("Cache-Status"), "hit")
}
