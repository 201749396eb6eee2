package discovery

import (
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/hookset"
)

// Hooks are a Source's events, for metrics, logs and dashboards. Every field is optional: a
// nil one costs a nil check. Hooks are called synchronously from the Source's Watch
// goroutine, never under a lock, so they must not block; the same Hooks given to several
// sources are called concurrently, so they must be safe for concurrent use. Combine several
// with [JoinHooks]. The sources of this package ([Static], [DNS]) take them in a field
// named Hooks, and so does discovery/endpointslices in its Options.
type Hooks struct {
	// Update is called each time a Source has a result: when Static pushes its set; after
	// every DNS lookup, successful or not; after an EndpointSlices Source rebuilds its set.
	// It is called after update, when the set was pushed.
	Update func(UpdateEvent)
}

// JoinHooks returns Hooks that call each of hs's non-nil funcs in order.
func JoinHooks(hs ...Hooks) Hooks {
	return Hooks{
		Update: hookset.Join(hs, func(h Hooks) func(UpdateEvent) { return h.Update }),
	}
}

// UpdateEvent describes one result of a Source.
type UpdateEvent struct {
	// Source is the kind of source: "static", "dns" or "endpointslices".
	Source string
	// Name is what it follows: the DNS name ("_http._tcp.api.internal" for SRV), the
	// Service ("namespace/name", with ":port" when a port was asked for), or "" for Static.
	// There is one per pool, so it is a bounded metric label.
	Name string
	// Ready, Terminating and Unhealthy count the endpoints of the set in force, by
	// [sluice.State]: the set just pushed or, after a failure, the last good one.
	Ready, Terminating, Unhealthy int
	// Changed reports that the set differed from the last one and was pushed.
	Changed bool
	// Synced reports that the Source has pushed a set since Watch began: until then the
	// consumer has no endpoints from it.
	Synced bool
	// Err is why the lookup failed; the Source keeps the last good set and retries. For
	// EndpointSlices it is a failed lookup of an FQDN endpoint's name.
	Err error
}

// Count sets e's Ready, Terminating and Unhealthy from eps and returns e, for the sources
// of other packages that report UpdateEvents.
func (e UpdateEvent) Count(eps []sluice.Endpoint) UpdateEvent {
	e.Ready, e.Terminating, e.Unhealthy = 0, 0, 0
	for _, ep := range eps {
		switch ep.State {
		case sluice.Ready:
			e.Ready++
		case sluice.Terminating:
			e.Terminating++
		default:
			e.Unhealthy++
		}
	}
	return e
}
