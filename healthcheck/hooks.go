package healthcheck

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/hookset"
)

// Hooks are the functions a Checker calls when something happens, for metrics, tracing and
// dashboards. Every field is optional: a nil one costs a nil check. Several sets of hooks are
// combined with JoinHooks.
//
// Both hooks are called from the goroutine running Run, one call at a time, never under a
// lock of the Checker's, and in the order the events happened: a probe's ProbeDone comes
// before the Change it causes. They must not block for long: probes and ejections wait for
// them. The change log (Options.Logger) is written whether or not Change is set.
type Hooks struct {
	// ProbeDone is called after every active probe whose result the Checker uses. The result
	// of a probe canceled because its endpoint left the set, stopped being Ready or Run ended
	// is not reported: it says nothing about the endpoint.
	ProbeDone func(ProbeEvent)

	// Change is called for every change of an endpoint's health, with its reason, after the
	// change is logged.
	Change func(ChangeEvent)
}

// JoinHooks returns Hooks that call the hooks of every element of hs, in order. A field is nil
// when it is nil in every element, so unused hooks stay free.
func JoinHooks(hs ...Hooks) Hooks {
	return Hooks{
		ProbeDone: hookset.Join(hs, func(h Hooks) func(ProbeEvent) { return h.ProbeDone }),
		Change:    hookset.Join(hs, func(h Hooks) func(ChangeEvent) { return h.Change }),
	}
}

// ProbeEvent describes one active probe of one endpoint.
type ProbeEvent struct {
	// Endpoint is the endpoint probed, as last given to Update.
	Endpoint sluice.Endpoint
	// Probe is the kind of probe: "http", "tcp", "grpc", or "custom" for any other Probe.
	Probe string
	// Result says whether the probe passed and, when it failed, how.
	Result ProbeResult
	// Err is the probe's error; nil when it passed.
	Err error
	// Latency is how long the probe took, from its start to the return of Probe.Check.
	Latency time.Duration
}

// ProbeResult is the outcome of one probe: passed, or the way it failed. It is a small set,
// fit for a metric label; ProbeEvent.Err has the details.
type ProbeResult uint8

const (
	// ProbeOK: the probe passed.
	ProbeOK ProbeResult = iota
	// ProbeTimeout: the probe did not finish within Options.Timeout.
	ProbeTimeout
	// ProbeUnreachable: the probe could not connect to the endpoint.
	ProbeUnreachable
	// ProbeBadResponse: the endpoint answered, but not as a healthy one does: an unexpected
	// status, a body that does not match, a gRPC status other than SERVING, a connection
	// closed mid-answer, or any error of a custom Probe.
	ProbeBadResponse
)

// String returns a short lower-case name for r, suitable for logs and metric labels.
func (r ProbeResult) String() string {
	switch r {
	case ProbeOK:
		return "ok"
	case ProbeTimeout:
		return "timeout"
	case ProbeUnreachable:
		return "unreachable"
	case ProbeBadResponse:
		return "bad response"
	}
	return "unknown"
}

// probeResult classifies a probe's error.
func probeResult(err error) ProbeResult {
	if err == nil {
		return ProbeOK
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return ProbeTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return ProbeUnreachable
	}
	return ProbeBadResponse
}

// probeKind names p for ProbeEvent.Probe.
func probeKind(p Probe) string {
	switch p.(type) {
	case *HTTP:
		return "http"
	case *TCP:
		return "tcp"
	case *GRPC:
		return "grpc"
	}
	return "custom"
}
