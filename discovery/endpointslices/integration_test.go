//go:build integration

package endpointslices_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
	"github.com/sluiceproxy/sluice/internal/kubetest"
)

func createNamespace(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	_, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err, "create namespace %s", name)
}

// podSlice is an IPv4 slice of Service svc in ns with port "http" and ready endpoints at
// the given pod-like addresses.
func podSlice(ns, name, svc string, portNum int32, ips ...string) *discoveryv1.EndpointSlice {
	es := slice(name, svc, discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", portNum)})
	es.Namespace = ns
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, ep(ip, ptr(true), ptr(true), ptr(false)))
	}
	return es
}

// TestIntegrationLifecycle follows one Service through create, scale across several slices,
// termination, an API server restart and deletion, on a real kube-apiserver.
func TestIntegrationLifecycle(t *testing.T) {
	cluster := kubetest.Start(t)
	const ns = "lifecycle"
	createNamespace(t, cluster.Client, ns)

	w, err := endpointslices.NewForClient(cluster.Client, endpointslices.Options{Namespace: ns, Coalesce: 50 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go w.Run(ctx)
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	require.NoError(t, w.WaitForSync(syncCtx), "the informer should sync its first list")

	rec := newRecorder()
	go w.Source(ns, "web", "http").Watch(ctx, rec.update)
	rec.waitFor(t, "the initial empty set", hasAddrs())

	api := cluster.Client.DiscoveryV1().EndpointSlices(ns)
	// Create.
	_, err = api.Create(ctx, podSlice(ns, "web-a", "web", 8080, "10.244.1.1", "10.244.1.2"), metav1.CreateOptions{})
	require.NoError(t, err)
	rec.waitFor(t, "the created slice", hasAddrs("10.244.1.1:8080", "10.244.1.2:8080"))

	// Scale up across two more slices; one of them uses another target port, and one
	// endpoint appears in two slices (controller churn).
	_, err = api.Create(ctx, podSlice(ns, "web-b", "web", 8080, "10.244.2.1", "10.244.1.2"), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = api.Create(ctx, podSlice(ns, "web-c", "web", 9090, "10.244.3.1"), metav1.CreateOptions{})
	require.NoError(t, err)
	// A slice of another Service in the namespace must not leak in.
	_, err = api.Create(ctx, podSlice(ns, "db-a", "db", 5432, "10.244.9.9"), metav1.CreateOptions{})
	require.NoError(t, err)
	rec.waitFor(t, "three slices merged", hasAddrs("10.244.1.1:8080", "10.244.1.2:8080", "10.244.2.1:8080", "10.244.3.1:9090"))

	// Scale down: remove an endpoint from web-a.
	a, err := api.Get(ctx, "web-a", metav1.GetOptions{})
	require.NoError(t, err)
	a.Endpoints = a.Endpoints[1:]
	_, err = api.Update(ctx, a, metav1.UpdateOptions{})
	require.NoError(t, err)
	rec.waitFor(t, "10.244.1.1 removed", hasAddrs("10.244.1.2:8080", "10.244.2.1:8080", "10.244.3.1:9090"))

	// Mark 10.244.2.1 terminating (still serving); its ready condition goes false.
	b, err := api.Get(ctx, "web-b", metav1.GetOptions{})
	require.NoError(t, err)
	b.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}
	_, err = api.Update(ctx, b, metav1.UpdateOptions{})
	require.NoError(t, err)
	last := rec.waitFor(t, "10.244.2.1 terminating", hasAddrs("10.244.1.2:8080", "10.244.2.1:8080(terminating)", "10.244.3.1:9090"))

	// Restart the API server: the subscriber keeps its set while the server is away, and
	// follows changes made after it is back.
	cluster.StopAPIServer()
	cluster.RestartAPIServer(t)
	_, err = api.Create(ctx, podSlice(ns, "web-d", "web", 8080, "10.244.4.1"), metav1.CreateOptions{})
	require.NoError(t, err)
	after := rec.waitFor(t, "a slice created after the restart", hasAddrs("10.244.1.2:8080", "10.244.2.1:8080(terminating)", "10.244.3.1:9090", "10.244.4.1:8080"))
	rec.mu.Lock()
	// Every set pushed between the terminating step and the post-restart change must be
	// the last good set or the new one: nothing may have emptied the pool.
	seenLast := false
	for _, s := range rec.sets {
		if fmt.Sprint(s) == fmt.Sprint(last) {
			seenLast = true
			continue
		}
		if seenLast {
			assert.Equal(t, addrs(after), addrs(s), "the restart must not push a partial or empty set")
		}
	}
	rec.mu.Unlock()

	// Delete every slice of the Service: the set empties.
	for _, name := range []string{"web-a", "web-b", "web-c", "web-d"} {
		require.NoError(t, api.Delete(ctx, name, metav1.DeleteOptions{}))
	}
	rec.waitFor(t, "the empty set after deleting the Service's slices", hasAddrs())
}

// TestIntegrationCoalescesBursts checks that a burst of writes reaches the subscriber as a
// few whole sets, with the Service port given by number.
func TestIntegrationCoalescesBursts(t *testing.T) {
	cluster := kubetest.Start(t)
	const ns = "burst"
	createNamespace(t, cluster.Client, ns)
	w, err := endpointslices.NewForClient(cluster.Client, endpointslices.Options{Namespace: ns, Coalesce: 300 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go w.Run(ctx)
	rec := newRecorder()
	go w.Source(ns, "web", "8080").Watch(ctx, rec.update)
	rec.waitFor(t, "the initial empty set", hasAddrs())

	// 20 writes in a burst: the subscriber sees a handful of sets, not 20, and ends with
	// all 20 endpoints.
	api := cluster.Client.DiscoveryV1().EndpointSlices(ns)
	start := time.Now()
	for i := range 20 {
		_, err := api.Create(ctx, podSlice(ns, fmt.Sprintf("web-%d", i), "web", 8080, fmt.Sprintf("10.244.5.%d", i+1)), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	writes := time.Since(start)
	rec.waitFor(t, "all 20 endpoints", func(eps []sluice.Endpoint) bool { return len(eps) == 20 })
	rec.mu.Lock()
	pushes := len(rec.sets) - 1
	rec.mu.Unlock()
	maxPushes := int(writes/(300*time.Millisecond)) + 2
	assert.LessOrEqual(t, pushes, maxPushes, "20 writes over %v with 300ms coalescing should give at most %d sets", writes, maxPushes)
	t.Logf("20 writes in %v produced %d pushed sets", writes, pushes)
}
