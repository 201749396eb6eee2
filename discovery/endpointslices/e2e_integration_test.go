//go:build integration

package endpointslices_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/proxy"
)

// TestIntegrationEndToEnd wires EndpointSlices → discovery → balancer → proxy.Proxy →
// httptest backends, and scales the Service up and down under live traffic: every request
// must succeed and traffic must move to the new set.
func TestIntegrationEndToEnd(t *testing.T) {
	cluster := kubetest.Start(t)
	const ns = "e2e"
	createNamespace(t, cluster.Client, ns)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var dial kubetest.AddrMap
	hits := make([]atomic.Int64, 4)
	backends := make([]*httptest.Server, len(hits))
	for i := range hits {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits[i].Add(1)
			fmt.Fprintf(w, "backend %d", i)
		}))
		defer srv.Close()
		backends[i] = srv
		dial.Set(fmt.Sprintf("10.244.7.%d:8080", i+1), srv.Listener.Addr().String())
	}

	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	w, err := endpointslices.NewForClient(cluster.Client, endpointslices.Options{Namespace: ns})
	require.NoError(t, err)
	go w.Run(ctx)
	rec := newRecorder()
	go w.Source(ns, "web", "http").Watch(ctx, func(eps []sluice.Endpoint) {
		bal.Update(eps) // the balancer first, so the test sees a set only once it is live
		rec.update(eps)
	})

	p := &proxy.Proxy{Picker: bal, DialContext: dial.DialContext}
	defer p.CloseIdleConnections()
	front := httptest.NewServer(p)
	defer front.Close()

	api := cluster.Client.DiscoveryV1().EndpointSlices(ns)
	_, err = api.Create(ctx, podSlice(ns, "web-a", "web", 8080, "10.244.7.1", "10.244.7.2"), metav1.CreateOptions{})
	require.NoError(t, err)
	rec.waitFor(t, "two backends", hasAddrs("10.244.7.1:8080", "10.244.7.2:8080"))

	// Live traffic from 4 clients for the rest of the test; any failure is recorded.
	var failures atomic.Int64
	var total atomic.Int64
	var firstErr sync.Once
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				resp, err := http.Get(front.URL)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				total.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("request failed during scaling: %v", err) })
				}
			}
		})
	}
	counts := func() [4]int64 {
		var c [4]int64
		for i := range hits {
			c[i] = hits[i].Load()
		}
		return c
	}
	// waitTraffic waits until every backend in want has received new requests since mark.
	waitTraffic := func(what string, mark [4]int64, want ...int) [4]int64 {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			now := counts()
			ok := true
			for _, i := range want {
				ok = ok && now[i] > mark[i]
			}
			if ok {
				return now
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: hits %v", what, now)
			}
		}
		return [4]int64{}
	}
	waitTraffic("traffic on the first two backends", counts(), 0, 1)

	// Scale up with a second slice: new backends take traffic.
	_, err = api.Create(ctx, podSlice(ns, "web-b", "web", 8080, "10.244.7.3", "10.244.7.4"), metav1.CreateOptions{})
	require.NoError(t, err)
	rec.waitFor(t, "four backends", hasAddrs("10.244.7.1:8080", "10.244.7.2:8080", "10.244.7.3:8080", "10.244.7.4:8080"))
	waitTraffic("traffic on the scaled-up backends", counts(), 2, 3)

	// Scale down: the first slice goes away; its backends stop getting traffic.
	require.NoError(t, api.Delete(ctx, "web-a", metav1.DeleteOptions{}))
	rec.waitFor(t, "two backends after scale-down", hasAddrs("10.244.7.3:8080", "10.244.7.4:8080"))
	// Requests picked just before the update may still be in flight; let them land.
	mark := waitTraffic("traffic after scale-down", counts(), 2, 3)
	mark = waitTraffic("more traffic after scale-down", mark, 2, 3)
	end := waitTraffic("still more traffic after scale-down", mark, 2, 3)
	assert.Equal(t, mark[0], end[0], "backend 0 must get no traffic after its slice is deleted")
	assert.Equal(t, mark[1], end[1], "backend 1 must get no traffic after its slice is deleted")

	// The removed pods go away; the proxy never sends them anything again, and the load
	// goes on without a failure.
	backends[0].Close()
	backends[1].Close()
	waitTraffic("traffic after the removed backends stopped", end, 2, 3)

	stopLoad()
	wg.Wait()
	assert.Zero(t, failures.Load(), "no request may fail while the Service scales")
	t.Logf("%d requests, %d failed; hits per backend %v", total.Load(), failures.Load(), counts())
}
