package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/balancer"
	sluicecache "github.com/sluiceproxy/sluice/cache"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/middleware"
	"github.com/sluiceproxy/sluice/proxy/route"
	"github.com/sluiceproxy/sluice/ratelimit"
	"github.com/sluiceproxy/sluice/tcpproxy"
	"github.com/sluiceproxy/sluice/tls/certs"
	"github.com/sluiceproxy/sluice/tls/secrets"
)

// controllerName is the spec.controller of the IngressClasses this controller serves.
const controllerName = "sluiceproxy.io/ingress-controller"

// controller turns the Ingresses of its class into a route table and keeps it current.
//
// Informer handlers only kick the rebuild loop; Run rebuilds the whole table from the
// listers a few milliseconds after a change and swaps it into the router, so a burst of
// changes costs one rebuild and a request never sees half of one. Backend pools — a
// balancer, a health checker and an EndpointSlice source per Service port and policy — are
// kept across rebuilds, so in-flight counts, latency estimates and ejections survive.
type controller struct {
	cfg     *config
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	logger  *slog.Logger

	ingresses networkinglisters.IngressLister
	classes   networkinglisters.IngressClassLister
	services  corelisters.ServiceLister
	synced    []cache.InformerSynced
	endpoints *endpointslices.Watcher

	router  *route.Router
	certs   *certs.Keyring
	cache   *sluicecache.Cache
	metrics *controllerMetrics

	// fallback, when -default-backend is set, is the Service port that serves the requests no
	// route matches, as backend() takes it.
	fallback        *ingressConfig
	fallbackBackend networkingv1.IngressBackend

	kick  chan struct{} // capacity 1: "something changed, rebuild"
	ready atomic.Bool   // the first full sync is served

	// The fields below belong to the goroutine running Run, except where noted.
	runCtx   context.Context
	wg       sync.WaitGroup
	pools    map[poolKey]*backendPool
	limiters map[limiterKey]*ratelimit.Limiter
	lastGood map[string]*ingressConfig // by namespace/name
	lastErr  map[string]string         // by namespace/name: the error last reported
	status   statusState               // status.go: who writes status, what left the class

	// mu protects proxies and retiring (read by Drain after Run) and secrets (read by
	// secret goroutines).
	mu      sync.Mutex
	proxies map[proxyKey]*proxy.Proxy
	// retiring holds the proxies the table no longer uses that still serve requests or
	// tunnels (WebSockets survive route changes), so that Drain closes those too. A rebuild
	// forgets the ones that have emptied; one whose key comes back is used again.
	retiring map[proxyKey]*proxy.Proxy
	secrets  map[string]context.CancelFunc // by namespace/name of a TLS Secret

	// l4, with -enable-ssl-passthrough, serves the HTTPS port: it passes the connections for
	// passthrough hosts to their pods and hands the others to the HTTPS server through
	// terminate (passthrough.go). Both are nil without the flag; main sets them before Run.
	l4          *tcpproxy.Proxy
	terminate   *tcpproxy.Listener
	l4Conflicts map[string]string // the passthrough conflicts last logged; Run's

	// dash is what the admin listener's dashboard shows of the current table (dashboard.go);
	// rec, its request history, is fed by the edge log and the proxies' hooks.
	dash atomic.Pointer[dashboard]
	rec  *admin.Recorder
}

// ingressConfig is one accepted Ingress with its parsed annotations.
type ingressConfig struct {
	ing  *networkingv1.Ingress
	opts options
}

func (ic *ingressConfig) key() string { return ic.ing.Namespace + "/" + ic.ing.Name }

// poolKey names a backend pool: one Service port balanced with one policy, for requests or,
// with passthrough, for the TLS connections passed through to it (passthrough.go says why
// those have a pool of their own).
type poolKey struct {
	namespace, service, port, policy string
	passthrough                      bool
}

// backendPool is the endpoint set of one Service port, health-checked and balanced, and the
// means to stop it.
type backendPool struct {
	*pool.Pool
	cancel context.CancelFunc
}

// proxyKey names a forwarder: a pool reached with one protocol and one retry setting.
type proxyKey struct {
	pool                poolKey
	protocol            proxy.Protocol
	maxTries            int
	timeout, tryTimeout time.Duration
}

type limiterKey struct {
	ingress string
	rps     float64
	burst   int
}

// newController registers its informers with a new factory on client; Run starts it.
func newController(cfg *config, client kubernetes.Interface, m *controllerMetrics) (*controller, error) {
	var fopts []informers.SharedInformerOption
	if cfg.Namespace != "" {
		fopts = append(fopts, informers.WithNamespace(cfg.Namespace))
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, fopts...)
	eps, err := endpointslices.New(factory, endpointslices.Options{Coalesce: cfg.Coalesce, Logger: cfg.Logger, Hooks: m.Discovery()})
	if err != nil {
		return nil, err
	}
	c4e, err := sluicecache.New(sluicecache.Options{Logger: cfg.Logger, Hooks: m.Cache("ingress")})
	if err != nil {
		return nil, err
	}
	m.WatchCache("ingress", c4e)
	rec, err := admin.NewRecorder(admin.RecorderOptions{})
	if err != nil {
		return nil, err
	}
	empty, _ := route.New(nil, route.Options{})
	c := &controller{
		cfg: cfg, client: client, factory: factory, logger: cfg.Logger,
		ingresses: factory.Networking().V1().Ingresses().Lister(),
		classes:   factory.Networking().V1().IngressClasses().Lister(),
		services:  factory.Core().V1().Services().Lister(),
		endpoints: eps,
		router:    route.NewRouter(empty, route.RouterOptions{OnMatch: proxy.WithRoute}),
		certs:     &certs.Keyring{Hooks: m.TLS("ingress")},
		cache:     c4e,
		metrics:   m,
		kick:      make(chan struct{}, 1),
		pools:     make(map[poolKey]*backendPool),
		limiters:  make(map[limiterKey]*ratelimit.Limiter),
		lastGood:  make(map[string]*ingressConfig),
		lastErr:   make(map[string]string),
		proxies:   make(map[proxyKey]*proxy.Proxy),
		retiring:  make(map[proxyKey]*proxy.Proxy),
		secrets:   make(map[string]context.CancelFunc),
		rec:       rec,
	}
	if cfg.DefaultBackend != "" {
		ns, b, err := parseDefaultBackend(cfg.DefaultBackend)
		if err != nil {
			return nil, err
		}
		if cfg.Namespace != "" && ns != cfg.Namespace {
			return nil, fmt.Errorf("-default-backend %q: namespace %s is not the watched -namespace %s", cfg.DefaultBackend, ns, cfg.Namespace)
		}
		opts, _ := parseAnnotations(nil)
		c.fallback = &ingressConfig{ing: &networkingv1.Ingress{}, opts: opts}
		c.fallback.ing.Namespace, c.fallback.ing.Name = ns, "(-default-backend)"
		c.fallbackBackend = b
	}
	// The Secrets belong to many tenants: a client that sends no server name, or one no
	// Ingress names, must not be handed whichever tenant's certificate was stored first, so
	// the controller chooses no default and such handshakes fail.
	c.certs.SetDefault("")
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.changed() },
		UpdateFunc: func(any, any) { c.changed() },
		DeleteFunc: func(any) { c.changed() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		factory.Networking().V1().Ingresses().Informer(),
		factory.Networking().V1().IngressClasses().Informer(),
		factory.Core().V1().Services().Informer(),
	} {
		if _, err := inf.AddEventHandler(kick); err != nil {
			return nil, err
		}
		c.synced = append(c.synced, inf.HasSynced)
	}
	// Secrets are read by tls/secrets; registering the informer here lets the first sync
	// cover them too.
	c.synced = append(c.synced, factory.Core().V1().Secrets().Informer().HasSynced)
	return c, nil
}

// changed asks Run for a rebuild without blocking.
func (c *controller) changed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run starts the informers, builds the first table once every informer has synced, and
// rebuilds it after each change until ctx ends. It returns ctx.Err() once the goroutines of
// the pools and Secret sources it started have returned.
func (c *controller) Run(ctx context.Context) error {
	c.runCtx = ctx
	defer c.wg.Wait()
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	if err := c.endpoints.WaitForSync(ctx); err != nil {
		return err
	}
	for _, s := range c.rebuild(ctx) {
		// Ready means every certificate of the first table is served too.
		select {
		case <-s.Synced():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.ready.Store(true)
	c.logger.Info("first sync done", "ingresses", c.metrics.ingresses.Load(), "routes", c.metrics.routes.Load())

	var due <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.kick:
			// Wait a little for the rest of a burst, but never longer than Debounce after
			// the first change, so that a stream of events cannot starve the rebuild.
			if due == nil {
				due = time.After(c.cfg.Debounce)
			}
		case <-due:
			due = nil
			c.rebuild(ctx)
		}
	}
}

// Ready reports whether the first full sync has been served.
func (c *controller) Ready() bool { return c.ready.Load() }

// Proxies returns every forwarder in use, and those retired by a route change that may still
// hold requests or tunnels, for Drain.
func (c *controller) Proxies() []*proxy.Proxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := make([]*proxy.Proxy, 0, len(c.proxies)+len(c.retiring))
	for _, p := range c.proxies {
		ps = append(ps, p)
	}
	for _, p := range c.retiring {
		ps = append(ps, p)
	}
	return ps
}

// ours reports whether ing belongs to this controller: its spec.ingressClassName (or, for
// old Ingresses, its kubernetes.io/ingress.class annotation) names our class, or it names
// none and our IngressClass is the cluster default.
func (c *controller) ours(ing *networkingv1.Ingress) bool {
	if name := ing.Spec.IngressClassName; name != nil {
		return *name == c.cfg.Class && c.classIsOurs(*name)
	}
	if legacy, ok := ing.Annotations["kubernetes.io/ingress.class"]; ok {
		return legacy == c.cfg.Class
	}
	ic, err := c.classes.Get(c.cfg.Class)
	return err == nil && ic.Spec.Controller == controllerName &&
		ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true"
}

func (c *controller) classIsOurs(name string) bool {
	ic, err := c.classes.Get(name)
	return err == nil && ic.Spec.Controller == controllerName
}

// rebuild builds the route table from the listers and swaps it in, then prunes what the new
// table no longer uses and writes statuses. It returns the Secret sources it started.
func (c *controller) rebuild(ctx context.Context) []*secrets.Watcher {
	all, err := c.ingresses.List(labels.Everything())
	if err != nil {
		c.logger.Error("list ingresses", "err", err)
		return nil
	}
	var mains, canaries []*ingressConfig
	seen := make(map[string]bool, len(all))
	type refusal struct {
		ing *networkingv1.Ingress
		err error
	}
	var refused []refusal // reported after the swap, so that API calls never delay it
	var warned []refusal  // served all the same, and reported with them
	for _, ing := range all {
		if !c.ours(ing) {
			continue
		}
		key := ing.Namespace + "/" + ing.Name
		seen[key] = true
		ic := &ingressConfig{ing: ing}
		if ic.opts, err = parseAnnotations(ing.Annotations); err == nil {
			err = validateIngress(ing, ic.opts)
		}
		if err != nil {
			refused = append(refused, refusal{ing, err})
			if ic = c.lastGood[key]; ic == nil {
				continue
			}
		} else {
			c.lastGood[key] = ic
			if ic.opts.sslPassthrough && c.l4 == nil {
				warned = append(warned, refusal{ing, errPassthroughOff})
			} else if c.lastErr[key] != "" {
				c.logger.Info("ingress is valid again", "ingress", key)
				delete(c.lastErr, key)
			}
		}
		if ic.opts.canary {
			canaries = append(canaries, ic)
		} else {
			mains = append(mains, ic)
		}
	}
	for key := range c.lastGood {
		if !seen[key] {
			delete(c.lastGood, key)
			delete(c.lastErr, key)
		}
	}
	// The oldest Ingress wins a host and path that two claim, as in ingress-nginx.
	byAge := func(a, b *ingressConfig) int {
		if t := a.ing.CreationTimestamp.Compare(b.ing.CreationTimestamp.Time); t != 0 {
			return t
		}
		return strings.Compare(a.key(), b.key())
	}
	slices.SortFunc(mains, byAge)
	slices.SortFunc(canaries, byAge)

	u := usage{pools: map[poolKey]bool{}, proxies: map[proxyKey]bool{}, limiters: map[limiterKey]bool{}}
	var routes []route.Route
	owners := make(map[string]*ingressConfig) // by route key
	index := make(map[string]int)             // by route key
	for _, ic := range mains {
		eachPath(ic.ing, func(host string, pt route.PathType, p string, b networkingv1.IngressBackend) {
			k := routeKey(host, pt, p)
			if _, taken := index[k]; taken {
				return
			}
			index[k], owners[k] = len(routes), ic
			routes = append(routes, route.Route{
				Name: routeName(ic, host, pt, p), Hosts: hosts(host), Path: p, PathType: pt,
				Backends: []route.Backend{{Name: "main", Handler: c.wrap(ic, host, c.backend(ic, b, &u), &u), Weight: 100}},
			})
		})
	}
	for _, ic := range canaries {
		eachPath(ic.ing, func(host string, pt route.PathType, p string, b networkingv1.IngressBackend) {
			k := routeKey(host, pt, p)
			i, ok := index[k]
			if !ok || len(routes[i].Backends) > 1 {
				c.logger.Warn("canary ingress matches no main ingress, or the route has a canary already",
					"ingress", ic.key(), "host", host, "path", p)
				return
			}
			r := &routes[i]
			w := ic.opts.canaryWeight
			r.Backends[0].Weight = 100 - w
			r.Backends = append(r.Backends, route.Backend{Name: "canary", Handler: c.wrap(owners[k], host, c.backend(ic, b, &u), &u), Weight: w})
			r.Pins = canaryPins(ic.opts)
		})
	}

	// The -default-backend serves what no route matches, spec.defaultBackend included.
	var notFound http.Handler
	if c.fallback != nil {
		notFound = c.backend(c.fallback, c.fallbackBackend, &u)
	}
	t, err := route.New(routes, route.Options{NotFound: notFound})
	var l4 *tcpproxy.Table
	if err == nil && c.l4 != nil {
		l4, err = c.passthroughTable(mains, &u)
	}
	if err != nil {
		// Each Ingress was validated alone, so this is a conflict between them: keep serving
		// the previous tables rather than a partial one.
		c.logger.Error("route table rejected; keeping the previous one", "err", err)
		c.metrics.rebuildErrors.Add(1)
		return nil
	}
	c.router.Store(t)
	if l4 != nil {
		c.l4.Store(l4)
	}
	c.metrics.rebuilds.Add(1)
	c.metrics.ingresses.Store(int64(len(mains) + len(canaries)))
	c.metrics.invalid.Store(int64(len(refused)))
	c.metrics.routes.Store(int64(len(routes)))
	c.prune(u)
	c.publishDashboard(routes)
	started := c.syncSecrets(append(mains, canaries...))
	for _, r := range refused {
		c.reportInvalid(ctx, r.ing, r.err, true)
	}
	for _, r := range warned {
		c.reportInvalid(ctx, r.ing, r.err, false)
	}
	c.writeStatus(ctx, append(mains, canaries...))
	return started
}

// usage collects what one rebuild's table uses, so that the rest can be let go.
type usage struct {
	pools    map[poolKey]bool
	proxies  map[proxyKey]bool
	limiters map[limiterKey]bool
}

// eachPath calls fn for every host, path and backend of ing, the default backend first
// (as the catch-all route of no host).
func eachPath(ing *networkingv1.Ingress, fn func(host string, pt route.PathType, path string, b networkingv1.IngressBackend)) {
	if b := ing.Spec.DefaultBackend; b != nil {
		fn("", route.PathPrefix, "/", *b)
	}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			pt := route.PathPrefix // Prefix, and ImplementationSpecific read as Prefix
			if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
				pt = route.PathExact
			}
			path := p.Path
			if path == "" {
				path = "/"
			}
			fn(rule.Host, pt, path, p.Backend)
		}
	}
}

func routeKey(host string, pt route.PathType, path string) string {
	return fmt.Sprintf("%s\x00%d\x00%s", strings.ToLower(host), pt, path)
}

func routeName(ic *ingressConfig, host string, pt route.PathType, path string) string {
	if host == "" {
		host = "*"
	}
	kind := "prefix"
	if pt == route.PathExact {
		kind = "exact"
	}
	return fmt.Sprintf("%s:%s%s(%s)", ic.key(), host, path, kind)
}

func hosts(host string) []string {
	if host == "" {
		return nil
	}
	return []string{host}
}

// canaryPins are ingress-nginx's canary-by-header and canary-by-cookie: a header (or cookie)
// value "always" sends a request to the canary and "never" keeps it on the main backend; with
// canary-by-header-value, only that exact header value selects the canary.
func canaryPins(o options) []route.Pin {
	var pins []route.Pin
	if o.canaryHeader != "" {
		if o.canaryHeaderValue != "" {
			pins = append(pins, route.Pin{Header: o.canaryHeader, Value: o.canaryHeaderValue, Backend: "canary"})
		} else {
			pins = append(pins,
				route.Pin{Header: o.canaryHeader, Value: "always", Backend: "canary"},
				route.Pin{Header: o.canaryHeader, Value: "never", Backend: "main"})
		}
	}
	if o.canaryCookie != "" {
		pins = append(pins,
			route.Pin{Cookie: o.canaryCookie, Value: "always", Backend: "canary"},
			route.Pin{Cookie: o.canaryCookie, Value: "never", Backend: "main"})
	}
	return pins
}

// validateIngress checks what the route tables would refuse, and what this controller does
// not support, for one Ingress alone with its annotations' options. The error names the
// field.
func validateIngress(ing *networkingv1.Ingress, opts options) error {
	var errs []error
	var routes []route.Route
	i := 0
	eachPath(ing, func(host string, pt route.PathType, p string, b networkingv1.IngressBackend) {
		i++
		if b.Service == nil {
			errs = append(errs, fmt.Errorf("backend of host %q path %q: only Service backends are supported", host, p))
			return
		}
		routes = append(routes, route.Route{Name: fmt.Sprint(i), Hosts: hosts(host), Path: p, PathType: pt,
			Backends: []route.Backend{{Handler: http.NotFoundHandler()}}})
	})
	if _, err := route.New(routes, route.Options{}); err != nil {
		errs = append(errs, err)
	}
	for j, t := range ing.Spec.TLS {
		if t.SecretName == "" {
			errs = append(errs, fmt.Errorf("spec.tls[%d].secretName is empty", j))
		}
	}
	if err := checkServerNames(ing); err != nil {
		errs = append(errs, err)
	}
	if opts.sslPassthrough {
		if _, err := passthroughBackends(ing); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// backend returns the forwarder for one Ingress backend, creating its pool and proxy if this
// is their first use. A Service or port that does not exist yet answers 503 until it does.
func (c *controller) backend(ic *ingressConfig, b networkingv1.IngressBackend, u *usage) http.Handler {
	sp, ok := c.servicePort(ic, b)
	if !ok {
		return unavailable
	}
	protocol := ic.opts.protocol
	if p, ok := appProtocol(sp.AppProtocol); ok && !ic.opts.protocolSet {
		protocol = p
	}
	// EndpointSlice ports carry the Service port's name.
	pk := poolKey{namespace: ic.ing.Namespace, service: b.Service.Name, port: sp.Name, policy: ic.opts.policyName}
	if c.pool(ic, pk, u) == nil {
		return unavailable
	}
	xk := proxyKey{pk, protocol, ic.opts.maxTries, ic.opts.timeout, ic.opts.tryTimeout}
	u.proxies[xk] = true
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.proxies[xk]; ok {
		return p
	}
	if p, ok := c.retiring[xk]; ok { // back before it emptied: its tunnels are ours again
		delete(c.retiring, xk)
		c.proxies[xk] = p
		return p
	}
	// Forwarders with other protocols or retry settings share the pool's balancer and health
	// checker, so that a Service port is probed once however many Ingresses reach it.
	pl := c.pools[pk]
	p := &proxy.Proxy{
		Picker: pl.Balancer(), Observer: pl.Checker(), Protocol: xk.protocol,
		Retry:       proxy.Retry{MaxTries: xk.maxTries, Timeout: xk.timeout, PerTryTimeout: xk.tryTimeout},
		DialContext: c.cfg.Dial, Hooks: proxy.JoinHooks(c.metrics.Proxy(), recordTries(c.rec)),
	}
	if xk.protocol == proxy.HTTPS {
		// Pods rarely have certificates naming their IP, so, like ingress-nginx's default
		// (proxy_ssl_verify off), HTTPS to backends encrypts without verifying.
		p.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	if c.cfg.AccessLog {
		p.Logger = c.logger
	}
	pl.Attach(p) // its tunnels to endpoints that left the Service are closed too
	c.proxies[xk] = p
	return p
}

// servicePort returns the port of its Service that backend b of ic names, by name or number,
// and whether both exist; a missing one is logged, unless the Service itself is missing.
func (c *controller) servicePort(ic *ingressConfig, b networkingv1.IngressBackend) (corev1.ServicePort, bool) {
	ns, name := ic.ing.Namespace, b.Service.Name
	svc, err := c.services.Services(ns).Get(name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			c.logger.Error("get service", "service", ns+"/"+name, "err", err)
		}
		return corev1.ServicePort{}, false
	}
	for _, sp := range svc.Spec.Ports {
		if (b.Service.Port.Name != "" && sp.Name == b.Service.Port.Name) ||
			(b.Service.Port.Name == "" && sp.Port == b.Service.Port.Number) {
			return sp, true
		}
	}
	c.logger.Warn("service has no such port", "ingress", ic.key(), "service", ns+"/"+name,
		"port", b.Service.Port.Name+fmt.Sprint(b.Service.Port.Number))
	return corev1.ServicePort{}, false
}

// pool returns the pool named pk, starting it with ic's policy if this is its first use, and
// marks it used; nil when it cannot start (logged).
func (c *controller) pool(ic *ingressConfig, pk poolKey, u *usage) *backendPool {
	pl, ok := c.pools[pk]
	if !ok {
		var err error
		if pl, err = c.newPool(pk, ic.opts.policy); err != nil {
			c.logger.Error("new pool", "ingress", ic.key(), "err", err)
			return nil
		}
		c.pools[pk] = pl
	}
	u.pools[pk] = true
	return pl
}

// parseDefaultBackend reads -default-backend, "namespace/name:port", the port a number or a
// name.
func parseDefaultBackend(v string) (namespace string, b networkingv1.IngressBackend, err error) {
	bad := func(why string) error {
		return fmt.Errorf("-default-backend %q: want namespace/name:port, %s", v, why)
	}
	ns, rest, ok := strings.Cut(v, "/")
	name, port, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || name == "" || port == "" {
		return "", b, bad("such as default/fallback:80 or default/fallback:http")
	}
	b.Service = &networkingv1.IngressServiceBackend{Name: name}
	if n, err := strconv.ParseInt(port, 10, 32); err == nil {
		if n < 1 || n > 65535 {
			return "", b, bad("the port number in [1, 65535]")
		}
		b.Service.Port.Number = int32(n)
	} else {
		b.Service.Port.Name = port
	}
	return ns, b, nil
}

// appProtocol maps a Service port's appProtocol to the protocol spoken to its pods, as the
// Gateway API specifies for kubernetes.io/h2c, kubernetes.io/ws and kubernetes.io/wss, with
// the IANA names http and https and the common grpc (cleartext HTTP/2, as Istio reads it).
// Other values, and none, leave the default (HTTP/1.1) or the backend-protocol annotation,
// which wins when both are set.
func appProtocol(v *string) (proxy.Protocol, bool) {
	if v == nil {
		return 0, false
	}
	switch strings.ToLower(*v) {
	case "http", "kubernetes.io/ws":
		return proxy.HTTP1, true
	case "kubernetes.io/h2c", "grpc", "h2c":
		return proxy.H2C, true
	case "https", "kubernetes.io/wss":
		return proxy.HTTPS, true
	}
	return 0, false
}

// unavailable answers for backends whose Service or port does not exist.
var unavailable = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "503 service unavailable: the route's backend service does not exist", http.StatusServiceUnavailable)
})

// newPool starts the pool of one Service port: its EndpointSlice source, health checker and
// balancer. It primes the balancer from the informer's cache so that a route is never stored
// before its endpoints are known. A pool that stops with an error is logged; its balancer
// keeps the last set.
func (c *controller) newPool(k poolKey, policy balancer.Policy) (*backendPool, error) {
	name := poolName(k)
	health := healthcheck.Options{Outlier: &healthcheck.Outlier{}, Logger: c.logger, Hooks: c.metrics.Health(name)}
	if c.cfg.HealthPath != "" && !k.passthrough {
		health.Probe = &healthcheck.HTTP{Path: c.cfg.HealthPath}
	}
	src := c.endpoints.Source(k.namespace, k.service, k.port)
	p, err := pool.New(pool.Options{Source: src, Policy: policy, Health: health, TunnelGrace: c.cfg.TunnelGrace,
		Balancer: balancer.Options{Hooks: c.metrics.Balancer(name)}})
	if err != nil {
		return nil, err
	}
	c.metrics.WatchHealth(name, p.Checker())
	eps := src.Endpoints()
	p.Checker().Update(eps)
	p.Balancer().Update(eps)
	ctx, cancel := context.WithCancel(c.runCtx)
	c.wg.Go(func() {
		if err := p.Run(ctx); err != nil && ctx.Err() == nil {
			c.logger.Error("backend pool stopped", "namespace", k.namespace, "service", k.service, "port", k.port, "err", err)
		}
	})
	return &backendPool{Pool: p, cancel: cancel}, nil
}

// wrap puts the route-level middlewares of the Ingress that owns a route for host in front of
// one of its backends: HTTPS redirect, then rate limit, then cache.
func (c *controller) wrap(owner *ingressConfig, host string, h http.Handler, u *usage) http.Handler {
	o := owner.opts
	if o.cache {
		h = c.cache.Handler(h)
	}
	if o.rateRPS > 0 {
		lk := limiterKey{owner.key(), o.rateRPS, o.rateBurst}
		l, ok := c.limiters[lk]
		if !ok {
			var err error
			l, err = ratelimit.New(ratelimit.Options{Limits: []ratelimit.Limit{{
				Name: "ingress", Rate: o.rateRPS, Burst: o.rateBurst}}, Logger: c.logger,
				Hooks: c.metrics.RateLimit(owner.key())}) // an Ingress's namespace/name
			if err != nil { // parseAnnotations keeps the values in range
				c.logger.Error("rate limit", "ingress", owner.key(), "err", err)
				return h
			}
			c.limiters[lk] = l
			c.metrics.WatchLimiter(owner.key(), l) // keys held, read at each scrape
		}
		u.limiters[lk] = true
		h = l.Handler(h)
	}
	if redirects(owner, host, c.cfg.HTTPSAddr != "") {
		h = middleware.RedirectHTTPS{}.Handler(h)
	}
	return h
}

// redirects reports whether plain HTTP to host on a route of owner is sent to HTTPS: as the
// ssl-redirect annotation says, or, without it, when owner has TLS for host and the controller
// serves HTTPS. Like ingress-nginx, a host is redirected by default only by the Ingress that
// lists it under spec.tls, so that another Ingress's route on that host (an ACME HTTP-01
// solver's, say) stays reachable over plain HTTP.
func redirects(owner *ingressConfig, host string, https bool) bool {
	if owner.opts.sslRedirectSet {
		return owner.opts.sslRedirect
	}
	if !https || host == "" {
		return false
	}
	for _, t := range owner.ing.Spec.TLS {
		for _, h := range t.Hosts {
			if strings.EqualFold(h, host) {
				return true
			}
		}
	}
	return false
}

// prune retires the proxies the current table does not use, forgets the retired ones that
// have emptied, and stops the pools and limiters that nothing uses any more.
func (c *controller) prune(u usage) {
	c.mu.Lock()
	// Proxies retired by an earlier rebuild first: one retired just now may yet receive a
	// request that matched the previous table an instant before the swap.
	for k, p := range c.retiring {
		// A request counts in InFlight from its first byte to its last (a tunnel's
		// included), so an empty proxy is one that no running request holds.
		if p.InFlight() == 0 && p.Upgraded() == 0 {
			delete(c.retiring, k)
			if pl, ok := c.pools[k.pool]; ok {
				pl.Detach(p)
			}
		}
	}
	for k, p := range c.proxies {
		if !u.proxies[k] {
			delete(c.proxies, k)
			// Requests on the previous table may still use it; only idle connections go.
			p.CloseIdleConnections()
			c.retiring[k] = p
		}
	}
	for k := range c.retiring {
		// Its pool keeps running, so that its tunnels are still closed when their endpoint
		// leaves the Service.
		u.pools[k.pool] = true
	}
	c.mu.Unlock()
	for k, p := range c.pools {
		if !u.pools[k] {
			p.cancel()
			delete(c.pools, k)
			c.metrics.WatchHealth(poolName(k), nil)
		}
	}
	inUse := map[string]bool{} // Ingresses that keep a limiter: their watch stays
	for k := range u.limiters {
		inUse[k.ingress] = true
	}
	for k := range c.limiters {
		if !u.limiters[k] {
			delete(c.limiters, k)
			if !inUse[k.ingress] {
				c.metrics.WatchLimiter(k.ingress, nil)
			}
		}
	}
	c.metrics.pools.Store(int64(len(c.pools)))
}

// syncSecrets runs one tls/secrets source per TLS Secret the Ingresses name, so that only
// referenced certificates are served, and stops the sources of Secrets no longer named.
func (c *controller) syncSecrets(ics []*ingressConfig) (started []*secrets.Watcher) {
	want := make(map[string]bool)
	for _, ic := range ics {
		for _, t := range ic.ing.Spec.TLS {
			want[ic.ing.Namespace+"/"+t.SecretName] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, cancel := range c.secrets {
		if !want[key] {
			cancel()
			delete(c.secrets, key)
		}
	}
	for key := range want {
		if _, ok := c.secrets[key]; ok {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		s, err := secrets.New(nil, c.certs, secrets.Options{
			Namespace: ns, Names: []string{name}, Factory: c.factory, Logger: c.logger})
		if err != nil {
			c.logger.Error("tls secret", "secret", key, "err", err)
			continue
		}
		ctx, cancel := context.WithCancel(c.runCtx)
		c.secrets[key] = cancel
		started = append(started, s)
		c.wg.Go(func() {
			_ = s.Run(ctx)
			c.mu.Lock()
			defer c.mu.Unlock()
			if _, again := c.secrets[key]; !again {
				c.certs.Delete(key)
			}
		})
	}
	return started
}
