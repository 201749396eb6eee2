package ratelimit_test

import (
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/ratelimit"
)

func TestHooks_Decision(t *testing.T) {
	client := ratelimit.Key{Addr: netip.MustParseAddr("192.0.2.1")}
	route := ratelimit.ByFunc(func(r *http.Request) (string, bool) { return "route", true })
	for _, tc := range []struct {
		name     string
		opts     ratelimit.Options
		requests int
		want     ratelimit.DecisionEvent // the last request's
	}{
		{"allowed", ratelimit.Options{Limits: []ratelimit.Limit{{Name: "client", Rate: 1, Burst: 1}}}, 1,
			ratelimit.DecisionEvent{Result: ratelimit.Allowed, Limit: -1}},
		{"limited", ratelimit.Options{Limits: []ratelimit.Limit{{Name: "client", Rate: 1, Burst: 1}}}, 2,
			ratelimit.DecisionEvent{Result: ratelimit.Limited, Limit: 0, Name: "client", Key: client, RetryAfter: time.Second}},
		{"limited by the second limit", ratelimit.Options{Limits: []ratelimit.Limit{
			{Name: "client", Rate: 1, Burst: 5}, {Name: "route", Rate: 1, Burst: 1, By: route}}}, 2,
			ratelimit.DecisionEvent{Result: ratelimit.Limited, Limit: 1, Name: "route", Key: ratelimit.Key{Str: "route"}, RetryAfter: time.Second}},
		{"delayed", ratelimit.Options{Limits: []ratelimit.Limit{{Rate: 1, Burst: 1}}, MaxDelay: 2 * time.Second}, 2,
			ratelimit.DecisionEvent{Result: ratelimit.Delayed, Limit: 0, Name: "default", Key: client, Delay: time.Second}},
		{"failed open", ratelimit.Options{Limits: []ratelimit.Limit{{Name: "shared", Rate: 1, Burst: 1, Store: &downStore{}}}}, 1,
			ratelimit.DecisionEvent{Result: ratelimit.Allowed, Limit: 0, Name: "shared", Key: client, Err: errDown}},
		{"failed closed", ratelimit.Options{Limits: []ratelimit.Limit{{Name: "shared", Rate: 1, Burst: 1, Store: &downStore{}}},
			FailClosed: true}, 1,
			ratelimit.DecisionEvent{Result: ratelimit.FailedClosed, Limit: 0, Name: "shared", Key: client, Err: errDown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { // a delayed request waits in fake time
				var got []ratelimit.DecisionEvent
				tc.opts.Hooks.Decision = func(e ratelimit.DecisionEvent) { got = append(got, e) }
				tc.opts.Logger = slog.New(slog.DiscardHandler)
				l, err := ratelimit.New(tc.opts)
				require.NoError(t, err)
				for range tc.requests {
					call(l.Handler(ok), "192.0.2.1:1", "/")
				}
				require.Len(t, got, tc.requests, "one event per request")
				assert.Equal(t, tc.want, got[len(got)-1])
			})
		})
	}
}

func TestHooks_Admission(t *testing.T) {
	var mu sync.Mutex
	var got []ratelimit.AdmissionEvent
	c, err := ratelimit.NewConcurrency(ratelimit.ConcurrencyOptions{Max: 1, Hooks: ratelimit.Hooks{
		Admission: func(e ratelimit.AdmissionEvent) { mu.Lock(); got = append(got, e); mu.Unlock() },
	}})
	require.NoError(t, err)
	inside, release := make(chan struct{}), make(chan struct{})
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inside)
		<-release
	}))
	done := make(chan struct{})
	go func() { call(h, "192.0.2.1:1", "/"); close(done) }()
	<-inside
	assert.Equal(t, ratelimit.ConcurrencyStats{Keys: 1, InFlight: 1}, c.Stats(), "one request in flight")
	assert.Equal(t, http.StatusTooManyRequests, call(h, "192.0.2.1:2", "/").Code)
	close(release)
	<-done
	key := ratelimit.Key{Addr: netip.MustParseAddr("192.0.2.1")}
	assert.Equal(t, []ratelimit.AdmissionEvent{{Admitted: true, InFlight: 1, Key: key}, {Admitted: false, InFlight: 1, Key: key}}, got)
	assert.Equal(t, ratelimit.ConcurrencyStats{}, c.Stats(), "nothing in flight")
}

func TestLimiterStats(t *testing.T) {
	l, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Name: "client", Rate: 1, Burst: 1}, {Name: "shared", Rate: 1, Burst: 1, Store: &downStore{}}},
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	for _, ip := range []string{"192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1"} {
		call(l.Handler(ok), ip, "/")
	}
	assert.Equal(t, ratelimit.Stats{Limits: []ratelimit.LimitStats{{Name: "client", Keys: 3}, {Name: "shared", Keys: -1}}},
		l.Stats(), "three keys in memory; a Store without Len cannot say")
}

func TestJoinHooks(t *testing.T) {
	var order []string
	h := ratelimit.JoinHooks(
		ratelimit.Hooks{Decision: func(ratelimit.DecisionEvent) { order = append(order, "a") }},
		ratelimit.Hooks{},
		ratelimit.Hooks{Decision: func(ratelimit.DecisionEvent) { order = append(order, "b") },
			Admission: func(ratelimit.AdmissionEvent) { order = append(order, "c") }},
	)
	h.Decision(ratelimit.DecisionEvent{})
	h.Admission(ratelimit.AdmissionEvent{})
	assert.Equal(t, []string{"a", "b", "c"}, order, "every func, in order")
	assert.Nil(t, ratelimit.JoinHooks().Decision, "nothing to call stays nil")
}
