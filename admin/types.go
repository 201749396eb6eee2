package admin

import (
	"encoding/json"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Route is one routing rule as the dashboard shows it.
type Route struct {
	// Name identifies the route, and is the name its requests are given to Recorder.Record.
	Name string `json:"name"`
	// Hosts are the host names the route matches; empty for a default route.
	Hosts []string `json:"hosts"`
	// Paths describe the path rules, in whatever words the router uses ("prefix /api").
	Paths []string `json:"paths"`
	// Pools name the pools (services) the route sends to.
	Pools []string `json:"pools"`
}

// Pool is one backend service and its endpoints.
type Pool struct {
	// Name identifies the pool.
	Name string `json:"name"`
	// Policy names the balancing policy ("round-robin", "peak-ewma"); empty when unknown.
	Policy string `json:"policy"`
	// Endpoints are the pool's endpoints, in the order to show them.
	Endpoints []Endpoint `json:"endpoints"`
}

// State is an endpoint's state as the dashboard shows it: one of the constants below.
type State string

// The states an endpoint is shown in. StateEjected is an unhealthy endpoint that passive
// outlier detection took out, as opposed to one that failed its active probes.
const (
	StateReady       State = "ready"
	StateTerminating State = "terminating"
	StateUnhealthy   State = "unhealthy"
	StateEjected     State = "ejected"
)

// StateOf returns the State that shows s.
func StateOf(s sluice.State) State {
	switch s {
	case sluice.Ready:
		return StateReady
	case sluice.Terminating:
		return StateTerminating
	}
	return StateUnhealthy
}

// Endpoint is one endpoint of a Pool.
type Endpoint struct {
	// Addr is the endpoint's address, "host:port", and the name its requests are given to
	// Recorder.Record.
	Addr string `json:"addr"`
	// Zone is the endpoint's topology zone; empty when unknown.
	Zone string `json:"zone"`
	// State is the endpoint's state.
	State State `json:"state"`
	// InFlight counts the requests the endpoint is serving now, or is -1 when nothing counts
	// them (a balancer whose policy compares no loads, as round robin: see
	// balancer.Stats.CountsInFlight). In JSON, -1 is null.
	InFlight int `json:"-"`
	// Latency is the balancer's latency estimate for the endpoint (its EWMA); zero when
	// unknown. In JSON it is "latency_ms", in milliseconds.
	Latency time.Duration `json:"-"`
	// Ejections are the endpoint's recent ejections, oldest first.
	Ejections []Ejection `json:"ejections"`
}

// EndpointOf returns the Endpoint that shows e: its address, zone and state.
func EndpointOf(e sluice.Endpoint) Endpoint {
	return Endpoint{Addr: e.Addr, Zone: e.Zone, State: StateOf(e.State)}
}

// MarshalJSON encodes e with Latency in milliseconds, InFlight null when not counted and
// Ejections never null.
func (e Endpoint) MarshalJSON() ([]byte, error) {
	type plain Endpoint // without the method, so that this is not recursive
	ej := e.Ejections
	if ej == nil {
		ej = []Ejection{}
	}
	p := plain(e)
	p.Ejections = ej
	var inFlight *int
	if e.InFlight >= 0 {
		inFlight = &e.InFlight
	}
	return json.Marshal(struct {
		plain
		InFlight  *int    `json:"in_flight"`
		LatencyMS float64 `json:"latency_ms"`
	}{p, inFlight, millis(e.Latency)})
}

// Ejection is one time an endpoint was taken out of service.
type Ejection struct {
	// At is when it happened.
	At time.Time `json:"at"`
	// Reason says why, in the health checker's words ("consecutive 5xx", "probe failed").
	Reason string `json:"reason"`
	// For is how long the endpoint stays out; zero when it stays out until a probe passes.
	// In JSON it is "for_ms", in milliseconds.
	For time.Duration `json:"-"`
}

// MarshalJSON encodes j with For in milliseconds.
func (j Ejection) MarshalJSON() ([]byte, error) {
	type plain Ejection
	return json.Marshal(struct {
		plain
		ForMS float64 `json:"for_ms"`
	}{plain(j), millis(j.For)})
}

// Certificate is one certificate being served: what it names and when it expires. It has no
// field for a key, and no field for the certificate's bytes either: the dashboard shows
// expiry, not material.
type Certificate struct {
	// Names are the DNS names (and IP addresses) the certificate is served for.
	Names []string `json:"names"`
	// Issuer is the issuer's common name; empty when unknown.
	Issuer string `json:"issuer"`
	// NotBefore and NotAfter bound the certificate's validity.
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// CacheSummary is the state of a response cache.
type CacheSummary struct {
	// Entries and Bytes are what the cache holds; MaxBytes its bound (0: unbounded).
	Entries  int   `json:"entries"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
	// The counts of lookups and stores since the cache was made, by outcome (RFC 9211).
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Stale     uint64 `json:"stale"`
	Collapsed uint64 `json:"collapsed"`
	Stored    uint64 `json:"stored"`
	Evicted   uint64 `json:"evicted"`
}

// LimiterSummary is the state of one rate or concurrency limiter.
type LimiterSummary struct {
	// Name identifies the limiter.
	Name string `json:"name"`
	// Keys counts the clients (keys) it holds state for; MaxKeys is its bound (0: none).
	Keys    int `json:"keys"`
	MaxKeys int `json:"max_keys"`
	// The counts of decisions since the limiter was made.
	Allowed uint64 `json:"allowed"`
	Limited uint64 `json:"limited"`
	Delayed uint64 `json:"delayed"`
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
