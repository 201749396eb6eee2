// Package endpointslices is a discovery source that follows Kubernetes EndpointSlices
// (discovery.k8s.io/v1) through a client-go informer.
//
// One [Watcher] shares one EndpointSlice informer — one list and one watch against the API
// server — among any number of Services. Each Service's [Source] merges every slice labelled
// kubernetes.io/service-name=NAME in the Service's namespace into one endpoint set, in the
// manner of kube-proxy's endpoint slice cache:
//
//   - endpoints that appear in two slices while the EndpointSlice controller moves them are
//     reported once (a ready copy wins over a terminating one);
//   - the port is resolved in each slice separately, by name or number, because slices of one
//     Service may carry different target ports during a rollout; it is a TCP port unless the
//     Source asks for UDP or SCTP ([Watcher.Source]);
//   - IPv4 and IPv6 slices are used; the first address of each endpoint is dialled, written
//     canonically, and an address that does not fit its slice's type is skipped;
//   - FQDN slices are ignored, as kube-proxy ignores them, unless [Options.FQDN] turns them
//     on (see below);
//   - an endpoint whose ready condition is true or unset is [sluice.Ready]; one that is not
//     ready but serving and terminating is [sluice.Terminating], which balancers use only while
//     no ready endpoint exists, so connections drain during a rollout; any other is dropped;
//   - zone, node name, hints.forZones and hints.forNodes are copied to Endpoint.Zone, Node,
//     ForZones and ForNodes.
//
// # Topology
//
// A Service's trafficDistribution (PreferSameZone, its older name PreferClose, and
// PreferSameNode) and the topology-mode annotation are not read here: the EndpointSlice
// controller implements them by writing hints.forZones and hints.forNodes, and kube-proxy
// honours the hints, not the Service field. Sluice does the same: a balancer given its own
// zone or node (package balancer) prefers the endpoints hinted for it. Following kube-proxy,
// hints are used only when every ready endpoint carries them; terminating endpoints, which
// the controller never hints, do not count.
//
// # FQDN slices
//
// An FQDN slice's addresses are only checked to be DNS names by the API server, so a slice
// any namespace user can write may hold "127.0.0.1" or "169.254.169.254", which the API
// server refuses in IPv4 slices: a proxy that dialled them would reach its own loopback or
// the cloud's metadata service. FQDN slices are therefore off by default (each ignored slice
// is logged once). With [Options.FQDN] set, a Source resolves each name itself and pushes IP
// endpoints: IP literals in FQDN slices are never used, names are re-resolved every
// FQDNOptions.Refresh, and addresses a name resolves to are used only when
// FQDNOptions.Allow (by default [PublicAddr]) accepts them, which keeps loopback,
// link-local, unspecified, multicast and cloud metadata addresses out.
//
// # Application protocol
//
// [Source.AppProtocol] reports the matched port's appProtocol (kubernetes.io/h2c,
// kubernetes.io/ws, kubernetes.io/wss, http, https, grpc, ...), so that the protocol spoken to
// the endpoints can follow the Service port, as the Gateway API specifies.
//
// Bursts of changes (a rollout of hundreds of pods, a re-list after a watch expired) are
// coalesced: after a change, a Source waits [Options.Coalesce] (100 ms by default) before it
// builds and pushes the next set, so subscribers see at most one set per interval and each
// set is a consistent snapshot of the informer's cache. When the API server goes away the
// informer keeps its cache and re-lists when it comes back, so the last good set survives
// restarts and watch expiry.
//
// A Source pushes nothing until the informer has synced its first full list: a proxy can
// call [Watcher.WaitForSync] before it starts serving.
//
// # Hooks and Stats
//
// [Options.Hooks] take the [discovery.Hooks] every discovery source uses: after each rebuild
// a Source reports a [discovery.UpdateEvent] with its endpoints by state, whether the set
// changed and was pushed, and a failed FQDN lookup. Hooks run on the Source's Watch
// goroutine, never under a lock; Sources call them concurrently, so they must be safe for
// concurrent use, and must not block. [Watcher.Stats] reports whether the informer has
// synced and how many Services and Sources are being watched.
package endpointslices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery"
)

// serviceIndex is the name of the informer index that maps "namespace/service" to slices.
// It is specific to sluice so that it never collides with an embedder's own indexes.
const serviceIndex = "sluice.discovery/service"

// Options configures a Watcher. The zero value is ready to use.
type Options struct {
	// Coalesce is how long a Source waits after a change before pushing the next set; it
	// is also the shortest time between two pushes. Zero means 100 ms.
	Coalesce time.Duration

	// Namespace restricts the informer to one namespace when the Watcher builds its own
	// (NewForClient). Empty means all namespaces. With New, scope the factory instead
	// (informers.WithNamespace).
	Namespace string

	// Logger receives notes about slices that cannot be used. Nil means slog.Default().
	Logger *slog.Logger

	// FQDN, when not nil, turns on FQDN EndpointSlices, which are ignored by default (see the
	// package documentation for why).
	FQDN *FQDNOptions

	// Hooks receive an update each time a Source rebuilds its set (see [discovery.Hooks]):
	// Source "endpointslices", Name "namespace/name" (with ":port" when a port was asked
	// for), Err the last failed lookup of an FQDN name in that rebuild.
	Hooks discovery.Hooks
}

// FQDNOptions configures how a Source uses FQDN EndpointSlices. The zero value is ready to
// use.
//
// A Source resolves every name of its Service's FQDN slices in its Watch goroutine, one name
// after another, and pushes an endpoint for each accepted address a name resolves to, with
// the zone, node, hints and state of the slice endpoint. A name that fails to resolve keeps
// the addresses of its last good answer; a name never resolved contributes nothing.
type FQDNOptions struct {
	// Resolver looks names up. Nil means net.DefaultResolver. Only LookupIPAddr is used.
	Resolver discovery.Resolver

	// Refresh is how often every name is resolved again; each lookup is also given at
	// most Refresh to answer. A name that appears in a slice is resolved when the Source sees
	// it. Zero means 30 seconds.
	Refresh time.Duration

	// Allow reports whether an address a name resolved to may be dialled. Nil means
	// PublicAddr. Allow cannot let an IP literal written in an FQDN slice through: those are
	// never used. To allow one more address, wrap PublicAddr:
	//
	//	Allow: func(a netip.Addr) bool { return a == sidecar || endpointslices.PublicAddr(a) }
	Allow func(netip.Addr) bool
}

// metadataAddrs are cloud metadata services that are not link-local: AWS's IPv6 address and
// Alibaba Cloud's.
var metadataAddrs = [...]netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
}

// PublicAddr reports whether a is an address a name in an FQDN slice may resolve to by
// default: not loopback, link-local (169.254.0.0/16, fe80::/10, where cloud metadata services
// such as 169.254.169.254 live), unspecified, multicast, or another known metadata address
// (fd00:ec2::254, 100.100.100.200). IPv4-mapped IPv6 addresses are judged as IPv4. Private
// addresses are allowed: pods and in-cluster services use them.
func PublicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	a = a.WithZone("")
	return !slices.Contains(metadataAddrs[:], a)
}

// Watcher follows the EndpointSlices of many Services through one shared informer.
// Create it with New or NewForClient; get one Source per Service with Source.
type Watcher struct {
	informer     cache.SharedIndexInformer
	registration cache.ResourceEventHandlerRegistration
	factory      informers.SharedInformerFactory
	ownsFactory  bool // NewForClient made factory: Run shuts it down
	coalesce     time.Duration
	log          *slog.Logger
	fqdn         *fqdnConfig // nil: FQDN slices are ignored
	onUpdate     func(discovery.UpdateEvent)

	mu   sync.Mutex // mu protects subs
	subs map[string]map[*subscriber]struct{}
}

// fqdnConfig is FQDNOptions with defaults filled in.
type fqdnConfig struct {
	resolver discovery.Resolver
	refresh  time.Duration
	allow    func(netip.Addr) bool
}

// subscriber is one running Source.Watch; notify holds at most one pending wake-up.
type subscriber struct{ notify chan struct{} }

// New returns a Watcher that uses factory's EndpointSlice informer, adding an index and an
// event handler to it. The embedder starts the factory (factory.Start) as usual, or calls
// Run, which does. The factory's namespace and tweak options scope what the Watcher sees.
// New fails if the informer has already started and lacks sluice's index.
func New(factory informers.SharedInformerFactory, opts Options) (*Watcher, error) {
	if factory == nil {
		return nil, errors.New("endpointslices: factory is required")
	}
	return newWatcher(factory, false, opts)
}

// NewForClient returns a Watcher with its own informer factory on client, scoped to
// opts.Namespace and to slices that carry the kubernetes.io/service-name label. Run starts
// it; Sources push nothing until Run is running.
func NewForClient(client kubernetes.Interface, opts Options) (*Watcher, error) {
	if client == nil {
		return nil, errors.New("endpointslices: client is required")
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName }))
	return newWatcher(factory, true, opts)
}

func newWatcher(factory informers.SharedInformerFactory, owned bool, opts Options) (*Watcher, error) {
	if opts.Coalesce < 0 {
		return nil, fmt.Errorf("endpointslices: Options.Coalesce must not be negative, got %v", opts.Coalesce)
	}
	informer := factory.Discovery().V1().EndpointSlices().Informer()
	w := &Watcher{
		informer:    informer,
		factory:     factory,
		ownsFactory: owned,
		coalesce:    opts.Coalesce,
		log:         opts.Logger,
		onUpdate:    opts.Hooks.Update,
		subs:        make(map[string]map[*subscriber]struct{}),
	}
	if w.coalesce == 0 {
		w.coalesce = 100 * time.Millisecond
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	if f := opts.FQDN; f != nil {
		if f.Refresh < 0 {
			return nil, fmt.Errorf("endpointslices: Options.FQDN.Refresh must not be negative, got %v", f.Refresh)
		}
		w.fqdn = &fqdnConfig{resolver: f.Resolver, refresh: f.Refresh, allow: f.Allow}
		if w.fqdn.resolver == nil {
			w.fqdn.resolver = net.DefaultResolver
		}
		if w.fqdn.refresh == 0 {
			w.fqdn.refresh = 30 * time.Second
		}
		if w.fqdn.allow == nil {
			w.fqdn.allow = PublicAddr
		}
	}
	// Several Watchers may share one factory: add the index only once.
	if _, ok := informer.GetIndexer().GetIndexers()[serviceIndex]; !ok {
		if err := informer.AddIndexers(cache.Indexers{serviceIndex: indexByService}); err != nil {
			return nil, fmt.Errorf("endpointslices: add index to the EndpointSlice informer: %w", err)
		}
	}
	reg, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.changed(obj) },
		UpdateFunc: func(old, obj any) { w.changed(old); w.changed(obj) },
		DeleteFunc: func(obj any) { w.changed(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("endpointslices: add event handler: %w", err)
	}
	w.registration = reg
	return w, nil
}

// Run starts the informer factory the Watcher uses (factory.Start is idempotent) and blocks
// until ctx ends, then shuts the factory down if NewForClient created it, and returns
// ctx.Err(). With New, calling Run is optional when the embedder starts the factory itself.
func (w *Watcher) Run(ctx context.Context) error {
	w.factory.Start(ctx.Done())
	if w.ownsFactory {
		defer w.factory.Shutdown()
	}
	<-ctx.Done()
	return ctx.Err()
}

// Stats is a snapshot of a [Watcher]'s state, for gauges and dashboards.
type Stats struct {
	// Synced reports whether the informer has delivered its first full list (HasSynced).
	Synced bool
	// Services is the number of Services with a Source watching, and Sources the number of
	// Source.Watch calls running.
	Services, Sources int
}

// Stats returns a snapshot of the Watcher's state. It is safe for concurrent use.
func (w *Watcher) Stats() Stats {
	st := Stats{Synced: w.HasSynced()}
	w.mu.Lock()
	st.Services = len(w.subs)
	for _, m := range w.subs {
		st.Sources += len(m)
	}
	w.mu.Unlock()
	return st
}

// HasSynced reports whether the informer has delivered its first full list to the Watcher.
func (w *Watcher) HasSynced() bool { return w.registration.HasSynced() }

// WaitForSync blocks until HasSynced or ctx ends, returning ctx.Err() in the latter case.
func (w *Watcher) WaitForSync(ctx context.Context) error {
	if w.HasSynced() {
		return nil
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !w.HasSynced() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// Source returns the Source for the Service namespace/name. port selects the Service port:
// a name matches the slice port of that name; a number matches the slice port with that
// (target) port number, since EndpointSlices carry target ports; empty matches the unnamed
// port, or a slice's only port. Ports are TCP ports unless port ends in "/UDP" or "/SCTP"
// ("dns/UDP", "53/UDP", "/UDP" for the unnamed or only UDP port), the protocol written as
// Kubernetes writes it; an L4 proxy asks for each Service port with its protocol, an HTTP
// proxy never needs the suffix. Slices without a matching port contribute nothing.
func (w *Watcher) Source(namespace, name, port string) *Source {
	return &Source{w: w, key: namespace + "/" + name, port: port}
}

// Source is the endpoint set of one Service. It implements discovery.Source.
type Source struct {
	w    *Watcher
	key  string
	port string
}

var _ discovery.Source = (*Source)(nil)

// Watch waits for the informer to sync, pushes the Service's set (possibly empty), and then
// pushes a new set, at most once per Options.Coalesce, whenever the Service's slices change
// what it contains, or the port's appProtocol (then with the same set, so that a subscriber
// that reads AppProtocol in update sees every change). With Options.FQDN set, it also
// resolves the names of FQDN slices, and resolves them again every FQDNOptions.Refresh.
// It returns ctx.Err() when ctx ends.
func (s *Source) Watch(ctx context.Context, update func([]sluice.Endpoint)) error {
	sub := &subscriber{notify: make(chan struct{}, 1)}
	s.w.subscribe(s.key, sub)
	defer s.w.unsubscribe(s.key, sub)

	if err := s.w.WaitForSync(ctx); err != nil {
		return err
	}
	v := &view{src: s, names: make(map[string]*resolution), logged: make(map[string]bool)}
	last, lastProto := v.build(ctx, false), s.AppProtocol()
	update(last)
	s.report(v, last, true)

	timer := time.NewTimer(0)
	if !timer.Stop() {
		<-timer.C
	}
	defer timer.Stop()
	var refresh <-chan time.Time
	if s.w.fqdn != nil {
		tick := time.NewTicker(s.w.fqdn.refresh)
		defer tick.Stop()
		refresh = tick.C
	}
	for {
		again := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-refresh:
			again = true
		case <-sub.notify:
			// Let the burst land, then take one snapshot of everything that arrived.
			timer.Reset(s.w.coalesce)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
			select { // the snapshot below covers any change signalled while waiting
			case <-sub.notify:
			default:
			}
		}
		eps, proto := v.build(ctx, again), s.AppProtocol()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		changed := !slices.Equal(eps, last) || proto != lastProto
		if changed {
			last, lastProto = eps, proto
			update(eps)
		}
		s.report(v, last, changed)
	}
}

// report calls Hooks.Update, if set, after a rebuild.
func (s *Source) report(v *view, eps []sluice.Endpoint, changed bool) {
	if s.w.onUpdate == nil {
		return
	}
	name := s.key
	if s.port != "" {
		name += ":" + s.port
	}
	s.w.onUpdate(discovery.UpdateEvent{Source: "endpointslices", Name: name, Changed: changed, Synced: true, Err: v.err}.Count(eps))
}

// Endpoints returns the Service's current set from the informer's cache, sorted by Addr.
// It does not wait for the informer to sync, and resolves no names: endpoints of FQDN
// slices come only from Watch.
func (s *Source) Endpoints() []sluice.Endpoint {
	return merge(s.slices(), s.port, nil)
}

// AppProtocol returns the appProtocol of the Source's port (kubernetes.io/h2c,
// kubernetes.io/ws, kubernetes.io/wss, http, https, grpc, ...) from the informer's cache, or
// "" when the port has none or no slice has the port. Only slices the Source uses count:
// IPv4 and IPv6 ones, and FQDN ones with Options.FQDN set. The EndpointSlice controller
// copies appProtocol from the Service port to every slice, so slices disagree only while it
// rewrites them after the Service changed; AppProtocol then returns the value most slices
// carry, a tie going to the value that sorts first ("" before any name), so that every
// caller sees the same answer from the same cache.
func (s *Source) AppProtocol() string {
	votes := make(map[string]int)
	for _, es := range s.slices() {
		if !s.w.uses(es.AddressType) {
			continue
		}
		if p, ok := slicePort(es, s.port); ok {
			proto := ""
			if p.AppProtocol != nil {
				proto = *p.AppProtocol
			}
			votes[proto]++
		}
	}
	best, n := "", 0
	for proto, c := range votes {
		if c > n || c == n && proto < best {
			best, n = proto, c
		}
	}
	return best
}

// uses reports whether slices of address type typ contribute endpoints.
func (w *Watcher) uses(typ discoveryv1.AddressType) bool {
	return typ == discoveryv1.AddressTypeIPv4 || typ == discoveryv1.AddressTypeIPv6 ||
		typ == discoveryv1.AddressTypeFQDN && w.fqdn != nil
}

// slices returns the Service's slices in the informer's cache.
func (s *Source) slices() []*discoveryv1.EndpointSlice {
	objs, err := s.w.informer.GetIndexer().ByIndex(serviceIndex, s.key)
	if err != nil {
		s.w.log.Error("endpointslices: read EndpointSlice index", "service", s.key, "err", err)
		return nil
	}
	list := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			list = append(list, es)
		}
	}
	return list
}

// view is the state one Source.Watch keeps between sets: the names of FQDN slices it has
// resolved, and what it has already logged, so that each note appears once.
type view struct {
	src    *Source
	names  map[string]*resolution // by name, for the names the Service's slices hold now
	logged map[string]bool        // notes already logged, for the slices present now
	err    error                  // the last failed lookup of the last build, for Hooks
}

// resolution is the last good answer for one name.
type resolution struct {
	addrs   []netip.Addr // accepted addresses, sorted
	refused string       // addresses Allow refused, for logging changes only
}

// build returns the Service's set, resolving the names of FQDN slices it has not resolved
// yet, or every name when again is true.
func (v *view) build(ctx context.Context, again bool) []sluice.Endpoint {
	w := v.src.w
	list := v.src.slices()
	seen := make(map[string]bool)
	note := func(key, msg string, es *discoveryv1.EndpointSlice, args ...any) {
		seen[key] = true
		if !v.logged[key] {
			v.logged[key] = true
			w.log.Warn(msg, append([]any{"service", v.src.key, "slice", es.Name}, args...)...)
		}
	}
	var resolve func(string) []netip.Addr
	if w.fqdn != nil {
		resolve = func(name string) []netip.Addr {
			if r := v.names[name]; r != nil {
				return r.addrs
			}
			return nil
		}
	}
	present := make(map[string]bool)
	v.err = nil
	for _, es := range list {
		if es.AddressType != discoveryv1.AddressTypeFQDN {
			continue
		}
		key := string(es.UID) + "/" + es.Name
		if w.fqdn == nil {
			note(key, "endpointslices: ignoring an FQDN EndpointSlice; set Options.FQDN to use FQDN slices", es)
			continue
		}
		if _, ok := slicePort(es, v.src.port); !ok {
			continue
		}
		for _, e := range es.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			name := e.Addresses[0]
			if !fqdnName(name) {
				note(key+"/"+name, "endpointslices: ignoring an FQDN slice address that is an IP address or not a DNS name", es, "address", name)
				continue
			}
			present[name] = true
		}
	}
	for key := range v.logged { // forget slices that are gone, so that the map stays small
		if !seen[key] {
			delete(v.logged, key)
		}
	}
	for name := range v.names {
		if !present[name] {
			delete(v.names, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(present)) {
		if v.names[name] == nil || again {
			v.lookup(ctx, name)
		}
	}
	return merge(list, v.src.port, resolve)
}

// lookup resolves name, keeping the addresses Allow accepts; after a failure the last good
// answer stays.
func (v *view) lookup(ctx context.Context, name string) {
	cfg := v.src.w.fqdn
	lctx, cancel := context.WithTimeout(ctx, cfg.refresh)
	defer cancel()
	ips, err := cfg.resolver.LookupIPAddr(lctx, name)
	if err != nil {
		if ctx.Err() == nil {
			v.err = fmt.Errorf("endpointslices: resolve %s: %w", name, err)
			v.src.w.log.Warn("endpointslices: resolve FQDN endpoint", "service", v.src.key, "name", name, "err", err)
		}
		return
	}
	r := &resolution{}
	var refused []string
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip.IP)
		if !ok {
			continue
		}
		a = a.Unmap().WithZone(ip.Zone)
		if !cfg.allow(a) {
			refused = append(refused, a.String())
			continue
		}
		r.addrs = append(r.addrs, a)
	}
	slices.SortFunc(r.addrs, netip.Addr.Compare)
	r.addrs = slices.Compact(r.addrs)
	r.refused = strings.Join(refused, ",")
	if old := v.names[name]; r.refused != "" && (old == nil || old.refused != r.refused) {
		v.src.w.log.Warn("endpointslices: FQDN endpoint resolved to addresses that are not allowed; dropping them",
			"service", v.src.key, "name", name, "addresses", r.refused)
	}
	v.names[name] = r
}

// fqdnName reports whether addr, from an FQDN slice, is a DNS name worth resolving: a valid
// name that is not an IP address in any spelling a resolver might accept ("127.0.0.1",
// "127.1", "0x7f.1"), which the last label being a number catches, since no top-level
// domain is numeric.
func fqdnName(addr string) bool {
	if len(validation.IsDNS1123Subdomain(addr)) > 0 {
		return false
	}
	if _, err := netip.ParseAddr(addr); err == nil {
		return false
	}
	last := addr[strings.LastIndexByte(addr, '.')+1:]
	if _, err := strconv.ParseUint(last, 0, 64); err == nil {
		return false
	}
	return true
}

func (w *Watcher) subscribe(key string, sub *subscriber) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.subs[key]
	if m == nil {
		m = make(map[*subscriber]struct{})
		w.subs[key] = m
	}
	m[sub] = struct{}{}
}

func (w *Watcher) unsubscribe(key string, sub *subscriber) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.subs[key], sub)
	if len(w.subs[key]) == 0 {
		delete(w.subs, key)
	}
}

// changed wakes the subscribers of obj's Service. It runs on the informer's goroutine and
// never blocks: a subscriber with a wake-up already pending needs no second one.
func (w *Watcher) changed(obj any) {
	key, ok := serviceKey(obj)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for sub := range w.subs[key] {
		select {
		case sub.notify <- struct{}{}:
		default:
		}
	}
}

// serviceKey returns "namespace/service" for an EndpointSlice, unwrapping the tombstone an
// informer delivers when it missed a delete.
func serviceKey(obj any) (string, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return "", false
	}
	svc := es.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return "", false
	}
	return es.Namespace + "/" + svc, true
}

func indexByService(obj any) ([]string, error) {
	if key, ok := serviceKey(obj); ok {
		return []string{key}, nil
	}
	return nil, nil
}

// Merge builds the endpoint set of one Service from its slices, resolving port in each
// slice as Watcher.Source describes. It is exported for embedders that keep their own
// caches; the result is sorted by Addr with each Addr once. FQDN slices are ignored: using
// them takes the name resolution and address checks Options.FQDN gives a Source.
func Merge(eslices []*discoveryv1.EndpointSlice, port string) []sluice.Endpoint {
	return merge(eslices, port, nil)
}

// merge is Merge, with FQDN slices when resolve is not nil: resolve returns the accepted
// addresses of a name that fqdnName accepts.
func merge(eslices []*discoveryv1.EndpointSlice, port string, resolve func(name string) []netip.Addr) []sluice.Endpoint {
	n := 0
	for _, es := range eslices {
		if es != nil {
			n += len(es.Endpoints)
		}
	}
	eps := make([]sluice.Endpoint, 0, n)
	for _, es := range eslices {
		if es == nil || es.AddressType == discoveryv1.AddressTypeFQDN && resolve == nil {
			continue
		}
		p, ok := slicePort(es, port)
		if !ok {
			continue
		}
		num := uint16(*p.Port)
		ps := strconv.Itoa(int(num))
		for i := range es.Endpoints {
			e := &es.Endpoints[i]
			if len(e.Addresses) == 0 {
				continue
			}
			var hosts []netip.Addr
			host := ""
			if es.AddressType == discoveryv1.AddressTypeFQDN {
				if !fqdnName(e.Addresses[0]) {
					continue
				}
				if hosts = resolve(e.Addresses[0]); len(hosts) == 0 {
					continue
				}
			} else if host, ok = endpointHost(es.AddressType, e.Addresses[0]); !ok {
				continue
			}
			c := e.Conditions
			ready := c.Ready == nil || *c.Ready
			serving := c.Serving == nil || *c.Serving
			terminating := c.Terminating != nil && *c.Terminating
			var state sluice.State
			switch {
			case ready:
				state = sluice.Ready
			case serving && terminating:
				state = sluice.Terminating
			default:
				continue
			}
			ep := sluice.Endpoint{State: state}
			if e.Zone != nil {
				ep.Zone = *e.Zone
			}
			if e.NodeName != nil {
				ep.Node = *e.NodeName
			}
			if e.Hints != nil {
				ep.ForZones = joinNames(e.Hints.ForZones, func(z discoveryv1.ForZone) string { return z.Name })
				ep.ForNodes = joinNames(e.Hints.ForNodes, func(n discoveryv1.ForNode) string { return n.Name })
			}
			if hosts == nil {
				ep.Addr = net.JoinHostPort(host, ps)
				eps = append(eps, ep)
			}
			for _, a := range hosts {
				ep.Addr = netip.AddrPortFrom(a, num).String()
				eps = append(eps, ep)
			}
		}
	}
	// Sort so that, for one Addr, a Ready copy comes first and is the one kept.
	slices.SortFunc(eps, func(a, b sluice.Endpoint) int {
		if c := strings.Compare(a.Addr, b.Addr); c != 0 {
			return c
		}
		return int(a.State) - int(b.State)
	})
	return slices.CompactFunc(eps, func(a, b sluice.Endpoint) bool { return a.Addr == b.Addr })
}

// joinNames returns the names of hints, comma-separated, as Endpoint.ForZones and ForNodes
// hold them.
func joinNames[H any](hints []H, name func(H) string) string {
	switch len(hints) {
	case 0:
		return ""
	case 1:
		return name(hints[0])
	}
	names := make([]string, len(hints))
	for i, h := range hints {
		names[i] = name(h)
	}
	return strings.Join(names, ",")
}

// endpointHost returns the host to dial for an endpoint's address in an IP slice of type
// typ: an IP address of the slice's family in canonical form, so that one endpoint written
// two ways is still one endpoint. The API server validates addresses, but Merge also serves
// embedders' own caches, so an address it would reject, or another address type, yields
// nothing rather than an Addr no dialer can use.
func endpointHost(typ discoveryv1.AddressType, addr string) (string, bool) {
	switch typ {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		a, err := netip.ParseAddr(addr)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.Is4() != (typ == discoveryv1.AddressTypeIPv4) {
			return "", false
		}
		return a.String(), true
	}
	return "", false
}

// slicePort finds the port for want in es: by name, by number, or the unnamed/only port when
// want is empty, as Watcher.Source describes. Only ports of want's protocol (TCP, which
// ports without a protocol are, unless want ends in "/UDP" or "/SCTP") in 1..65535 match;
// the port returned has a non-nil Port.
func slicePort(es *discoveryv1.EndpointSlice, want string) (discoveryv1.EndpointPort, bool) {
	proto := "TCP"
	if i := strings.LastIndexByte(want, '/'); i >= 0 {
		want, proto = want[:i], want[i+1:]
	}
	num, numErr := strconv.ParseUint(want, 10, 16)
	n := 0 // ports of the protocol
	var only discoveryv1.EndpointPort
	for _, p := range es.Ports {
		pp := "TCP"
		if p.Protocol != nil {
			pp = string(*p.Protocol)
		}
		if pp != proto || p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue
		}
		n++
		only = p
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		switch {
		case want == "" && name == "":
			return p, true
		case want != "" && name == want:
			return p, true
		case numErr == nil && uint64(*p.Port) == num:
			return p, true
		}
	}
	if want == "" && n == 1 {
		return only, true
	}
	return discoveryv1.EndpointPort{}, false
}
