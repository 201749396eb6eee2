package balancer

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
)

// TestRampEndOnlyForRampingEndpoints checks that a snapshot opens a slow-start window only
// when an endpoint in it is ramping: picks outside a window take the short path.
func TestRampEndOnlyForRampingEndpoints(t *testing.T) {
	now := time.Unix(1000, 0)
	b, err := New(LeastRequest{}, Options{SlowStart: time.Minute, Now: func() time.Time { return now }})
	require.NoError(t, err)
	eps := []sluice.Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}}
	b.Update(eps) // the first set does not ramp
	assert.Zero(t, b.snap.Load().rampEnd, "no endpoint ramps, yet a window is open")

	now = now.Add(time.Second)
	b.Update(append(eps, sluice.Endpoint{Addr: "10.0.0.3:80"}))
	assert.Equal(t, b.nanotime()+int64(time.Minute), b.snap.Load().rampEnd, "the new endpoint ramps for a minute")

	now = now.Add(2 * time.Minute)
	b.Update(append(eps, sluice.Endpoint{Addr: "10.0.0.3:80"}))
	assert.Zero(t, b.snap.Load().rampEnd, "the window is over")
}

// TestUnknownStateCountsAsUnhealthy checks that a State value no source should send is
// treated as Unhealthy: skipped normally, used in panic mode.
func TestUnknownStateCountsAsUnhealthy(t *testing.T) {
	b, err := New(RoundRobin{}, Options{})
	require.NoError(t, err)
	b.Update([]sluice.Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80", State: 9}})
	assert.Len(t, b.snap.Load().pool, 1, "an unknown state is not Ready")
	b.Update([]sluice.Endpoint{{Addr: "10.0.0.1:80", State: sluice.Unhealthy}, {Addr: "10.0.0.2:80", State: 9}})
	assert.Len(t, b.snap.Load().pool, 2, "with nothing Ready, panic mode uses unhealthy endpoints, unknown ones too")
}
