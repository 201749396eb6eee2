package healthcheck

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Options configures a Checker. The zero value checks nothing: every endpoint is passed
// through as it comes. Set Probe for active checks, Outlier for passive outlier detection,
// or both.
type Options struct {
	// Probe is the active health check run against every Ready endpoint: an *HTTP, *TCP or
	// *GRPC, or any Probe. Nil disables active checking; endpoints are then healthy unless
	// outlier detection ejects them.
	Probe Probe

	// Interval is the time between two probes of a healthy endpoint, measured from the end of
	// one to the start of the next. Zero means 5s.
	Interval time.Duration

	// UnhealthyInterval is the time between probes of an endpoint that is unhealthy, ejected,
	// or not yet probed when InitialState is Unhealthy. A shorter value brings endpoints back
	// sooner (HAProxy's fastinter/downinter, Envoy's unhealthy_interval). Zero means Interval.
	UnhealthyInterval time.Duration

	// NoTrafficInterval is the time between probes of a healthy endpoint that no request has
	// reached since its last probe, as reported to Observe. Set it longer than Interval to
	// spare idle backends (Envoy's no_traffic_interval). Zero means Interval.
	NoTrafficInterval time.Duration

	// Jitter is the largest random extension of each wait, as a fraction of it: with an
	// Interval of 10s and a Jitter of 0.1 the waits fall in [10s, 11s). It keeps probes that
	// once fired together from staying together. Zero means 0.1; a negative value disables
	// jitter. It must not exceed 1.
	Jitter float64

	// Timeout bounds one probe, from dialing to the last byte read. A probe that takes longer
	// fails. Zero means 1s.
	Timeout time.Duration

	// HealthyThreshold is how many consecutive passing probes turn an unhealthy endpoint
	// healthy. Zero means 2. (An endpoint that was never probed becomes healthy on its first
	// passing probe.)
	HealthyThreshold int

	// UnhealthyThreshold is how many consecutive failing probes turn a healthy endpoint
	// unhealthy. Zero means 3.
	UnhealthyThreshold int

	// MaxProbes bounds the probes in flight at once, over all endpoints; probes that fall due
	// while the limit is reached wait for a slot. Zero means 64.
	MaxProbes int

	// InitialState is how a new endpoint is reported until its first probe: sluice.Ready
	// (the zero value: healthy until proven otherwise, after UnhealthyThreshold failures) or
	// sluice.Unhealthy (unknown until the first probe passes). Unhealthy needs a Probe.
	InitialState sluice.State

	// Outlier, when not nil, turns on passive outlier detection over the outcomes reported to
	// Observe. Its zero value gives Envoy's defaults.
	Outlier *Outlier

	// Hooks are called on every probe and every health change, for metrics and dashboards.
	// See Hooks for when and where they run.
	Hooks Hooks

	// Logger receives the change log, one line per ChangeEvent whether or not Hooks.Change is
	// set: a warning when an endpoint stops taking traffic, an info line when it comes back (a
	// failing probe's error is on its ProbeFailed line). Nil means slog.Default(), as it is
	// when New is called. To silence the log, pass slog.New(slog.DiscardHandler).
	Logger *slog.Logger
}

// Outlier configures passive outlier detection, modelled on Envoy's: the Checker counts the
// outcome of every try reported to Observe and ejects an endpoint — reports it Unhealthy —
// when its record is much worse than its peers'. Zero fields take the defaults given, which
// are Envoy's; a negative count disables that detector.
type Outlier struct {
	// Consecutive5xx ejects an endpoint after this many consecutive tries that ended in a
	// server error (any 5xx, or a gateway failure: see sluice.Outcome.ServerError). Zero
	// means 5; negative disables.
	Consecutive5xx int

	// ConsecutiveGatewayFailure ejects an endpoint after this many consecutive gateway
	// failures (connect or connection failure, timeout, 502, 503, 504); any other outcome,
	// a 500 included, resets the count. Set it below Consecutive5xx to eject unreachable
	// endpoints sooner than ones that answer with errors. Zero means 5; negative disables.
	ConsecutiveGatewayFailure int

	// SuccessRate, when not nil, ejects endpoints whose success rate over the last Interval
	// lies far below the mean of their peers'.
	SuccessRate *SuccessRate

	// FailurePercentage, when not nil, ejects endpoints whose failure percentage over the
	// last Interval exceeds a fixed threshold.
	FailurePercentage *FailurePercentage

	// Interval is the window of the success-rate and failure-percentage detectors, and the
	// period after which one past ejection is forgiven (see BaseEjectionTime). Zero means 10s.
	Interval time.Duration

	// BaseEjectionTime is how long the first ejection lasts. The n-th ejection of an endpoint
	// lasts n × BaseEjectionTime, capped at MaxEjectionTime; n goes down by one for every
	// Interval the endpoint spends not ejected. Zero means 30s.
	BaseEjectionTime time.Duration

	// MaxEjectionTime caps an ejection. Zero means the greater of 300s and BaseEjectionTime.
	MaxEjectionTime time.Duration

	// MaxEjectionPercent is the largest share of the Ready endpoints that may be ejected at
	// once, in percent. One endpoint may always be ejected, whatever the share. Zero means 10.
	MaxEjectionPercent int
}

// SuccessRate configures the success-rate detector: among the endpoints with at least
// RequestVolume tries in the last Outlier.Interval — if there are at least MinimumHosts of
// them — an endpoint whose success rate is below mean − StdevFactor × stdev is ejected.
type SuccessRate struct {
	// MinimumHosts is how many endpoints must have enough volume for the detector to run.
	// Zero means 5.
	MinimumHosts int
	// RequestVolume is the fewest tries in the window for an endpoint to be judged. Zero
	// means 100.
	RequestVolume int
	// StdevFactor sets how far below the mean an endpoint must fall. Zero means 1.9.
	StdevFactor float64
}

// FailurePercentage configures the failure-percentage detector: among the endpoints with at
// least RequestVolume tries in the last Outlier.Interval — if there are at least
// MinimumHosts of them — an endpoint whose share of server errors reaches Threshold percent
// is ejected.
type FailurePercentage struct {
	// Threshold is the failure percentage that ejects, in (0, 100]. Zero means 85.
	Threshold int
	// MinimumHosts is how many endpoints must have enough volume for the detector to run.
	// Zero means 5.
	MinimumHosts int
	// RequestVolume is the fewest tries in the window for an endpoint to be judged. Zero
	// means 50.
	RequestVolume int
}

// config is Options with the defaults filled in and the detectors resolved.
type config struct {
	Options
	outlier Outlier
	passive bool
	probe   string // ProbeEvent.Probe
	sr      SuccessRate
	fp      FailurePercentage
}

func positive(name string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("healthcheck: %s must be ≥ 0, got %v", name, d)
	}
	return nil
}

func count(name string, n int) error {
	if n < 0 {
		return fmt.Errorf("healthcheck: %s must be ≥ 0, got %d", name, n)
	}
	return nil
}

func orDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func orInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// newConfig validates opts and fills in its defaults. The error names the first field out of
// range.
func newConfig(opts Options) (*config, error) {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"Interval", opts.Interval},
		{"UnhealthyInterval", opts.UnhealthyInterval},
		{"NoTrafficInterval", opts.NoTrafficInterval},
		{"Timeout", opts.Timeout},
	} {
		if err := positive("Options."+f.name, f.d); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		name string
		n    int
	}{
		{"HealthyThreshold", opts.HealthyThreshold},
		{"UnhealthyThreshold", opts.UnhealthyThreshold},
		{"MaxProbes", opts.MaxProbes},
	} {
		if err := count("Options."+f.name, f.n); err != nil {
			return nil, err
		}
	}
	if opts.Jitter > 1 || math.IsNaN(opts.Jitter) {
		return nil, fmt.Errorf("healthcheck: Options.Jitter must be ≤ 1, got %v", opts.Jitter)
	}
	switch opts.InitialState {
	case sluice.Ready:
	case sluice.Unhealthy:
		if opts.Probe == nil {
			return nil, fmt.Errorf("healthcheck: Options.InitialState %v needs a Probe to ever pass", opts.InitialState)
		}
	default:
		return nil, fmt.Errorf("healthcheck: Options.InitialState must be ready or unhealthy, got %v", opts.InitialState)
	}

	c := &config{Options: opts}
	c.Interval = orDuration(opts.Interval, 5*time.Second)
	c.UnhealthyInterval = orDuration(opts.UnhealthyInterval, c.Interval)
	c.NoTrafficInterval = orDuration(opts.NoTrafficInterval, c.Interval)
	c.Timeout = orDuration(opts.Timeout, time.Second)
	c.HealthyThreshold = orInt(opts.HealthyThreshold, 2)
	c.UnhealthyThreshold = orInt(opts.UnhealthyThreshold, 3)
	c.MaxProbes = orInt(opts.MaxProbes, 64)
	switch {
	case opts.Jitter == 0:
		c.Jitter = 0.1
	case opts.Jitter < 0:
		c.Jitter = 0
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Probe != nil {
		c.probe = probeKind(c.Probe)
	}

	if o := opts.Outlier; o != nil {
		if err := c.outlierConfig(*o); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *config) outlierConfig(o Outlier) error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"Interval", o.Interval},
		{"BaseEjectionTime", o.BaseEjectionTime},
		{"MaxEjectionTime", o.MaxEjectionTime},
	} {
		if err := positive("Outlier."+f.name, f.d); err != nil {
			return err
		}
	}
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		return fmt.Errorf("healthcheck: Outlier.MaxEjectionPercent must be in [0, 100], got %d", o.MaxEjectionPercent)
	}
	o.Interval = orDuration(o.Interval, 10*time.Second)
	o.BaseEjectionTime = orDuration(o.BaseEjectionTime, 30*time.Second)
	o.MaxEjectionTime = orDuration(o.MaxEjectionTime, max(300*time.Second, o.BaseEjectionTime))
	if o.MaxEjectionTime < o.BaseEjectionTime {
		return fmt.Errorf("healthcheck: Outlier.MaxEjectionTime must be ≥ BaseEjectionTime (%v), got %v",
			o.BaseEjectionTime, o.MaxEjectionTime)
	}
	o.MaxEjectionPercent = orInt(o.MaxEjectionPercent, 10)
	o.Consecutive5xx = orInt(o.Consecutive5xx, 5)
	o.ConsecutiveGatewayFailure = orInt(o.ConsecutiveGatewayFailure, 5)

	if sr := o.SuccessRate; sr != nil {
		if err := count("Outlier.SuccessRate.MinimumHosts", sr.MinimumHosts); err != nil {
			return err
		}
		if err := count("Outlier.SuccessRate.RequestVolume", sr.RequestVolume); err != nil {
			return err
		}
		if sr.StdevFactor < 0 || math.IsNaN(sr.StdevFactor) || math.IsInf(sr.StdevFactor, 0) {
			return fmt.Errorf("healthcheck: Outlier.SuccessRate.StdevFactor must be a finite number ≥ 0, got %v", sr.StdevFactor)
		}
		c.sr = SuccessRate{
			MinimumHosts:  orInt(sr.MinimumHosts, 5),
			RequestVolume: orInt(sr.RequestVolume, 100),
			StdevFactor:   sr.StdevFactor,
		}
		if c.sr.StdevFactor == 0 {
			c.sr.StdevFactor = 1.9
		}
	}
	if fp := o.FailurePercentage; fp != nil {
		if fp.Threshold < 0 || fp.Threshold > 100 {
			return fmt.Errorf("healthcheck: Outlier.FailurePercentage.Threshold must be in [0, 100], got %d", fp.Threshold)
		}
		if err := count("Outlier.FailurePercentage.MinimumHosts", fp.MinimumHosts); err != nil {
			return err
		}
		if err := count("Outlier.FailurePercentage.RequestVolume", fp.RequestVolume); err != nil {
			return err
		}
		c.fp = FailurePercentage{
			Threshold:     orInt(fp.Threshold, 85),
			MinimumHosts:  orInt(fp.MinimumHosts, 5),
			RequestVolume: orInt(fp.RequestVolume, 50),
		}
	}
	c.outlier = o
	c.passive = true
	return nil
}
