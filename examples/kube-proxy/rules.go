package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluiceproxy/sluice"
)

// This file holds kube-proxy's rules as pure functions of Services, endpoint sets and the
// proxy's configuration: which Services are proxied, which listeners each port gets, which
// endpoints each listener may use and whether a client sticks to one. proxier.go applies
// them to running listeners.

// servicePort names one port of one Service, as kube-proxy's ServicePortName does: a
// Service's port names are unique, but an unnamed port is possible (a single-port Service)
// and the protocol is part of the name.
type servicePort struct {
	namespace, name string
	port            string // the port's name; "" when unnamed
	protocol        corev1.Protocol
}

func (sp servicePort) String() string {
	return sp.namespace + "/" + sp.name + ":" + sp.port + "/" + string(sp.protocol)
}

// LogValue logs sp as its String, which a JSON log would otherwise write as {}.
func (sp servicePort) LogValue() slog.Value { return slog.StringValue(sp.String()) }

// sourcePort is the port argument of endpointslices.Watcher.Source for sp: the port's name,
// with the protocol when it is not TCP.
func (sp servicePort) sourcePort() string {
	if sp.protocol == corev1.ProtocolTCP {
		return sp.port
	}
	return sp.port + "/" + string(sp.protocol)
}

// route says where a listener's traffic goes: which Service port's endpoints, narrowed by
// which traffic policy, with which session affinity. Listeners with one route share one
// balancer, and so the clients pinned by affinity, as kube-proxy shares them between a
// Service's ClusterIP and its node port when both use the same endpoints.
type route struct {
	svc servicePort
	// local is the traffic policy Local: only endpoints on this node, with no fallback to
	// other nodes (kube-proxy drops the traffic instead) and no topology.
	local bool
	// affinity is the ClientIP session affinity timeout; zero means no affinity.
	affinity time.Duration
}

func (r route) String() string {
	s := r.svc.String()
	if r.local {
		s += " (local)"
	}
	if r.affinity > 0 {
		s += " (affinity " + r.affinity.String() + ")"
	}
	return s
}

// LogValue logs r as its String.
func (r route) LogValue() slog.Value { return slog.StringValue(r.String()) }

// listenKey identifies a listening socket.
type listenKey struct {
	protocol corev1.Protocol
	addr     string // host:port, host empty for every address
}

func (k listenKey) String() string { return string(k.protocol) + " " + k.addr }

// LogValue logs k as its String.
func (k listenKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// listenConfig is what the rules need of the proxy's configuration.
type listenConfig struct {
	// Address is the IP the listeners of Service ports bind, or clusterIPAddress for each
	// Service's own cluster IPs.
	Address string
	// NodePorts turns on listeners for node ports, on NodePortAddress ("" for every address).
	NodePorts       bool
	NodePortAddress string
	// PortOffset is added to every port listened on.
	PortOffset int
}

// clusterIPAddress is the -address value that binds each Service's cluster IPs.
const clusterIPAddress = "cluster-ip"

// defaultAffinityTimeout is Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds.
const defaultAffinityTimeout = time.Duration(corev1.DefaultClientIPServiceAffinitySeconds) * time.Second

// proxied reports whether kube-proxy would proxy svc: not an ExternalName Service, and not a
// headless one (no cluster IP). Services labelled service.kubernetes.io/service-proxy-name
// belong to another proxy; the informer's label selector leaves them out (serviceSelector).
func proxied(svc *corev1.Service) bool {
	ip := svc.Spec.ClusterIP
	return svc.Spec.Type != corev1.ServiceTypeExternalName && ip != "" && ip != corev1.ClusterIPNone
}

// serviceSelector is the label selector of the Services a proxy named name serves: with no
// name, those without the service.kubernetes.io/service-proxy-name label, as kube-proxy; with
// one, those whose label names it, so that this proxy can take some Services and leave the
// rest to kube-proxy.
func serviceSelector(name string) string {
	const label = "service.kubernetes.io/service-proxy-name"
	if name == "" {
		return "!" + label
	}
	return label + "=" + name
}

// affinity returns the ClientIP session affinity timeout of svc, or zero without affinity.
func affinity(svc *corev1.Service) time.Duration {
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		return 0
	}
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
		return time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
	}
	return defaultAffinityTimeout
}

// internalLocal reports whether svc's internalTrafficPolicy is Local: traffic to its cluster
// IP (here, to the listeners of its ports) goes only to endpoints on this node.
func internalLocal(svc *corev1.Service) bool {
	p := svc.Spec.InternalTrafficPolicy
	return p != nil && *p == corev1.ServiceInternalTrafficPolicyLocal
}

// externalLocal reports whether svc's externalTrafficPolicy is Local: traffic to its node
// ports goes only to endpoints on this node. kube-proxy looks at the policy only for
// Services reachable from outside; node ports are the only such listeners here.
func externalLocal(svc *corev1.Service) bool {
	return svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
}

// listenSpec is one listener a Service asks for.
type listenSpec struct {
	key   listenKey
	route route
}

// listeners returns the listeners svc asks for under cfg, and notes about the ports it
// cannot serve. Each TCP and UDP port gets a listener on the Service address (cfg.Address,
// or each of the Service's cluster IPs) at the port, whose route follows
// internalTrafficPolicy, and with cfg.NodePorts, one on the node port address at the node
// port, following externalTrafficPolicy. Every port is shifted by cfg.PortOffset.
func listeners(svc *corev1.Service, cfg listenConfig) ([]listenSpec, []string) {
	if !proxied(svc) {
		return nil, nil
	}
	var hosts []string
	if cfg.Address == clusterIPAddress {
		hosts = svc.Spec.ClusterIPs
		if len(hosts) == 0 {
			hosts = []string{svc.Spec.ClusterIP}
		}
	} else {
		hosts = []string{cfg.Address}
	}
	aff := affinity(svc)
	nodePorts := cfg.NodePorts && (svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer)
	var specs []listenSpec
	var notes []string
	add := func(host string, port int32, r route) {
		p := int(port) + cfg.PortOffset
		if p < 1 || p > 65535 {
			notes = append(notes, fmt.Sprintf("port %d + offset %d is out of range", port, cfg.PortOffset))
			return
		}
		specs = append(specs, listenSpec{listenKey{r.svc.protocol, net.JoinHostPort(host, strconv.Itoa(p))}, r})
	}
	for _, p := range svc.Spec.Ports {
		if p.Protocol != corev1.ProtocolTCP && p.Protocol != corev1.ProtocolUDP {
			notes = append(notes, fmt.Sprintf("port %q: protocol %s is not proxied", p.Name, p.Protocol))
			continue
		}
		sp := servicePort{svc.Namespace, svc.Name, p.Name, p.Protocol}
		for _, h := range hosts {
			add(h, p.Port, route{svc: sp, local: internalLocal(svc), affinity: aff})
		}
		if nodePorts && p.NodePort != 0 {
			add(cfg.NodePortAddress, p.NodePort, route{svc: sp, local: externalLocal(svc), affinity: aff})
		}
	}
	return specs, notes
}

// desired returns the route of every listener the Services ask for, and notes about what
// cannot be served. Two Services (or two ports) may ask for one listener — with a fixed
// -address, port 80 of every Service — so each listener goes to the oldest Service that
// asks for it (by creation time, then namespace and name, as Gateway API resolves
// conflicts), which keeps it stable: a Service created later never takes a listener away.
func desired(svcs []*corev1.Service, cfg listenConfig) (map[listenKey]route, []string) {
	svcs = slices.Clone(svcs)
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	want := make(map[listenKey]route)
	var notes []string
	for _, svc := range svcs {
		specs, n := listeners(svc, cfg)
		for _, msg := range n {
			notes = append(notes, svc.Namespace+"/"+svc.Name+": "+msg)
		}
		for _, s := range specs {
			if r, taken := want[s.key]; taken {
				notes = append(notes, fmt.Sprintf("%s: %s is taken by %s", s.route.svc, s.key, r.svc))
				continue
			}
			want[s.key] = s.route
		}
	}
	return want, notes
}

// onNode returns the endpoints of eps on node, for a route whose traffic policy is Local.
// The balancer then uses the Ready ones, or the Terminating ones when none is Ready, as
// kube-proxy does for its local endpoints; when there are none, it has nothing to pick and
// the traffic is refused, as kube-proxy drops it, never sent to another node. Topology hints
// do not apply to local endpoints, so the route's balancer has no zone or node preference.
func onNode(eps []sluice.Endpoint, node string) []sluice.Endpoint {
	local := make([]sluice.Endpoint, 0, len(eps))
	for _, ep := range eps {
		if ep.Node == node && node != "" {
			local = append(local, ep)
		}
	}
	return local
}
