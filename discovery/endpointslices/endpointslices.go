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
//     Service may carry different target ports during a rollout;
//   - IPv4, IPv6 and FQDN slices are all used; the first address of each endpoint is dialled,
//     written canonically, and an address that does not fit its slice's type is skipped;
//   - an endpoint whose ready condition is true or unset is [sluice.Ready]; one that is not
//     ready but serving and terminating is [sluice.Terminating], which balancers use only while
//     no ready endpoint exists, so connections drain during a rollout; any other is dropped;
//   - zone, node name and hints.forZones are copied to Endpoint.Zone, Node and ForZones.
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
package endpointslices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

	mu   sync.Mutex // mu protects subs
	subs map[string]map[*subscriber]struct{}
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
		subs:        make(map[string]map[*subscriber]struct{}),
	}
	if w.coalesce == 0 {
		w.coalesce = 100 * time.Millisecond
	}
	if w.log == nil {
		w.log = slog.Default()
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
// port, or a slice's only port. Slices without a matching TCP port contribute nothing.
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
// what it contains. It returns ctx.Err() when ctx ends.
func (s *Source) Watch(ctx context.Context, update func([]sluice.Endpoint)) error {
	sub := &subscriber{notify: make(chan struct{}, 1)}
	s.w.subscribe(s.key, sub)
	defer s.w.unsubscribe(s.key, sub)

	if err := s.w.WaitForSync(ctx); err != nil {
		return err
	}
	last := s.Endpoints()
	update(last)

	timer := time.NewTimer(0)
	if !timer.Stop() {
		<-timer.C
	}
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.notify:
		}
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
		eps := s.Endpoints()
		if !slices.Equal(eps, last) {
			last = eps
			update(eps)
		}
	}
}

// Endpoints returns the Service's current set from the informer's cache, sorted by Addr.
// It does not wait for the informer to sync.
func (s *Source) Endpoints() []sluice.Endpoint {
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
	return Merge(list, s.port)
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
// caches; the result is sorted by Addr with each Addr once.
func Merge(eslices []*discoveryv1.EndpointSlice, port string) []sluice.Endpoint {
	n := 0
	for _, es := range eslices {
		if es != nil {
			n += len(es.Endpoints)
		}
	}
	eps := make([]sluice.Endpoint, 0, n)
	for _, es := range eslices {
		if es == nil {
			continue
		}
		num, ok := slicePort(es, port)
		if !ok {
			continue
		}
		ps := strconv.Itoa(int(num))
		for i := range es.Endpoints {
			e := &es.Endpoints[i]
			if len(e.Addresses) == 0 {
				continue
			}
			host, ok := endpointHost(es.AddressType, e.Addresses[0])
			if !ok {
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
			ep := sluice.Endpoint{Addr: net.JoinHostPort(host, ps), State: state}
			if e.Zone != nil {
				ep.Zone = *e.Zone
			}
			if e.NodeName != nil {
				ep.Node = *e.NodeName
			}
			if e.Hints != nil && len(e.Hints.ForZones) > 0 {
				zones := make([]string, len(e.Hints.ForZones))
				for i, z := range e.Hints.ForZones {
					zones[i] = z.Name
				}
				ep.ForZones = strings.Join(zones, ",")
			}
			eps = append(eps, ep)
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

// endpointHost returns the host to dial for an endpoint's address in a slice of type typ:
// an IP address of the slice's family in canonical form, so that one endpoint written two
// ways is still one endpoint, or a DNS name for FQDN slices. The API server validates
// addresses, but Merge also serves embedders' own caches, so an address it would reject, or
// an unknown address type, yields nothing rather than an Addr no dialer can use.
func endpointHost(typ discoveryv1.AddressType, addr string) (string, bool) {
	switch typ {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		a, err := netip.ParseAddr(addr)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.Is4() != (typ == discoveryv1.AddressTypeIPv4) {
			return "", false
		}
		return a.String(), true
	case discoveryv1.AddressTypeFQDN:
		return addr, len(validation.IsDNS1123Subdomain(addr)) == 0
	}
	return "", false
}

// slicePort finds the port number for want in es: by name, by number, or the unnamed/only
// port when want is empty. Only TCP ports (or ports without a protocol) in 1..65535 match.
func slicePort(es *discoveryv1.EndpointSlice, want string) (int32, bool) {
	num, numErr := strconv.ParseUint(want, 10, 16)
	tcp := 0
	var only int32
	for _, p := range es.Ports {
		if p.Protocol != nil && *p.Protocol != "TCP" || p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue
		}
		tcp++
		only = *p.Port
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		switch {
		case want == "" && name == "":
			return *p.Port, true
		case want != "" && name == want:
			return *p.Port, true
		case numErr == nil && uint64(*p.Port) == num:
			return *p.Port, true
		}
	}
	if want == "" && tcp == 1 {
		return only, true
	}
	return 0, false
}
