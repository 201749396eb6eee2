package balancer_test

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

// A balancer is created once, fed endpoint sets as they change, and asked for an endpoint on
// every try; the try's outcome goes back through Done.
func Example() {
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	if err != nil {
		panic(err)
	}
	bal.Update([]sluice.Endpoint{
		{Addr: "10.0.0.1:8080", Weight: 2},
		{Addr: "10.0.0.2:8080"},
		{Addr: "10.0.0.3:8080", State: sluice.Unhealthy}, // skipped
	})

	count := map[string]int{}
	for range 300 {
		res, err := bal.Pick(sluice.PickInfo{})
		if err != nil {
			panic(err)
		}
		count[res.Endpoint.Addr]++
		res.Done(sluice.Outcome{Status: 200, Latency: 3 * time.Millisecond})
	}
	fmt.Println(count)
	// Output: map[10.0.0.1:8080:200 10.0.0.2:8080:100]
}

// Maglev keeps a key on one endpoint; a retry (PickInfo.Tried) goes elsewhere.
func ExampleMaglev() {
	bal, err := balancer.New(balancer.Maglev{Key: balancer.HeaderKey("X-User"), Epsilon: 0.25}, balancer.Options{})
	if err != nil {
		panic(err)
	}
	bal.Update([]sluice.Endpoint{{Addr: "10.0.0.1:8080"}, {Addr: "10.0.0.2:8080"}, {Addr: "10.0.0.3:8080"}})

	r := httptest.NewRequest("GET", "http://shop/cart", nil)
	r.Header.Set("X-User", "alice")
	first, _ := bal.Pick(sluice.PickInfo{Request: r})
	first.Done(sluice.Outcome{Status: 200})
	again, _ := bal.Pick(sluice.PickInfo{Request: r})
	again.Done(sluice.Outcome{Status: 200})
	retry, _ := bal.Pick(sluice.PickInfo{Request: r, Tried: []string{first.Endpoint.Addr}})
	retry.Done(sluice.Outcome{Status: 200})

	fmt.Println("same endpoint again:", first.Endpoint == again.Endpoint)
	fmt.Println("retry avoids it:", retry.Endpoint != first.Endpoint)
	// Output:
	// same endpoint again: true
	// retry avoids it: true
}

// Sticky returns a cookie for the proxy to set; requests that send it back stay put.
func ExampleSticky() {
	bal, err := balancer.New(balancer.Sticky{Cookie: "aff", Secret: "shared-by-replicas", Fallback: balancer.PeakEWMA{}}, balancer.Options{})
	if err != nil {
		panic(err)
	}
	bal.Update([]sluice.Endpoint{{Addr: "10.0.0.1:8080"}, {Addr: "10.0.0.2:8080"}})

	first, _ := bal.Pick(sluice.PickInfo{Request: httptest.NewRequest("GET", "/", nil)})
	first.Done(sluice.Outcome{Status: 200})
	fmt.Println("cookie:", first.Cookie.Name, len(first.Cookie.Value), "hex digits")

	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(first.Cookie)
	next, _ := bal.Pick(sluice.PickInfo{Request: r})
	next.Done(sluice.Outcome{Status: 200})
	fmt.Println("pinned:", next.Endpoint == first.Endpoint, "cookie set again:", next.Cookie != nil)
	// Output:
	// cookie: aff 16 hex digits
	// pinned: true cookie set again: false
}

// ClientIPAffinity keeps a client's connections on one endpoint, as kube-proxy does for a
// Service with sessionAffinity: ClientIP; an L4 proxy passes the client's address in
// PickInfo.Client.
func ExampleClientIPAffinity() {
	bal, err := balancer.New(balancer.ClientIPAffinity{Timeout: 3 * time.Hour, Fallback: balancer.Random{}}, balancer.Options{})
	if err != nil {
		panic(err)
	}
	bal.Update([]sluice.Endpoint{{Addr: "10.0.0.1:5432"}, {Addr: "10.0.0.2:5432"}, {Addr: "10.0.0.3:5432"}})

	conn := func(client string) string {
		res, err := bal.Pick(sluice.PickInfo{Client: netip.MustParseAddrPort(client)})
		if err != nil {
			panic(err)
		}
		res.Done(sluice.Outcome{})
		return res.Endpoint.Addr
	}
	first := conn("192.0.2.7:40001")
	fmt.Println("same endpoint for a new connection:", conn("192.0.2.7:40002") == first)
	// Output: same endpoint for a new connection: true
}

// Hooks count what a dashboard charts — picks, spill-overs by reason, panic mode — and Stats
// answers an admin page. Here zone b's only endpoint is Unhealthy, so every pick spills over.
func ExampleBalancer_Stats() {
	var picks, spills atomic.Int64 // Prometheus counters, usually
	hooks := balancer.Hooks{
		Pick:  func(balancer.PickEvent) { picks.Add(1) },
		Spill: func(e balancer.SpillEvent) { spills.Add(1) },
		Panic: func(e balancer.PanicEvent) { fmt.Println("panic mode:", e.Panic) },
	}
	b, err := balancer.New(balancer.LeastRequest{}, balancer.Options{
		Zone:  "b",
		Hooks: balancer.JoinHooks(hooks), // and a tracer's, a dashboard's...
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	b.Update([]sluice.Endpoint{
		{Addr: "10.0.0.1:8080", Zone: "a"},
		{Addr: "10.0.0.2:8080", Zone: "b", State: sluice.Unhealthy},
		{Addr: "10.0.0.3:8080", Zone: "c", Weight: 3},
	})
	res, err := b.Pick(sluice.PickInfo{Tried: []string{"10.0.0.1:8080"}}) // a retry, held in flight
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("picks:", picks.Load(), "spills:", spills.Load())

	st := b.Stats()
	fmt.Println("zone degraded:", st.ZoneDegraded)
	for _, e := range st.Endpoints {
		fmt.Printf("%s zone=%s %v weight=%d pickable=%v in-flight=%d\n",
			e.Endpoint.Addr, e.Endpoint.Zone, e.Endpoint.State, e.Endpoint.EffectiveWeight(), e.Pickable, e.InFlight)
	}
	res.Done(sluice.Outcome{Status: 200, Latency: time.Millisecond})
	// Output:
	// picks: 1 spills: 1
	// zone degraded: true
	// 10.0.0.1:8080 zone=a ready weight=1 pickable=true in-flight=0
	// 10.0.0.2:8080 zone=b unhealthy weight=1 pickable=false in-flight=0
	// 10.0.0.3:8080 zone=c ready weight=3 pickable=true in-flight=1
}
