package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluiceproxy/sluice"
)

// service returns a ClusterIP Service with the given ports, created at second age of the
// test's epoch; tweak, when not nil, changes it further.
func service(ns, name string, age int, tweak func(*corev1.Service), ports ...corev1.ServicePort) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1_700_000_000+int64(age), 0))},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"},
			Ports:      ports,
		},
	}
	if tweak != nil {
		tweak(svc)
	}
	return svc
}

func tcpPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
}

func udpPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolUDP}
}

func TestListeners(t *testing.T) {
	local := corev1.ServiceInternalTrafficPolicyLocal
	timeout := int32(60)
	fixed := listenConfig{Address: "127.0.0.1", PortOffset: 20000}
	sp := func(port string, proto corev1.Protocol) servicePort { return servicePort{"ns", "svc", port, proto} }
	for _, tc := range []struct {
		name  string
		svc   *corev1.Service
		cfg   listenConfig
		want  []listenSpec
		notes int
	}{{
		name: "TCP and UDP ports on the fixed address, shifted",
		svc:  service("ns", "svc", 0, nil, tcpPort("dns-tcp", 53), udpPort("dns", 53)),
		cfg:  fixed,
		want: []listenSpec{
			{listenKey{corev1.ProtocolTCP, "127.0.0.1:20053"}, route{svc: sp("dns-tcp", corev1.ProtocolTCP)}},
			{listenKey{corev1.ProtocolUDP, "127.0.0.1:20053"}, route{svc: sp("dns", corev1.ProtocolUDP)}},
		},
	}, {
		name: "each cluster IP of a dual-stack Service",
		svc: service("ns", "svc", 0, func(s *corev1.Service) {
			s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00::a"}
		}, tcpPort("", 80)),
		cfg: listenConfig{Address: clusterIPAddress},
		want: []listenSpec{
			{listenKey{corev1.ProtocolTCP, "10.96.0.10:80"}, route{svc: sp("", corev1.ProtocolTCP)}},
			{listenKey{corev1.ProtocolTCP, "[fd00::a]:80"}, route{svc: sp("", corev1.ProtocolTCP)}},
		},
	}, {
		name: "node ports follow externalTrafficPolicy, the Service port internalTrafficPolicy",
		svc: service("ns", "svc", 0, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.Ports[0].NodePort = 30080
		}, tcpPort("http", 80)),
		cfg: listenConfig{Address: "127.0.0.1", NodePorts: true},
		want: []listenSpec{
			{listenKey{corev1.ProtocolTCP, "127.0.0.1:80"}, route{svc: sp("http", corev1.ProtocolTCP)}},
			{listenKey{corev1.ProtocolTCP, ":30080"}, route{svc: sp("http", corev1.ProtocolTCP), local: true}},
		},
	}, {
		name: "internalTrafficPolicy Local, and no node ports unless asked",
		svc: service("ns", "svc", 0, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.InternalTrafficPolicy = &local
			s.Spec.Ports[0].NodePort = 30080
		}, tcpPort("http", 80)),
		cfg:  fixed,
		want: []listenSpec{{listenKey{corev1.ProtocolTCP, "127.0.0.1:20080"}, route{svc: sp("http", corev1.ProtocolTCP), local: true}}},
	}, {
		name: "ClientIP affinity with the default timeout",
		svc: service("ns", "svc", 0, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}, tcpPort("http", 80)),
		cfg:  fixed,
		want: []listenSpec{{listenKey{corev1.ProtocolTCP, "127.0.0.1:20080"}, route{svc: sp("http", corev1.ProtocolTCP), affinity: 3 * time.Hour}}},
	}, {
		name: "ClientIP affinity with a timeout",
		svc: service("ns", "svc", 0, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
		}, tcpPort("http", 80)),
		cfg:  fixed,
		want: []listenSpec{{listenKey{corev1.ProtocolTCP, "127.0.0.1:20080"}, route{svc: sp("http", corev1.ProtocolTCP), affinity: time.Minute}}},
	}, {
		name: "a timeout without ClientIP affinity is no affinity",
		svc: service("ns", "svc", 0, func(s *corev1.Service) {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
		}, tcpPort("http", 80)),
		cfg:  fixed,
		want: []listenSpec{{listenKey{corev1.ProtocolTCP, "127.0.0.1:20080"}, route{svc: sp("http", corev1.ProtocolTCP)}}},
	}, {
		name:  "SCTP and ports shifted out of range are noted",
		svc:   service("ns", "svc", 0, nil, corev1.ServicePort{Name: "s", Port: 9, Protocol: corev1.ProtocolSCTP}, tcpPort("big", 60000)),
		cfg:   fixed,
		notes: 2,
	}, {
		name: "headless Services are not proxied",
		svc:  service("ns", "svc", 0, func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, nil }, tcpPort("http", 80)),
		cfg:  fixed,
	}, {
		name: "ExternalName Services are not proxied",
		svc: service("ns", "svc", 0, func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "db.example.com"
		}, tcpPort("http", 80)),
		cfg: fixed,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, notes := listeners(tc.svc, tc.cfg)
			assert.Equal(t, tc.want, got, "listeners")
			assert.Len(t, notes, tc.notes, "notes: %q", notes)
		})
	}
}

// TestDesiredConflicts checks that a listener two Services ask for goes to the older one,
// whatever the order they are listed in, and that the other is noted.
func TestDesiredConflicts(t *testing.T) {
	cfg := listenConfig{Address: "127.0.0.1"}
	older := service("b", "older", 1, nil, tcpPort("http", 80), tcpPort("admin", 81))
	newer := service("a", "newer", 2, nil, tcpPort("web", 80), udpPort("dns", 81))
	for _, order := range [][]*corev1.Service{{older, newer}, {newer, older}} {
		want, notes := desired(order, cfg)
		assert.Equal(t, map[listenKey]route{
			{corev1.ProtocolTCP, "127.0.0.1:80"}: {svc: servicePort{"b", "older", "http", corev1.ProtocolTCP}},
			{corev1.ProtocolTCP, "127.0.0.1:81"}: {svc: servicePort{"b", "older", "admin", corev1.ProtocolTCP}},
			{corev1.ProtocolUDP, "127.0.0.1:81"}: {svc: servicePort{"a", "newer", "dns", corev1.ProtocolUDP}},
		}, want, "the older Service keeps port 80; UDP 81 is another listener")
		assert.Equal(t, []string{"a/newer:web/TCP: TCP 127.0.0.1:80 is taken by b/older:http/TCP"}, notes)
	}
	same := service("a", "same-age", 1, nil, tcpPort("http", 80))
	want, _ := desired([]*corev1.Service{older, same}, cfg)
	assert.Equal(t, "same-age", want[listenKey{corev1.ProtocolTCP, "127.0.0.1:80"}].svc.name, "a tie goes to the namespace that sorts first")
}

func TestOnNode(t *testing.T) {
	eps := []sluice.Endpoint{
		{Addr: "10.244.1.1:80", Node: "n1"},
		{Addr: "10.244.1.2:80", Node: "n1", State: sluice.Terminating},
		{Addr: "10.244.2.1:80", Node: "n2"},
		{Addr: "10.244.3.1:80"},
	}
	assert.Equal(t, eps[:2], onNode(eps, "n1"), "this node's endpoints, terminating ones too (the balancer decides)")
	assert.Empty(t, onNode(eps, "n3"), "no local endpoint: nothing, never another node's")
	assert.Empty(t, onNode(eps, ""), "no node name: nothing is local")
}

func TestServiceSelector(t *testing.T) {
	assert.Equal(t, "!service.kubernetes.io/service-proxy-name", serviceSelector(""), "kube-proxy's Services")
	assert.Equal(t, "service.kubernetes.io/service-proxy-name=sluice", serviceSelector("sluice"))
}

func TestSourcePort(t *testing.T) {
	assert.Equal(t, "http", servicePort{"ns", "svc", "http", corev1.ProtocolTCP}.sourcePort())
	assert.Equal(t, "dns/UDP", servicePort{"ns", "svc", "dns", corev1.ProtocolUDP}.sourcePort())
	assert.Equal(t, "/UDP", servicePort{"ns", "svc", "", corev1.ProtocolUDP}.sourcePort(), "the only port, unnamed")
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error; empty for none
	}{
		{nil, ""},
		{[]string{"-address", "cluster-ip", "-nodeports", "-nodeport-address", "192.0.2.1", "-port-offset", "20000", "-balance", "round-robin"}, ""},
		{[]string{"-address", "localhost"}, "-address"},
		{[]string{"-nodeport-address", "any"}, "-nodeport-address"},
		{[]string{"-port-offset", "-1"}, "-port-offset"},
		{[]string{"-balance", "maglev"}, "-balance"},
		{[]string{"extra"}, "unexpected"},
	} {
		_, err := parseFlags(tc.args, testWriter{t})
		if tc.want == "" {
			assert.NoError(t, err, "%q", tc.args)
		} else if assert.Error(t, err, "%q", tc.args) {
			assert.Contains(t, err.Error(), tc.want, "the error should name the flag")
		}
	}
}
