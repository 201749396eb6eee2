//go:build integration

package endpointslices_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
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
// it with the cluster.
func startWatcher(t *testing.T, ns string, opts endpointslices.Options) (*endpointslices.Watcher, *kubetest.Cluster) {
	t.Helper()
	cluster := kubetest.Start(t)
	createNamespace(t, cluster.Client, ns)
	return runWatcher(t, cluster, ns, opts), cluster
}

// runWatcher runs a Watcher on namespace ns of cluster until the test ends.
func runWatcher(t *testing.T, cluster *kubetest.Cluster, ns string, opts endpointslices.Options) *endpointslices.Watcher {
	t.Helper()
	opts.Namespace = ns
	if opts.Coalesce == 0 {
		opts.Coalesce = 20 * time.Millisecond
	}
	w, err := endpointslices.NewForClient(cluster.Client, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go w.Run(ctx)
	return w
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
	var logs syncBuffer
	w, cluster := startWatcher(t, ns, endpointslices.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
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

	// More changes to the Service: the ignored slice is still logged once only.
	fq, err = api.Get(t.Context(), "web-fqdn", metav1.GetOptions{})
	require.NoError(t, err)
	fq.Endpoints = fq.Endpoints[1:]
	_, err = api.Update(t.Context(), fq, metav1.UpdateOptions{})
	require.NoError(t, err)
	_, err = api.Create(t.Context(), podSlice(ns, "web-ip2", "web", 8080, "10.244.8.2"), metav1.CreateOptions{})
	require.NoError(t, err)
	rec.waitFor(t, "the second IPv4 slice", hasAddrs("10.244.8.1:8080", "10.244.8.2:8080"))
	assert.Equal(t, 1, strings.Count(logs.String(), "ignoring an FQDN EndpointSlice"),
		"the ignored slice should be logged once; logs:\n%s", logs.String())
}

// syncBuffer is a bytes.Buffer safe for a logger on another goroutine.
type syncBuffer struct {
	mu sync.Mutex // mu protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeResolver answers LookupIPAddr from a map that tests change, and records every name it
// was asked for.
type fakeResolver struct {
	mu      sync.Mutex // mu protects answers and asked
	answers map[string][]string
	asked   []string
}

func (r *fakeResolver) set(name string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[name] = addrs
}

func (r *fakeResolver) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, host)
	addrs, ok := r.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]net.IPAddr, len(addrs))
	for i, a := range addrs {
		out[i] = net.IPAddr{IP: net.ParseIP(a)}
	}
	return out, nil
}

func (r *fakeResolver) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", nil, errors.New("fakeResolver: no SRV")
}

// TestIntegrationFQDNEnabled checks FQDN slices turned on: names are resolved by the Source
// and re-resolved every Refresh; IP literals in the slice are never used, whatever Allow
// says; answers that are loopback, link-local, unspecified or a metadata address are dropped
// unless Allow lets them through.
func TestIntegrationFQDNEnabled(t *testing.T) {
	const ns = "fqdn-on"
	cluster := kubetest.Start(t)
	createNamespace(t, cluster.Client, ns)
	res := &fakeResolver{answers: map[string][]string{
		"db.example.com":   {"10.244.9.5"},
		"loop.example.com": {"127.0.0.3", "10.244.9.6"},
		"meta.example.com": {"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "fe80::1", "::", "0.0.0.0", "::ffff:127.0.0.1"},
	}}
	fq := slice("web-fqdn", "web", discoveryv1.AddressTypeFQDN, []discoveryv1.EndpointPort{port("http", 8080)},
		ep("127.0.0.1", nil, nil, nil), ep("169.254.169.254", nil, nil, nil), ep("127.1", nil, nil, nil),
		ep("db.example.com", nil, nil, nil), ep("loop.example.com", nil, nil, nil), ep("meta.example.com", nil, nil, nil))
	fq.Namespace = ns
	_, err := cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), fq, metav1.CreateOptions{})
	require.NoError(t, err)

	t.Run("default Allow", func(t *testing.T) {
		w := runWatcher(t, cluster, ns, endpointslices.Options{FQDN: &endpointslices.FQDNOptions{Resolver: res, Refresh: 100 * time.Millisecond}})
		rec := watch(t, w.Source(ns, "web", "http"), nil)
		got := rec.waitFor(t, "the resolved set", func(eps []sluice.Endpoint) bool { return len(eps) > 0 })
		assert.Equal(t, []string{"10.244.9.5:8080", "10.244.9.6:8080"}, addrs(got),
			"only the names' ordinary addresses: no literal, no loopback, link-local, unspecified or metadata answer")

		// The Source re-resolves on its own, every Refresh.
		res.set("db.example.com", "10.244.9.7")
		rec.waitFor(t, "the new answer for db.example.com", hasAddrs("10.244.9.6:8080", "10.244.9.7:8080"))
		for _, name := range res.names() {
			assert.True(t, strings.HasSuffix(name, ".example.com"), "only names should be resolved, not %q", name)
		}
	})
	t.Run("Allow lets answers through, never literals", func(t *testing.T) {
		res.set("db.example.com", "10.244.9.5")
		res.set("meta.example.com", "10.244.9.8") // so that only a literal could give 169.254.169.254
		allowAll := func(netip.Addr) bool { return true }
		w := runWatcher(t, cluster, ns, endpointslices.Options{FQDN: &endpointslices.FQDNOptions{Resolver: res, Allow: allowAll}})
		rec := watch(t, w.Source(ns, "web", "http"), nil)
		got := rec.waitFor(t, "the resolved set", func(eps []sluice.Endpoint) bool { return len(eps) > 0 })
		assert.Equal(t, []string{"10.244.9.5:8080", "10.244.9.6:8080", "10.244.9.8:8080", "127.0.0.3:8080"}, addrs(got),
			"the loopback answer of a name passes Allow; the literals 127.0.0.1, 127.1 and 169.254.169.254 are still not used")
	})
}

// TestIntegrationAppProtocol checks that AppProtocol reports the matched port's appProtocol,
// the most common one when slices disagree, and that Watch pushes when only it changed.
func TestIntegrationAppProtocol(t *testing.T) {
	const ns = "appproto"
	w, cluster := startWatcher(t, ns, endpointslices.Options{})
	api := cluster.Client.DiscoveryV1().EndpointSlices(ns)
	create := func(name, svc string, ports []discoveryv1.EndpointPort, ip string) {
		t.Helper()
		es := slice(name, svc, discoveryv1.AddressTypeIPv4, ports, ep(ip, nil, nil, nil))
		es.Namespace = ns
		_, err := api.Create(t.Context(), es, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	withProto := func(name string, n int32, proto string) discoveryv1.EndpointPort {
		p := port(name, n)
		p.AppProtocol = ptr(proto)
		return p
	}
	create("web-a", "web", []discoveryv1.EndpointPort{withProto("http", 8080, "kubernetes.io/h2c"), withProto("metrics", 9090, "http")}, "10.244.8.1")
	create("web-b", "web", []discoveryv1.EndpointPort{withProto("http", 8080, "kubernetes.io/h2c")}, "10.244.8.2")
	create("web-c", "web", []discoveryv1.EndpointPort{withProto("http", 8080, "kubernetes.io/ws")}, "10.244.8.3")
	create("tie-a", "tie", []discoveryv1.EndpointPort{withProto("http", 8080, "https")}, "10.244.8.4")
	create("tie-b", "tie", []discoveryv1.EndpointPort{withProto("http", 8080, "grpc")}, "10.244.8.5")
	create("none-a", "none", []discoveryv1.EndpointPort{port("http", 8080)}, "10.244.8.6")

	var protos []string
	var mu sync.Mutex
	src := w.Source(ns, "web", "http")
	rec := watch(t, src, func([]sluice.Endpoint) {
		mu.Lock()
		defer mu.Unlock()
		protos = append(protos, src.AppProtocol())
	})
	rec.waitFor(t, "web's three endpoints", hasAddrs("10.244.8.1:8080", "10.244.8.2:8080", "10.244.8.3:8080"))
	assert.Equal(t, "kubernetes.io/h2c", src.AppProtocol(), "the value two of three slices carry")
	assert.Equal(t, "http", w.Source(ns, "web", "metrics").AppProtocol(), "the matched port's, not the first port's")
	assert.Equal(t, "grpc", w.Source(ns, "tie", "http").AppProtocol(), "a tie goes to the value that sorts first")
	assert.Equal(t, "", w.Source(ns, "none", "http").AppProtocol(), "no appProtocol")
	assert.Equal(t, "", w.Source(ns, "web", "admin").AppProtocol(), "no such port")

	// The Service port changes protocol: the controller rewrites each slice, endpoints stay.
	for _, name := range []string{"web-a", "web-b"} {
		es, err := api.Get(t.Context(), name, metav1.GetOptions{})
		require.NoError(t, err)
		es.Ports[0].AppProtocol = ptr("kubernetes.io/ws")
		_, err = api.Update(t.Context(), es, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	rec.waitFor(t, "a push for the appProtocol change", func([]sluice.Endpoint) bool {
		mu.Lock()
		defer mu.Unlock()
		return protos[len(protos)-1] == "kubernetes.io/ws"
	})
}
