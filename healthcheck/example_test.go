package healthcheck_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
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

	verdicts := make(chan healthcheck.ChangeEvent, 2)
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:             &healthcheck.HTTP{Path: "/healthz"},
		Interval:          10 * time.Second,
		UnhealthyInterval: 100 * time.Millisecond, // first probes come within this
		InitialState:      sluice.Unhealthy,
		// Passive outlier detection over the outcomes a proxy reports to hc.Observe.
		Outlier: &healthcheck.Outlier{ConsecutiveGatewayFailure: 3},
		// Changes are logged through log/slog (to Logger, nil meaning slog.Default()),
		// and also handed to Hooks.Change.
		Hooks: healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) { verdicts <- e }},
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

	got := map[string]healthcheck.ChangeEvent{}
	for range 2 {
		e := <-verdicts
		got[names[e.Endpoint.Addr]] = e
	}
	for _, name := range []string{"healthy", "failing"} {
		e := got[name]
		fmt.Printf("%s: %v (%v)", name, e.To, e.Reason)
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
	events := make(chan healthcheck.ChangeEvent, 1)
	hc, err := healthcheck.New(healthcheck.Options{
		Outlier: &healthcheck.Outlier{Consecutive5xx: 5, BaseEjectionTime: time.Minute},
		Hooks:   healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) { events <- e }},
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
	fmt.Printf("%s: %v after %v, ejection %d for %v\n", e.Endpoint.Addr, e.To, e.Reason, e.Ejections, e.EjectionTime)
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

// Hooks feed metrics and dashboards, and Endpoints answers an admin page: here a counter of
// ejections by detector, and the endpoints' status after one was ejected.
func ExampleChecker_Endpoints() {
	var mu sync.Mutex
	ejections := map[healthcheck.Reason]int{} // a Prometheus counter vector, usually
	changed := make(chan struct{}, 1)
	metrics := healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) {
		if e.Reason.Ejection() {
			mu.Lock()
			ejections[e.Reason]++
			mu.Unlock()
		}
		changed <- struct{}{}
	}}
	hc, err := healthcheck.New(healthcheck.Options{
		Outlier: &healthcheck.Outlier{ConsecutiveGatewayFailure: 3},
		Hooks:   healthcheck.JoinHooks(metrics), // and a tracer's, a dashboard's...
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- hc.Run(ctx, func([]sluice.Endpoint) {}) }()
	hc.Update([]sluice.Endpoint{{Addr: "10.0.0.7:8080"}, {Addr: "10.0.0.8:8080"}})
	for range 3 {
		hc.Observe(sluice.Endpoint{Addr: "10.0.0.7:8080"}, sluice.Outcome{Failure: sluice.ConnectFailure})
	}
	<-changed

	for _, s := range hc.Endpoints() {
		fmt.Printf("%s %v ejected=%v", s.Endpoint.Addr, s.State, s.Ejected)
		if s.TotalEjections > 0 {
			fmt.Printf(" by %v, %d time(s)", s.EjectionReason, s.TotalEjections)
		}
		fmt.Println()
	}
	mu.Lock()
	fmt.Println("ejections:", ejections)
	mu.Unlock()
	cancel()
	<-done
	// Output:
	// 10.0.0.7:8080 unhealthy ejected=true by consecutive gateway failures, 1 time(s)
	// 10.0.0.8:8080 ready ejected=false
	// ejections: map[consecutive gateway failures:1]
}
