package ratelimit

import (
	"fmt"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// A Store keeps the token buckets of one [Limit], one bucket per [Key].
//
// Take and Cancel are called concurrently from many requests and must be safe for that. They
// are on the path of every request, so they should not block for long; an implementation
// over the network should bound its own latency and decide whether to admit or refuse when
// its backend is unreachable.
type Store interface {
	// Take takes one token from key's bucket at now. If the token is due no later than
	// maxDelay from now, Take grants it (Decision.OK) and says how long to wait
	// (Decision.Delay); otherwise it takes nothing and says when to retry.
	Take(key Key, now time.Time, maxDelay time.Duration) Decision

	// Cancel gives back the token of a granted Decision whose request was not served,
	// because another limit refused it or the client went away while it waited.
	Cancel(key Key, d Decision, now time.Time)
}

// A Decision is a Store's answer to one Take.
type Decision struct {
	// OK reports whether the token was granted.
	OK bool
	// Delay is how long the request must wait before using its token; zero when it may go now.
	Delay time.Duration
	// RetryAfter, when OK is false, is how long until a token will be available.
	RetryAfter time.Duration
	// Remaining is the number of whole tokens left in the bucket.
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration

	res rate.Reservation // the local store's reservation, for Cancel
}

// numShards is the most LRU shards a MemoryStore splits its keys over. Sixteen independent
// locks make contention between parallel requests rare on the machines sluice runs on.
const numShards = 16

// evictProbes is how many of a full shard's least recently used buckets are examined for one
// that is full again before a new key is sent to the overflow bucket.
const evictProbes = 4

// MemoryStore is the in-process [Store]: golang.org/x/time/rate buckets in sharded LRU lists
// with a cap on the number of keys. See the package documentation for how it stays within its
// cap without letting any key past its limit.
type MemoryStore struct {
	limit  rate.Limit
	burst  int
	seed   maphash.Seed
	mask   uint64
	shards []memShard
}

type memShard struct {
	mu       sync.Mutex // mu protects lru and the promoted times of its buckets
	lru      *simplelru.LRU[Key, *bucket]
	cap      int
	overflow *bucket
	_        [64]byte // keep shards on separate cache lines
}

// A bucket is one key's token bucket.
type bucket struct {
	rate.Limiter
	// promoted is when the bucket last moved to the front of its LRU list, in Unix
	// nanoseconds; shard.mu protects it.
	promoted int64
}

// promoteEvery is how often a bucket in use is moved to the front of its LRU list. Moving it
// on every hit would write the shared list on every request, and those writes, bouncing
// between CPU caches, were most of the cost of a decision; a bucket that may look up to this
// much older than it is costs nothing, because only full buckets are ever evicted.
const promoteEvery = int64(time.Second)

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a MemoryStore for buckets of the given rate and burst holding at
// most maxKeys buckets (plus one overflow bucket per shard).
func NewMemoryStore(r rate.Limit, burst, maxKeys int) (*MemoryStore, error) {
	if math.IsNaN(float64(r)) || r <= 0 {
		return nil, fmt.Errorf("ratelimit: Rate must be > 0, got %v", float64(r))
	}
	if burst < 1 {
		return nil, fmt.Errorf("ratelimit: Burst must be ≥ 1, got %d", burst)
	}
	if maxKeys < 1 {
		return nil, fmt.Errorf("ratelimit: MaxKeys must be ≥ 1, got %d", maxKeys)
	}
	n := numShards
	for n > 1 && maxKeys/n < 64 {
		n /= 2
	}
	s := &MemoryStore{limit: r, burst: burst, seed: maphash.MakeSeed(), mask: uint64(n - 1),
		shards: make([]memShard, n)}
	for i := range s.shards {
		c := maxKeys / n
		if i < maxKeys%n {
			c++
		}
		lru, err := simplelru.NewLRU[Key, *bucket](c, nil)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: %w", err)
		}
		s.shards[i] = memShard{lru: lru, cap: c, overflow: newBucket(r, burst)}
	}
	return s, nil
}

// Len returns the number of keys that have a bucket of their own.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.lru.Len()
		sh.mu.Unlock()
	}
	return n
}

// Take implements [Store].
func (s *MemoryStore) Take(key Key, now time.Time, maxDelay time.Duration) Decision {
	b := s.bucket(key, now)
	r := b.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	if !r.OK() || delay > maxDelay {
		r.CancelAt(now)
		return Decision{RetryAfter: delay, Reset: s.reset(b.TokensAt(now))}
	}
	tokens := b.TokensAt(now)
	return Decision{OK: true, Delay: delay, Remaining: max(0, int(tokens)), Reset: s.reset(tokens), res: *r}
}

// Cancel implements [Store].
func (s *MemoryStore) Cancel(_ Key, d Decision, now time.Time) {
	if d.OK {
		d.res.CancelAt(now)
	}
}

// reset returns how long a bucket holding tokens takes to fill.
func (s *MemoryStore) reset(tokens float64) time.Duration {
	missing := float64(s.burst) - tokens
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(s.limit) * float64(time.Second))
}

func newBucket(r rate.Limit, burst int) *bucket {
	return &bucket{Limiter: *rate.NewLimiter(r, burst)}
}

// bucket returns key's bucket, making one if there is room.
func (s *MemoryStore) bucket(key Key, now time.Time) *bucket {
	sh := &s.shards[s.hash(key)&s.mask]
	sh.mu.Lock()
	b, ok := sh.lru.Peek(key)
	switch {
	case !ok:
		b = s.admit(sh, key, now)
	case now.UnixNano()-b.promoted > promoteEvery:
		sh.lru.Get(key)
		b.promoted = now.UnixNano()
	}
	sh.mu.Unlock()
	return b
}

// admit makes a bucket for a new key. When the shard is at its cap it evicts one of the least
// recently used buckets that has refilled; buckets still draining get a second chance at the
// front of the list, and if none of the probed buckets is full the key is counted in the
// shard's overflow bucket. sh.mu must be held.
func (s *MemoryStore) admit(sh *memShard, key Key, now time.Time) *bucket {
	for i := 0; sh.lru.Len() >= sh.cap && i < evictProbes; i++ {
		k, old, _ := sh.lru.GetOldest()
		if old.TokensAt(now) >= float64(s.burst) {
			sh.lru.RemoveOldest()
		} else {
			sh.lru.Get(k) // second chance: move to the front
			old.promoted = now.UnixNano()
		}
	}
	if sh.lru.Len() >= sh.cap {
		return sh.overflow
	}
	key.Str = strings.Clone(key.Str) // do not pin the request's header memory
	b := newBucket(s.limit, s.burst)
	b.promoted = now.UnixNano()
	sh.lru.Add(key, b)
	return b
}

// hash spreads keys over shards without allocating.
func (s *MemoryStore) hash(k Key) uint64 {
	if k.Str != "" {
		return maphash.String(s.seed, k.Str)
	}
	a := k.Addr.As16()
	return maphash.Bytes(s.seed, a[:])
}
