package balancer

import (
	"net/http"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/hookset"
)

// Hooks are the functions a Balancer calls when something happens, for metrics, tracing and
// dashboards. Every field is optional. With Pick and Spill nil, Pick pays one predictable
// branch for hooks and allocates nothing; with them set it allocates nothing either, and the
// cost is the calls themselves (see the package documentation's Cost section).
//
// Pick and Spill are called on the goroutine calling Balancer.Pick, before Pick returns, and
// Panic and Update on the goroutine calling Balancer.Update, after the new set is published
// and outside any lock. So every hook may be called from many goroutines at once: it must be
// safe for concurrent use, and must not block, since the try or the update waits for it.
// Updates are serialised, but the hooks of two concurrent Updates may run in either order.
// Several sets of hooks are combined with JoinHooks.
type Hooks struct {
	// Pick is called for every pick that returns an endpoint. It is on the hottest path of a
	// proxy: keep it to a few atomic adds.
	Pick func(PickEvent)

	// Spill is called for every tier — the local node's endpoints, the local zone's — that a
	// pick leaves for a wider one, with the reason (Options.Zone and Options.Node): once per
	// tier left, so a pick that goes from the node to another zone is reported twice.
	Spill func(SpillEvent)

	// Panic is called by the Update that starts panic mode — too few Ready endpoints, so
	// Unhealthy ones take traffic too (Options.PanicThreshold) — and by the one that ends it.
	Panic func(PanicEvent)

	// Update is called after every Update, with the set's counts by state.
	Update func(UpdateEvent)
}

// JoinHooks returns Hooks that call the hooks of every element of hs, in order. A field is nil
// when it is nil in every element, so unused hooks stay free, and a field set in only one
// element is that very func, so a single listener pays no indirection.
func JoinHooks(hs ...Hooks) Hooks {
	return Hooks{
		Pick:   hookset.Join(hs, func(h Hooks) func(PickEvent) { return h.Pick }),
		Spill:  hookset.Join(hs, func(h Hooks) func(SpillEvent) { return h.Spill }),
		Panic:  hookset.Join(hs, func(h Hooks) func(PanicEvent) { return h.Panic }),
		Update: hookset.Join(hs, func(h Hooks) func(UpdateEvent) { return h.Update }),
	}
}

// PickEvent describes one pick: the argument of Hooks.Pick.
type PickEvent struct {
	// Endpoint is the endpoint picked, as Pick returns it.
	Endpoint sluice.Endpoint
	// Retry says the try is a retry: PickInfo.Tried was not empty.
	Retry bool
	// Spill is why the pick left the local node's or zone's endpoints, the widest tier's
	// reason when it left both; NoSpill when it stayed, or when there is no local tier.
	Spill SpillReason
}

// Tier is a set of endpoints a pick prefers: the local node's or the local zone's.
type Tier uint8

const (
	// TierNode is the endpoints hinted for Options.Node.
	TierNode Tier = iota + 1
	// TierZone is the endpoints meant for Options.Zone.
	TierZone
)

// String returns "node" or "zone".
func (t Tier) String() string {
	switch t {
	case TierNode:
		return "node"
	case TierZone:
		return "zone"
	}
	return "unknown"
}

// SpillReason says why a pick left a local tier for a wider one.
type SpillReason uint8

const (
	// NoSpill: the pick stayed in its local tier, or there is none.
	NoSpill SpillReason = iota
	// SpillDegraded: the tier has too few Ready endpoints to be trusted with its traffic
	// (none, or fewer than Options.PanicThreshold of its Ready and Unhealthy ones), so every
	// pick leaves it.
	SpillDegraded
	// SpillBusy: the local endpoint chosen was busier than Options.ZoneSpillFactor allows.
	SpillBusy
	// SpillRetry: the try is a retry and every endpoint of the tier was already tried.
	SpillRetry
)

// String returns a short lower-case name for r, suitable for logs and metric labels.
func (r SpillReason) String() string {
	switch r {
	case NoSpill:
		return "none"
	case SpillDegraded:
		return "degraded"
	case SpillBusy:
		return "busy"
	case SpillRetry:
		return "retry"
	}
	return "unknown"
}

// SpillEvent describes a pick leaving one local tier: the argument of Hooks.Spill.
type SpillEvent struct {
	// From is the tier left.
	From Tier
	// Reason is why.
	Reason SpillReason
	// Endpoint is where the pick went in the end.
	Endpoint sluice.Endpoint
	// Retry says the try is a retry.
	Retry bool
}

// PanicEvent describes the start or the end of panic mode: the argument of Hooks.Panic.
type PanicEvent struct {
	// Panic is true when panic mode starts, false when it ends.
	Panic bool
	// Ready and Unhealthy count the endpoints of the set in those states; Terminating ones
	// count neither way.
	Ready, Unhealthy int
}

// UpdateEvent describes one Update: the argument of Hooks.Update.
type UpdateEvent struct {
	// Ready, Unhealthy and Terminating count the distinct endpoints of the new set by state.
	Ready, Unhealthy, Terminating int
	// Pickable counts the endpoints picks may choose from, in every tier: the Ready ones,
	// or more in panic mode, or the Terminating ones when nothing is Ready.
	Pickable int
	// Panic says the set is in panic mode.
	Panic bool
	// NodeDegraded and ZoneDegraded say the local node's or zone's endpoints are too
	// degraded to keep their traffic, so that every pick spills over (SpillDegraded).
	NodeDegraded, ZoneDegraded bool
	// Duration is how long the Update took, by Options.Now's clock.
	Duration time.Duration
}

// trace collects what a pick with Hooks set does, to report once its endpoint is known.
type trace struct {
	n    int
	from [2]Tier
	why  [2]SpillReason
}

func (t *trace) add(from Tier, why SpillReason) {
	if t.n < len(t.from) {
		t.from[t.n], t.why[t.n] = from, why
		t.n++
	}
}

// pickHooked is Pick with Hooks.Pick or Hooks.Spill set. It follows Pick's steps, through
// the traced variants of the tier walk.
func (b *Balancer) pickHooked(s *snapshot, info sluice.PickInfo) sluice.PickResult {
	var tr trace
	var res sluice.PickResult
	top := s.top()
	j := -1
	if top.sticky != nil {
		if j = top.sticky.lookup(info.Request); j >= 0 && tried(info.Tried, top.pool[j].ep.Addr) {
			j = -1
		}
	}
	switch {
	case j >= 0:
		res = b.result(&top.pool[j], nil)
	case b.clients != nil:
		res = b.pickPinned(s, &info, &tr)
	default:
		s, i := s.chooseTierTraced(info, &tr)
		e := &s.pool[i]
		var cookie *http.Cookie
		if s.sticky != nil {
			cookie = e.st.cookie
		}
		res = b.result(e, cookie)
	}
	h := &b.opts.Hooks
	retry := len(info.Tried) > 0
	if f := h.Spill; f != nil {
		for k := range tr.n {
			f(SpillEvent{From: tr.from[k], Reason: tr.why[k], Endpoint: res.Endpoint, Retry: retry})
		}
	}
	if f := h.Pick; f != nil {
		e := PickEvent{Endpoint: res.Endpoint, Retry: retry}
		if tr.n > 0 {
			e.Spill = tr.why[tr.n-1]
		}
		f(e)
	}
	return res
}

// chooseTierTraced is chooseTier recording in tr, when it is not nil, every tier the try
// leaves and why.
func (s *snapshot) chooseTierTraced(info sluice.PickInfo, tr *trace) (*snapshot, int) {
	if tr == nil {
		return s.chooseTier(info)
	}
	// A degraded tier has no snapshot: the root is the next wider one. A pick leaves the
	// degraded node at once, and the degraded zone once it is past the node's endpoints.
	zoneDegraded := s.degraded&(1<<TierZone) != 0
	if s.degraded&(1<<TierNode) != 0 {
		tr.add(TierNode, SpillDegraded)
	}
	if zoneDegraded && s.tier != TierNode {
		tr.add(TierZone, SpillDegraded)
	}
	i := s.choose(info)
	for s.spill != nil && s.leave(i, info) {
		why := SpillBusy
		if len(info.Tried) > 0 && tried(info.Tried, s.pool[i].ep.Addr) {
			why = SpillRetry
		}
		tr.add(s.tier, why)
		if zoneDegraded && s.tier == TierNode {
			tr.add(TierZone, SpillDegraded)
		}
		s = s.spill
		i = s.choose(info)
	}
	return s, i
}
