package ratelimit

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// A Store keeps the token buckets of one [Limit], one bucket per [Key]. [MemoryStore] is
// the in-process Store; a Store shared between replicas (Redis, say) lives outside this
// package and is built from the exported fields of Key and Decision alone.
//
// A Store is configured with its Limit's rate and burst when it is made: the Limiter does not
// pass them, and uses Limit.Rate and Limit.Burst only for the RateLimit-Policy header field,
// so the two must agree. Keys of different Limits never meet in one Store; a shared backend
// holding several Limits must keep them apart itself (by a key prefix, say).
//
// Take and Cancel are called concurrently from many requests and must be safe for that. They
// are on the path of every request, so they must not block for long: an implementation over
// the network should bound its own latency (a timeout of a few milliseconds, a circuit
// breaker) and must return soon after ctx is done. An error means the Store could not decide;
// the Limiter then admits or refuses the request as [Options.FailClosed] says and logs the
// error (see "When the store fails" in the package documentation).
type Store interface {
	// Take takes one token from key's bucket at now. If the token is due no later than
	// maxDelay from now, Take grants it (Decision.OK) and says how long to wait
	// (Decision.Delay); otherwise it takes nothing and says when to retry. ctx is the
	// request's context. When err is not nil the Decision is ignored.
	Take(ctx context.Context, key Key, now time.Time, maxDelay time.Duration) (Decision, error)

	// Cancel gives back the token of a Decision that Take granted for key, because the
	// request was not served: another limit refused it (or its store failed with
	// Options.FailClosed set), or the client went away before it was passed on. The Limiter
	// calls it at most once per granted Decision and never for a request it passed on. ctx
	// is the request's context, without its cancellation when the client has gone, so that
	// the token can still be given back. An error is logged and otherwise ignored: the token
	// stays taken.
	Cancel(ctx context.Context, key Key, d Decision, now time.Time) error
}

// A Decision is a Store's answer to one Take. A Store sets its fields; the Limiter reads all
// of them but Token.
type Decision struct {
	// OK reports whether the token was granted.
	OK bool
	// Delay is how long the request must wait before using its token; zero when it may go now.
	Delay time.Duration
	// RetryAfter, when OK is false, is how long until a token will be available.
	RetryAfter time.Duration
	// Remaining is the number of whole tokens left in the bucket, for the RateLimit header
	// field.
	Remaining int
	// Reset is how long until the bucket is full again, for the RateLimit header field.
	Reset time.Duration

	// Token is the Store's own note of a granted token, for Cancel to give it back: the
	// Limiter never reads it and hands it to Cancel unchanged. A Store may put anything
	// there, or nothing: MemoryStore puts the bucket the token came from; a network store
	// might put the value it wrote, so that Cancel can undo that write and no other. A
	// pointer costs nothing to store here; other values allocate.
	Token any
}

// numShards is the most LRU shards a MemoryStore splits its keys over. Sixteen independent
// locks make contention between parallel requests rare on the machines sluice runs on.
const numShards = 16

// evictProbes is how many of a full shard's least recently used buckets are examined for one
// that is full again before a new key is sent to the overflow bucket.
const evictProbes = 4

// MemoryStore is the in-process [Store]: token buckets in sharded LRU lists with a cap on the
// number of keys. See the package documentation for how it stays within its cap without
// letting any key past its limit.
//
// A bucket counts tokens the way golang.org/x/time/rate.Limiter does (a float refilled by the
// elapsed time times the rate, capped at the burst), and a test holds the two to the same
// answers. It does not embed a rate.Limiter because the shard's lock, needed anyway for the
// LRU lookup, already serialises the bucket: a rate.Limiter would lock twice more per
// decision, once to reserve the token and once to read the tokens left for the RateLimit
// header, and those three locks were most of the cost of a decision. A bucket is also a third
// of a rate.Limiter's size, which matters at a hundred thousand keys.
type MemoryStore struct {
	limit    float64 // tokens a second; +Inf admits everything
	burst    int
	perToken float64 // nanoseconds to refill one token: a multiplication is cheaper than a division
	seed     maphash.Seed
	k0       uint64 // the secret key of the shard hash, drawn from seed
	mask     uint64
	shards   []memShard
}

type memShard struct {
	mu       sync.Mutex // mu protects lru, the buckets in it and overflow
	lru      *simplelru.LRU[foldedKey, *bucket]
	cap      int
	overflow *bucket
	_        [64]byte // keep shards on separate cache lines
}

// A bucket is one key's token bucket. Its shard's mu protects it.
type bucket struct {
	last   int64   // when tokens was counted, in Unix nanoseconds
	tokens float64 // tokens in the bucket at last; negative while requests wait for theirs
	// promoted is when the bucket last moved to the front of its LRU list, in Unix
	// nanoseconds.
	promoted int64
}

// promoteEvery is how often a bucket in use is moved to the front of its LRU list. Moving it
// on every hit would write the shared list on every request, and those writes, bouncing
// between CPU caches, were most of the cost of a decision; a bucket that may look up to this
// much older than it is costs nothing, because only full buckets are ever evicted.
const promoteEvery = int64(time.Second)

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a MemoryStore for buckets that refill at r tokens a second (0.1 is
// one every ten seconds) and hold at most burst tokens, keeping at most maxKeys buckets (plus
// one overflow bucket per shard). A rate of math.Inf(1) admits every request and keeps no
// buckets.
func NewMemoryStore(r float64, burst, maxKeys int) (*MemoryStore, error) {
	if !(r > 0) { // NaN too
		return nil, fmt.Errorf("ratelimit: Rate must be > 0, got %v", r)
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
	s := &MemoryStore{limit: r, burst: burst, perToken: float64(time.Second) / r, seed: maphash.MakeSeed(), mask: uint64(n - 1),
		shards: make([]memShard, n)}
	s.k0 = maphash.String(s.seed, "shard")
	for i := range s.shards {
		c := maxKeys / n
		if i < maxKeys%n {
			c++
		}
		lru, err := simplelru.NewLRU[foldedKey, *bucket](c, nil)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: %w", err)
		}
		s.shards[i] = memShard{lru: lru, cap: c, overflow: &bucket{tokens: float64(burst)}}
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

// Take implements [Store]. It never fails and does not block on ctx.
func (s *MemoryStore) Take(_ context.Context, key Key, now time.Time, maxDelay time.Duration) (Decision, error) {
	var d Decision
	s.take(key, now, maxDelay, &d)
	return d, nil
}

// take is Take writing its answer into d field by field. The Limiter calls it directly:
// a Decision returned by value through an interface went through two stack copies whose
// 16-byte reloads of 8-byte stores stalled the CPU, a tenth of a decision.
func (s *MemoryStore) take(key Key, now time.Time, maxDelay time.Duration, d *Decision) {
	if math.IsInf(s.limit, 1) {
		d.OK, d.Delay, d.RetryAfter, d.Remaining, d.Reset, d.Token = true, 0, 0, s.burst, 0, nil
		return
	}
	t := now.UnixNano()
	k := s.fold(key)
	i := s.shard(k)
	sh := &s.shards[i]
	sh.mu.Lock()
	b := s.bucket(sh, k, t)
	tokens := s.tokensAt(b, t)
	left := tokens - 1
	var wait time.Duration
	if left < 0 {
		wait = s.durationOf(-left)
	}
	if wait > maxDelay {
		sh.mu.Unlock()
		d.OK, d.Delay, d.RetryAfter, d.Remaining, d.Token = false, 0, wait, 0, nil
		d.Reset = s.durationOf(float64(s.burst) - tokens)
		return
	}
	b.last, b.tokens = max(b.last, t), left
	sh.mu.Unlock()
	d.OK, d.Delay, d.RetryAfter, d.Remaining = true, wait, 0, max(0, int(left))
	d.Reset = s.durationOf(float64(s.burst) - left)
	d.Token = b
}

// Cancel implements [Store]. It gives the token back to the bucket it came from, found from
// d.Token, under the lock of key's shard; it never fails.
func (s *MemoryStore) Cancel(_ context.Context, key Key, d Decision, now time.Time) error {
	b, ok := d.Token.(*bucket)
	if !d.OK || !ok || b == nil {
		return nil
	}
	t := now.UnixNano()
	sh := &s.shards[s.shard(s.fold(key))]
	sh.mu.Lock()
	b.tokens = min(s.tokensAt(b, t)+1, float64(s.burst))
	b.last = max(b.last, t)
	sh.mu.Unlock()
	return nil
}

// tokensAt returns the tokens in b at t (Unix nanoseconds): what it held, plus the rate times
// the time since, up to the burst. A clock that went backwards refills nothing. The shard's mu
// must be held.
func (s *MemoryStore) tokensAt(b *bucket, t int64) float64 {
	if t <= b.last {
		return b.tokens
	}
	return min(b.tokens+time.Duration(t-b.last).Seconds()*s.limit, float64(s.burst))
}

// durationOf returns how long the bucket takes to refill n tokens.
func (s *MemoryStore) durationOf(n float64) time.Duration {
	if n <= 0 {
		return 0
	}
	if d := n * s.perToken; d < math.MaxInt64 {
		return time.Duration(d)
	}
	return math.MaxInt64 // a rate so slow that the wait does not fit in a Duration
}

// bucket returns key's bucket, making one if there is room. sh.mu must be held.
func (s *MemoryStore) bucket(sh *memShard, key foldedKey, t int64) *bucket {
	b, ok := sh.lru.Peek(key)
	switch {
	case !ok:
		b = s.admit(sh, key, t)
	case t-b.promoted > promoteEvery:
		sh.lru.Get(key)
		b.promoted = t
	}
	return b
}

// admit makes a bucket for a new key. When the shard is at its cap it evicts one of the least
// recently used buckets that has refilled; buckets still draining get a second chance at the
// front of the list, and if none of the probed buckets is full the key is counted in the
// shard's overflow bucket. sh.mu must be held.
func (s *MemoryStore) admit(sh *memShard, key foldedKey, t int64) *bucket {
	for i := 0; sh.lru.Len() >= sh.cap && i < evictProbes; i++ {
		k, old, _ := sh.lru.GetOldest()
		if s.tokensAt(old, t) >= float64(s.burst) {
			sh.lru.RemoveOldest()
		} else {
			sh.lru.Get(k) // second chance: move to the front
			old.promoted = t
		}
	}
	if sh.lru.Len() >= sh.cap {
		return sh.overflow
	}
	b := &bucket{last: t, tokens: float64(s.burst), promoted: t}
	sh.lru.Add(key, b)
	return b
}

// A foldedKey is a Key folded to 16 bytes, the LRU's index: hashing and comparing two
// words is cheaper than a netip.Addr and a string, and a bucket's memory does not depend on
// the length of a header a client sent. An address key is the address's 16 bytes (IPv4 in
// its IPv6-mapped form; zones dropped, as the keyer never makes zoned keys; the zero Addr
// folds like ::, which is never a client). A string key is a 128-bit hash keyed with the
// store's secret seed, which makes two keys sharing a bucket by accident, or by a client's
// design, as unlikely as guessing the seed.
type foldedKey [2]uint64

func (s *MemoryStore) fold(k Key) foldedKey {
	a := k.Addr.As16()
	if k.Str == "" {
		return foldedKey{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])}
	}
	return s.foldString(k.Str, &a)
}

// foldString hashes a string key and its address. It is apart from fold so that address
// keys do not pay for zeroing a maphash.Hash.
func (s *MemoryStore) foldString(str string, a *[16]byte) foldedKey {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(str)
	first := h.Sum64()
	h.Write(a[:])
	return foldedKey{first, h.Sum64()}
}

// shard returns the index of k's shard: one round of the splitmix64 finalizer over both
// words and a secret key, a third of the cost of maphash on 16 bytes; the key keeps clients
// from choosing addresses that crowd one shard.
func (s *MemoryStore) shard(k foldedKey) uint32 {
	return uint32(mix(k[0]*0x9e3779b97f4a7c15^k[1]^s.k0) & s.mask)
}

// mix is the splitmix64 finalizer: every input bit flips each output bit with probability
// about one half.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
