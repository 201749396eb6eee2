package pool_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
)

// Admin shows the pool as the dashboard wants it: the checker's view of each endpoint's
// health, with the reason one is out, and the balancer's latency estimate.
func TestPoolAdmin(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	b.sick.Store(true)
	p, err := pool.New(pool.Options{
		Source: discovery.Static{Endpoints: []sluice.Endpoint{{Addr: a.addr(), Zone: "z1"}, {Addr: b.addr()}}},
		Policy: balancer.PeakEWMA{},
		Health: healthcheck.Options{
			Probe:              &healthcheck.HTTP{Path: "/healthz"},
			Interval:           20 * time.Millisecond,
			UnhealthyThreshold: 1,
			HealthyThreshold:   1,
			Logger:             quiet(),
		},
		Balancer: balancer.Options{PanicThreshold: -1},
		Proxy:    &proxy.Proxy{Logger: quiet()},
	})
	require.NoError(t, err)
	run(t, p)
	waitSynced(t, p)

	byAddr := func(v admin.Pool) map[string]admin.Endpoint {
		m := map[string]admin.Endpoint{}
		for _, e := range v.Endpoints {
			m[e.Addr] = e
		}
		return m
	}
	require.Eventually(t, func() bool {
		return byAddr(p.Admin("api"))[b.addr()].State == admin.StateUnhealthy
	}, 10*time.Second, 5*time.Millisecond, "b's failing probe shows")
	for range 5 {
		code, _ := get(t, p, "/")
		require.Equal(t, http.StatusOK, code)
	}
	view := p.Admin("api")
	require.Len(t, view.Endpoints, 2)
	assert.Equal(t, "api", view.Name)
	assert.Equal(t, "peak-ewma", view.Policy)
	ea, eb := byAddr(view)[a.addr()], byAddr(view)[b.addr()]
	assert.Equal(t, a.addr(), ea.Addr)
	assert.Equal(t, "z1", ea.Zone)
	assert.Equal(t, admin.StateReady, ea.State)
	assert.Positive(t, ea.Latency, "the balancer's estimate after a few requests")
	assert.Empty(t, ea.Ejections)
	require.Len(t, eb.Ejections, 1)
	assert.True(t, strings.HasPrefix(eb.Ejections[0].Reason, "probe failed"), eb.Ejections[0].Reason)
	assert.Contains(t, eb.Ejections[0].Reason, "503")
	assert.Zero(t, ea.InFlight, "PeakEWMA counts in-flight requests: none now")
}

// An endpoint's in-flight count is the balancer's while a request is being served, and -1
// (null in JSON, a dash on the dashboard) with a policy that counts none.
func TestPoolAdminInFlight(t *testing.T) {
	for _, tc := range []struct {
		policy balancer.Policy
		want   int
	}{{balancer.LeastRequest{}, 1}, {balancer.RoundRobin{}, -1}} {
		a := newBackend(t, "a")
		release := make(chan struct{})
		a.respond = func(w http.ResponseWriter) { <-release }
		p, err := pool.New(pool.Options{
			Source: discovery.Static{Endpoints: []sluice.Endpoint{{Addr: a.addr()}}},
			Policy: tc.policy,
			Proxy:  &proxy.Proxy{Logger: quiet()},
		})
		require.NoError(t, err)
		run(t, p)
		waitSynced(t, p)
		done := make(chan struct{})
		go func() {
			defer close(done)
			get(t, p, "/")
		}()
		require.Eventually(t, func() bool { return a.served.Load() == 1 }, 10*time.Second, time.Millisecond)
		got := p.Admin("api").Endpoints[0].InFlight
		close(release)
		<-done
		assert.Equal(t, tc.want, got, "%T", tc.policy)
	}
}

// Policies are named as people write them.
func TestPoolAdminPolicyNames(t *testing.T) {
	for policy, want := range map[balancer.Policy]string{
		balancer.RoundRobin{}:       "round-robin",
		balancer.LeastRequest{}:     "least-request",
		balancer.PeakEWMA{}:         "peak-ewma",
		balancer.Maglev{}:           "maglev",
		balancer.ClientIPAffinity{}: "client-ip-affinity",
	} {
		p, err := pool.New(pool.Options{Source: discovery.Static{}, Policy: policy, Proxy: &proxy.Proxy{}})
		require.NoError(t, err)
		assert.Equal(t, want, p.Admin("x").Policy)
	}
}
