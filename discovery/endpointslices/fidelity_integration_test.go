//go:build integration

package endpointslices_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// startWatcher starts a Watcher on namespace ns of a fresh cluster, creating ns, and returns
// it with the cluster's EndpointSlice client for ns.
func startWatcher(t *testing.T, ns string, opts endpointslices.Options) (*endpointslices.Watcher, *kubetest.Cluster) {
	t.Helper()
	cluster := kubetest.Start(t)
	createNamespace(t, cluster.Client, ns)
	opts.Namespace = ns
	if opts.Coalesce == 0 {
		opts.Coalesce = 20 * time.Millisecond
	}
	w, err := endpointslices.NewForClient(cluster.Client, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go w.Run(ctx)
	return w, cluster
}

// watch runs src.Watch until the test ends, recording every set after passing it to also
// (if not nil).
func watch(t *testing.T, src *endpointslices.Source, also func([]sluice.Endpoint)) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	rec := newRecorder()
	go func() {
		defer close(done)
		src.Watch(ctx, func(eps []sluice.Endpoint) {
			if also != nil {
				also(eps)
			}
			rec.update(eps)
		})
	}()
	return rec
}

// TestIntegrationHintsIgnoreTerminating checks kube-proxy's rule for topology hints: hints
// are used when every ready endpoint carries one, whatever terminating endpoints carry,
// because the EndpointSlice controller never hints those. Before, a terminating endpoint
// without hints switched hint routing off for the whole rollout.
func TestIntegrationHintsIgnoreTerminating(t *testing.T) {
	const ns = "hints"
	w, cluster := startWatcher(t, ns, endpointslices.Options{})
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{Zone: "zone-a"})
	require.NoError(t, err)
	rec := watch(t, w.Source(ns, "web", "http"), bal.Update)
	rec.waitFor(t, "the initial empty set", hasAddrs())

	yes, no := ptr(true), ptr(false)
	// The controller moved 10.244.8.2, in zone-b, to serve zone-a, and 10.244.8.1 the
	// other way; 10.244.8.3 in zone-a is terminating and, as always, unhinted.
	inA := ep("10.244.8.1", yes, yes, no)
	inA.Zone = ptr("zone-a")
	inA.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-b"}}}
	inB := ep("10.244.8.2", yes, yes, no)
	inB.Zone = ptr("zone-b")
	inB.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}}}
	leaving := ep("10.244.8.3", no, yes, yes)
	leaving.Zone = ptr("zone-a")
	es := slice("web-a", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8080)}, inA, inB, leaving)
	es.Namespace = ns
	_, err = cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), es, metav1.CreateOptions{})
	require.NoError(t, err)
	rec.waitFor(t, "the hinted set", hasAddrs("10.244.8.1:8080", "10.244.8.2:8080", "10.244.8.3:8080(terminating)"))

	for range 10 {
		res, err := bal.Pick(sluice.PickInfo{})
		require.NoError(t, err)
		res.Done(sluice.Outcome{Status: 200})
		assert.Equal(t, "10.244.8.2:8080", res.Endpoint.Addr,
			"every pick should go to the endpoint hinted for zone-a: the unhinted endpoint is terminating, so hints stay in force")
	}
}

// TestIntegrationForNodes checks that hints.forNodes, which the EndpointSlice controller
// sets for Services with trafficDistribution PreferSameNode, reaches Endpoint.ForNodes.
func TestIntegrationForNodes(t *testing.T) {
	const ns = "fornodes"
	w, cluster := startWatcher(t, ns, endpointslices.Options{})
	rec := watch(t, w.Source(ns, "web", "http"), nil)
	rec.waitFor(t, "the initial empty set", hasAddrs())

	e := ep("10.244.8.1", ptr(true), ptr(true), ptr(false))
	e.Zone, e.NodeName = ptr("zone-a"), ptr("node-1")
	e.Hints = &discoveryv1.EndpointHints{
		ForZones: []discoveryv1.ForZone{{Name: "zone-a"}},
		ForNodes: []discoveryv1.ForNode{{Name: "node-1"}, {Name: "node-2"}},
	}
	es := slice("web-a", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8080)}, e)
	es.Namespace = ns
	_, err := cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), es, metav1.CreateOptions{})
	require.NoError(t, err)
	got := rec.waitFor(t, "the hinted endpoint", hasAddrs("10.244.8.1:8080"))
	assert.Equal(t, []sluice.Endpoint{{Addr: "10.244.8.1:8080", Zone: "zone-a", Node: "node-1", ForZones: "zone-a", ForNodes: "node-1,node-2"}}, got,
		"hints.forNodes should be copied, comma-separated, to ForNodes")
}

// TestIntegrationFQDNIgnoredByDefault checks that FQDN slices are ignored unless the
// embedder turns them on, as kube-proxy ignores them: the API server accepts "127.0.0.1" and
// "169.254.169.254" as FQDN addresses (it refuses them in IPv4 slices), and dialling them
// would reach the proxy's own loopback and the cloud metadata service.
func TestIntegrationFQDNIgnoredByDefault(t *testing.T) {
	const ns = "fqdn-off"
	w, cluster := startWatcher(t, ns, endpointslices.Options{})
	rec := watch(t, w.Source(ns, "web", "http"), nil)
	rec.waitFor(t, "the initial empty set", hasAddrs())

	api := cluster.Client.DiscoveryV1().EndpointSlices(ns)
	fq := slice("web-fqdn", "web", discoveryv1.AddressTypeFQDN, []discoveryv1.EndpointPort{port("http", 8080)},
		ep("127.0.0.1", nil, nil, nil), ep("169.254.169.254", nil, nil, nil), ep("db.example.com", nil, nil, nil))
	fq.Namespace = ns
	_, err := api.Create(t.Context(), fq, metav1.CreateOptions{})
	require.NoError(t, err, "the API server accepts IP literals in an FQDN slice")
	_, err = api.Create(t.Context(), podSlice(ns, "web-ip", "web", 8080, "10.244.8.1"), metav1.CreateOptions{})
	require.NoError(t, err)
	got := rec.waitFor(t, "the IPv4 slice", func(eps []sluice.Endpoint) bool {
		for _, e := range eps {
			if e.Addr == "10.244.8.1:8080" {
				return true
			}
		}
		return false
	})
	assert.Equal(t, []string{"10.244.8.1:8080"}, addrs(got), "an FQDN slice must contribute nothing by default")
}
