package cache

import (
	"context"
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

// has reports whether s holds key, failing the test if Get fails (a MemoryStore never does).
func has(t *testing.T, s Store, key string) bool {
	t.Helper()
	e, err := s.Get(t.Context(), key)
	require.NoError(t, err, "Get(%q)", key)
	return e != nil
}

// set stores e under key, failing the test if Set fails.
func set(t *testing.T, s Store, key string, e *Entry, ttl time.Duration) {
	t.Helper()
	require.NoError(t, s.Set(t.Context(), key, e, ttl), "Set(%q)", key)
}

func TestMemoryStore_BytesBoundAndLRU(t *testing.T) {
	one := testEntry(strings.Repeat("x", 1000)).size("k0")
	s, err := NewMemoryStore(MemoryOptions{MaxBytes: 3 * one})
	require.NoError(t, err)
	for _, k := range []string{"k0", "k1", "k2"} {
		set(t, s, k, testEntry(strings.Repeat("x", 1000)), time.Hour)
	}
	require.Equal(t, 3, s.Len())
	require.True(t, has(t, s, "k0"), "k0 is now the most recently used")
	set(t, s, "k3", testEntry(strings.Repeat("x", 1000)), time.Hour)
	assert.Equal(t, 3, s.Len(), "bounded by bytes")
	assert.False(t, has(t, s, "k1"), "the least recently used entry was evicted")
	assert.True(t, has(t, s, "k0"))
	assert.LessOrEqual(t, s.Bytes(), 3*one)

	set(t, s, "k0", testEntry("small"), time.Hour)
	assert.Less(t, s.Bytes(), 3*one, "replacing an entry replaces its size")
	set(t, s, "huge", testEntry(strings.Repeat("x", 10_000)), time.Hour)
	assert.False(t, has(t, s, "huge"), "an entry larger than the store is refused, without an error")
}

func TestMemoryStore_Expiry(t *testing.T) {
	clock := newClock()
	s, err := NewMemoryStore(MemoryOptions{Now: clock.Now})
	require.NoError(t, err)
	set(t, s, "k", testEntry("x"), time.Minute)
	clock.Advance(59 * time.Second)
	assert.True(t, has(t, s, "k"))
	clock.Advance(2 * time.Second)
	e, err := s.Get(t.Context(), "k")
	assert.NoError(t, err, "an expired entry is a miss, not an error")
	assert.Nil(t, e, "expired")
	assert.Equal(t, 0, s.Len())
	assert.Zero(t, s.Bytes())
}

func TestMemoryStore_DeleteAndPurge(t *testing.T) {
	s, err := NewMemoryStore(MemoryOptions{})
	require.NoError(t, err)
	ctx := t.Context()
	set(t, s, "1|http://a/x", testEntry("1", "red"), time.Hour)
	set(t, s, "1|http://a/y", testEntry("2", "blue"), time.Hour)
	set(t, s, "1|http://b/x", testEntry("3", "red"), time.Hour)
	set(t, s, "1|http://b/y", testEntry("4"), time.Hour)
	require.NoError(t, s.Delete(ctx, "1|http://b/y"))
	assert.False(t, has(t, s, "1|http://b/y"), "deleted")
	assert.NoError(t, s.Delete(ctx, "1|http://b/y"), "deleting nothing is not an error")
	for _, tt := range []struct {
		sel  Selector
		want int
	}{
		{Selector{Prefix: "1|http://a/", Tag: "red"}, 1},
		{Selector{Tag: "red"}, 1},
		{Selector{}, 1},
	} {
		n, err := s.Purge(ctx, tt.sel)
		require.NoError(t, err)
		assert.Equal(t, tt.want, n, "Purge(%+v)", tt.sel)
	}
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

	for _, bad := range []*Entry{
		{Status: 200, Header: http.Header{"Content-Length": {"6"}}, Body: []byte("hello")},
		{Status: 103, Header: http.Header{}},
	} {
		b, err := bad.MarshalBinary()
		require.NoError(t, err)
		assert.ErrorIs(t, got.UnmarshalBinary(b), ErrBadEntry,
			"status %d, Content-Length %v for %d bytes: never served", bad.Status, bad.Header["Content-Length"], len(bad.Body))
	}
}

// A store holding encoded entries (as Redis would) works behind the cache.
type encodingStore struct{ *MemoryStore }

func (s encodingStore) Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error {
	b, err := e.MarshalBinary()
	if err != nil {
		return err
	}
	var d Entry
	if err := d.UnmarshalBinary(b); err != nil {
		return err
	}
	return s.MemoryStore.Set(ctx, key, &d, ttl)
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
