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
// EndpointSlices live in discovery/endpointslices, so that programs that do not use them never compile client-go.
//
// # Hooks
//
// Every source reports its results through [Hooks] (a field of [Static] and [DNS], of
// endpointslices.Options): an [UpdateEvent] after each lookup or rebuild with the endpoints
// by state, whether the set changed and was pushed, whether the source has synced (pushed a
// first set), and the error of a failed lookup, while the last good set stays in force.
// Hooks run on the Watch goroutine, never under a lock; they must be safe for concurrent
// use (several sources may share them) and must not block. [JoinHooks] lets several
// listeners share them.
package discovery

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
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
	// Hooks receive the source's one update (see [Hooks]).
	Hooks Hooks
}

var _ Source = Static{}

// ParseStatic parses a comma-separated list of host:port addresses ("10.0.0.1:8080,
// backend.local:80, [2001:db8::1]:443"), as a flag or an environment variable gives them,
// into a Static source of weight-1 endpoints. Spaces around an address are ignored. The
// error names the entry that is wrong: an empty one, a missing or non-numeric port, a port
// outside 1–65535, an empty host or one with spaces or control characters.
func ParseStatic(list string) (Static, error) {
	var s Static
	for i, addr := range strings.Split(list, ",") {
		addr = strings.TrimSpace(addr)
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return Static{}, fmt.Errorf("discovery: address %d %q is not host:port: %w", i+1, addr, err)
		}
		if host == "" {
			return Static{}, fmt.Errorf("discovery: address %d %q has no host", i+1, addr)
		}
		if strings.IndexFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return Static{}, fmt.Errorf("discovery: address %d %q: the host has spaces or control characters", i+1, addr)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return Static{}, fmt.Errorf("discovery: address %d %q: port must be a number from 1 to 65535", i+1, addr)
		}
		s.Endpoints = append(s.Endpoints, sluice.Endpoint{Addr: addr})
	}
	return s, nil
}

// Watch pushes the endpoints once (sorted by Addr, duplicates dropped: the first of each
// Addr wins), then blocks until ctx ends and returns ctx.Err().
func (s Static) Watch(ctx context.Context, update func([]sluice.Endpoint)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	eps := Normalize(slices.Clone(s.Endpoints))
	update(eps)
	if s.Hooks.Update != nil {
		s.Hooks.Update(UpdateEvent{Source: "static", Changed: true, Synced: true}.Count(eps))
	}
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
