package healthcheck_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// A Checker between a discovery source and a balancer: two backends, one of which fails its
// health check. Endpoints start unknown (Unhealthy) and are admitted by their first passing
// probe. Here the marked sets are printed instead of being handed to a balancer's Update.
func Example() {
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	defer healthy.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	names := map[string]string{
		healthy.Listener.Addr().String(): "healthy",
		failing.Listener.Addr().String(): "failing",
	}

	verdicts := make(chan healthcheck.Event, 2)
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:             &healthcheck.HTTP{Path: "/healthz"},
		Interval:          10 * time.Second,
		UnhealthyInterval: 100 * time.Millisecond, // first probes come within this
		InitialState:      sluice.Unhealthy,
		// Passive outlier detection over the outcomes a proxy reports to hc.Observe.
		Outlier: &healthcheck.Outlier{ConsecutiveGatewayFailure: 3},
		// Changes are logged through log/slog (to Logger, nil meaning slog.Default()),
		// and also handed to OnChange.
		OnChange: func(e healthcheck.Event) { verdicts <- e },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- hc.Run(ctx, func([]sluice.Endpoint) {}) }() // bal.Update, usually
	hc.Update([]sluice.Endpoint{
		{Addr: healthy.Listener.Addr().String()},
		{Addr: failing.Listener.Addr().String()},
	})

	got := map[string]healthcheck.Event{}
	for range 2 {
		e := <-verdicts
		got[names[e.Endpoint.Addr]] = e
	}
	for _, name := range []string{"healthy", "failing"} {
		e := got[name]
		fmt.Printf("%s: %v (%v)", name, e.State, e.Reason)
		if e.Err != nil {
			fmt.Printf(": %v", e.Err)
		}
		fmt.Println()
	}
	cancel()
	<-done
	// Output:
	// healthy: ready (probe passed)
	// failing: unhealthy (probe failed): healthcheck: unexpected status 503
}

// Passive outlier detection: the proxy reports every try's outcome to Observe (the Checker is
// a sluice.Observer, set as proxy.Proxy.Observer), and an endpoint that fails five times in a
// row is ejected for BaseEjectionTime.
func ExampleChecker_Observe() {
	events := make(chan healthcheck.Event, 1)
	hc, err := healthcheck.New(healthcheck.Options{
		Outlier:  &healthcheck.Outlier{Consecutive5xx: 5, BaseEjectionTime: time.Minute},
		OnChange: func(e healthcheck.Event) { events <- e },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	pushed := make(chan []sluice.Endpoint, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- hc.Run(ctx, func(eps []sluice.Endpoint) {
			select {
			case <-pushed: // keep only the latest set
			default:
			}
			pushed <- eps
		})
	}()
	pod := sluice.Endpoint{Addr: "10.0.0.7:8080"}
	hc.Update([]sluice.Endpoint{pod, {Addr: "10.0.0.8:8080"}})

	var o sluice.Observer = hc
	for range 5 {
		o.Observe(pod, sluice.Outcome{Status: http.StatusInternalServerError, Latency: 3 * time.Millisecond})
	}
	e := <-events
	fmt.Printf("%s: %v after %v, ejection %d for %v\n", e.Endpoint.Addr, e.State, e.Reason, e.Ejections, e.EjectionTime)
	for set := range pushed { // what the balancer's Update would get
		if set[0].State == sluice.Unhealthy {
			for _, ep := range set {
				fmt.Println("pushed:", ep.Addr, ep.State)
			}
			break
		}
	}
	cancel()
	<-done
	// Output:
	// 10.0.0.7:8080: unhealthy after consecutive 5xx, ejection 1 for 1m0s
	// pushed: 10.0.0.7:8080 unhealthy
	// pushed: 10.0.0.8:8080 ready
}
