package healthcheck

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Reason says why an endpoint's health changed.
type Reason uint8

const (
	// ProbeFailed: active probes failed UnhealthyThreshold times in a row, or the first probe
	// of an endpoint that started Unhealthy failed. ChangeEvent.Err holds the last probe's error.
	ProbeFailed Reason = iota + 1
	// ProbePassed: active probes passed HealthyThreshold times in a row, or the first probe of
	// an endpoint passed.
	ProbePassed
	// Consecutive5xx: outlier detection ejected the endpoint after consecutive server errors.
	Consecutive5xx
	// ConsecutiveGatewayFailure: outlier detection ejected the endpoint after consecutive
	// gateway failures.
	ConsecutiveGatewayFailure
	// SuccessRateOutlier: outlier detection ejected the endpoint because its success rate
	// fell far below its peers'.
	SuccessRateOutlier
	// FailurePercentageOutlier: outlier detection ejected the endpoint because its failure
	// percentage reached the threshold.
	FailurePercentageOutlier
	// EjectionEnded: the endpoint's ejection time is over (and, with active checks on, a probe
	// has passed since), so it takes traffic again.
	EjectionEnded
)

// String returns a short lower-case name for r, suitable for logs and metric labels.
func (r Reason) String() string {
	switch r {
	case ProbeFailed:
		return "probe failed"
	case ProbePassed:
		return "probe passed"
	case Consecutive5xx:
		return "consecutive 5xx"
	case ConsecutiveGatewayFailure:
		return "consecutive gateway failures"
	case SuccessRateOutlier:
		return "success rate outlier"
	case FailurePercentageOutlier:
		return "failure percentage outlier"
	case EjectionEnded:
		return "ejection ended"
	}
	return "unknown"
}

// Ejection reports whether r is the reason of an ejection by outlier detection.
func (r Reason) Ejection() bool {
	return r >= Consecutive5xx && r <= FailurePercentageOutlier
}

// ChangeEvent describes one change in an endpoint's health, as seen by the active checks or
// by outlier detection: the argument of Hooks.Change. The two are tracked apart: an endpoint
// can be ejected while its probes pass, and To is what the Checker now reports for it,
// considering both. So From and To are equal when one verdict changes while the other keeps
// the endpoint out (probes fail during an ejection, or an ejection ends while probes fail).
type ChangeEvent struct {
	// Endpoint is the endpoint as last given to Update.
	Endpoint sluice.Endpoint
	// From is the state the Checker reported for the endpoint before the change: Ready or
	// Unhealthy.
	From sluice.State
	// To is the state the Checker reports for the endpoint now: Ready or Unhealthy.
	To sluice.State
	// Reason says what changed.
	Reason Reason
	// Err is the last probe's error when Reason is ProbeFailed.
	Err error
	// Ejections counts the endpoint's recent ejections, this one included, when the event is
	// an ejection: the multiplier of Outlier.BaseEjectionTime. It stops growing once the
	// product reaches Outlier.MaxEjectionTime, so that forgiveness does not take for ever.
	Ejections int
	// EjectionTime is how long the endpoint stays ejected, when the event is an ejection.
	EjectionTime time.Duration
}

// logEvent writes the change log line for e: a warning when an endpoint stops taking
// traffic, an info line when it comes back.
func logEvent(log *slog.Logger, e ChangeEvent) {
	level := slog.LevelInfo
	if e.To != sluice.Ready {
		level = slog.LevelWarn
	}
	if !log.Enabled(context.Background(), level) {
		return // a silenced Logger costs no attributes
	}
	attrs := []slog.Attr{
		slog.String("addr", e.Endpoint.Addr),
		slog.String("state", e.To.String()),
		slog.String("from", e.From.String()),
		slog.String("reason", e.Reason.String()),
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	if e.Reason.Ejection() {
		attrs = append(attrs, slog.Int("ejections", e.Ejections), slog.Duration("ejection_time", e.EjectionTime))
	}
	log.LogAttrs(context.Background(), level, "healthcheck: endpoint health changed", attrs...)
}
