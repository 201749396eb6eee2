// Package pool wires one backend's chain — a discovery source, a health checker, a balancer
// and a proxy — into one [net/http.Handler] started by one [Pool.Run].
//
// A pool is what Envoy calls a cluster and NGINX an upstream block: the endpoints of one
// service and how requests reach them. Without this package an embedder starts the source and
// the checker in two goroutines, points the proxy's Observer at the checker, and drops their
// errors; with it:
//
//	api, err := pool.New(pool.Options{
//		Source: &discovery.DNS{Name: "api.default.svc.cluster.local", Port: 8080},
//		Policy: balancer.PeakEWMA{},
//		Health: healthcheck.Options{Probe: &healthcheck.HTTP{Path: "/healthz"}},
//	})
//	if err != nil {
//		return err // names the field that is wrong
//	}
//	go func() { errs <- api.Run(ctx) }() // the first real error of any stage
//	srv := proxy.NewServer(api, proxy.ServerOptions{})
//
// Every piece stays replaceable and reachable: Options takes any [discovery.Source] and any
// [balancer.Policy], and [Pool.Proxy], [Pool.Balancer] and [Pool.Checker] return the parts for
// anything the pool does not do itself. A program that needs only a balancer imports only
// package balancer and never compiles this one.
//
// Package pool stands above the packages it wires: it imports discovery, healthcheck,
// balancer and proxy, and none of them imports it.
package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/proxy"
)

// Options configures a Pool. Only Source is required.
type Options struct {
	// Source keeps the pool's endpoint set current: a [discovery.Static], a *[discovery.DNS],
	// an *endpointslices.Source (package discovery/endpointslices), or any
	// [discovery.Source]. Required.
	Source discovery.Source

	// Policy chooses the endpoint of every try. Nil means [balancer.RoundRobin].
	Policy balancer.Policy

	// Balancer configures the balancer: slow start, zone preference, panic threshold. Its zero
	// value is documented on [balancer.Options].
	Balancer balancer.Options

	// Health configures active probes and passive outlier detection. The zero value checks
	// nothing: endpoints get traffic as the source reports them.
	Health healthcheck.Options

	// Proxy forwards the requests, configured as the caller likes: protocol, retries,
	// timeouts, access log. Nil means a zero proxy.Proxy, whose defaults are documented on
	// it. The pool sets its Picker, which must be nil, and puts the health checker in front
	// of its Observer, which keeps receiving every outcome. The pool owns the Proxy from New
	// on: its fields must not change afterwards.
	Proxy *proxy.Proxy

	// TunnelGrace is how long an endpoint may be missing from Source's set before the
	// upgraded connections (WebSockets) still open to it are closed, with close 1001 "going
	// away" (see [proxy.Proxy.CloseTunnels]). Zero means 30s; negative means never.
	//
	// Requests stop going to an endpoint as soon as it leaves the set, but a tunnel stays
	// with the endpoint it was opened to, and an endpoint that leaves while its process keeps
	// running (a pod relabelled out of its Service, a scale-down whose pod lingers, a rollout
	// that drops it) would keep serving its WebSockets for as long as the peers like: old code,
	// a backend nobody routes to, connections nobody counts. kube-proxy removes the conntrack
	// entries of an endpoint that left for the same reason. The grace lets an endpoint that
	// blinks out of the set (a readiness flap, a re-created EndpointSlice) come back without
	// losing its tunnels. An endpoint that is terminating but still serving stays in the
	// set (as [sluice.Terminating]) and keeps its tunnels until its process ends them; one
	// that is not ready is out of the set. Use a negative value for a source whose sets are
	// not the whole pool, such as DNS answers that carry only some of the addresses.
	TunnelGrace time.Duration
}

// defaultTunnelGrace is Options.TunnelGrace's zero value.
const defaultTunnelGrace = 30 * time.Second

// Pool is one backend service: a discovery source feeding a health checker, which feeds a
// balancer, which a proxy picks from on every try, each try's outcome going back to the health
// checker's outlier detection. It is an [net/http.Handler] that forwards to the pool.
//
// Create it with [New] and start it with [Pool.Run]. Requests served before the first
// endpoint set arrives are answered 503 by the proxy; [Pool.Synced] says when it has arrived.
// A Pool is safe for concurrent use.
type Pool struct {
	src    discovery.Source
	policy balancer.Policy
	bal    *balancer.Balancer
	check  *healthcheck.Checker
	proxy  *proxy.Proxy

	running    atomic.Bool
	synced     chan struct{} // closed by the first set pushed to the balancer
	syncedOnce sync.Once

	grace time.Duration    // TunnelGrace with its default; negative for never
	now   func() time.Time // time.Now; tests replace it
	wake  chan struct{}    // capacity 1: an endpoint left the set, sweep soon

	// mu protects the fields below.
	mu      sync.Mutex
	present map[string]bool      // the addresses of Source's last set
	left    map[string]time.Time // when each address that left present left it
	proxies map[*proxy.Proxy]struct{}
}

// New returns a Pool for opts. Nothing runs until [Pool.Run]. The error names the field that
// is wrong, including fields of Balancer and Health.
func New(opts Options) (*Pool, error) {
	if opts.Source == nil {
		return nil, errors.New("pool: Options.Source is required")
	}
	policy := opts.Policy
	if policy == nil {
		policy = balancer.RoundRobin{}
	}
	bal, err := balancer.New(policy, opts.Balancer)
	if err != nil {
		return nil, fmt.Errorf("pool: Options.Balancer: %w", err)
	}
	check, err := healthcheck.New(opts.Health)
	if err != nil {
		return nil, fmt.Errorf("pool: Options.Health: %w", err)
	}
	px := opts.Proxy
	if px == nil {
		px = &proxy.Proxy{}
	}
	if px.Picker != nil {
		return nil, errors.New("pool: Options.Proxy.Picker must be nil: the pool's balancer picks")
	}
	px.Picker = bal
	grace := opts.TunnelGrace
	if grace == 0 {
		grace = defaultTunnelGrace
	}
	px.Observer = sluice.Observers(check, px.Observer)
	return &Pool{
		src:     opts.Source,
		policy:  policy,
		bal:     bal,
		check:   check,
		proxy:   px,
		synced:  make(chan struct{}),
		grace:   grace,
		now:     time.Now,
		wake:    make(chan struct{}, 1),
		present: map[string]bool{},
		left:    map[string]time.Time{},
		proxies: map[*proxy.Proxy]struct{}{px: {}},
	}, nil
}

// ServeHTTP forwards r to an endpoint of the pool; see [proxy.Proxy.ServeHTTP].
func (p *Pool) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.proxy.ServeHTTP(w, r) }

// Run watches the source and runs the health checks until ctx ends or a stage fails, pushing
// every endpoint set through the checker into the balancer, and closes the tunnels to
// endpoints that have left the set for Options.TunnelGrace. It returns the first real error
// of either stage — a source that cannot watch (a misconfigured DNS name, say) or a checker
// that cannot run — after stopping the other, wrapped with the stage's name; or ctx.Err()
// once ctx ends and both have returned. Run may be called once.
//
// When Run returns, the balancer keeps the last set it was given and the proxy keeps
// forwarding to it, unchecked. A program that drains on a signal therefore runs its pools on
// a context that outlives the signal (context.WithoutCancel of it, say) and cancels that one
// after [proxy.Drain] returns, so that endpoints are still checked while requests finish.
func (p *Pool) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("pool: Run called twice")
	}
	var sweeper sync.WaitGroup
	defer sweeper.Wait() // after cancel, which the next defer runs first
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := p.check.Update
	if p.grace > 0 {
		watch = func(eps []sluice.Endpoint) {
			p.noteSet(eps)
			p.check.Update(eps)
		}
		sweeper.Go(func() { p.sweep(ctx) })
	}

	type result struct {
		stage string
		err   error
	}
	results := make(chan result, 2)
	go func() { results <- result{"health checker", p.check.Run(ctx, p.update)} }()
	go func() { results <- result{"source", p.src.Watch(ctx, watch)} }()

	var first error
	for range 2 {
		r := <-results
		// An error after ctx ended is the stage winding down (ctx.Err(), or something that
		// wraps it); only an error while ctx was live is a reason the pool stopped. A stage
		// that returns nil early has nothing more to do: a source that pushed its one set
		// leaves it in effect.
		if r.err != nil && ctx.Err() == nil && first == nil {
			first = fmt.Errorf("pool: %s: %w", r.stage, r.err)
			cancel()
		}
	}
	if first != nil {
		return first
	}
	return ctx.Err()
}

// update is the checker's output: it feeds the balancer and marks the pool synced.
func (p *Pool) update(eps []sluice.Endpoint) {
	p.bal.Update(eps)
	p.syncedOnce.Do(func() { close(p.synced) })
}

// noteSet records which addresses left the set and when, and wakes the sweeper if any did.
func (p *Pool) noteSet(eps []sluice.Endpoint) {
	now := p.now()
	present := make(map[string]bool, len(eps))
	for _, ep := range eps {
		present[ep.Addr] = true
	}
	p.mu.Lock()
	gone := false
	for addr := range p.present {
		if !present[addr] {
			p.left[addr] = now
			gone = true
		}
	}
	for addr := range present {
		delete(p.left, addr) // back within the grace: its tunnels stay
	}
	p.present = present
	p.mu.Unlock()
	if gone {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// sweep closes the tunnels to endpoints that have been out of the set for the grace, until
// ctx ends.
func (p *Pool) sweep(ctx context.Context) {
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-timer.C:
		}
		if next := p.closeExpired(p.now()); next > 0 {
			timer.Reset(next)
		}
	}
}

// closeExpired closes, on every proxy of the pool, the tunnels to addresses that are not in
// the set and did not leave it less than the grace before now. It returns the time until the
// next address's grace ends, or 0 if none is pending.
func (p *Pool) closeExpired(now time.Time) (next time.Duration) {
	p.mu.Lock()
	expired := 0
	for addr, t := range p.left {
		if wait := t.Add(p.grace).Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		delete(p.left, addr)
		expired++
	}
	var proxies []*proxy.Proxy
	if expired > 0 {
		proxies = make([]*proxy.Proxy, 0, len(p.proxies))
		for px := range p.proxies {
			proxies = append(proxies, px)
		}
	}
	present, left := p.present, maps.Clone(p.left)
	p.mu.Unlock()
	keep := func(addr string) bool {
		_, waiting := left[addr]
		return present[addr] || waiting
	}
	for _, px := range proxies {
		px.CloseTunnels(keep)
	}
	return next
}

// Attach makes the pool close the tunnels of px to endpoints that left the set, as it closes
// its own proxy's: px is a further proxy picking from [Pool.Balancer] (another protocol, or
// other retry settings), which would otherwise keep them. [Pool.Detach] undoes it.
func (p *Pool) Attach(px *proxy.Proxy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxies[px] = struct{}{}
}

// Detach stops the pool closing px's tunnels; px was given to [Pool.Attach].
func (p *Pool) Detach(px *proxy.Proxy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if px != p.proxy {
		delete(p.proxies, px)
	}
}

// Synced returns a channel that is closed once the balancer has received its first endpoint
// set (possibly empty) from Run: a readiness probe, or a test, waits on it.
func (p *Pool) Synced() <-chan struct{} { return p.synced }

// Proxy returns the pool's proxy, for [proxy.Drain] and for [proxy.Proxy.Upgraded]. Its
// fields must not be changed.
func (p *Pool) Proxy() *proxy.Proxy { return p.proxy }

// Balancer returns the pool's balancer: a second proxy may pick from it too.
func (p *Pool) Balancer() *balancer.Balancer { return p.bal }

// Checker returns the pool's health checker: another forwarder's outcomes may be reported to
// its Observe.
func (p *Pool) Checker() *healthcheck.Checker { return p.check }
