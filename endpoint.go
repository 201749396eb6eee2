package sluice

import (
	"errors"
	"net/http"
	"net/netip"
	"time"
)

// State says whether an endpoint should receive new traffic.
//
// The zero value is Ready, so a hand-written Endpoint{Addr: "10.0.0.1:8080"} is usable as is.
type State uint8

const (
	// Ready endpoints receive traffic.
	Ready State = iota
	// Terminating endpoints are still serving but are shutting down (Kubernetes
	// `serving && terminating`). Balancers use them only while no Ready endpoint exists, so
	// that in-flight and last-resort traffic can finish during a rollout.
	Terminating
	// Unhealthy endpoints failed an active health check or were ejected by outlier detection.
	// Balancers skip them unless too few endpoints are healthy (the panic threshold), in which
	// case spreading load over every endpoint beats overloading the few that are left.
	Unhealthy
)

// String returns the lower-case name of s.
func (s State) String() string {
	switch s {
	case Ready:
		return "ready"
	case Terminating:
		return "terminating"
	case Unhealthy:
		return "unhealthy"
	}
	return "unknown"
}

// Endpoint is one backend address that can serve requests: in Kubernetes, one pod's IP and
// port from an EndpointSlice.
//
// Endpoint is a small comparable value: sources build fresh sets of them, balancers key their
// per-endpoint state by Addr, and two sets can be compared with ==. Its fields are
// deliberately strings and numbers only.
type Endpoint struct {
	// Addr is the dial address, "host:port". IPv6 hosts are bracketed ("[fd00::1]:80").
	// It identifies the endpoint: two endpoints with one Addr are the same endpoint.
	Addr string

	// Weight is the endpoint's relative share of traffic. Zero means the default, 1.
	Weight uint32

	// Zone is the topology zone the endpoint runs in (topology.kubernetes.io/zone); empty
	// when unknown.
	Zone string

	// Node is the name of the node the endpoint runs on; empty when unknown.
	Node string

	// ForZones lists the zones that should prefer this endpoint, comma-separated, as
	// EndpointSlice hints.forZones does; empty when there are no hints.
	ForZones string

	// ForNodes lists the nodes that should prefer this endpoint, comma-separated, as
	// EndpointSlice hints.forNodes does (set for Services with trafficDistribution
	// PreferSameNode); empty when there are no node hints.
	ForNodes string

	// State says whether the endpoint takes new traffic.
	State State
}

// EffectiveWeight returns e.Weight, or 1 when it is zero.
func (e Endpoint) EffectiveWeight() uint32 {
	if e.Weight == 0 {
		return 1
	}
	return e.Weight
}

// Failure says why a try produced no usable response from its endpoint.
type Failure uint8

const (
	// NoFailure means the endpoint answered: Outcome.Status holds the status it sent.
	NoFailure Failure = iota
	// ConnectFailure means the request never reached the endpoint: the dial was refused or
	// timed out, or the TLS handshake failed. Such a try is always safe to retry.
	ConnectFailure
	// ConnectionFailure means the connection broke after the request was (or may have been)
	// sent: a reset, an EOF before the response headers, a protocol error.
	ConnectionFailure
	// Timeout means the endpoint did not send response headers within the try's timeout.
	Timeout
	// Canceled means the client went away or the request's context ended. It says nothing
	// about the endpoint: health checks and balancers must not count it against it.
	Canceled
	// ClientFailure means the client broke the request: its body was malformed (bad chunked
	// framing), cut short, over a size limit, or too slow to arrive. It says nothing about the
	// endpoint, which must not be charged for it, and the request is never retried.
	ClientFailure
	// InternalFailure means the forwarder itself failed the try: a panic in one of its hooks
	// (a ModifyResponse, a ResponseWriter wrapper). It says nothing about the endpoint.
	InternalFailure
)

// String returns a short lower-case name for f, suitable for logs and metric labels.
func (f Failure) String() string {
	switch f {
	case NoFailure:
		return "none"
	case ConnectFailure:
		return "connect"
	case ConnectionFailure:
		return "connection"
	case Timeout:
		return "timeout"
	case Canceled:
		return "canceled"
	case ClientFailure:
		return "client"
	case InternalFailure:
		return "internal"
	}
	return "unknown"
}

// Outcome is what one try taught the forwarder about its endpoint. The proxy reports one
// Outcome per try, to the balancer (through PickResult.Done) and to any Observer; that is how
// least-request, peak-EWMA and outlier detection learn.
type Outcome struct {
	// Status is the HTTP status the endpoint answered with; 0 when Failure is not NoFailure.
	Status int
	// Failure says why there was no response, or NoFailure.
	Failure Failure
	// Latency is the time from sending the request to receiving the response headers, or to
	// the failure. L4 proxies, which see no request, report the time to connect.
	Latency time.Duration
	// Duration is how long the try lasted, from its start to its end: for an L4 proxy, from
	// the connection attempt until the forwarded connection closed. Forwarders that do not
	// measure it leave it zero.
	Duration time.Duration
}

// Counts reports whether o says anything about the endpoint's health. A canceled try does not,
// nor does one the client or the forwarder itself broke.
func (o Outcome) Counts() bool {
	return o.Failure != Canceled && o.Failure != ClientFailure && o.Failure != InternalFailure
}

// GatewayFailure reports whether o is a gateway failure in Envoy's sense: the endpoint could
// not be reached or broke the connection, timed out, or answered 502, 503 or 504.
func (o Outcome) GatewayFailure() bool {
	switch o.Failure {
	case ConnectFailure, ConnectionFailure, Timeout:
		return true
	case NoFailure:
		return o.Status == http.StatusBadGateway || o.Status == http.StatusServiceUnavailable ||
			o.Status == http.StatusGatewayTimeout
	}
	return false
}

// ServerError reports whether o counts as an error of the endpoint's: a gateway failure or any
// 5xx status.
func (o Outcome) ServerError() bool {
	return o.GatewayFailure() || (o.Failure == NoFailure && o.Status >= 500 && o.Status <= 599)
}

// PickResult is a balancer's answer for one try. It is a struct so that fields can be added
// without breaking Picker implementations.
type PickResult struct {
	// Endpoint is where the try goes.
	Endpoint Endpoint

	// Done, when not nil, must be called exactly once when the try ends, with its outcome.
	// Balancers use it to keep in-flight counts and latency estimates; a forwarder that
	// forgets to call it leaks an in-flight request in the balancer's books.
	Done func(Outcome)

	// Cookie, when not nil, is set on the response to the client (sticky sessions). The
	// forwarder must not modify it; it is shared between requests.
	Cookie *http.Cookie
}

// PickInfo is what a Picker may look at to choose an endpoint.
type PickInfo struct {
	// Request is the client's request. Pickers read it (for hashing or a sticky cookie) and
	// never modify it.
	Request *http.Request

	// Tried lists the Addr of every endpoint already tried for this request, oldest first.
	// It is empty on the first try. A Picker should choose an endpoint not in Tried when one
	// is available, and may return a tried one when nothing else is left.
	Tried []string

	// Client is the client's address when there is no Request: the peer of a TCP connection
	// or the source of a UDP flow that an L4 proxy forwards. Pickers that hash or pin by
	// client IP read it then. HTTP forwarders leave it zero, the client being in Request.
	Client netip.AddrPort
}

// ErrNoEndpoint is returned by a Picker that has no endpoint to offer. Forwarders answer it
// with 503 Service Unavailable.
var ErrNoEndpoint = errors.New("sluice: no endpoint available")

// Picker chooses the endpoint for each try of a request.
//
// Pick must be safe for concurrent use and should be cheap: it runs on every try of every
// request. Implementations read an immutable snapshot rather than taking a lock. When Pick
// returns a nil error, the caller must call the result's Done (if not nil) exactly once.
// When no endpoint is available, Pick returns an error that wraps ErrNoEndpoint.
type Picker interface {
	Pick(info PickInfo) (PickResult, error)
}

// PickerFunc adapts an ordinary function to the Picker interface.
type PickerFunc func(info PickInfo) (PickResult, error)

// Pick returns f(info).
func (f PickerFunc) Pick(info PickInfo) (PickResult, error) { return f(info) }

// Observer learns from the outcome of every try a forwarder makes. Passive health checking
// (outlier detection) and metrics are Observers.
//
// Observe is called once per try, after the try ends, from the request's goroutine. It must be
// safe for concurrent use, must not block, and must not retain ep beyond the call except by
// value.
type Observer interface {
	Observe(ep Endpoint, o Outcome)
}

// ObserverFunc adapts an ordinary function to the Observer interface.
type ObserverFunc func(ep Endpoint, o Outcome)

// Observe calls f(ep, o).
func (f ObserverFunc) Observe(ep Endpoint, o Outcome) { f(ep, o) }

// Observers returns an Observer that tells each of obs, in order, of every outcome: outlier
// detection and a metrics adapter, say, behind one Proxy.Observer. Nil entries are skipped;
// with one left it is returned as it is, and with none the result is nil.
func Observers(obs ...Observer) Observer {
	var list multiObserver
	for _, o := range obs {
		if o != nil {
			list = append(list, o)
		}
	}
	switch len(list) {
	case 0:
		return nil
	case 1:
		return list[0]
	}
	return list
}

type multiObserver []Observer

func (m multiObserver) Observe(ep Endpoint, o Outcome) {
	for _, ob := range m {
		ob.Observe(ep, o)
	}
}
