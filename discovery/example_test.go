package discovery_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery"
)

func ExampleStatic() {
	src := discovery.Static{Endpoints: []sluice.Endpoint{
		{Addr: "10.0.0.2:8080", Weight: 2, Zone: "eu-west-1b"},
		{Addr: "10.0.0.1:8080", Zone: "eu-west-1a"},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	// A balancer's Update would go here; Watch blocks until ctx ends.
	err := src.Watch(ctx, func(eps []sluice.Endpoint) {
		for _, ep := range eps {
			fmt.Println(ep.Addr, ep.EffectiveWeight(), ep.Zone)
		}
	})
	fmt.Println(err)
	// Output:
	// 10.0.0.1:8080 1 eu-west-1a
	// 10.0.0.2:8080 2 eu-west-1b
	// context deadline exceeded
}

func ExampleDNS() {
	// Resolve the A/AAAA records of a headless Service through the name servers of
	// /etc/resolv.conf, re-resolving when their TTL expires, but at most every 5s and at
	// least every minute.
	src := discovery.DNS{Name: "api.default.svc.cluster.local.", Port: 8080, MinRefresh: 5 * time.Second, MaxRefresh: time.Minute}
	_ = src // go src.Watch(ctx, bal.Update)
}

// A hook sees each result of a source: here, the endpoints by state and whether the source
// has synced, as a gauge of ready endpoints per pool would read them.
func ExampleHooks() {
	src := discovery.Static{
		Endpoints: []sluice.Endpoint{{Addr: "10.0.0.1:8080"}, {Addr: "10.0.0.2:8080", State: sluice.Terminating}},
		Hooks: discovery.Hooks{Update: func(e discovery.UpdateEvent) {
			fmt.Println(e.Source, "ready:", e.Ready, "terminating:", e.Terminating, "synced:", e.Synced)
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_ = src.Watch(ctx, func([]sluice.Endpoint) {})
	// Output:
	// static ready: 1 terminating: 1 synced: true
}
