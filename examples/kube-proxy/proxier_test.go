package main

import (
	"context"
	"maps"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice"
)

// These tests run the proxier against client-go's fake clientset with fake forwarders: they
// check the reconciler — which listeners exist, which endpoints their pickers choose — and
// leave real traffic to the integration tests.

func createService(t *testing.T, client kubernetes.Interface, svc *corev1.Service) {
	t.Helper()
	_, err := client.CoreV1().Services(svc.Namespace).Create(context.Background(), svc, metav1.CreateOptions{})
	require.NoError(t, err)
}

func updateService(t *testing.T, client kubernetes.Interface, ns, name string, change func(*corev1.Service)) {
	t.Helper()
	svc, err := client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	change(svc)
	_, err = client.CoreV1().Services(ns).Update(context.Background(), svc, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func applySlice(t *testing.T, client kubernetes.Interface, es *discoveryv1.EndpointSlice) {
	t.Helper()
	api := client.DiscoveryV1().EndpointSlices(es.Namespace)
	if _, err := api.Update(context.Background(), es, metav1.UpdateOptions{}); err == nil {
		return
	}
	_, err := api.Create(context.Background(), es, metav1.CreateOptions{})
	require.NoError(t, err)
}

// TestProxierFollowsServices walks one Service through the changes a reconciler must get
// right: its ports open listeners, unrelated changes leave them alone, a port added or
// removed opens or closes one, affinity re-routes a listener without replacing it, and
// deletion closes them all.
func TestProxierFollowsServices(t *testing.T) {
	client := fake.NewClientset()
	addr := loopback()
	fwd := newFakeForwarding()
	cfg := testConfig(t, client, addr)
	cfg.Forward = fwd

	createService(t, client, service("default", "web", 0, nil, tcpPort("http", 80), udpPort("dns", 53)))
	applySlice(t, client, endpointSlice("default", "web", "web-http", slicePort("http", 8080, corev1.ProtocolTCP),
		podEndpoint("10.244.0.1", "node-1", true), podEndpoint("10.244.0.2", "node-2", true)))
	applySlice(t, client, endpointSlice("default", "web", "web-dns", slicePort("dns", 5353, corev1.ProtocolUDP),
		podEndpoint("10.244.0.1", "node-1", true)))
	start(t, cfg)

	web, dns := key("TCP", addr, 80), key("UDP", addr, 53)
	fw := fwd.waitLive(t, web)
	seen, err := fw.picks(200, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"10.244.0.1:8080", "10.244.0.2:8080"}, sortedKeys(seen), "the TCP port's endpoints, both nodes")
	udp := fwd.waitLive(t, dns)
	seen, err = udp.picks(10, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"10.244.0.1:5353"}, sortedKeys(seen), "the UDP port's endpoints")

	t.Run("scaling reaches the balancer and prunes UDP flows", func(t *testing.T) {
		applySlice(t, client, endpointSlice("default", "web", "web-dns", slicePort("dns", 5353, corev1.ProtocolUDP),
			podEndpoint("10.244.0.3", "node-1", true)))
		require.Eventually(t, func() bool {
			p := udp.lastPruned()
			return len(p) == 1 && p[0].Addr == "10.244.0.3:5353"
		}, 10*time.Second, 5*time.Millisecond, "the UDP forwarder should be told the new set")
		seen, err := udp.picks(10, "")
		require.NoError(t, err)
		assert.Equal(t, []string{"10.244.0.3:5353"}, sortedKeys(seen))
	})

	t.Run("unrelated changes keep the listeners", func(t *testing.T) {
		updateService(t, client, "default", "web", func(s *corev1.Service) {
			s.Annotations = map[string]string{"example.com/owner": "team-a"}
		})
		createService(t, client, service("default", "other", 1, nil, tcpPort("admin", 81)))
		fwd.waitLive(t, key("TCP", addr, 81)) // the update before it has been applied too
		for _, k := range []string{web, dns} {
			made, drained := fwd.counts(k)
			assert.Equal(t, 1, made, "%s should have been opened once", k)
			assert.Zero(t, drained, "%s should not have been closed", k)
		}
	})

	t.Run("a port added and removed", func(t *testing.T) {
		updateService(t, client, "default", "web", func(s *corev1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, tcpPort("metrics", 9090))
		})
		fwd.waitLive(t, key("TCP", addr, 9090))
		updateService(t, client, "default", "web", func(s *corev1.Service) { s.Spec.Ports = s.Spec.Ports[:2] })
		require.Eventually(t, func() bool { return fwd.get(key("TCP", addr, 9090)) == nil }, 10*time.Second, 5*time.Millisecond,
			"the removed port's listener should close")
		_, drained := fwd.counts(key("TCP", addr, 9090))
		assert.Equal(t, 1, drained)
		made, _ := fwd.counts(web)
		assert.Equal(t, 1, made, "the other ports' listeners are kept")
	})

	t.Run("affinity re-routes the listener in place", func(t *testing.T) {
		updateService(t, client, "default", "web", func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		})
		require.Eventually(t, func() bool {
			seen, err := fw.picks(50, "192.0.2.1:1000")
			return err == nil && len(seen) == 1
		}, 10*time.Second, 5*time.Millisecond, "a client should stick to one endpoint once the Service asks for affinity")
		for _, c := range []string{"192.0.2.1:2000", "192.0.2.1:3000"} {
			seen, err := fw.picks(20, c)
			require.NoError(t, err)
			assert.Len(t, seen, 1, "every connection of one client goes to one endpoint")
		}
		made, drained := fwd.counts(web)
		assert.Equal(t, 1, made, "the listener is the one opened first")
		assert.Zero(t, drained)
		assert.Same(t, fw, fwd.get(web))
	})

	t.Run("deletion closes the listeners", func(t *testing.T) {
		require.NoError(t, client.CoreV1().Services("default").Delete(context.Background(), "web", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool { return fwd.get(web) == nil && fwd.get(dns) == nil }, 10*time.Second, 5*time.Millisecond,
			"the deleted Service's listeners should close")
		assert.NotNil(t, fwd.get(key("TCP", addr, 81)), "another Service's listener stays")
	})
}

// TestProxierLocalPolicy checks internalTrafficPolicy: Local: only this node's endpoints,
// the terminating ones when none is ready, and nothing when there is none on the node.
func TestProxierLocalPolicy(t *testing.T) {
	client := fake.NewClientset()
	addr := loopback()
	fwd := newFakeForwarding()
	cfg := testConfig(t, client, addr)
	cfg.Forward = fwd
	local := corev1.ServiceInternalTrafficPolicyLocal
	createService(t, client, service("default", "web", 0, func(s *corev1.Service) {
		s.Spec.InternalTrafficPolicy = &local
	}, tcpPort("http", 80)))
	port := slicePort("http", 8080, corev1.ProtocolTCP)
	applySlice(t, client, endpointSlice("default", "web", "web-1", port,
		podEndpoint("10.244.1.1", "node-1", true), podEndpoint("10.244.1.2", "node-1", false), podEndpoint("10.244.2.1", "node-2", true)))
	start(t, cfg)

	fw := fwd.waitLive(t, key("TCP", addr, 80))
	seen, err := fw.picks(50, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"10.244.1.1:8080"}, sortedKeys(seen), "the ready endpoint on node-1 only")

	applySlice(t, client, endpointSlice("default", "web", "web-1", port,
		podEndpoint("10.244.1.2", "node-1", false), podEndpoint("10.244.2.1", "node-2", true)))
	require.Eventually(t, func() bool {
		seen, err := fw.picks(20, "")
		return err == nil && len(seen) == 1 && seen["10.244.1.2:8080"] == 20
	}, 10*time.Second, 5*time.Millisecond, "with no ready local endpoint, the terminating local one, not node-2's ready one")

	applySlice(t, client, endpointSlice("default", "web", "web-1", port, podEndpoint("10.244.2.1", "node-2", true)))
	require.Eventually(t, func() bool {
		_, err := fw.picks(1, "")
		return err != nil
	}, 10*time.Second, 5*time.Millisecond, "with no local endpoint, nothing")
	_, err = fw.picks(1, "")
	assert.ErrorIs(t, err, sluice.ErrNoEndpoint)
}

func sortedKeys(m map[string]int) []string { return slices.Sorted(maps.Keys(m)) }

// TestHealthz checks that /healthz turns 200 once the first sync is applied.
func TestHealthz(t *testing.T) {
	cfg := testConfig(t, fake.NewClientset(), loopback())
	cfg.Forward = newFakeForwarding()
	cfg.Healthz = "127.0.0.1:0"
	addr := make(chan string, 1)
	cfg.Listening = func(a string) { addr <- a }
	start(t, cfg)
	url := "http://" + <-addr + "/healthz"
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 5*time.Millisecond, "/healthz should answer 200 after the first sync")
}

// TestProxierConflictsAndRetries checks the listeners that cannot be had at once: a port two
// Services ask for goes to the older one and passes to the other, in place, when the older
// one goes; and a port held by another process is taken once it is free.
func TestProxierConflictsAndRetries(t *testing.T) {
	client := fake.NewClientset()
	addr := loopback()
	fwd := newFakeForwarding()
	cfg := testConfig(t, client, addr)
	cfg.Forward = fwd
	port := slicePort("http", 8080, corev1.ProtocolTCP)
	createService(t, client, service("default", "older", 1, nil, tcpPort("http", 80)))
	createService(t, client, service("default", "newer", 2, nil, tcpPort("http", 80)))
	applySlice(t, client, endpointSlice("default", "older", "older-1", port, podEndpoint("10.244.1.1", "node-1", true)))
	applySlice(t, client, endpointSlice("default", "newer", "newer-1", port, podEndpoint("10.244.2.1", "node-1", true)))

	busy, err := net.Listen("tcp", net.JoinHostPort(addr, "20081")) // port 81's listener, taken
	require.NoError(t, err)
	createService(t, client, service("default", "late", 3, nil, tcpPort("http", 81)))
	start(t, cfg)

	fw := fwd.waitLive(t, key("TCP", addr, 80))
	seen, err := fw.picks(10, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"10.244.1.1:8080"}, sortedKeys(seen), "the older Service's endpoints")

	require.NoError(t, client.CoreV1().Services("default").Delete(context.Background(), "older", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		seen, err := fw.picks(1, "")
		return err == nil && seen["10.244.2.1:8080"] == 1
	}, 10*time.Second, 5*time.Millisecond, "the newer Service should take the port over")
	made, drained := fwd.counts(key("TCP", addr, 80))
	assert.Equal(t, 1, made, "in place: the listener is the one opened first")
	assert.Zero(t, drained)

	assert.Nil(t, fwd.get(key("TCP", addr, 81)), "port 81 is taken by another socket")
	require.NoError(t, busy.Close())
	fwd.waitLive(t, key("TCP", addr, 81)) // within a Retry of being freed
}
