package main

import (
	"net/http"
	"slices"
	"sort"

	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/route"
)

// dashboard is what the admin listener's /dashboard/ shows: the routes and pools of the last
// table built, swapped in whole by each rebuild, so that the admin handler, which reads it on
// its own goroutines, never sees the Run goroutine's maps.
type dashboard struct {
	routes []admin.Route
	pools  []namedPool
}

type namedPool struct {
	name string
	p    *pool.Pool
}

// poolName names a pool for people: namespace/service:port, and the policy or passthrough
// when they are not the default.
func poolName(k poolKey) string {
	name := k.namespace + "/" + k.service + ":" + k.port
	if k.policy != "" && k.policy != "round-robin" {
		name += " (" + k.policy + ")"
	}
	if k.passthrough {
		name += " (passthrough)"
	}
	return name
}

// publishDashboard stores what the dashboard shows of the table just built. Run's goroutine
// calls it after each rebuild.
func (c *controller) publishDashboard(routes []route.Route) {
	d := &dashboard{}
	for _, r := range routes {
		path := r.Path
		if path == "" {
			path = "/"
		}
		kind := "prefix"
		switch r.PathType {
		case route.PathExact:
			kind = "exact"
		case route.PathRegex:
			kind = "regex"
		}
		d.routes = append(d.routes, admin.Route{Name: r.Name, Hosts: slices.Clone(r.Hosts), Paths: []string{kind + " " + path}})
	}
	for k, p := range c.pools {
		d.pools = append(d.pools, namedPool{name: poolName(k), p: p.Pool})
	}
	sort.Slice(d.pools, func(i, j int) bool { return d.pools[i].name < d.pools[j].name })
	c.dash.Store(d)
}

// dashboardHandler returns the admin handler over the controller's current table, pools and
// certificates, with rec's request history.
func (c *controller) dashboardHandler(rec *admin.Recorder) (http.Handler, error) {
	return admin.New(admin.Options{
		Routes: func() []admin.Route {
			if d := c.dash.Load(); d != nil {
				return slices.Clone(d.routes)
			}
			return nil
		},
		Pools: func() []admin.Pool {
			d := c.dash.Load()
			if d == nil {
				return nil
			}
			out := make([]admin.Pool, 0, len(d.pools))
			for _, np := range d.pools {
				out = append(out, np.p.Admin(np.name))
			}
			return out
		},
		Certificates: func() []admin.Certificate {
			var out []admin.Certificate
			for _, ci := range c.certs.Certificates() {
				out = append(out, admin.Certificate{Names: slices.Clone(ci.Names), NotBefore: ci.NotBefore, NotAfter: ci.NotAfter})
			}
			return out
		},
		Recorder: rec,
	})
}

// recordEdge and recordTries feed the dashboard's charts: every response by route from the
// edge log, every forwarded request by endpoint from the proxies.
func recordEdge(rec *admin.Recorder) accesslog.Hooks {
	return accesslog.Hooks{RequestDone: func(_ *http.Request, e accesslog.Event) {
		rec.Record(e.Route, "", e.Status, e.Duration)
	}}
}

func recordTries(rec *admin.Recorder) proxy.Hooks {
	return proxy.Hooks{RequestDone: func(_ *http.Request, e proxy.RequestEvent) {
		if e.Endpoint != "" {
			rec.Record("", e.Endpoint, e.Status, e.Duration)
		}
	}}
}
