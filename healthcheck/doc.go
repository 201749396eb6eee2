// Package healthcheck decides which endpoints should get traffic, from two sources: active
// probes it sends itself, and the outcomes of the real requests the proxy forwards (passive
// outlier detection). It never imports the balancer or the proxy; it speaks the shared
// vocabulary of package sluice.
//
// # Wiring
//
// A Checker sits between a discovery source and a balancer. The source pushes whole endpoint
// sets into Update; Run pushes the same sets on, with State set to sluice.Unhealthy on the
// endpoints that fail their checks, to the balancer's Update; the proxy reports every try's
// outcome to Observe:
//
//	hc, err := healthcheck.New(healthcheck.Options{
//		Probe:   &healthcheck.HTTP{Path: "/healthz"},
//		Outlier: &healthcheck.Outlier{},
//	})
//	go src.Watch(ctx, hc.Update)
//	go hc.Run(ctx, bal.Update)
//	p := &proxy.Proxy{Picker: bal, Observer: hc}
//
// # Active checks
//
// Every Ready endpoint is probed — over HTTP, TCP or the gRPC health-checking protocol, or by
// any Probe — once per Options.Interval, with a random extension of up to Options.Jitter of
// the interval so that probes do not march in step. An endpoint turns unhealthy after
// UnhealthyThreshold consecutive failures (a probe that exceeds Timeout fails) and healthy
// again after HealthyThreshold consecutive passes. Unhealthy endpoints are probed every
// UnhealthyInterval, and healthy ones that saw no traffic every NoTrafficInterval.
//
// New endpoints get their first probe at a random point within one interval, so that a
// thousand endpoints arriving at once are probed spread over the interval rather than in one
// burst, and no more than MaxProbes probes are ever in flight. Until then they are reported
// in Options.InitialState: Ready (healthy until proven otherwise) or Unhealthy (unknown until
// the first probe passes). An endpoint that leaves the set is forgotten at once: its probe in
// flight is canceled and it is never probed again.
//
// # Passive outlier detection
//
// Outlier detection follows Envoy's. Observe counts, per endpoint, consecutive server errors,
// consecutive gateway failures (unreachable, reset, timed out, 502, 503, 504), and the tries
// and errors of the current window. When a consecutive count reaches its threshold, or at the
// end of a window an endpoint's success rate lies far below its peers' or its failure
// percentage above a threshold, the endpoint is ejected: reported Unhealthy for
// BaseEjectionTime times the number of its recent ejections, capped at MaxEjectionTime. No
// more than MaxEjectionPercent of the endpoints are ejected at once (though one always may
// be), so that a fault in the proxy itself cannot empty the set. When the time is over the
// endpoint comes back — at once without active checks, and with them only once a probe
// passes. Each window an endpoint spends in service forgives one past ejection.
//
// Observe is on the hot path of every request: it reads the current set through an atomic
// pointer, updates a few atomic counters, takes no lock and allocates nothing. Decisions are
// made by Run, which Observe wakes without blocking.
//
// # Kubernetes termination
//
// Endpoints that come in Terminating (serving but shutting down) or Unhealthy are passed on
// unchanged and not probed: the balancer gives Terminating endpoints no new traffic while
// Ready ones exist, and their requests in flight finish.
//
// # Events, hooks and status
//
// Every change of an endpoint's health — a probe verdict, an ejection by one of the four
// detectors, its end — is a ChangeEvent with a Reason and the states before and after. Each is
// logged through log/slog to Options.Logger, then handed to Options.Hooks.Change, if set.
// Hooks.ProbeDone sees every active probe: the endpoint, the kind of probe, a ProbeResult
// (ok, timeout, unreachable, bad response) fit for a metric label, the error and the latency.
// Both hooks run on Run's goroutine, one at a time and outside any lock, so they must not
// block; JoinHooks lets a metrics exporter, a tracer and a dashboard all listen. Unset hooks
// cost a nil check, and Observe, the per-request path, calls none.
//
// For gauges and admin pages, Checker.Endpoints returns a copy of what the Checker knows about
// each endpoint — its state and the reason of its last change, its failing probes, its runs of
// server errors, whether it is ejected, until when, by which detector and how often — without
// waiting for Run or slowing Observe.
package healthcheck
