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
		// Without OnChange, changes are logged through log/slog.
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
