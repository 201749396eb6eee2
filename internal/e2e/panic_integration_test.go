//go:build integration

package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/proxy"
)

// TestIntegrationTerminatingLeftOutOfPanic is issue 16's rollout on a real kube-apiserver:
// an EndpointSlice holds two ready pods and three serving-and-terminating ones, and the
// health checker finds one of the ready pods failing. One Ready, one Unhealthy and three
// Terminating endpoints reach the balancer through discovery and health checking; the
// Terminating ones count neither way in the panic threshold, so every request goes to the
// one healthy pod. Counting them (1 < 0.5 × 5) had put the balancer in panic mode and sent
// half the requests to the failing pod.
func TestIntegrationTerminatingLeftOutOfPanic(t *testing.T) {
	cluster := kubetest.Start(t)
	const ns = "rollout"
	_, err := cluster.Client.CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	// Pod 0 is healthy, pod 1 fails its health check, pods 2–4 are terminating. Every pod
	// would answer a request: what reaches each is the balancer's choice alone.
	const pods = 5
	var dial kubetest.AddrMap
	var hits [pods]atomic.Int64
	ip := func(i int) string { return fmt.Sprintf("10.244.9.%d", i+1) }
	for i := range pods {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if i == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
				return
			}
			hits[i].Add(1)
			fmt.Fprintf(w, "pod %d", i)
		}))
		defer srv.Close()
		dial.Set(ip(i)+":8080", srv.Listener.Addr().String())
	}

	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:              &healthcheck.HTTP{Path: "/healthz", Transport: &http.Transport{DialContext: dial.DialContext}},
		Interval:           50 * time.Millisecond,
		UnhealthyThreshold: 1,
		Logger:             slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	require.NoError(t, err)
	w, err := endpointslices.NewForClient(cluster.Client, endpointslices.Options{Namespace: ns, Coalesce: 50 * time.Millisecond})
	require.NoError(t, err)
	sets := make(chan []sluice.Endpoint)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: nothing logs to the test once it has ended
	defer cancel()
	wg.Go(func() { w.Run(ctx) })
	wg.Go(func() { w.Source(ns, "web", "http").Watch(ctx, hc.Update) })
	wg.Go(func() {
		hc.Run(ctx, func(eps []sluice.Endpoint) {
			bal.Update(eps) // the balancer first, so that a set the test sees is live
			select {
			case sets <- eps:
			case <-ctx.Done():
			}
		})
	})

	p := &proxy.Proxy{Picker: bal, DialContext: dial.DialContext}
	defer p.CloseIdleConnections()
	front := httptest.NewServer(p)
	defer front.Close()

	b := true
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-rollout", Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080))}},
	}
	for i := range pods {
		ready, terminating := i < 2, i >= 2
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip(i)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &b, Terminating: &terminating},
		})
	}
	_, err = cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{})
	require.NoError(t, err)

	want := []sluice.Endpoint{
		{Addr: ip(0) + ":8080", State: sluice.Ready},
		{Addr: ip(1) + ":8080", State: sluice.Unhealthy},
		{Addr: ip(2) + ":8080", State: sluice.Terminating},
		{Addr: ip(3) + ":8080", State: sluice.Terminating},
		{Addr: ip(4) + ":8080", State: sluice.Terminating},
	}
	timeout := time.After(30 * time.Second)
	for got := []sluice.Endpoint(nil); !assert.ObjectsAreEqual(want, got); {
		select {
		case got = <-sets:
		case <-timeout:
			require.FailNow(t, "the balancer never got one Ready, one Unhealthy and three Terminating endpoints",
				"last set %v", got)
		}
	}

	client := front.Client()
	for range 200 {
		res, err := client.Get(front.URL)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode)
	}
	var got [pods]int64
	for i := range got {
		got[i] = hits[i].Load()
	}
	assert.Equal(t, [pods]int64{200}, got, "every request should go to the one healthy pod")
}
