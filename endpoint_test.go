package sluice

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestOutcomeClassification(t *testing.T) {
	tests := []struct {
		o                       Outcome
		counts, gateway, server bool
	}{
		{Outcome{Status: 200}, true, false, false},
		{Outcome{Status: 404}, true, false, false},
		{Outcome{Status: 500}, true, false, true},
		{Outcome{Status: 502}, true, true, true},
		{Outcome{Status: 503}, true, true, true},
		{Outcome{Status: 504}, true, true, true},
		{Outcome{Failure: ConnectFailure}, true, true, true},
		{Outcome{Failure: ConnectionFailure}, true, true, true},
		{Outcome{Failure: Timeout}, true, true, true},
		{Outcome{Failure: Canceled}, false, false, false},
		{Outcome{Failure: ClientFailure}, false, false, false},
		{Outcome{Failure: InternalFailure}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.o.Failure.String()+"/"+statusText(tt.o.Status), func(t *testing.T) {
			assert.Equal(t, tt.counts, tt.o.Counts(), "Counts")
			assert.Equal(t, tt.gateway, tt.o.GatewayFailure(), "GatewayFailure")
			assert.Equal(t, tt.server, tt.o.ServerError(), "ServerError")
		})
	}
}

func statusText(s int) string {
	return string(rune('0'+s/100)) + string(rune('0'+s/10%10)) + string(rune('0'+s%10))
}

func TestEndpointDefaults(t *testing.T) {
	var e Endpoint
	assert.Equal(t, Ready, e.State, "the zero State is Ready")
	assert.Equal(t, uint32(1), e.EffectiveWeight())
	e.Weight = 7
	assert.Equal(t, uint32(7), e.EffectiveWeight())
	assert.Equal(t, "terminating", Terminating.String())
	assert.Equal(t, "unhealthy", Unhealthy.String())
	assert.Equal(t, "timeout", Timeout.String())
	assert.Equal(t, "client", ClientFailure.String())
	assert.Equal(t, "internal", InternalFailure.String())
}

func TestEndpointComparable(t *testing.T) {
	a := Endpoint{Addr: "10.0.0.1:80", ForZones: "a", ForNodes: "node-1,node-2"}
	b := a
	assert.True(t, a == b, "endpoints with equal fields compare equal")
	b.ForNodes = "node-1"
	assert.False(t, a == b, "ForNodes takes part in ==, so a hint change is an update")
}

func TestObservers(t *testing.T) {
	var got []string
	rec := func(name string) Observer {
		return ObserverFunc(func(ep Endpoint, o Outcome) { got = append(got, name+" "+ep.Addr) })
	}
	a, b := rec("a"), rec("b")
	Observers(a, nil, b).Observe(Endpoint{Addr: "10.0.0.1:80"}, Outcome{Status: 200})
	assert.Equal(t, []string{"a 10.0.0.1:80", "b 10.0.0.1:80"}, got, "each observer, in order")
	assert.Nil(t, Observers(nil, nil), "no observer at all is nil, so a Proxy skips the call")
	got = nil
	Observers(nil, a).Observe(Endpoint{Addr: "x"}, Outcome{})
	assert.Equal(t, []string{"a x"}, got, "a single observer is used as it is")
}
