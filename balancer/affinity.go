package balancer

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// ClientIPAffinity keeps each client IP address on the endpoint it was sent to, as kube-proxy
// does for a Service with sessionAffinity: ClientIP. A client's first try goes where Fallback
// says, and the balancer remembers the endpoint for the client's address. Later tries from
// that address go to the same endpoint while it is in the pool (Ready, or Terminating while no
// endpoint is Ready) and the client has been seen within Timeout; each of them starts the
// timeout again, so a client that keeps coming back stays pinned. When the endpoint has left
// the set, is no longer in the pool, was already tried for this request (a retry after a
// connect failure), or the timeout has passed, Fallback chooses again and the client is
// pinned to the new choice. An endpoint that leaves the set and comes back is a new endpoint:
// its old clients choose again.
//
// The client is PickInfo.Client, the peer of a TCP connection or the source of a UDP flow,
// or, for an HTTP request, the address sluice.ClientIP finds with Options.TrustedProxies
// (the TCP peer unless a trusted proxy forwarded the request). A try with neither goes where
// Fallback says and pins nothing.
//
// kube-proxy's modes remember a client per Service port, from the client's last new
// connection (iptables' recent match and nftables' timed sets are refreshed when a connection
// is set up, not by its packets); so does this policy, one Balancer being one Service port.
// A long connection does not keep its client pinned: only new picks do.
//
// Pinned picks take no lock and allocate nothing; they read the client table and the clock.
// Pinning a new client takes a lock shared by the Balancer's new clients. The table holds at
// most MaxClients clients: pins that have timed out are dropped as new clients arrive, a few
// slots at a time, and when it is full of live pins the least recently used of a few looked
// at makes room, so memory stays bounded whatever the clients do.
type ClientIPAffinity struct {
	// Timeout is how long a client stays pinned after its last pick. Zero means 3 hours
	// (10,800 seconds), the default of a Service's
	// sessionAffinityConfig.clientIP.timeoutSeconds.
	Timeout time.Duration

	// Fallback chooses for clients that are not pinned. Nil means RoundRobin. It must not be
	// Sticky or another ClientIPAffinity.
	Fallback Policy

	// MaxClients is how many clients the balancer remembers at most. Zero means 65,536, the
	// default size of the nftables sets kube-proxy keeps them in.
	MaxClients int
}

const (
	defaultAffinityTimeout = 10800 * time.Second
	defaultMaxClients      = 1 << 16
	maxMaxClients          = 1 << 24
)

func (p ClientIPAffinity) fallback() Policy {
	if p.Fallback == nil {
		return RoundRobin{}
	}
	return p.Fallback
}

func (p ClientIPAffinity) validate() error {
	switch p.Fallback.(type) {
	case Sticky, *Sticky, ClientIPAffinity, *ClientIPAffinity:
		return errors.New("balancer: ClientIPAffinity.Fallback must not be Sticky or ClientIPAffinity")
	}
	if p.Timeout < 0 {
		return fmt.Errorf("balancer: ClientIPAffinity.Timeout must be ≥ 0, got %v", p.Timeout)
	}
	if p.MaxClients < 0 || p.MaxClients > maxMaxClients {
		return fmt.Errorf("balancer: ClientIPAffinity.MaxClients must be in [0, %d], got %d", maxMaxClients, p.MaxClients)
	}
	return p.fallback().validate()
}

func (p ClientIPAffinity) configure(b *Balancer) {
	p.fallback().configure(b)
	timeout, max := p.Timeout, p.MaxClients
	if timeout == 0 {
		timeout = defaultAffinityTimeout
	}
	if max == 0 {
		max = defaultMaxClients
	}
	b.clients = &clientTable{timeout: int64(timeout), max: max}
}

func (p ClientIPAffinity) ramps() bool { return p.fallback().ramps() }

func (p ClientIPAffinity) build(s *snapshot) picker {
	s.pinned = newTokenTable("", len(s.pool))
	for i := range s.pool {
		s.pinned.insert(s.pool[i].st.id, int32(i))
	}
	return p.fallback().build(s)
}

// pickPinned is Pick for ClientIPAffinity: the client's pinned endpoint when it is still in
// the pool and untried, else the fallback's choice, which becomes the client's pin. tr is nil
// unless Hooks.Pick or Hooks.Spill is set.
func (b *Balancer) pickPinned(s *snapshot, info *sluice.PickInfo, tr *trace) sluice.PickResult {
	key, ok := HashKey{kind: keyClientIP}.hash(info, b.opts.TrustedProxies)
	if !ok {
		s, i := s.chooseTierTraced(*info, tr)
		return b.result(&s.pool[i], nil)
	}
	now := b.nanotime()
	// A pin is honoured wherever its endpoint is: on another node or in another zone too,
	// since the client may have spilled over there.
	top := s.top()
	if p := b.clients.find(key); p != nil && now-p.last.Load() < b.clients.timeout {
		if j := top.pinned.find(p.id.Load()); j >= 0 && !tried(info.Tried, top.pool[j].ep.Addr) {
			p.last.Store(now)
			return b.result(&top.pool[j], nil)
		}
	}
	s, i := s.chooseTierTraced(*info, tr)
	e := &s.pool[i]
	// Two first connections of one client at the same instant may both get here and pin in
	// turn; the later pin wins, as it would in the kernel's tables.
	b.clients.pin(key, e.st.id, now)
	return b.result(e, nil)
}

// clientTable remembers, for ClientIPAffinity, the endpoint each client is pinned to. It is
// an open-addressing hash table of pins keyed by the client's address hash (hashAddr, which
// is one-to-one on IPv4 addresses), published through an atomic pointer: Pick probes it
// without a lock and refreshes a pin in place, while pin, under mu, adds, replaces, removes
// and re-sizes. Removed pins leave a tombstone that probes step over; the table is rebuilt,
// without tombstones or expired pins, before non-empty slots pass three quarters.
type clientTable struct {
	timeout int64 // nanoseconds
	max     int   // pins kept at most
	tab     atomic.Pointer[pinSlots]

	mu   sync.Mutex // mu serialises changes to tab; it protects the fields below.
	live int        // pins in tab
	used int        // slots of tab that are not nil: pins and tombstones
	hand uint64     // the slot the incremental sweep looks at next
}

// pinSlots is one generation of a clientTable's slots. A table replaced by a rebuild keeps
// serving the picks that loaded it: the pins are shared, so a refresh through either is seen
// by both.
type pinSlots struct {
	slots []atomic.Pointer[pin]
	mask  uint64
}

// pin is one client's affinity: its key, the endpoint (endpointState.id) it is pinned to and
// when it was last picked (Balancer.nanotime). id and last change in place.
type pin struct {
	key  uint64
	id   atomic.Uint64
	last atomic.Int64
}

// tombstone fills the slot of a removed pin, so that probes for keys placed after it go on.
var tombstone = new(pin)

// sweepSlots is how many slots each new pin's insertion looks at for expired pins: enough for
// a full pass over the table every few hundred new clients at most, while no insertion does
// more than a few slots' work.
const sweepSlots = 4

// evictSample is how many pins an insertion into a full table compares to choose the one to
// evict, the least recently used of them (Redis's approximated LRU).
const evictSample = 8

// find returns the pin of key, or nil. It takes no lock.
func (c *clientTable) find(key uint64) *pin {
	t := c.tab.Load()
	if t == nil {
		return nil
	}
	for k := key & t.mask; ; k = (k + 1) & t.mask {
		p := t.slots[k].Load()
		if p == nil {
			return nil
		}
		if p.key == key && p != tombstone {
			return p
		}
	}
}

// pin pins key to the endpoint id as of now, replacing the key's pin if it has one.
func (c *clientTable) pin(key, id uint64, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tab.Load()
	if t != nil {
		if p := c.find(key); p != nil {
			p.id.Store(id)
			p.last.Store(now)
			return
		}
		c.sweep(t, now)
		if c.live >= c.max {
			c.evict(t, now)
		}
	}
	if t == nil || 4*(c.used+1) > 3*len(t.slots) {
		t = c.rebuild(now)
	}
	p := &pin{key: key}
	p.id.Store(id)
	p.last.Store(now)
	for k := key & t.mask; ; k = (k + 1) & t.mask {
		switch q := t.slots[k].Load(); q {
		case nil:
			c.used++
			fallthrough
		case tombstone:
			t.slots[k].Store(p)
			c.live++
			return
		}
	}
}

// expired reports whether p's pin has timed out at now.
func (c *clientTable) expired(p *pin, now int64) bool { return now-p.last.Load() >= c.timeout }

// remove replaces the pin in slot k with a tombstone.
func (c *clientTable) remove(t *pinSlots, k uint64) {
	t.slots[k].Store(tombstone)
	c.live--
}

// sweep removes the expired pins among the next sweepSlots slots.
func (c *clientTable) sweep(t *pinSlots, now int64) {
	for range sweepSlots {
		k := c.hand & t.mask
		c.hand++
		if p := t.slots[k].Load(); p != nil && p != tombstone && c.expired(p, now) {
			c.remove(t, k)
		}
	}
}

// evict removes the least recently used of the next evictSample pins, or the first expired
// one found. The table holds max ≥ 1 pins when it is called, so the scan ends.
func (c *clientTable) evict(t *pinSlots, now int64) {
	victim, oldest := uint64(0), int64(0)
	for seen := 0; seen < evictSample; {
		k := c.hand & t.mask
		c.hand++
		p := t.slots[k].Load()
		if p == nil || p == tombstone {
			continue
		}
		if c.expired(p, now) {
			victim = k
			break
		}
		if last := p.last.Load(); seen == 0 || last < oldest {
			victim, oldest = k, last
		}
		seen++
	}
	c.remove(t, victim)
}

// rebuild publishes a new table holding the live pins that have not expired, sized so that
// they and the next one fill at most half of it, and returns it.
func (c *clientTable) rebuild(now int64) *pinSlots {
	size := 16
	for 2*(c.live+1) > size {
		size *= 2
	}
	n := &pinSlots{slots: make([]atomic.Pointer[pin], size), mask: uint64(size - 1)}
	c.live, c.used = 0, 0
	if t := c.tab.Load(); t != nil {
		for i := range t.slots {
			p := t.slots[i].Load()
			if p == nil || p == tombstone || c.expired(p, now) {
				continue
			}
			k := p.key & n.mask
			for n.slots[k].Load() != nil {
				k = (k + 1) & n.mask
			}
			n.slots[k].Store(p)
			c.live++
			c.used++
		}
	}
	c.tab.Store(n)
	return n
}
