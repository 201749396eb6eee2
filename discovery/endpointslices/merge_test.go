package endpointslices_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
)

func ptr[T any](v T) *T { return &v }

// ep is an EndpointSlice endpoint with optional conditions (nil means unset).
func ep(addr string, ready, serving, terminating *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating},
	}
}

func slice(name, svc string, typ discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: typ,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func port(name string, n int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(n), Protocol: ptr(corev1.ProtocolTCP)}
}

func TestMerge(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	httpPort := []discoveryv1.EndpointPort{port("http", 8080), port("metrics", 9090)}
	zoned := ep("10.244.0.9", yes, yes, no)
	zoned.Zone, zoned.NodeName = ptr("zone-a"), ptr("node-1")
	zoned.Hints = &discoveryv1.EndpointHints{
		ForZones: []discoveryv1.ForZone{{Name: "zone-a"}, {Name: "zone-b"}},
		ForNodes: []discoveryv1.ForNode{{Name: "node-1"}},
	}

	tests := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		port   string
		want   []sluice.Endpoint
	}{{
		name: "conditions: nil ready is ready, serving+terminating is Terminating, the rest dropped",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "web", discoveryv1.AddressTypeIPv4, httpPort,
			ep("10.244.0.1", nil, nil, nil),
			ep("10.244.0.2", yes, yes, no),
			ep("10.244.0.3", no, yes, yes),
			ep("10.244.0.4", no, no, yes),
			ep("10.244.0.5", no, yes, no),
		)},
		port: "http",
		want: []sluice.Endpoint{
			{Addr: "10.244.0.1:8080"}, {Addr: "10.244.0.2:8080"},
			{Addr: "10.244.0.3:8080", State: sluice.Terminating},
		},
	}, {
		name: "duplicates across slices are merged and a ready copy wins",
		slices: []*discoveryv1.EndpointSlice{
			slice("s1", "web", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.0.1", no, yes, yes)),
			slice("s2", "web", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.0.1", yes, yes, no), ep("10.244.0.2", nil, nil, nil)),
		},
		port: "http",
		want: []sluice.Endpoint{{Addr: "10.244.0.1:8080"}, {Addr: "10.244.0.2:8080"}},
	}, {
		name: "port resolved per slice, by name",
		slices: []*discoveryv1.EndpointSlice{
			slice("s1", "web", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.0.1", nil, nil, nil)),
			slice("s2", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8081)}, ep("10.244.0.2", nil, nil, nil)),
			slice("s3", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("grpc", 8081)}, ep("10.244.0.3", nil, nil, nil)),
		},
		port: "http",
		want: []sluice.Endpoint{{Addr: "10.244.0.1:8080"}, {Addr: "10.244.0.2:8081"}},
	}, {
		name:   "port by number",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "web", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.0.1", nil, nil, nil))},
		port:   "9090",
		want:   []sluice.Endpoint{{Addr: "10.244.0.1:9090"}},
	}, {
		name:   "empty port takes an unnamed or only port; UDP ports never match",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: ptr(int32(53)), Protocol: ptr(corev1.ProtocolUDP)}, port("dns-tcp", 53)}, ep("10.244.0.1", nil, nil, nil))},
		port:   "",
		want:   []sluice.Endpoint{{Addr: "10.244.0.1:53"}},
	}, {
		name:   "a UDP port by name, with the suffix only",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: ptr(int32(5353)), Protocol: ptr(corev1.ProtocolUDP)}, port("dns-tcp", 53)}, ep("10.244.0.1", nil, nil, nil))},
		port:   "dns/UDP",
		want:   []sluice.Endpoint{{Addr: "10.244.0.1:5353"}},
	}, {
		name:   "a UDP port's name without the suffix asks for TCP",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: ptr(int32(5353)), Protocol: ptr(corev1.ProtocolUDP)}, port("dns-tcp", 53)}, ep("10.244.0.1", nil, nil, nil))},
		port:   "dns",
		want:   []sluice.Endpoint{},
	}, {
		name:   "a UDP port by number, and the only UDP port",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: ptr(int32(5353)), Protocol: ptr(corev1.ProtocolUDP)}, port("dns-tcp", 5353)}, ep("10.244.0.1", nil, nil, nil))},
		port:   "5353/UDP",
		want:   []sluice.Endpoint{{Addr: "10.244.0.1:5353"}},
	}, {
		name:   "the only UDP port, unnamed in the Service",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Port: ptr(int32(5353)), Protocol: ptr(corev1.ProtocolUDP)}}, ep("10.244.0.1", nil, nil, nil))},
		port:   "/UDP",
		want:   []sluice.Endpoint{{Addr: "10.244.0.1:5353"}},
	}, {
		name:   "an unknown protocol matches nothing",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Port: ptr(int32(5353)), Protocol: ptr(corev1.ProtocolUDP)}}, ep("10.244.0.1", nil, nil, nil))},
		port:   "/udp",
		want:   []sluice.Endpoint{},
	}, {
		name: "IPv6 is used; FQDN slices are not, Merge resolves no names",
		slices: []*discoveryv1.EndpointSlice{
			slice("s6", "web", discoveryv1.AddressTypeIPv6, httpPort, ep("fd00::1", nil, nil, nil)),
			slice("sf", "web", discoveryv1.AddressTypeFQDN, httpPort, ep("db.example.com", nil, nil, nil)),
		},
		port: "http",
		want: []sluice.Endpoint{{Addr: "[fd00::1]:8080"}},
	}, {
		name:   "zone, node and hints",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "web", discoveryv1.AddressTypeIPv4, httpPort, zoned)},
		port:   "http",
		want:   []sluice.Endpoint{{Addr: "10.244.0.9:8080", Zone: "zone-a", Node: "node-1", ForZones: "zone-a,zone-b", ForNodes: "node-1"}},
	}, {
		name:   "no matching port",
		slices: []*discoveryv1.EndpointSlice{slice("s1", "web", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.0.1", nil, nil, nil)), nil},
		port:   "admin",
		want:   []sluice.Endpoint{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, endpointslices.Merge(tt.slices, tt.port))
		})
	}
}

// recorder collects pushed sets and lets a test wait for the one it wants.
type recorder struct {
	mu   sync.Mutex
	sets [][]sluice.Endpoint
	ch   chan []sluice.Endpoint
}

func newRecorder() *recorder { return &recorder{ch: make(chan []sluice.Endpoint, 1000)} }

func (r *recorder) update(eps []sluice.Endpoint) {
	r.mu.Lock()
	r.sets = append(r.sets, eps)
	r.mu.Unlock()
	r.ch <- eps
}

// waitFor returns when a pushed set satisfies ok, failing t after 20 seconds.
func (r *recorder) waitFor(t *testing.T, what string, ok func([]sluice.Endpoint) bool) []sluice.Endpoint {
	t.Helper()
	return r.waitWithin(t, 20*time.Second, what, ok)
}

// waitWithin returns when a pushed set satisfies ok, failing t after d.
func (r *recorder) waitWithin(t *testing.T, d time.Duration, what string, ok func([]sluice.Endpoint) bool) []sluice.Endpoint {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case eps := <-r.ch:
			if ok(eps) {
				return eps
			}
		case <-timeout:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; sets pushed: %v", what, r.sets)
			return nil
		}
	}
}

func addrs(eps []sluice.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Addr
		if e.State != sluice.Ready {
			out[i] += "(" + e.State.String() + ")"
		}
	}
	return out
}

func hasAddrs(want ...string) func([]sluice.Endpoint) bool {
	return func(eps []sluice.Endpoint) bool { return fmt.Sprint(addrs(eps)) == fmt.Sprint(want) }
}

func TestWatcherWithFakeClientset(t *testing.T) {
	client := fake.NewClientset()
	factory := informers.NewSharedInformerFactory(client, 0)
	w, err := endpointslices.New(factory, endpointslices.Options{Coalesce: 10 * time.Millisecond})
	require.NoError(t, err)
	// A second Watcher on the same factory shares the informer and its index.
	w2, err := endpointslices.New(factory, endpointslices.Options{})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	factory.Start(ctx.Done())
	require.NoError(t, w.WaitForSync(ctx))
	assert.True(t, w2.HasSynced())

	web, other := newRecorder(), newRecorder()
	go w.Source("default", "web", "http").Watch(ctx, web.update)
	go w2.Source("default", "other", "http").Watch(ctx, other.update)
	web.waitFor(t, "the initial empty set", hasAddrs())

	httpPort := []discoveryv1.EndpointPort{port("http", 80)}
	slices := client.DiscoveryV1().EndpointSlices("default")
	_, err = slices.Create(ctx, slice("web-1", "web", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.0.1", nil, nil, nil)), metav1.CreateOptions{})
	require.NoError(t, err)
	web.waitFor(t, "the first endpoint", hasAddrs("10.244.0.1:80"))

	_, err = slices.Create(ctx, slice("web-2", "web", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.0.2", nil, nil, nil)), metav1.CreateOptions{})
	require.NoError(t, err)
	web.waitFor(t, "both slices merged", hasAddrs("10.244.0.1:80", "10.244.0.2:80"))

	require.NoError(t, slices.Delete(ctx, "web-1", metav1.DeleteOptions{}))
	web.waitFor(t, "the deleted slice's endpoint gone", hasAddrs("10.244.0.2:80"))
	other.waitFor(t, "another Service's subscriber sees only its own (empty) set", hasAddrs())
	other.mu.Lock()
	assert.Len(t, other.sets, 1, "changes to web must not push sets to other's subscriber")
	other.mu.Unlock()
}

// TestDeletedFinalStateUnknown drives the informer's tombstone path through a store-level
// delete: the handler must unwrap the tombstone to find the Service.
func TestDeletedFinalStateUnknown(t *testing.T) {
	client := fake.NewClientset(slice("web-1", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 80)}, ep("10.244.0.1", nil, nil, nil)))
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Discovery().V1().EndpointSlices().Informer()
	w, err := endpointslices.New(factory, endpointslices.Options{Coalesce: time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	factory.Start(ctx.Done())
	require.NoError(t, w.WaitForSync(ctx))

	rec := newRecorder()
	go w.Source("default", "web", "http").Watch(ctx, rec.update)
	rec.waitFor(t, "the initial set", hasAddrs("10.244.0.1:80"))

	// The informer delivers a tombstone when a relist finds an object gone whose delete
	// event it missed. Simulate it by deleting from the store without a watch event, then
	// delivering the tombstone to the Watcher's handlers through a fresh informer event.
	obj, exists, err := inf.GetIndexer().GetByKey("default/web-1")
	require.NoError(t, err)
	require.True(t, exists)
	require.NoError(t, inf.GetIndexer().Delete(obj))
	endpointslices.Notify(w, cache.DeletedFinalStateUnknown{Key: "default/web-1", Obj: obj})
	rec.waitFor(t, "the set emptied by the tombstone", hasAddrs())
}
