package sluice_test

import (
	"fmt"
	"net/http"

	"github.com/sluiceproxy/sluice"
)

// ExampleClientIP shows how a proxy behind a trusted load balancer finds the real client, and
// how a forged X-Forwarded-For from the client itself is ignored.
func ExampleClientIP() {
	trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8")
	if err != nil {
		panic(err)
	}
	r, _ := http.NewRequest("GET", "http://example.com/", nil)
	r.RemoteAddr = "10.0.0.2:51234" // the cluster's load balancer
	r.Header.Set("X-Forwarded-For", "6.6.6.6, 198.51.100.1")
	fmt.Println(sluice.ClientIP(r, trusted))

	r.RemoteAddr = "203.0.113.9:40000" // a client connecting directly
	fmt.Println(sluice.ClientIP(r, trusted))
	// Output:
	// 198.51.100.1
	// 203.0.113.9
}

// ExamplePickerFunc shows the smallest Picker: one fixed endpoint, with the outcome of each try
// reported back through Done.
func ExamplePickerFunc() {
	ep := sluice.Endpoint{Addr: "127.0.0.1:8080"}
	p := sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		return sluice.PickResult{Endpoint: ep, Done: func(o sluice.Outcome) {
			fmt.Println("try ended:", o.Status, o.Failure)
		}}, nil
	})
	res, _ := p.Pick(sluice.PickInfo{})
	fmt.Println("picked", res.Endpoint.Addr, "weight", res.Endpoint.EffectiveWeight())
	res.Done(sluice.Outcome{Status: 200})
	// Output:
	// picked 127.0.0.1:8080 weight 1
	// try ended: 200 none
}

func ExampleObservers() {
	logOutcome := sluice.ObserverFunc(func(ep sluice.Endpoint, o sluice.Outcome) {
		fmt.Println("log:", ep.Addr, o.Status)
	})
	countFailures := sluice.ObserverFunc(func(ep sluice.Endpoint, o sluice.Outcome) {
		fmt.Println("counts against the endpoint:", o.Counts() && o.ServerError())
	})
	// One Observer for proxy.Proxy.Observer that feeds both.
	obs := sluice.Observers(logOutcome, countFailures)
	obs.Observe(sluice.Endpoint{Addr: "10.0.0.7:8080"}, sluice.Outcome{Status: 503})
	// Output:
	// log: 10.0.0.7:8080 503
	// counts against the endpoint: true
}
