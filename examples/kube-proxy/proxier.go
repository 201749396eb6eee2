package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
)

// proxier keeps one listener for every Service port the Services ask for (see desired), each
// forwarding to a balancer over the port's endpoints.
//
// Informer handlers only kick Run, which recomputes the wanted listeners from the Service
// lister a moment later and changes only what differs: a listener whose address is still
// wanted is never closed, and when its route changes (the Service's traffic policy or
// affinity did) it is pointed at another balancer without dropping a connection. Endpoint
// changes never reach Run at all: each route's balancer follows its Service port's
// EndpointSlices on its own.
type proxier struct {
	cfg       *config
	factory   informers.SharedInformerFactory
	services  corelisters.ServiceLister
	synced    cache.InformerSynced
	endpoints *endpointslices.Watcher
	fwd       forwarding
	log       *slog.Logger
	kick      chan struct{} // capacity 1: "the Services changed"
	ready     atomic.Bool   // the first sync has been applied

	// The fields below belong to the goroutine running Run.
	ctx       context.Context
	wg        sync.WaitGroup
	pools     map[route]*pool
	listeners map[listenKey]*listener
	failed    map[listenKey]string // listeners that could not be opened, with the error logged
	notes     map[string]bool      // notes about Services logged, while they hold
}

// pool is the balancer of one route and the goroutine that feeds it.
type pool struct {
	route  route
	bal    *balancer.Balancer
	node   string
	cancel context.CancelFunc

	mu   sync.Mutex // protects subs and last
	subs map[forwarder]struct{}
	last []sluice.Endpoint
}

// update gives eps, narrowed to this node's endpoints for a Local route, to the balancer and
// to the pool's forwarders.
func (pl *pool) update(eps []sluice.Endpoint) {
	if pl.route.local {
		eps = onNode(eps, pl.node)
	}
	pl.bal.Update(eps)
	pl.mu.Lock()
	pl.last = eps
	subs := make([]forwarder, 0, len(pl.subs))
	for f := range pl.subs {
		subs = append(subs, f)
	}
	pl.mu.Unlock()
	for _, f := range subs {
		f.Prune(eps)
	}
}

// subscribe makes f get the pool's endpoint sets, starting with the current one.
func (pl *pool) subscribe(f forwarder) {
	pl.mu.Lock()
	pl.subs[f] = struct{}{}
	last := pl.last
	pl.mu.Unlock()
	f.Prune(last)
}

func (pl *pool) unsubscribe(f forwarder) {
	pl.mu.Lock()
	delete(pl.subs, f)
	pl.mu.Unlock()
}

// listener is one open socket, its forwarder, and the route its picker follows.
type listener struct {
	key    listenKey
	route  route
	picker *switchPicker
	fwd    forwarder
}

// switchPicker picks with the balancer of its listener's current route, so that a route can
// change under a listener without closing it.
type switchPicker struct {
	bal atomic.Pointer[balancer.Balancer]
}

func (s *switchPicker) Pick(info sluice.PickInfo) (sluice.PickResult, error) {
	return s.bal.Load().Pick(info)
}

// newProxier registers its informers with a new factory on client; Run starts it. The
// factory sees only the Services (and EndpointSlices, which the EndpointSlice controller
// labels as their Service) of this proxy, as kube-proxy's informers do.
func newProxier(cfg *config, client kubernetes.Interface, fwd forwarding) (*proxier, error) {
	selector := serviceSelector(cfg.ProxyName)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	eps, err := endpointslices.New(factory, endpointslices.Options{Coalesce: cfg.Coalesce, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	p := &proxier{
		cfg: cfg, factory: factory, endpoints: eps, fwd: fwd, log: cfg.Logger,
		services:  factory.Core().V1().Services().Lister(),
		kick:      make(chan struct{}, 1),
		pools:     make(map[route]*pool),
		listeners: make(map[listenKey]*listener),
		failed:    make(map[listenKey]string),
		notes:     make(map[string]bool),
	}
	inf := factory.Core().V1().Services().Informer()
	kick := func() {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(old, cur any) { kick() },
		DeleteFunc: func(any) { kick() },
	}); err != nil {
		return nil, err
	}
	p.synced = inf.HasSynced
	return p, nil
}

// Ready reports whether the first full sync has been applied: every listener the Services
// asked for then has been opened (or has failed and is being retried).
func (p *proxier) Ready() bool { return p.ready.Load() }

// Run starts the informers, opens the listeners once they have synced, and keeps them in
// step with the Services until ctx ends. Then it drains every listener for at most
// cfg.Drain and returns ctx.Err() once every goroutine it started has returned.
func (p *proxier) Run(ctx context.Context) error {
	p.ctx = ctx
	p.factory.Start(ctx.Done())
	defer p.factory.Shutdown()
	defer p.wg.Wait()
	if !cache.WaitForCacheSync(ctx.Done(), p.synced) {
		return ctx.Err()
	}
	if err := p.endpoints.WaitForSync(ctx); err != nil {
		return err
	}
	p.reconcile()
	p.ready.Store(true)
	p.log.Info("first sync applied", "listeners", len(p.listeners))

	var due, retry <-chan time.Time
	for {
		if len(p.failed) > 0 && retry == nil {
			retry = time.After(p.cfg.Retry)
		}
		select {
		case <-ctx.Done():
			p.shutdown()
			return ctx.Err()
		case <-p.kick:
			// Wait a little for the rest of a burst, but never longer than Debounce after
			// the first change, so that a stream of events cannot starve the update.
			if due == nil {
				due = time.After(p.cfg.Debounce)
			}
		case <-due:
			due = nil
			p.reconcile()
		case <-retry:
			retry = nil
			p.reconcile()
		}
	}
}

// reconcile opens, re-routes and closes listeners until they are what the Services ask for.
func (p *proxier) reconcile() {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		p.log.Error("list Services", "err", err)
		return
	}
	want, notes := desired(svcs, p.cfg.Listen)
	p.note(notes)

	for k, l := range p.listeners {
		if _, ok := want[k]; !ok {
			p.retire(l)
			delete(p.listeners, k)
		}
	}
	for k := range p.failed {
		if _, ok := want[k]; !ok {
			delete(p.failed, k)
		}
	}
	for k, r := range want {
		l := p.listeners[k]
		if l != nil && l.route == r {
			continue
		}
		pl, err := p.pool(r)
		if err != nil {
			p.log.Error("cannot make a balancer", "route", r, "err", err)
			continue
		}
		if l != nil {
			// The Service changed how this listener's traffic is routed (its traffic policy
			// or affinity): move the listener to the new route's balancer, keeping its
			// connections.
			p.pools[l.route].unsubscribe(l.fwd)
			l.route = r
			l.picker.bal.Store(pl.bal)
			pl.subscribe(l.fwd)
			p.log.Info("listener re-routed", "listener", k, "route", r)
			continue
		}
		l, err = p.listen(k, pl)
		if err != nil {
			if msg := err.Error(); p.failed[k] != msg {
				p.log.Error("cannot listen; retrying", "listener", k, "route", r, "err", err, "retry", p.cfg.Retry)
				p.failed[k] = msg
			}
			continue
		}
		delete(p.failed, k)
		p.listeners[k] = l
		p.log.Info("listening", "listener", k, "route", r)
	}

	used := make(map[route]bool, len(p.pools))
	for _, l := range p.listeners {
		used[l.route] = true
	}
	for r, pl := range p.pools {
		if !used[r] {
			pl.cancel()
			delete(p.pools, r)
		}
	}
}

// note logs each note once while it holds.
func (p *proxier) note(notes []string) {
	now := make(map[string]bool, len(notes))
	for _, n := range notes {
		now[n] = true
		if !p.notes[n] {
			p.log.Warn("Service port not served", "reason", n)
		}
	}
	p.notes = now
}

// pool returns the pool of r, starting it when there is none.
func (p *proxier) pool(r route) (*pool, error) {
	if pl := p.pools[r]; pl != nil {
		return pl, nil
	}
	policy := p.cfg.Policy
	if r.affinity > 0 {
		policy = balancer.ClientIPAffinity{Timeout: r.affinity, Fallback: policy}
	}
	opts := balancer.Options{}
	if !r.local {
		// kube-proxy's topology for cluster traffic: EndpointSlice hints for this node or
		// zone, and no spill-over on load. Local traffic has no topology.
		opts = balancer.Options{Zone: p.cfg.Zone, Node: p.cfg.NodeName, HintsOnly: true, ZoneSpillFactor: -1}
	}
	opts.Now = p.cfg.Now
	bal, err := balancer.New(policy, opts)
	if err != nil {
		return nil, err
	}
	src := p.endpoints.Source(r.svc.namespace, r.svc.name, r.svc.sourcePort())
	ctx, cancel := context.WithCancel(p.ctx)
	pl := &pool{route: r, bal: bal, node: p.cfg.NodeName, cancel: cancel, subs: make(map[forwarder]struct{})}
	// The informer has synced: start from its cache, so that a new listener has endpoints
	// from its first connection; Watch then follows the changes.
	pl.update(src.Endpoints())
	p.wg.Go(func() { src.Watch(ctx, pl.update) })
	p.pools[r] = pl
	return pl, nil
}

// listen opens the socket of k and starts forwarding its traffic through pl's balancer.
func (p *proxier) listen(k listenKey, pl *pool) (*listener, error) {
	l := &listener{key: k, route: pl.route, picker: &switchPicker{}}
	l.picker.bal.Store(pl.bal)
	var lc net.ListenConfig
	var err error
	switch k.protocol {
	case corev1.ProtocolTCP:
		ln, lerr := lc.Listen(p.ctx, "tcp", k.addr)
		if lerr != nil {
			return nil, lerr
		}
		if l.fwd, err = p.fwd.TCP(ln, l.picker); err != nil {
			ln.Close()
			return nil, err
		}
	case corev1.ProtocolUDP:
		pc, lerr := lc.ListenPacket(p.ctx, "udp", k.addr)
		if lerr != nil {
			return nil, lerr
		}
		if l.fwd, err = p.fwd.UDP(pc.(*net.UDPConn), l.picker); err != nil {
			pc.Close()
			return nil, err
		}
	default:
		return nil, fmt.Errorf("protocol %s is not proxied", k.protocol)
	}
	pl.subscribe(l.fwd)
	p.wg.Go(func() {
		if err := l.fwd.Serve(); err != nil {
			p.log.Error("listener failed", "listener", k, "err", err)
		}
	})
	return l, nil
}

// retire closes l's socket. Its TCP connections go on until they end, as kube-proxy leaves
// a removed Service's established connections to conntrack, or until the proxier stops;
// its UDP flows end at once.
func (p *proxier) retire(l *listener) {
	p.pools[l.route].unsubscribe(l.fwd)
	p.log.Info("listener closed", "listener", l.key, "route", l.route)
	p.wg.Go(func() { l.fwd.Drain(p.ctx) })
}

// shutdown drains every listener at once, for at most cfg.Drain, and stops the pools.
func (p *proxier) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Drain)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range p.listeners {
		wg.Go(func() { l.fwd.Drain(ctx) })
	}
	wg.Wait()
	for _, pl := range p.pools {
		pl.cancel()
	}
}
