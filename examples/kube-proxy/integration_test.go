//go:build integration

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// These tests run the proxy — tcpproxy and udpproxy forwarding — against a real
// kube-apiserver, with real TCP and UDP backends on loopback. The API server refuses loopback
// addresses in EndpointSlices, so the slices name pod addresses (10.244.x.y), which the TCP
// dialer maps to their backends (kubetest.AddrMap) and, for UDP, mappedUDP.
// Clients connect from loopback addresses of their own, so that ClientIP affinity sees
// distinct clients. The proxy balances round-robin, which makes every re-pick visible: with
// two endpoints, a client placed again moves to the other one.

// pods are the backends: each answers with its name, a TCP one once per connection (then
// echoes), a UDP one to every datagram.
type pods struct {
	tcp kubetest.AddrMap

	mu      sync.Mutex
	udpAddr map[string]string // pod address → backend address, for mappedUDP
}

// mappedUDP wraps a forwarding so that its UDP forwarders see each endpoint at its
// backend's loopback address: udpproxy dials endpoint addresses itself, with no dialer to
// replace, and the API server refuses loopback addresses in EndpointSlices.
type mappedUDP struct {
	forwarding
	pods *pods
}

func (f mappedUDP) UDP(pc *net.UDPConn, p sluice.Picker) (forwarder, error) {
	fw, err := f.forwarding.UDP(pc, sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		res, err := p.Pick(info)
		res.Endpoint.Addr = f.pods.backend(res.Endpoint.Addr)
		return res, err
	}))
	return mappedForwarder{fw, f.pods}, err
}

type mappedForwarder struct {
	forwarder
	pods *pods
}

func (f mappedForwarder) Prune(eps []sluice.Endpoint) {
	mapped := slices.Clone(eps)
	for i := range mapped {
		mapped[i].Addr = f.pods.backend(mapped[i].Addr)
	}
	f.forwarder.Prune(mapped)
}

// backend returns the loopback address of the UDP backend of pod, or pod.
func (p *pods) backend(pod string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.udpAddr[pod]; ok {
		return a
	}
	return pod
}

// tcpBackend serves pod (10.244.x.y:port) as name.
func (p *pods) tcpBackend(t *testing.T, pod, name string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintln(c, name)
				io.Copy(c, c)
			}()
		}
	}()
	p.tcp.Set(pod, ln.Addr().String())
}

// udpBackend serves pod as name.
func (p *pods) udpBackend(t *testing.T, pod, name string) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name+" "+string(buf[:n])), from)
		}
	}()
	p.mu.Lock()
	if p.udpAddr == nil {
		p.udpAddr = map[string]string{}
	}
	p.udpAddr[pod] = pc.LocalAddr().String()
	p.mu.Unlock()
}

// tcpAsk connects from the IP from to the proxy listener to and returns the name of the
// backend that answers.
func tcpAsk(from, to string) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", to)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// udpClient is a UDP socket on the IP from, talking to to: one flow.
func udpClient(t *testing.T, from, to string) *net.UDPConn {
	raddr, err := net.ResolveUDPAddr("udp", to)
	require.NoError(t, err)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, raddr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// udpAsk sends one datagram on c and returns the name of the backend that answers.
func udpAsk(c *net.UDPConn) (string, error) {
	if _, err := c.Write([]byte("ping")); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	name, _, _ := strings.Cut(string(buf[:n]), " ")
	return name, nil
}

// names asks n times and counts the answers; failures count under "".
func names(n int, ask func() (string, error)) map[string]int {
	seen := map[string]int{}
	for range n {
		name, err := ask()
		if err != nil {
			name = ""
		}
		seen[name]++
	}
	return seen
}

// set is a shorthand for the answers expected of names.
func set(n int, names ...string) map[string]int {
	m := map[string]int{}
	for _, name := range names {
		m[name] += n / len(names)
	}
	return m
}

// rig is one proxy against one API server, and the means to write its inputs.
type rig struct {
	client kubernetes.Interface
	ns     string
	addr   string // the proxy's listen address
	pods   *pods
	clock  *fakeClock
}

func (r *rig) at(port int) string { return net.JoinHostPort(r.addr, fmt.Sprint(port+testOffset)) }

func (r *rig) service(t *testing.T, svc *corev1.Service) {
	t.Helper()
	svc.Namespace = r.ns
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil // allocated by the API server
	_, err := r.client.CoreV1().Services(r.ns).Create(context.Background(), svc, metav1.CreateOptions{})
	require.NoError(t, err)
}

func (r *rig) update(t *testing.T, name string, change func(*corev1.Service)) {
	t.Helper()
	updateService(t, r.client, r.ns, name, change)
}

func (r *rig) slice(t *testing.T, svc, name string, port discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) {
	t.Helper()
	applySlice(t, r.client, endpointSlice(r.ns, svc, name, port, eps...))
}

// fakeClock is the balancers' clock, advanced by the test, for affinity timeouts.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestKubeProxy(t *testing.T) {
	cluster := kubetest.Start(t)
	r := &rig{client: cluster.Client, ns: "kube-proxy-test", addr: loopback(), pods: &pods{},
		clock: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	_, err := r.client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := testConfig(t, r.client, r.addr)
	cfg.Now, cfg.Policy = r.clock.Now, balancer.RoundRobin{}
	cfg.Listen.NodePorts, cfg.Listen.NodePortAddress = true, r.addr
	cfg.Forward = mappedUDP{l4{dial: r.pods.tcp.DialContext, udpIdle: cfg.UDPIdle, log: cfg.Logger}, r.pods}
	start(t, cfg)

	const wait, tick = 15 * time.Second, 10 * time.Millisecond
	client := loopback() // the address tests connect from, unless they need several clients
	tcp := func(port int) func() (string, error) {
		return func() (string, error) { return tcpAsk(client, r.at(port)) }
	}

	t.Run("scaling", func(t *testing.T) {
		port := slicePort("http", 8080, corev1.ProtocolTCP)
		for i := 1; i <= 3; i++ {
			r.pods.tcpBackend(t, fmt.Sprintf("10.244.1.%d:8080", i), fmt.Sprintf("scale-%d", i))
		}
		r.service(t, service("", "scale", 0, nil, tcpPort("http", 1080)))
		r.slice(t, "scale", "scale-1", port, podEndpoint("10.244.1.1", "node-1", true), podEndpoint("10.244.1.2", "node-2", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(20, "scale-1", "scale-2"), names(20, tcp(1080)))
		}, wait, tick, "the two endpoints should share the connections")

		r.slice(t, "scale", "scale-1", port, podEndpoint("10.244.1.1", "node-1", true),
			podEndpoint("10.244.1.2", "node-2", true), podEndpoint("10.244.1.3", "node-2", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(30, "scale-1", "scale-2", "scale-3"), names(30, tcp(1080)))
		}, wait, tick, "a new endpoint should get its share")

		r.slice(t, "scale", "scale-1", port, podEndpoint("10.244.1.3", "node-2", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(10, "scale-3"), names(10, tcp(1080)))
		}, wait, tick, "removed endpoints should get no more connections")
	})

	t.Run("UDP scaling and flows of removed endpoints", func(t *testing.T) {
		port := slicePort("dns", 5353, corev1.ProtocolUDP)
		for i := 1; i <= 2; i++ {
			r.pods.udpBackend(t, fmt.Sprintf("10.244.2.%d:5353", i), fmt.Sprintf("dns-%d", i))
		}
		r.service(t, service("", "dns", 0, nil, udpPort("dns", 1053)))
		r.slice(t, "dns", "dns-1", port, podEndpoint("10.244.2.1", "node-1", true), podEndpoint("10.244.2.2", "node-2", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			// Each socket is a new flow, placed by round robin.
			assert.Equal(c, set(10, "dns-1", "dns-2"), names(10, func() (string, error) {
				fl := udpClient(t, client, r.at(1053))
				defer fl.Close()
				return udpAsk(fl)
			}))
		}, wait, tick, "new flows should be spread over both endpoints")

		flow := udpClient(t, client, r.at(1053))
		first, err := udpAsk(flow)
		require.NoError(t, err)
		assert.Equal(t, set(5, first), names(5, func() (string, error) { return udpAsk(flow) }), "a flow stays on its endpoint")
		keep := map[string]string{"dns-1": "10.244.2.2", "dns-2": "10.244.2.1"}[first]
		r.slice(t, "dns", "dns-1", port, podEndpoint(keep, "node-1", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			name, err := udpAsk(flow)
			assert.NoError(c, err)
			assert.NotEqual(c, first, name)
		}, wait, tick, "a flow whose endpoint left should move to one that is left")
	})

	t.Run("affinity holds and expires", func(t *testing.T) {
		timeout := int32(600)
		port := slicePort("db", 5432, corev1.ProtocolTCP)
		for i := 1; i <= 2; i++ {
			r.pods.tcpBackend(t, fmt.Sprintf("10.244.3.%d:5432", i), fmt.Sprintf("db-%d", i))
		}
		r.service(t, service("", "db", 0, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
		}, tcpPort("db", 1432)))
		r.slice(t, "db", "db-1", port, podEndpoint("10.244.3.1", "node-1", true), podEndpoint("10.244.3.2", "node-2", true))
		require.Eventually(t, func() bool { _, err := tcpAsk(client, r.at(1432)); return err == nil }, wait, tick)

		clients := []string{loopback(), loopback(), loopback(), loopback()}
		pinned := map[string]string{}
		for _, c := range clients {
			first, err := tcpAsk(c, r.at(1432))
			require.NoError(t, err)
			pinned[c] = first
			assert.Equal(t, set(10, first), names(10, func() (string, error) { return tcpAsk(c, r.at(1432)) }),
				"every connection of client %s should go to its first endpoint", c)
		}
		assert.ElementsMatch(t, []string{"db-1", "db-1", "db-2", "db-2"}, []string{pinned[clients[0]], pinned[clients[1]], pinned[clients[2]], pinned[clients[3]]},
			"new clients are placed by round robin")

		// The last client placed took the round robin's last choice: when it is placed again,
		// the next choice is the other endpoint.
		r.clock.Advance(599 * time.Second)
		c := clients[len(clients)-1]
		got, err := tcpAsk(c, r.at(1432))
		require.NoError(t, err)
		assert.Equal(t, pinned[c], got, "within the timeout of its last connection, the client stays")
		r.clock.Advance(600 * time.Second)
		got, err = tcpAsk(c, r.at(1432))
		require.NoError(t, err)
		assert.NotEqual(t, pinned[c], got, "after the timeout, the client is placed again (round robin: on the other endpoint)")
		assert.Equal(t, set(10, got), names(10, func() (string, error) { return tcpAsk(c, r.at(1432)) }), "and pinned there")
	})

	t.Run("Local traffic policies", func(t *testing.T) {
		port := slicePort("http", 8080, corev1.ProtocolTCP)
		r.pods.tcpBackend(t, "10.244.4.1:8080", "here")
		r.pods.tcpBackend(t, "10.244.4.2:8080", "there")
		local := corev1.ServiceInternalTrafficPolicyLocal
		r.service(t, service("", "local", 0, func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = &local
		}, tcpPort("http", 1081)))
		r.slice(t, "local", "local-1", port, podEndpoint("10.244.4.1", "node-1", true), podEndpoint("10.244.4.2", "node-2", true))
		r.service(t, service("", "external", 0, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.Ports[0].NodePort = 31082
		}, tcpPort("http", 1082)))
		r.slice(t, "external", "external-1", port, podEndpoint("10.244.4.1", "node-1", true), podEndpoint("10.244.4.2", "node-2", true))

		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(10, "here"), names(10, tcp(1081)), "internalTrafficPolicy: Local")
			assert.Equal(c, set(10, "here"), names(10, tcp(31082)), "externalTrafficPolicy: Local at the node port")
			assert.Equal(c, set(10, "here", "there"), names(10, tcp(1082)), "the same Service's cluster port uses every endpoint")
		}, wait, tick, "Local listeners should use this node's endpoints only")

		r.slice(t, "local", "local-1", port, podEndpoint("10.244.4.2", "node-2", true))
		r.slice(t, "external", "external-1", port, podEndpoint("10.244.4.2", "node-2", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(5, ""), names(5, tcp(1081)), "no local endpoint: refused, never sent to node-2")
			assert.Equal(c, set(5, ""), names(5, tcp(31082)), "no local endpoint at the node port either")
			assert.Equal(c, set(5, "there"), names(5, tcp(1082)), "while the cluster port reaches node-2")
		}, wait, tick)
	})

	t.Run("topology hints", func(t *testing.T) {
		port := slicePort("http", 8080, corev1.ProtocolTCP)
		hinted := func(ip, node, zone string, forNode bool) discoveryv1.Endpoint {
			e := podEndpoint(ip, node, true)
			e.Zone = &zone
			e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}}
			if forNode {
				e.Hints.ForNodes = []discoveryv1.ForNode{{Name: node}}
			}
			return e
		}
		for i, name := range []string{"a-1", "b-2", "a-3"} {
			r.pods.tcpBackend(t, fmt.Sprintf("10.244.8.%d:8080", i+1), name)
		}
		r.service(t, service("", "zoned", 0, nil, tcpPort("http", 1088)))
		r.slice(t, "zoned", "zoned-1", port, hinted("10.244.8.1", "node-1", "zone-a", false),
			hinted("10.244.8.2", "node-2", "zone-b", false), hinted("10.244.8.3", "node-3", "zone-a", false))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(10, "a-1", "a-3"), names(10, tcp(1088)))
		}, wait, tick, "zone hints keep the traffic in zone-a")

		r.slice(t, "zoned", "zoned-1", port, hinted("10.244.8.1", "node-1", "zone-a", true),
			hinted("10.244.8.2", "node-2", "zone-b", true), hinted("10.244.8.3", "node-3", "zone-a", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(10, "a-1"), names(10, tcp(1088)))
		}, wait, tick, "node hints (trafficDistribution: PreferSameNode) keep it on node-1")

		r.slice(t, "zoned", "zoned-1", port, hinted("10.244.8.1", "node-1", "zone-a", false),
			hinted("10.244.8.2", "node-2", "zone-b", false), podEndpoint("10.244.8.3", "node-3", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(9, "a-1", "b-2", "a-3"), names(9, tcp(1088)))
		}, wait, tick, "a ready endpoint without hints turns topology off, as in kube-proxy")
	})

	t.Run("terminating endpoints only when none is ready", func(t *testing.T) {
		port := slicePort("http", 8080, corev1.ProtocolTCP)
		r.pods.tcpBackend(t, "10.244.5.1:8080", "ready")
		r.pods.tcpBackend(t, "10.244.5.2:8080", "leaving")
		r.service(t, service("", "rollout", 0, nil, tcpPort("http", 1083)))
		r.slice(t, "rollout", "rollout-1", port, podEndpoint("10.244.5.1", "node-1", true), podEndpoint("10.244.5.2", "node-2", false))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(10, "ready"), names(10, tcp(1083)))
		}, wait, tick, "a terminating endpoint gets nothing while one is ready")
		r.slice(t, "rollout", "rollout-1", port, podEndpoint("10.244.5.2", "node-2", false))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, set(10, "leaving"), names(10, tcp(1083)))
		}, wait, tick, "with none ready, the terminating endpoint serves")
	})

	t.Run("ports added and removed, Service deleted", func(t *testing.T) {
		port := slicePort("http", 8080, corev1.ProtocolTCP)
		admin := slicePort("admin", 9090, corev1.ProtocolTCP)
		r.pods.tcpBackend(t, "10.244.6.1:8080", "web")
		r.pods.tcpBackend(t, "10.244.6.1:9090", "admin")
		r.service(t, service("", "ports", 0, nil, tcpPort("http", 1084)))
		r.slice(t, "ports", "ports-http", port, podEndpoint("10.244.6.1", "node-1", true))
		r.slice(t, "ports", "ports-admin", admin, podEndpoint("10.244.6.1", "node-1", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Equal(c, set(1, "web"), names(1, tcp(1084))) }, wait, tick)
		_, err := tcpAsk(client, r.at(1085))
		require.Error(t, err, "no listener yet for the port to come")

		r.update(t, "ports", func(s *corev1.Service) { s.Spec.Ports = append(s.Spec.Ports, tcpPort("admin", 1085)) })
		require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Equal(c, set(1, "admin"), names(1, tcp(1085))) }, wait, tick,
			"a port added to the Service should get a listener")
		r.update(t, "ports", func(s *corev1.Service) { s.Spec.Ports = s.Spec.Ports[:1] })
		require.Eventually(t, func() bool { return refused(r.at(1085)) }, wait, tick, "a port removed should lose its listener")
		assert.Equal(t, set(1, "web"), names(1, tcp(1084)), "the other port is served still")

		require.NoError(t, r.client.CoreV1().Services(r.ns).Delete(context.Background(), "ports", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool { return refused(r.at(1084)) }, wait, tick, "a deleted Service's listener should close")
	})

	t.Run("an established connection survives unrelated changes", func(t *testing.T) {
		port := slicePort("http", 8080, corev1.ProtocolTCP)
		r.pods.tcpBackend(t, "10.244.7.1:8080", "long-1")
		r.pods.tcpBackend(t, "10.244.7.2:8080", "long-2")
		r.service(t, service("", "long", 0, nil, tcpPort("http", 1086)))
		r.slice(t, "long", "long-1", port, podEndpoint("10.244.7.1", "node-1", true))
		var conn net.Conn
		var rd *bufio.Reader
		require.Eventually(t, func() bool {
			c, err := net.Dial("tcp", r.at(1086))
			if err != nil {
				return false
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			rd = bufio.NewReader(c)
			if hello, err := rd.ReadString('\n'); err != nil || hello != "long-1\n" {
				c.Close()
				return false
			}
			conn = c
			return true
		}, wait, tick, "a connection to long-1")
		defer conn.Close()
		echo := func(msg string) (string, error) {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintln(conn, msg); err != nil {
				return "", err
			}
			line, err := rd.ReadString('\n')
			return strings.TrimSpace(line), err
		}
		r.update(t, "long", func(s *corev1.Service) { s.Annotations = map[string]string{"example.com/note": "changed"} })
		r.slice(t, "long", "long-1", port, podEndpoint("10.244.7.1", "node-1", true), podEndpoint("10.244.7.2", "node-2", true))
		r.update(t, "long", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
		r.pods.tcpBackend(t, "10.244.7.3:8080", "marker")
		r.service(t, service("", "marker", 0, nil, tcpPort("http", 1087)))
		r.slice(t, "marker", "marker-1", port, podEndpoint("10.244.7.3", "node-1", true))
		require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Equal(c, set(1, "marker"), names(1, tcp(1087))) }, wait, tick,
			"the changes before the marker Service have been applied once it is served")
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			// Affinity is on: new clients are spread, each from an address of its own.
			assert.Equal(c, set(4, "long-1", "long-2"), names(4, func() (string, error) { return tcpAsk(loopback(), r.at(1086)) }))
		}, wait, tick, "the scale-up is served")

		got, err := echo("still there?")
		require.NoError(t, err, "the connection made before the changes should still work")
		assert.Equal(t, "still there?", got)
	})
}

// refused reports whether a connection to addr is refused: nothing listens there.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(err.Error(), "refused")
}
