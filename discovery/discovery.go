// Package discovery keeps a backend pool's endpoint set current.
//
// A [Source] watches some registry of backends and pushes whole endpoint sets — never
// diffs — to a subscriber, typically a balancer's or health checker's Update method:
//
//	src := discovery.DNS{Name: "api.internal", Port: 8080}
//	go src.Watch(ctx, bal.Update)
//
// Pushing whole sets keeps consumers simple: each set replaces the previous one, so a consumer
// never has to reconcile a stream of adds and removes, and a lost or reordered event can never
// leave it with a set no registry ever held.
//
// This package holds the sources that need no registry client: [Static] for a fixed list and
// [DNS] for A/AAAA and SRV records, refreshed when their TTL expires. Kubernetes
// EndpointSlices live in discovery/kubernetes, so that programs that do not use them never compile client-go.
package discovery

import (
	"context"
	"slices"
	"strings"

	"github.com/sluiceproxy/sluice"
)

// Source delivers the current endpoint set of one backend pool.
//
// Watch blocks until ctx ends and then returns ctx.Err(); it returns earlier only with an
// error that makes watching impossible (a misconfigured source). It calls update with the
// complete set each time the set changes, starting with the first set it knows, from one
// goroutine at a time: update is never called concurrently with itself for one Watch call.
// update must not retain the slice's backing array beyond the call except by copying; the
// source does not modify a slice after passing it, so consumers may keep it read-only.
// Sets are sorted by Addr and hold each Addr at most once.
type Source interface {
	Watch(ctx context.Context, update func([]sluice.Endpoint)) error
}

// Static is a Source whose set never changes. Its zero value is an empty pool.
type Static struct {
	// Endpoints is the pool, with its weights, zones and states.
	Endpoints []sluice.Endpoint
}

var _ Source = Static{}

// Watch pushes the endpoints once (sorted by Addr, duplicates dropped: the first of each
// Addr wins), then blocks until ctx ends and returns ctx.Err().
func (s Static) Watch(ctx context.Context, update func([]sluice.Endpoint)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	update(Normalize(slices.Clone(s.Endpoints)))
	<-ctx.Done()
	return ctx.Err()
}

// Normalize sorts eps by Addr and removes later endpoints whose Addr repeats an earlier one,
// in place, returning the shortened slice. Sources use it so that every set they push has one
// canonical order and can be compared with [slices.Equal].
func Normalize(eps []sluice.Endpoint) []sluice.Endpoint {
	slices.SortStableFunc(eps, func(a, b sluice.Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	return slices.CompactFunc(eps, func(a, b sluice.Endpoint) bool { return a.Addr == b.Addr })
}
