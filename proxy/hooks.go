package proxy

import (
	"net/http"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Hooks are the events of a Proxy, for metrics, tracing and logs; sluice imports no library
// of its own for them. Every field is optional: a nil one costs the proxy a nil check and
// nothing else, no allocation and no clock read.
//
// The proxy calls hooks synchronously, on the goroutine serving the request, never while it
// holds a lock. They must be safe for concurrent use and must not block: the request waits
// for them. [JoinHooks] combines the hooks of several listeners.
type Hooks struct {
	// RequestDone is called once per request, after the response is written (for an
	// upgraded connection, after the tunnel closes), with the client's request.
	RequestDone func(r *http.Request, e RequestEvent)

	// TryStart is called as each try starts, after the endpoint is picked and before the
	// request is sent, with the request about to be sent: a tracer starts a client span
	// from out.Context() and injects its traceparent, tracestate and baggage into
	// out.Header, which the try then sends, whichever default transport carries it (the
	// lean HTTP/1.1 client, net/http's Transport, an upgrade) or a custom Transport. out.URL
	// names the endpoint. TryStart may change out.Header and nothing else, and must not keep
	// out after the try ends: the proxy reuses it.
	//
	// The func it returns, when not nil, is called once as the try ends, before the next
	// try (if any) starts, so that retries show as sibling tries of one request. A try
	// whose response is forwarded ends when the body has been copied, or the tunnel of an
	// upgraded connection closed.
	TryStart func(out *http.Request, e TryStartEvent) func(TryEvent)
}

// RequestEvent describes one finished request.
type RequestEvent struct {
	// Start is when the proxy received the request.
	Start time.Time
	// Route is the route name set with WithRoute, or "".
	Route string
	// Endpoint is the address of the last endpoint tried, or "" when none was picked.
	Endpoint string
	// Status is the status sent to the client; 499 when the client went away first. When
	// the upstream broke off or stalled mid-body, the client's connection was aborted and
	// Status is 502 or 504, which is what the request amounted to, not the head that was sent.
	Status int
	// Failure is why the last try failed, or NoFailure.
	Failure sluice.Failure
	// Tries is the number of tries made, 0 when no endpoint was picked.
	Tries int
	// RequestBytes is the number of request body bytes read from the client, not counting
	// what an upgraded connection sent through its tunnel.
	RequestBytes int64
	// Bytes is the number of response body bytes written to the client (for an upgraded
	// connection, bytes sent to the client through the tunnel).
	Bytes int64
	// UpstreamLatency is the time from sending the last try to receiving its response head
	// (the upstream's time to first byte), or to its failure; 0 when no try was made.
	UpstreamLatency time.Duration
	// Duration is the time from receiving the request to finishing the response.
	Duration time.Duration
	// Upgraded reports whether the connection switched protocols.
	Upgraded bool
}

// TryStartEvent describes a try about to start.
type TryStartEvent struct {
	// Endpoint is the endpoint picked for the try.
	Endpoint sluice.Endpoint
	// Attempt is the try's number, 1 for the first: a try with Attempt > 1 is a retry.
	Attempt int
}

// TryEvent describes a try that ended.
type TryEvent struct {
	// Endpoint is the endpoint tried.
	Endpoint sluice.Endpoint
	// Attempt is the try's number, 1 for the first: a try with Attempt > 1 is a retry.
	Attempt int
	// Outcome is what the balancer and the Observer were told of the try. Its Duration is
	// the try's, from its start to its end (for the forwarded try, the end of its body).
	Outcome sluice.Outcome
	// Retry says why the proxy tries again after this try, or NoRetry when this try is the
	// last. The client may still leave during the backoff, ending the request without one.
	Retry RetryReason
}

// RetryReason says why a try is followed by another.
type RetryReason uint8

const (
	// NoRetry means no try follows.
	NoRetry RetryReason = iota
	// RetryConnect means the try could not connect to its endpoint: the request never left.
	RetryConnect
	// RetryConnection means the connection broke before the response head arrived.
	RetryConnection
	// RetryTimeout means the try ran out of time (Retry.PerTryTimeout) waiting for the head.
	RetryTimeout
	// RetryStatus means the endpoint answered with a status listed in Retry.RetryOn; the
	// Outcome's Status says which.
	RetryStatus
)

// String returns "none", "connect", "connection", "timeout" or "status", short enough for a
// metric label.
func (r RetryReason) String() string {
	switch r {
	case NoRetry:
		return "none"
	case RetryConnect:
		return "connect"
	case RetryConnection:
		return "connection"
	case RetryTimeout:
		return "timeout"
	case RetryStatus:
		return "status"
	}
	return "unknown"
}

// retryReason is why a failed try (Failure not NoFailure) is retried.
func retryReason(o sluice.Outcome) RetryReason {
	switch o.Failure {
	case sluice.NoFailure:
		return RetryStatus
	case sluice.ConnectFailure:
		return RetryConnect
	case sluice.Timeout:
		return RetryTimeout
	}
	return RetryConnection
}

// JoinHooks returns hooks that call those of every hs, in order, skipping nil fields. A field
// that no hs sets stays nil, so that the proxy skips it.
func JoinHooks(hs ...Hooks) Hooks {
	var done []func(*http.Request, RequestEvent)
	var start []func(*http.Request, TryStartEvent) func(TryEvent)
	for _, h := range hs {
		if h.RequestDone != nil {
			done = append(done, h.RequestDone)
		}
		if h.TryStart != nil {
			start = append(start, h.TryStart)
		}
	}
	var j Hooks
	switch len(done) {
	case 0:
	case 1:
		j.RequestDone = done[0]
	default:
		j.RequestDone = func(r *http.Request, e RequestEvent) {
			for _, f := range done {
				f(r, e)
			}
		}
	}
	switch len(start) {
	case 0:
	case 1:
		j.TryStart = start[0]
	default:
		j.TryStart = func(out *http.Request, e TryStartEvent) func(TryEvent) {
			// The ends are collected in a slice only when two or more listeners returned
			// one, so that a try with one end (or none) costs no allocation.
			var first func(TryEvent)
			var ends []func(TryEvent)
			for _, f := range start {
				end := f(out, e)
				switch {
				case end == nil:
				case first == nil:
					first = end
				default:
					if ends == nil {
						ends = append(make([]func(TryEvent), 0, len(start)), first)
					}
					ends = append(ends, end)
				}
			}
			if ends == nil {
				return first
			}
			return func(e TryEvent) {
				for _, end := range ends {
					end(e)
				}
			}
		}
	}
	return j
}
