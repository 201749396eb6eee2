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
	"net/http"
	"sync"
	"sync/atomic"

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
}

// Pool is one backend service: a discovery source feeding a health checker, which feeds a
// balancer, which a proxy picks from on every try, each try's outcome going back to the health
// checker's outlier detection. It is an [net/http.Handler] that forwards to the pool.
//
// Create it with [New] and start it with [Pool.Run]. Requests served before the first
// endpoint set arrives are answered 503 by the proxy; [Pool.Synced] says when it has arrived.
// A Pool is safe for concurrent use.
type Pool struct {
	src   discovery.Source
	bal   *balancer.Balancer
	check *healthcheck.Checker
	proxy *proxy.Proxy

	running    atomic.Bool
	synced     chan struct{} // closed by the first set pushed to the balancer
	syncedOnce sync.Once
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
	px.Observer = sluice.Observers(check, px.Observer)
	return &Pool{
		src:    opts.Source,
		bal:    bal,
		check:  check,
		proxy:  px,
		synced: make(chan struct{}),
	}, nil
}

// ServeHTTP forwards r to an endpoint of the pool; see [proxy.Proxy.ServeHTTP].
func (p *Pool) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.proxy.ServeHTTP(w, r) }

// Run watches the source and runs the health checks until ctx ends or a stage fails, pushing
// every endpoint set through the checker into the balancer. It returns the first real error
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type result struct {
		stage string
		err   error
	}
	results := make(chan result, 2)
	go func() { results <- result{"health checker", p.check.Run(ctx, p.update)} }()
	go func() { results <- result{"source", p.src.Watch(ctx, p.check.Update)} }()

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
