package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy/route"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// TLS passthrough (-enable-ssl-passthrough and the ssl-passthrough annotation), as
// ingress-nginx's: the HTTPS port is served by a tcpproxy.Proxy that reads each connection's
// ClientHello without answering it. A server name that a passthrough Ingress lists goes,
// still encrypted, to a pod of that host's backend, which holds the certificate and sees the
// client's own TLS session; every other connection is handed, ClientHello replayed, to the
// controller's HTTPS server through an in-process tcpproxy.Listener, and is terminated as
// without passthrough. The proxy's table is rebuilt with the route table and swapped in with
// Proxy.Store: connections already passed through keep their pod.
//
// Which backend: a host's connections go to the backend of its path "/" (the first rule's,
// whatever its pathType), else to the Ingress's spec.defaultBackend, as ingress-nginx passes
// a host to the backend of its root location; the other paths mean nothing to a stream the
// controller cannot read, and keep serving plain HTTP on the HTTP port only.
//
// Conflicts: the server name decides before any path is read, so passthrough is all or
// nothing for a host. Two passthrough Ingresses for one host: the older wins, as it does for
// a host and path of the route table. A passthrough Ingress and a terminated one for one
// host: passthrough wins over HTTPS, and the terminated Ingress's routes for that host keep
// serving plain HTTP only. Each conflict is logged once, when it appears.
//
// A passed-through backend has a pool of its own, apart from the pool that requests to the
// same Service port use: its balancer counts connections, not requests, and its health is
// judged by connection failures only (passive outlier detection), since -health-path's HTTP
// probe means nothing to a port that speaks TLS, or something else, inside TLS.

// errPassthroughOff is reported on an Ingress that asks for passthrough from a controller
// that runs without it; the Ingress is served, terminated.
var errPassthroughOff = fmt.Errorf("annotation %sssl-passthrough: ignored, since the controller runs without -enable-ssl-passthrough: TLS for the Ingress's hosts is terminated here", annotationPrefix)

// hostBackend is the backend a passthrough host's connections go to.
type hostBackend struct {
	host    string // lower case
	backend networkingv1.IngressBackend
}

// passthroughBackends returns, for each host of ing's rules in order, the backend its TLS
// connections are passed to: its path "/", else spec.defaultBackend. Rules without a host
// are not passed through: there is no server name to route them by. The error says why ing
// cannot be passed through.
func passthroughBackends(ing *networkingv1.Ingress) ([]hostBackend, error) {
	var hbs []hostBackend
	index := map[string]int{} // host → its position in hbs
	for _, rule := range ing.Spec.Rules {
		if rule.Host == "" {
			continue
		}
		h := strings.ToLower(rule.Host)
		i, ok := index[h]
		if !ok {
			i = len(hbs)
			index[h] = i
			hbs = append(hbs, hostBackend{host: h})
		}
		if hbs[i].backend.Service != nil || rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			if p.Path == "/" || p.Path == "" {
				hbs[i].backend = p.Backend
				break
			}
		}
	}
	if len(hbs) == 0 {
		return nil, fmt.Errorf("annotation %sssl-passthrough: no rule has a host, and connections are passed through by the host name they ask for", annotationPrefix)
	}
	var errs []error
	for i := range hbs {
		if hbs[i].backend.Service != nil {
			continue
		}
		if d := ing.Spec.DefaultBackend; d != nil {
			hbs[i].backend = *d
			continue
		}
		errs = append(errs, fmt.Errorf("annotation %sssl-passthrough: host %q has no path \"/\" and the Ingress no defaultBackend: nothing to pass its connections to", annotationPrefix, hbs[i].host))
	}
	return hbs, errors.Join(errs...)
}

// checkServerNames refuses the hosts of ing that the HTTPS port's table could not route by
// server name, so that building that table cannot fail on one Ingress. The API server's
// validation of Ingress hosts already keeps such names out.
func checkServerNames(ing *networkingv1.Ingress) error {
	var names []string
	eachPath(ing, func(host string, _ route.PathType, _ string, _ networkingv1.IngressBackend) {
		if h := strings.ToLower(host); h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	})
	if len(names) == 0 {
		return nil
	}
	_, err := tcpproxy.NewTable([]tcpproxy.Route{{Name: "hosts", ServerNames: names, Listener: tcpproxy.NewListener(nil)}})
	return err
}

// enablePassthrough puts the SNI-reading proxy in front of the HTTPS port, whose listener's
// address is addr; Run must not have started. Until the first rebuild its table hands every
// connection to the HTTPS server, c.terminate.
func (c *controller) enablePassthrough(addr net.Addr) error {
	c.terminate = tcpproxy.NewListener(addr)
	t, err := tcpproxy.NewTable([]tcpproxy.Route{{Name: "default", Listener: c.terminate}})
	if err != nil {
		return err
	}
	// Dial maps pod addresses in tests, as for the HTTP proxies. The logger gets accept
	// errors and, at Debug, the connections refused for a bad hello or no endpoint.
	c.l4, err = tcpproxy.New(t, tcpproxy.Options{Dial: c.cfg.Dial, Logger: c.logger})
	return err
}

// passthroughTable builds the table of the HTTPS port from the Ingresses served, mains
// sorted oldest first: a route per passthrough host to its backend's pool, then the hosts of
// the other Ingresses and a default route to the HTTPS server. The terminated hosts are named
// so that an exact terminated host beats a passthrough wildcard that covers it, as it would
// in the route table.
func (c *controller) passthroughTable(mains []*ingressConfig, u *usage) (*tcpproxy.Table, error) {
	owners := map[string]*ingressConfig{} // passthrough host → its Ingress
	conflicts := map[string]string{}      // conflict → what to log
	var routes []tcpproxy.Route
	for _, ic := range mains {
		if !ic.opts.sslPassthrough {
			continue
		}
		hbs, _ := passthroughBackends(ic.ing) // validated with the Ingress
		for _, hb := range hbs {
			if hb.backend.Service == nil {
				continue
			}
			if owner := owners[hb.host]; owner != nil {
				conflicts[hb.host+" "+ic.key()] = fmt.Sprintf("host %s is passed through for the older Ingress %s; Ingress %s's passthrough for it is ignored", hb.host, owner.key(), ic.key())
				continue
			}
			owners[hb.host] = ic
			routes = append(routes, tcpproxy.Route{
				Name: ic.key() + ":" + hb.host, ServerNames: []string{hb.host},
				Picker: c.passthroughPicker(ic, hb.backend, u),
			})
		}
	}
	var terminated []string
	seen := map[string]bool{}
	for _, ic := range mains {
		if ic.opts.sslPassthrough {
			continue
		}
		eachPath(ic.ing, func(host string, _ route.PathType, _ string, _ networkingv1.IngressBackend) {
			h := strings.ToLower(host)
			if h == "" || seen[h] {
				return
			}
			seen[h] = true
			if owner := owners[h]; owner != nil {
				conflicts[h+" "+ic.key()] = fmt.Sprintf("host %s is passed through for Ingress %s, so Ingress %s's routes for it are served on the HTTP port only", h, owner.key(), ic.key())
				return
			}
			terminated = append(terminated, h)
		})
	}
	if len(terminated) > 0 {
		routes = append(routes, tcpproxy.Route{Name: "terminated", ServerNames: terminated, Listener: c.terminate})
	}
	routes = append(routes, tcpproxy.Route{Name: "default", Listener: c.terminate})
	t, err := tcpproxy.NewTable(routes)
	if err != nil {
		return nil, err
	}
	for k, msg := range conflicts {
		if _, known := c.l4Conflicts[k]; !known {
			c.logger.Warn("ssl-passthrough conflict", "conflict", msg)
		}
	}
	c.l4Conflicts = conflicts
	c.metrics.passthroughHosts.Store(int64(len(owners)))
	return t, nil
}

// passthroughPicker returns the picker of the pool that ic's passthrough backend b has, or
// one that has no endpoint while its Service or port does not exist: the proxy then closes
// the connection, as the route table answers 503.
func (c *controller) passthroughPicker(ic *ingressConfig, b networkingv1.IngressBackend, u *usage) sluice.Picker {
	sp, ok := c.servicePort(ic, b)
	if !ok {
		return noEndpoint{}
	}
	pk := poolKey{namespace: ic.ing.Namespace, service: b.Service.Name, port: sp.Name, policy: ic.opts.policyName, passthrough: true}
	pl := c.pool(ic, pk, u)
	if pl == nil {
		return noEndpoint{}
	}
	return observedPicker{pl.Balancer(), pl.Checker()}
}

// observedPicker picks from a pool's balancer and reports each connection's outcome to the
// pool's health checker too, as proxy.Proxy's Observer does for requests: the tcpproxy.Proxy
// has one Observer for all its routes, and each pool has its own checker.
type observedPicker struct {
	picker   sluice.Picker
	observer sluice.Observer
}

var _ sluice.Picker = observedPicker{}

// Pick picks an endpoint and binds its outcome to the observer.
func (p observedPicker) Pick(info sluice.PickInfo) (sluice.PickResult, error) {
	r, err := p.picker.Pick(info)
	if err != nil {
		return r, err
	}
	ep, done := r.Endpoint, r.Done
	r.Done = func(o sluice.Outcome) {
		p.observer.Observe(ep, o)
		if done != nil {
			done(o)
		}
	}
	return r, nil
}

// noEndpoint is the picker of a passthrough host whose Service or port does not exist.
type noEndpoint struct{}

func (noEndpoint) Pick(sluice.PickInfo) (sluice.PickResult, error) {
	return sluice.PickResult{}, fmt.Errorf("ingress-controller: the passthrough backend's Service or port does not exist: %w", sluice.ErrNoEndpoint)
}
