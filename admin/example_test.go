package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/proxy"
)

// tries is an Observer that feeds a Recorder one count per try, per endpoint: a proxy's
// Observer sees every try's endpoint and outcome.
type tries struct{ rec *admin.Recorder }

func (t tries) Observe(ep sluice.Endpoint, o sluice.Outcome) {
	t.rec.Record("", ep.Addr, o.Status, o.Latency)
}

// lastSet keeps the endpoint set last pushed to a balancer, for the dashboard to show: it sits
// where a health checker pushes its marked sets.
type lastSet struct {
	mu  sync.Mutex // mu protects eps
	eps []sluice.Endpoint
}

func (l *lastSet) push(bal *balancer.Balancer) func([]sluice.Endpoint) {
	return func(eps []sluice.Endpoint) {
		l.mu.Lock()
		l.eps = slices.Clone(eps)
		l.mu.Unlock()
		bal.Update(eps)
	}
}

func (l *lastSet) endpoints() []admin.Endpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]admin.Endpoint, 0, len(l.eps))
	for _, e := range l.eps {
		out = append(out, admin.EndpointOf(e))
	}
	return out
}

// Example serves the admin interface of a proxy over one pool: the pool's endpoints with
// their states, and the requests of each endpoint, counted by an Observer.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer backend.Close()

	rec, err := admin.NewRecorder(admin.RecorderOptions{}) // three minutes, bounded names
	if err != nil {
		panic(err)
	}
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	if err != nil {
		panic(err)
	}
	var set lastSet
	update := set.push(bal) // a healthcheck.Checker's Run would push its marked sets here
	update([]sluice.Endpoint{
		{Addr: "10.0.0.1:8080", Zone: "a"},
		{Addr: "10.0.0.2:8080", Zone: "b", State: sluice.Unhealthy},
	})
	px := &proxy.Proxy{
		Picker:   bal,
		Observer: tries{rec},
		// Every endpoint is the test backend here.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return new(net.Dialer).DialContext(ctx, network, backend.Listener.Addr().String())
		},
	}
	front := httptest.NewServer(px)
	defer front.Close()

	h, err := admin.New(admin.Options{
		Pools: func() []admin.Pool {
			return []admin.Pool{{Name: "api", Policy: "round-robin", Endpoints: set.endpoints()}}
		},
		Recorder: rec,
	})
	if err != nil {
		panic(err)
	}
	adm := httptest.NewServer(h) // in production: a listener only operators reach
	defer adm.Close()

	res, err := http.Get(front.URL + "/")
	if err != nil {
		panic(err)
	}
	res.Body.Close()

	var pools []admin.Pool
	getJSON := func(path string, v any) {
		res, err := http.Get(adm.URL + path)
		if err != nil {
			panic(err)
		}
		defer res.Body.Close()
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			panic(err)
		}
	}
	getJSON("/api/pools", &pools)
	for _, p := range pools {
		for _, e := range p.Endpoints {
			fmt.Println(p.Name, e.Addr, e.Zone, e.State)
		}
	}
	var stats admin.Stats
	getJSON("/api/stats", &stats)
	for _, s := range stats.Endpoints {
		fmt.Println("tracked:", s.Name)
	}
	// Output:
	// api 10.0.0.1:8080 a ready
	// api 10.0.0.2:8080 b unhealthy
	// tracked: 10.0.0.1:8080
}
