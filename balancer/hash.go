package balancer

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
)

// HashKey says what part of a request Maglev hashes. Build one with HeaderKey, CookieKey,
// QueryKey, PathKey or ClientIPKey. The zero HashKey hashes the client IP.
type HashKey struct {
	kind keyKind
	name string
}

type keyKind uint8

const (
	keyClientIP keyKind = iota
	keyHeader
	keyCookie
	keyQuery
	keyPath
)

// HeaderKey hashes the first value of the request header name.
func HeaderKey(name string) HashKey {
	return HashKey{kind: keyHeader, name: textproto.CanonicalMIMEHeaderKey(name)}
}

// CookieKey hashes the value of the request cookie name.
func CookieKey(name string) HashKey { return HashKey{kind: keyCookie, name: name} }

// QueryKey hashes the first value of the query parameter name, as sent (not percent-decoded).
func QueryKey(name string) HashKey { return HashKey{kind: keyQuery, name: name} }

// PathKey hashes the request path.
func PathKey() HashKey { return HashKey{kind: keyPath} }

// ClientIPKey hashes the client IP address, found with sluice.ClientIP and
// Options.TrustedProxies.
func ClientIPKey() HashKey { return HashKey{kind: keyClientIP} }

// String describes k, for logs.
func (k HashKey) String() string {
	switch k.kind {
	case keyHeader:
		return "header " + k.name
	case keyCookie:
		return "cookie " + k.name
	case keyQuery:
		return "query " + k.name
	case keyPath:
		return "path"
	}
	return "client IP"
}

// hash returns the hash of k's part of the try's request, and false when it has no such
// part. A try with no Request (an L4 proxy's connection or flow) has only the client's
// address, which ClientIPKey hashes and every other key lacks.
func (k HashKey) hash(info *sluice.PickInfo, trusted *sluice.TrustedProxies) (uint64, bool) {
	r := info.Request
	if r == nil {
		if k.kind == keyClientIP && info.Client.IsValid() {
			return hashAddr(info.Client.Addr().Unmap()), true
		}
		return 0, false
	}
	switch k.kind {
	case keyHeader:
		if v := r.Header[k.name]; len(v) > 0 {
			return hashString(v[0]), true
		}
	case keyCookie:
		if v, ok := cookieValue(r.Header["Cookie"], k.name); ok {
			return hashString(v), true
		}
	case keyQuery:
		if r.URL != nil {
			if v, ok := queryValue(r.URL.RawQuery, k.name); ok {
				return hashString(v), true
			}
		}
	case keyPath:
		if r.URL != nil {
			return hashString(r.URL.Path), true
		}
	default:
		// Most requests come straight from a client or through an untrusted hop, with an IPv4
		// RemoteAddr: parse that by hand (netip's general parser costs several times more) and
		// walk the forwarding headers only when the peer is a trusted proxy.
		if a, ok := peerIPv4(r.RemoteAddr); ok && !trusted.Contains(a) {
			return hashAddr(a), true
		}
		if a := sluice.ClientIP(r, trusted); a.IsValid() {
			return hashAddr(a), true
		}
	}
	return 0, false
}

// hashAddr hashes an IP address. Both ways of finding the client (peerIPv4 and sluice.ClientIP)
// return IPv4 addresses unmapped, so one IPv4 client hashes the same either way.
func hashAddr(a netip.Addr) uint64 {
	if a.Is4() {
		b := a.As4()
		return mix64(uint64(binary.BigEndian.Uint32(b[:])) | 1<<32)
	}
	b := a.As16()
	return mix64(binary.LittleEndian.Uint64(b[:8]) ^ mix64(binary.LittleEndian.Uint64(b[8:])))
}

// peerIPv4 parses a RemoteAddr of the form "a.b.c.d:port", the usual one, and reports false
// for anything else (IPv6, no port, a malformed address), which the caller leaves to
// sluice.ClientIP. When it reports true, the address is the one sluice.PeerAddr returns.
func peerIPv4(s string) (netip.Addr, bool) {
	var ip [4]byte
	for k := range ip {
		n, v := 0, 0
		for n < len(s) && n < 4 && s[n] >= '0' && s[n] <= '9' {
			v = v*10 + int(s[n]-'0')
			n++
		}
		// netip rejects empty octets, leading zeros and values above 255.
		if n == 0 || n > 3 || v > 255 || n > 1 && s[0] == '0' {
			return netip.Addr{}, false
		}
		ip[k] = byte(v)
		s = s[n:]
		sep := byte('.')
		if k == 3 {
			sep = ':'
		}
		if len(s) == 0 || s[0] != sep {
			return netip.Addr{}, false
		}
		s = s[1:]
	}
	if len(s) == 0 || len(s) > 5 {
		return netip.Addr{}, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return netip.Addr{}, false
		}
	}
	return netip.AddrFrom4(ip), true
}

// hashString hashes s eight bytes at a time, each word folded in with a multiply and a
// shift, then finishes with mix64. It is fixed (not seeded per process, which rules out
// hash/maphash) on purpose: every replica of a proxy must map a key to the same endpoint.
// Keys are short (user IDs, session cookies, paths), so a word-at-a-time loop beats a
// byte-at-a-time one such as FNV several times over on anything longer than a few bytes.
func hashString(s string) uint64 {
	h := uint64(len(s)) * 0x9e3779b97f4a7c15
	for len(s) >= 8 {
		h = (h ^ load64(s)) * 0xbf58476d1ce4e5b9
		h ^= h >> 29
		s = s[8:]
	}
	if len(s) > 0 {
		var w uint64
		for i := len(s) - 1; i >= 0; i-- {
			w = w<<8 | uint64(s[i])
		}
		h = (h ^ w) * 0x94d049bb133111eb
	}
	return mix64(h)
}

// load64 reads the first eight bytes of s as a little-endian word; the compiler turns it
// into one load.
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// cookieValue returns the value of the first cookie called name in the Cookie header lines,
// without allocating. Pairs are separated by ';'; names are matched exactly after trimming
// spaces (a pair without '=' has the empty value), and a value wrapped in double quotes is
// unwrapped, as net/http does.
func cookieValue(lines []string, name string) (string, bool) {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line = cut(line, ';')
			part = trimSpace(part)
			k, v, _ := cutStr(part, '=')
			if trimSpace(k) != name {
				continue
			}
			v = trimSpace(v)
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// queryValue returns the raw value of the first parameter called name in a raw query string,
// without allocating. A parameter without '=' has the empty value.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var part string
		part, raw = cut(raw, '&')
		k, v, _ := cutStr(part, '=')
		if k == name {
			return v, true
		}
	}
	return "", false
}

func cut(s string, sep byte) (before, after string) {
	if i := strings.IndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

func cutStr(s string, sep byte) (before, after string, ok bool) {
	if i := strings.IndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// trimSpace trims ASCII white space, as textproto.TrimString does, without allocating.
func trimSpace(s string) string {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// Maglev is consistent hashing with Google's Maglev lookup table: each request is hashed on
// Key and goes to the endpoint that owns the hash's slot. When one of N endpoints leaves,
// about 1/N of keys move, and only those that were on it or next to it in the table. Weights
// are honoured by giving endpoints table slots in proportion to weight. Requests without the
// key (no such header, say) are spread at random.
//
// With Epsilon > 0, Maglev also bounds loads as in "Consistent Hashing with Bounded Loads"
// (Mirrokni, Thorup, Zadimoghaddam): no endpoint takes more than ⌈(1+Epsilon) × average⌉
// requests in flight; a key whose endpoint is full walks on through the table to the next
// endpoint with room, so hot keys spill over instead of melting one pod.
type Maglev struct {
	// Key is what is hashed. The zero HashKey hashes the client IP.
	Key HashKey

	// Epsilon bounds each endpoint's in-flight load to (1+Epsilon) × the average. Zero
	// disables bounded loads (pure consistent hashing); 0.25 is a common setting. Smaller
	// values balance better and keep affinity less.
	Epsilon float64

	// TableSize is the number of lookup-table slots, rounded up to a prime. Zero means 65537,
	// or about 10 slots per endpoint above 6,553 endpoints. More slots spread keys more
	// evenly and cost memory and update time.
	TableSize int
}

func (p Maglev) validate() error {
	switch {
	case p.Epsilon < 0 || math.IsNaN(p.Epsilon) || math.IsInf(p.Epsilon, 0):
		return fmt.Errorf("balancer: Maglev.Epsilon must be ≥ 0, got %v", p.Epsilon)
	case p.TableSize < 0 || p.TableSize > 1<<26:
		return fmt.Errorf("balancer: Maglev.TableSize must be in [0, %d], got %d", 1<<26, p.TableSize)
	}
	return nil
}
func (p Maglev) configure(b *Balancer) {
	b.trackTotal = p.Epsilon > 0
	b.countLoad = p.Epsilon > 0
}

// ramps reports whether slow start applies: only with bounded loads. Pure consistent hashing
// has no way to hold an endpoint back without moving its keys elsewhere and back again, which
// is the disruption consistent hashing exists to avoid; with bounded loads, keys already move
// when an endpoint is full, so a ramping endpoint simply has a smaller bound.
func (p Maglev) ramps() bool { return p.Epsilon > 0 }

func (p Maglev) build(s *snapshot) picker {
	b := s.b
	// The table depends only on the pool's addresses and weights, in order. An Update often
	// leaves those alone for a pool: a change in another zone, a state change of an endpoint
	// that was not in the pool. Reuse the last Update's table then: it is never written after
	// it is built, so snapshots can share it.
	for _, t := range b.hashTables {
		if samePool(t.pool, s.pool) {
			b.hashTablesNext = append(b.hashTablesNext, t)
			return t.mp
		}
	}
	mp, fill := p.prepare(s)
	b.fills = append(b.fills, fill) // Update runs it before it publishes the snapshot
	b.hashTablesNext = append(b.hashTablesNext, builtTable{pool: s.pool, mp: mp})
	return mp
}

// builtTable is a Maglev table kept by the Balancer for reuse by the next Update, with the
// pool it was built for.
type builtTable struct {
	pool []entry
	mp   *maglevPicker
}

// samePool reports whether two pools hold the same addresses with the same weights, in the
// same order.
func samePool(a, b []entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].weight() != b[i].weight() || a[i].ep.Addr != b[i].ep.Addr {
			return false
		}
	}
	return true
}

// fill builds the lookup table for s's pool.
func (p Maglev) fill(s *snapshot) *maglevPicker {
	mp, fill := p.prepare(s)
	fill()
	return mp
}

// prepare returns the picker for s's pool with an empty lookup table, and the function that
// fills the table. The function touches nothing but the table and its own scratch space, so
// that fills of different tables can run at once.
func (p Maglev) prepare(s *snapshot) (*maglevPicker, func()) {
	n := len(s.pool)
	m := p.TableSize
	if m == 0 {
		m = max(65537, 10*n)
	}
	m = nextPrime(max(m, n))
	mp := &maglevPicker{key: p.Key, eps: p.Epsilon, table: make([]int32, m)}
	if n == 0 {
		return mp, func() {}
	}
	var maxW, totalW uint64
	for i := range s.pool {
		w := uint64(s.pool[i].weight())
		maxW = max(maxW, w)
		totalW += w
	}
	mp.share = make([]float64, n)
	for i := range s.pool {
		mp.share[i] = float64(s.pool[i].weight()) / float64(totalW)
	}
	// Each endpoint walks its own permutation of the slots, offset + j·skip (mod m). The
	// walkers sit in one small array, not in the pool's wide entries, so the fill loop stays
	// in cache. Both remainders are taken by Barrett reduction, exact and without a division.
	ws := make([]walker, n)
	um := uint64(m)
	rm, rm1 := ^uint64(0)/um, ^uint64(0)/(um-1)
	for i, e := range s.pool {
		h := hashString(e.ep.Addr)
		ws[i] = walker{
			pos:    uint32(reduce(h, um, rm)),
			skip:   uint32(reduce(mix64(h^0x5bd1e995), um-1, rm1) + 1),
			weight: e.weight(),
		}
	}
	weighted := s.weighted
	return mp, func() { fillMaglev(mp.table, ws, weighted, maxW) }
}

// reduce returns x mod m, given r = (2⁶⁴-1)/m. The quotient estimate, the high word of x·r,
// is at most one short, so one conditional subtraction corrects the remainder.
func reduce(x, m, r uint64) uint64 {
	q, _ := bits.Mul64(x, r)
	x -= q * m
	if x >= m {
		x -= m
	}
	return x
}

// walker is one endpoint's place in its Maglev permutation, and the slots it has claimed.
type walker struct{ pos, skip, count, weight uint32 }

// fillMaglev fills table, whose length is a prime m, with Maglev's population loop:
// endpoints take turns, each claiming the next slot of its permutation that is still free,
// until every slot is taken. With weights, an endpoint takes a turn in a round only while its
// share of slots so far is behind its share of weight.
//
// Almost all of the work is probing for a free slot: a turn that finds f of the m slots free
// probes m/f times on average, m·ln m times over the whole fill. So the probe loop is kept
// tight (occupancy in a bitmap of m/8 bytes, which stays in L1; the step held in a register
// for the whole turn; the position carried unreduced, see below), and the last turns, where
// a walk would be longest, do not walk at all: once at most √(m/2) slots are free, a turn
// computes, for every free slot s, how many steps away it lies in the walker's permutation,
// j = (s - pos)·skip⁻¹ mod m (m is prime, so skip has an inverse), and takes the nearest.
// That is the slot the walk would reach first, so the table is the same, for about half the
// probes.
func fillMaglev(table []int32, ws []walker, weighted bool, maxW uint64) {
	m := uint32(len(table))
	taken := make([]uint64, (len(table)+63)/64)
	endgame := uint32(math.Sqrt(float64(m) / 2))
	var free []uint32 // the free slots, once in the endgame
	um := uint64(m)
	rm := ^uint64(0) / um
	left := m
	for round := uint64(1); ; round++ {
		for i := range ws {
			w := &ws[i]
			if weighted && uint64(w.count)*maxW > uint64(w.weight)*round {
				continue
			}
			c, skip := w.pos, w.skip
			if left > endgame {
				// The walk's position is carried unreduced in 64 bits: what one probe hands
				// the next is a single addition, and the reduction mod m (a multiply) hangs
				// off that chain instead of lengthening it, so successive probes overlap.
				// Wrapping with a compare per step instead is 17% slower overall.
				if taken[c>>6]&(1<<(c&63)) != 0 {
					for x := uint64(c) + uint64(skip); ; x += uint64(skip) {
						if c = uint32(reduce(x, um, rm)); taken[c>>6]&(1<<(c&63)) == 0 {
							break
						}
					}
				}
				taken[c>>6] |= 1 << (c & 63)
			} else {
				if free == nil {
					free = freeSlots(taken, m, left)
				}
				inv := uint64(inverse(skip, m))
				best, at := um, 0
				for k, s := range free {
					d := s + m - c
					d = min(d, d-m) // (s - c) mod m
					if j := reduce(uint64(d)*inv, um, rm); j < best {
						best, at = j, k
					}
				}
				c = free[at]
				free[at] = free[len(free)-1]
				free = free[:len(free)-1]
			}
			table[c] = int32(i)
			c += skip
			w.pos = min(c, c-m)
			w.count++
			if left--; left == 0 {
				return
			}
		}
	}
}

// freeSlots lists the clear bits below m of the bitmap taken; there are n of them.
func freeSlots(taken []uint64, m, n uint32) []uint32 {
	free := make([]uint32, 0, n)
	for k, word := range taken {
		for x := ^word; x != 0; x &= x - 1 {
			if s := uint32(k*64 + bits.TrailingZeros64(x)); s < m {
				free = append(free, s)
			}
		}
	}
	return free
}

// inverse returns a⁻¹ mod the prime m, for 0 < a < m, by the extended Euclidean algorithm.
func inverse(a, m uint32) uint32 {
	t, nt := int64(0), int64(1)
	r, nr := int64(m), int64(a)
	for nr != 0 {
		q := r / nr
		t, nt = nt, t-q*nt
		r, nr = nr, r-q*nr
	}
	if t < 0 {
		t += int64(m)
	}
	return uint32(t)
}

func (mp *maglevPicker) bounded() bool { return mp.eps > 0 }

type maglevPicker struct {
	key   HashKey
	eps   float64
	table []int32
	share []float64 // each endpoint's fraction of total weight, for bounded loads
}

func (mp *maglevPicker) pick(s *snapshot, info sluice.PickInfo) int {
	h, ok := mp.key.hash(&info, s.b.opts.TrustedProxies)
	if !ok {
		return s.random()
	}
	m := uint64(len(mp.table))
	// The high word of h·m is uniform over [0, m) like h % m, without a division.
	slot, _ := bits.Mul64(h, m)
	if mp.eps == 0 && len(info.Tried) == 0 {
		return int(mp.table[slot])
	}
	// Walk the table from the key's slot: the first endpoint that is neither tried nor full
	// takes the key. The walk visits endpoints in an order fixed by the key, so a key that
	// spills over always spills to the same place.
	limit := -1.0 // loaded on first need: an idle endpoint is never over its bound
	ramping := s.rampEnd != 0 && !s.rampDone.Load()
	var now int64
	for range m {
		i := int(mp.table[slot])
		if slot++; slot == m {
			slot = 0
		}
		if len(info.Tried) > 0 && tried(info.Tried, s.pool[i].ep.Addr) {
			continue
		}
		if mp.eps > 0 {
			if l := s.pool[i].st.inflight.Load(); l > 0 {
				if limit < 0 {
					limit = (1 + mp.eps) * float64(s.b.total()+1)
				}
				bound := limit * mp.share[i]
				if start := s.pool[i].st.start.Load(); ramping && start != 0 {
					// Slow start: a ramping endpoint's bound shrinks to its share of the ramp,
					// so its keys beyond that spill to their next endpoint until it warms up.
					if now == 0 {
						now = s.b.nanotime()
					}
					bound *= s.b.rampShare(start, now)
				}
				if float64(l) >= math.Ceil(bound) {
					continue
				}
			}
		}
		return i
	}
	return -1
}

func nextPrime(n int) int {
	if n < 2 {
		return 2
	}
	for ; ; n++ {
		prime := n%2 != 0 || n == 2
		for d := 3; prime && d*d <= n; d += 2 {
			if n%d == 0 {
				prime = false
			}
		}
		if prime {
			return n
		}
	}
}

// Sticky keeps a client on the endpoint it was first sent to, with a cookie. The first try
// of a client without the cookie goes where Fallback says, and the response carries a cookie
// that names the endpoint by an opaque token (a keyed hash of its address, never the address
// itself). Later requests with the cookie go to the same endpoint while it is Ready and in the
// pool; when it is gone, unhealthy, or already tried for this request, Fallback chooses again
// and the cookie is replaced.
//
// The cookie is built once per endpoint when the endpoint set changes and returned through
// PickResult.Cookie; the forwarder sets it on the response.
type Sticky struct {
	// Cookie is the cookie's name. Empty means "sluice_affinity".
	Cookie string

	// Fallback chooses for clients without a valid cookie. Nil means RoundRobin. It must not
	// be another Sticky, nor ClientIPAffinity.
	Fallback Policy

	// Secret keys the hash that makes the cookie's token, so that clients cannot compute the
	// token of an address they guess. Replicas of a proxy must share it for stickiness to
	// survive moving between them. Empty means an unkeyed hash: stable, but guessable by
	// someone who knows the pod network.
	Secret string

	// Path is the cookie's Path attribute. Empty means "/".
	Path string

	// MaxAge is the cookie's lifetime. Zero means a session cookie.
	MaxAge time.Duration

	// Secure sets the cookie's Secure attribute.
	Secure bool

	// SameSite is the cookie's SameSite attribute. Zero means http.SameSiteLaxMode.
	SameSite http.SameSite
}

func (p Sticky) fallback() Policy {
	if p.Fallback == nil {
		return RoundRobin{}
	}
	return p.Fallback
}

func (p Sticky) validate() error {
	switch p.Fallback.(type) {
	case Sticky, *Sticky:
		return errors.New("balancer: Sticky.Fallback must not be Sticky")
	case ClientIPAffinity, *ClientIPAffinity:
		return errors.New("balancer: Sticky.Fallback must not be ClientIPAffinity")
	}
	if p.Cookie != "" && !validCookieName(p.Cookie) {
		return fmt.Errorf("balancer: Sticky.Cookie %q is not a valid cookie name", p.Cookie)
	}
	if p.MaxAge < 0 {
		return fmt.Errorf("balancer: Sticky.MaxAge must be ≥ 0, got %v", p.MaxAge)
	}
	return p.fallback().validate()
}
func (p Sticky) configure(b *Balancer) { p.fallback().configure(b) }
func (p Sticky) ramps() bool           { return p.fallback().ramps() }

func (p Sticky) build(s *snapshot) picker {
	name := p.Cookie
	if name == "" {
		name = "sluice_affinity"
	}
	path := p.Path
	if path == "" {
		path = "/"
	}
	same := p.SameSite
	if same == 0 {
		same = http.SameSiteLaxMode
	}
	t := newTokenTable(name, len(s.pool))
	for i := range s.pool {
		e := &s.pool[i]
		// The token costs a SHA-256 and the cookie two allocations: both are made once per
		// endpoint and kept in its state across rebuilds (the Balancer's policy never changes).
		if e.st.cookie == nil {
			tok := stickyToken(p.Secret, e.ep.Addr)
			e.st.token = tok
			e.st.cookie = &http.Cookie{
				Name:     name,
				Value:    encodeToken(tok),
				Path:     path,
				MaxAge:   int(p.MaxAge / time.Second),
				Secure:   p.Secure,
				HttpOnly: true,
				SameSite: same,
			}
		}
		t.insert(e.st.token, int32(i))
	}
	s.sticky = t
	return p.fallback().build(s)
}

// stickyTable maps tokens to pool indexes for one snapshot: Sticky's cookie tokens, or
// ClientIPAffinity's endpoint ids.
type stickyTable struct {
	name  string
	slots []stickySlot
	mask  uint64
}

// newTokenTable returns an empty stickyTable for n endpoints, whose cookie is name (empty
// when the tokens are not cookies). It has at least twice n slots, a power of two: cookie
// tokens are SHA-256 output and endpoint ids are consecutive, so their low bits index it
// directly, and a lookup probes about 1.5 slots.
func newTokenTable(name string, n int) *stickyTable {
	size := 2
	for size < 2*n {
		size *= 2
	}
	return &stickyTable{name: name, slots: make([]stickySlot, size), mask: uint64(size - 1)}
}

// stickySlot is one slot of a stickyTable: a token and its pool index plus one; zero is
// empty.
type stickySlot struct {
	tok uint64
	i   int32
}

// insert adds tok → i. Two endpoints with one token (a 2⁻⁶⁴ chance) keep the first.
func (t *stickyTable) insert(tok uint64, i int32) {
	for k := tok & t.mask; ; k = (k + 1) & t.mask {
		switch sl := &t.slots[k]; {
		case sl.i == 0:
			*sl = stickySlot{tok: tok, i: i + 1}
			return
		case sl.tok == tok:
			return
		}
	}
}

// find returns the pool index of tok, or -1.
func (t *stickyTable) find(tok uint64) int {
	for k := tok & t.mask; ; k = (k + 1) & t.mask {
		sl := &t.slots[k]
		if sl.i == 0 {
			return -1
		}
		if sl.tok == tok {
			return int(sl.i) - 1
		}
	}
}

// lookup returns the pool index the request's cookie names, or -1.
func (t *stickyTable) lookup(r *http.Request) int {
	if r == nil {
		return -1
	}
	v, ok := cookieValue(r.Header["Cookie"], t.name)
	if !ok {
		return -1
	}
	tok, ok := decodeToken(v)
	if !ok {
		return -1
	}
	return t.find(tok)
}

// stickyToken is the first 8 bytes of SHA-256(secret ‖ 0 ‖ addr). It is computed only when an
// endpoint set is built, never per request.
func stickyToken(secret, addr string) uint64 {
	h := sha256.New()
	h.Write([]byte(secret))
	h.Write([]byte{0})
	h.Write([]byte(addr))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

const hexDigits = "0123456789abcdef"

// encodeToken writes tok as 16 lower-case hex digits.
func encodeToken(tok uint64) string {
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hexDigits[tok&0xf]
		tok >>= 4
	}
	return string(b[:])
}

// decodeToken parses exactly 16 lower-case hex digits, the only form encodeToken writes. It
// looks digits up in a table and checks them all at the end, without a branch per digit.
func decodeToken(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	var tok uint64
	var bad byte
	for i := 0; i < 16; i++ {
		d := hexValue[s[i]]
		bad |= d
		tok = tok<<4 | uint64(d&0xf)
	}
	return tok, bad&0x80 == 0
}

// hexValue maps a lower-case hex digit to its value and every other byte to 0x80.
var hexValue = func() (t [256]byte) {
	for c := range t {
		t[c] = 0x80
	}
	for i := range 16 {
		t[hexDigits[i]] = byte(i)
	}
	return t
}()

// validCookieName reports whether name is an RFC 6265 token.
func validCookieName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f {
			return false
		}
		switch c {
		case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
			return false
		}
	}
	return true
}
