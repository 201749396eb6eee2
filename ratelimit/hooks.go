package ratelimit

import (
	"time"

	"github.com/sluiceproxy/sluice/internal/hookset"
)

// Hooks are the limiters' events, for metrics and logs. Every field is optional: a nil one
// costs a nil check. Hooks are called synchronously on the request's goroutine, never under
// a limiter's lock, so they must be safe for concurrent use and must not block. Combine
// several with [JoinHooks].
type Hooks struct {
	// Decision is called by a [Limiter] once per request, when its Limits have decided and
	// before a delayed request waits.
	Decision func(DecisionEvent)
	// Admission is called by a [Concurrency] limiter once per request it counts (a request
	// its By gives no key is not counted), when it admits or refuses it.
	Admission func(AdmissionEvent)
}

// JoinHooks returns Hooks that call each of hs's non-nil funcs in order.
func JoinHooks(hs ...Hooks) Hooks {
	return Hooks{
		Decision:  hookset.Join(hs, func(h Hooks) func(DecisionEvent) { return h.Decision }),
		Admission: hookset.Join(hs, func(h Hooks) func(AdmissionEvent) { return h.Admission }),
	}
}

// Result is what a [Limiter] did with a request.
type Result uint8

const (
	// Allowed is a request passed on at once. If a Limit's Store failed and the Limiter
	// fails open, DecisionEvent.Err says so.
	Allowed Result = iota + 1
	// Delayed is a request admitted after a wait of DecisionEvent.Delay (Options.MaxDelay).
	Delayed
	// Limited is a request refused with 429 Too Many Requests.
	Limited
	// FailedClosed is a request refused with 503 because a Limit's Store failed and
	// Options.FailClosed is set; DecisionEvent.Err is the Store's error.
	FailedClosed
	// Cancelled is a request whose client went away while a Store decided.
	Cancelled
)

var resultNames = [...]string{"", "allowed", "delayed", "limited", "failed-closed", "cancelled"}

// String returns the result's name in lower case, as a metric label would have it.
func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "unknown"
}

// DecisionEvent describes a [Limiter]'s decision on one request.
type DecisionEvent struct {
	// Result is what the Limiter did.
	Result Result
	// Limit is the index in Options.Limits of the Limit that decided: the one that refused
	// the request, whose Store failed, or that asked for the longest delay. It is -1 when
	// every Limit that applied admitted the request at once (or none applied).
	Limit int
	// Name is that Limit's Name ("default" for an empty one), or "" when Limit is -1.
	// Names are few, so they make good metric labels.
	Name string
	// Key is that Limit's key for the request, or the zero Key. It has one value per client:
	// do not use it as a metric label. Key.Str may share memory with the request; a hook that
	// keeps it should copy it.
	Key Key
	// Delay is how long a Delayed request is held.
	Delay time.Duration
	// RetryAfter is, for a Limited request, how long until the Limit has a token again.
	RetryAfter time.Duration
	// Err is the Store's error when a Store failed: the request was admitted without that
	// Limit (fail open, Allowed or Delayed) or refused (FailedClosed).
	Err error
}

// AdmissionEvent describes a [Concurrency] limiter's decision on one request.
type AdmissionEvent struct {
	// Admitted reports that the request was passed on; false means it was refused (429,
	// or 503 for [Global]).
	Admitted bool
	// InFlight is the number of requests in flight for the key, this one included when it
	// was admitted.
	InFlight int
	// Key is the request's key; see [DecisionEvent.Key].
	Key Key
}

// Stats is a snapshot of a [Limiter]'s state, for gauges.
type Stats struct {
	// Limits holds one LimitStats per Limit, in the order of Options.Limits.
	Limits []LimitStats
}

// LimitStats is the state of one [Limit].
type LimitStats struct {
	// Name is the Limit's Name ("default" for an empty one).
	Name string
	// Keys is the number of keys with a bucket of their own, or -1 when the Store does not
	// say: a [MemoryStore] says, and another Store does if it has a Len() int method.
	Keys int
}

// Stats returns a snapshot of the Limiter's state. It is safe for concurrent use and costs
// a lock per MemoryStore shard.
func (l *Limiter) Stats() Stats {
	st := Stats{Limits: make([]LimitStats, len(l.limits))}
	for i := range l.limits {
		lim := &l.limits[i]
		st.Limits[i] = LimitStats{Name: lim.plain, Keys: -1}
		if s, ok := lim.store.(interface{ Len() int }); ok {
			st.Limits[i].Keys = s.Len()
		}
	}
	return st
}

// ConcurrencyStats is a snapshot of a [Concurrency] limiter's state, for gauges.
type ConcurrencyStats struct {
	// Keys is the number of keys with requests in flight.
	Keys int
	// InFlight is the number of requests in flight, over every key.
	InFlight int
}

// Stats returns a snapshot of the limiter's state. It is safe for concurrent use and costs
// a lock per shard and a pass over the keys in flight.
func (c *Concurrency) Stats() ConcurrencyStats {
	var st ConcurrencyStats
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		st.Keys += len(sh.inFlight)
		for _, n := range sh.inFlight {
			st.InFlight += n
		}
		sh.mu.Unlock()
	}
	return st
}
