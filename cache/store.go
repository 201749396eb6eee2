package cache

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// A Store holds entries by key for a [Cache].
//
// Keys are opaque strings built by the cache; they start with a version ("1|") followed by
// the request's scheme, host and request URI, so a store shared by replicas of different
// releases never confuses their keys. Entries are immutable once stored: a Store may hand the
// same *Entry to many goroutines, and callers must not modify what Get returns. A store that
// keeps entries outside the process (Redis, memcached) encodes them with
// [Entry.MarshalBinary] and decodes them with [Entry.UnmarshalBinary], treating a decoding
// error as a miss.
//
// All methods must be safe for concurrent use. Get is on the hit path: it should be fast and,
// for an in-process store, allocation-free.
type Store interface {
	// Get returns the entry stored under key, or false if there is none or it has expired.
	Get(key string) (*Entry, bool)
	// Set stores e under key, replacing any entry there, for at most ttl. A store may drop
	// entries earlier (to stay within its bounds) or refuse one that is too large.
	Set(key string, e *Entry, ttl time.Duration)
	// Delete removes the entry under key, if any.
	Delete(key string)
	// Purge removes every entry the selector matches and returns how many it removed.
	Purge(sel Selector) int
}

// A Selector chooses entries to purge. An entry matches when its key starts with Prefix and,
// if Tag is not empty, its Tags include Tag. The zero Selector matches every entry.
type Selector struct {
	Prefix string
	Tag    string
}

func (s Selector) match(key string, e *Entry) bool {
	return strings.HasPrefix(key, s.Prefix) && (s.Tag == "" || slices.Contains(e.Tags, s.Tag))
}

// MemoryOptions configures a [MemoryStore].
type MemoryOptions struct {
	// MaxBytes bounds the total size of the stored entries (bodies, headers, keys and a fixed
	// overhead per entry). The least recently used entries are evicted to stay within it.
	// Zero means 64 MiB.
	MaxBytes int64
	// Now is the clock used to expire entries. Nil means time.Now.
	Now func() time.Time
}

// MemoryStore is the default [Store]: an in-process LRU bounded by bytes rather than by
// entry count, on hashicorp/golang-lru's simplelru.
type MemoryStore struct {
	now func() time.Time
	max int64

	mu    sync.Mutex // mu protects lru and bytes
	lru   *simplelru.LRU[string, memItem]
	bytes int64
}

type memItem struct {
	e        *Entry
	size     int64
	deadline time.Time
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(opts MemoryOptions) (*MemoryStore, error) {
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("cache: MaxBytes must be ≥ 0, got %d", opts.MaxBytes)
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 64 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &MemoryStore{now: opts.Now, max: opts.MaxBytes}
	// The LRU's own count bound is effectively off: bytes decide eviction. Its eviction
	// callback only does arithmetic, so running it under mu calls no user code.
	lru, err := simplelru.NewLRU[string, memItem](math.MaxInt, func(_ string, it memItem) {
		s.bytes -= it.size
	})
	if err != nil {
		return nil, err
	}
	s.lru = lru
	return s, nil
}

// Get implements [Store].
func (s *MemoryStore) Get(key string) (*Entry, bool) {
	now := s.now()
	s.mu.Lock()
	it, ok := s.lru.Get(key)
	if ok && now.After(it.deadline) {
		s.lru.Remove(key)
		ok = false
	}
	s.mu.Unlock()
	return it.e, ok
}

// Set implements [Store]. Entries larger than MaxBytes are not stored.
func (s *MemoryStore) Set(key string, e *Entry, ttl time.Duration) {
	size := e.size(key)
	deadline := s.now().Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lru.Remove(key) // runs the callback, so bytes stay right when replacing
	if size > s.max || ttl <= 0 {
		return
	}
	s.lru.Add(key, memItem{e: e, size: size, deadline: deadline})
	s.bytes += size
	for s.bytes > s.max {
		if _, _, ok := s.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// Delete implements [Store].
func (s *MemoryStore) Delete(key string) {
	s.mu.Lock()
	s.lru.Remove(key)
	s.mu.Unlock()
}

// Purge implements [Store]. It scans every entry, so it costs O(entries).
func (s *MemoryStore) Purge(sel Selector) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.lru.Keys() {
		if it, ok := s.lru.Peek(k); ok && sel.match(k, it.e) {
			s.lru.Remove(k)
			n++
		}
	}
	return n
}

// Len returns the number of entries held.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// Bytes returns the accounted size of the entries held.
func (s *MemoryStore) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
