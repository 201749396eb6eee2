package cache

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// A Store holds entries by key for a [Cache]. The default is [MemoryStore]; a store outside
// the process (Redis, memcached) implements the same four methods with the exported API:
// it encodes entries with [Entry.MarshalBinary], decodes them with [Entry.UnmarshalBinary]
// and matches purges with [Selector.Match].
//
// Keys are opaque strings built by the cache; they start with a version ("1|") followed by
// the request's scheme, host and request URI, so a store shared by replicas of different
// releases never confuses their keys. Entries are immutable once stored: a Store may hand the
// same *Entry to many goroutines, and neither it nor its callers may modify an entry passed
// to Set or returned by Get.
//
// All methods must be safe for concurrent use. The ctx of a call is the context of the
// request the cache is handling (or, for a background revalidation, a context of the cache's
// own with a deadline): a store that waits on I/O must return once ctx is done, with an
// error, so that a client that goes away or a deadline that passes never leaves a request
// hanging on the store. A store that does not block, like MemoryStore, may ignore ctx.
//
// An error means the store could not do what was asked; what the cache then does is
// described under "When the store fails" in the package documentation. It never serves an
// entry from a Get that returned an error.
type Store interface {
	// Get returns the entry stored under key. A miss (no entry, or an expired one) is
	// (nil, nil), not an error: a miss is the ordinary outcome of a lookup, so a nil error
	// always means that the store answered, every non-nil error is a failure worth
	// reporting, and the cache tells the three outcomes apart with two comparisons, on a
	// path that must not allocate. Bytes that do not decode as an entry this release can read
	// (written by another release, say) may be reported as a miss or as an error wrapping
	// [ErrBadEntry]: the cache takes both as a miss and overwrites the entry.
	//
	// The entry returned should be one passed to Set or decoded by [Entry.UnmarshalBinary],
	// which compute what a hit needs once. Any other entry (one built field by field) is
	// accepted, but then every hit on it copies and prepares it again.
	Get(ctx context.Context, key string) (*Entry, error)
	// Set stores e under key, replacing any entry there, for at most ttl. A store may drop
	// entries earlier (to stay within its bounds) or refuse one that is too large without
	// reporting an error.
	Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error
	// Delete removes the entry under key. Deleting a key that holds nothing is not an error.
	Delete(ctx context.Context, key string) error
	// Purge removes every entry sel matches and returns how many it removed. When it fails
	// part way it returns the number removed so far with the error.
	Purge(ctx context.Context, sel Selector) (int, error)
}

// A Selector chooses the entries [Store.Purge] removes: those whose key starts with Prefix
// and, if Tag is not empty, whose Tags include Tag. The zero Selector matches every entry.
type Selector struct {
	// Prefix is the start of the keys to remove: the key version "1|" and an absolute URL
	// prefix such as "https://example.com/static/", with the scheme and host in lower case
	// ([Cache.PurgePrefix] adds the version).
	// The variants of a URL have keys that start with the URL's key, so a prefix that
	// matches a URL matches its variants too. Empty matches every key.
	Prefix string
	// Tag, if not empty, restricts the match to entries whose Tags include it exactly (case
	// matters). Variant indexes carry no tags, so a tag purge leaves them to expire; without
	// their variants they select nothing.
	Tag string
}

// Match reports whether the entry e stored under key is one the selector chooses.
func (s Selector) Match(key string, e *Entry) bool {
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
	// Hooks receive the store's events: only Evict, called after the store's lock is
	// released, on the goroutine of the Get or Set that evicted.
	Hooks Hooks
}

// MemoryStore is the default [Store]: an in-process LRU bounded by bytes rather than by
// entry count, on hashicorp/golang-lru's simplelru.
type MemoryStore struct {
	now   func() time.Time
	max   int64
	evict func(EvictEvent)

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
	s := &MemoryStore{now: opts.Now, max: opts.MaxBytes, evict: opts.Hooks.Evict}
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

// Get implements [Store]. It never fails and ignores ctx: it does not block.
func (s *MemoryStore) Get(_ context.Context, key string) (*Entry, error) {
	now := s.now()
	s.mu.Lock()
	it, ok := s.lru.Get(key)
	expired := ok && now.After(it.deadline)
	if expired {
		s.lru.Remove(key)
		ok = false
	}
	s.mu.Unlock()
	if expired && s.evict != nil {
		s.evict(EvictEvent{Reason: Expired, Key: key, Bytes: it.size})
	}
	if !ok {
		return nil, nil
	}
	return it.e, nil
}

// Set implements [Store]. It never fails. Entries larger than MaxBytes are not stored.
func (s *MemoryStore) Set(_ context.Context, key string, e *Entry, ttl time.Duration) error {
	size := e.size(key)
	deadline := s.now().Add(ttl)
	// Evictions are reported after the lock is released; a few fit here without allocating.
	var buf [4]EvictEvent
	evicted := buf[:0]
	s.mu.Lock()
	s.lru.Remove(key) // runs the callback, so bytes stay right when replacing
	if size > s.max || ttl <= 0 {
		s.mu.Unlock()
		return nil
	}
	s.lru.Add(key, memItem{e: e, size: size, deadline: deadline})
	s.bytes += size
	for s.bytes > s.max {
		k, it, ok := s.lru.RemoveOldest()
		if !ok {
			break
		}
		if s.evict != nil {
			evicted = append(evicted, EvictEvent{Reason: Capacity, Key: k, Bytes: it.size})
		}
	}
	s.mu.Unlock()
	for _, ev := range evicted {
		s.evict(ev)
	}
	return nil
}

// Delete implements [Store]. It never fails.
func (s *MemoryStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	s.lru.Remove(key)
	s.mu.Unlock()
	return nil
}

// Purge implements [Store]. It never fails; it scans every entry, so it costs O(entries).
func (s *MemoryStore) Purge(_ context.Context, sel Selector) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.lru.Keys() {
		if it, ok := s.lru.Peek(k); ok && sel.Match(k, it.e) {
			s.lru.Remove(k)
			n++
		}
	}
	return n, nil
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
