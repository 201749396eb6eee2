package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

// loopback returns a loopback address of the test's own (127.x.y.z), so that its listeners'
// ports are free whatever else runs on the machine.
func loopback() string {
	return fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
}

// testOffset is the port offset tests run with, so that Service ports below 1024 need no
// privilege.
const testOffset = 20000

// testConfig returns a config for serve with fast timings, the proxy's listeners on addr.
func testConfig(t *testing.T, client kubernetes.Interface, addr string) *config {
	cfg := &config{
		NodeName: "node-1", Zone: "zone-a",
		Listen: listenConfig{Address: addr, PortOffset: testOffset},
		Policy: balancer.Random{},
		Drain:  5 * time.Second, UDPIdle: 10 * time.Second,
		Debounce: 5 * time.Millisecond, Coalesce: 10 * time.Millisecond, Retry: 100 * time.Millisecond,
		Client: client,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	return cfg
}

// start runs serve with cfg until the test ends.
func start(t *testing.T, cfg *config) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v after cancel, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("serve did not return within 20s of cancel")
		}
	})
}

// endpointSlice is the EndpointSlice of Service ns/svc with one port and the given endpoints,
// as the EndpointSlice controller writes it.
func endpointSlice(ns, svc, name string, port discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{port},
		Endpoints:   eps,
	}
}

func slicePort(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto}
}

// podEndpoint is a ready endpoint at ip on node; ready false makes it serving and terminating.
func podEndpoint(ip, node string, ready bool) discoveryv1.Endpoint {
	t, f := true, false
	e := discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &node}
	if ready {
		e.Conditions = discoveryv1.EndpointConditions{Ready: &t, Serving: &t, Terminating: &f}
	} else {
		e.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &t, Terminating: &t}
	}
	return e
}

// fakeForwarding records the forwarders the proxier makes, so that unit tests can watch
// listeners open, close and keep their identity, and pick through their pickers.
type fakeForwarding struct {
	mu      sync.Mutex
	made    map[string]int // forwarders made per listener, "TCP 127.1.2.3:20080"
	live    map[string]*fakeForwarder
	drained map[string]int
}

func newFakeForwarding() *fakeForwarding {
	return &fakeForwarding{made: map[string]int{}, live: map[string]*fakeForwarder{}, drained: map[string]int{}}
}

type fakeForwarder struct {
	f      *fakeForwarding
	key    string
	picker sluice.Picker
	sock   io.Closer
	stop   chan struct{}
	once   sync.Once

	mu     sync.Mutex
	pruned []sluice.Endpoint // the last set given to Prune
}

func (f *fakeForwarding) add(proto string, addr net.Addr, p sluice.Picker, sock io.Closer) forwarder {
	key := proto + " " + addr.String()
	fw := &fakeForwarder{f: f, key: key, picker: p, sock: sock, stop: make(chan struct{})}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.made[key]++
	f.live[key] = fw
	return fw
}

func (f *fakeForwarding) TCP(ln net.Listener, p sluice.Picker) (forwarder, error) {
	return f.add("TCP", ln.Addr(), p, ln), nil
}

func (f *fakeForwarding) UDP(pc *net.UDPConn, p sluice.Picker) (forwarder, error) {
	return f.add("UDP", pc.LocalAddr(), p, pc), nil
}

// get returns the live forwarder of key, or nil.
func (f *fakeForwarding) get(key string) *fakeForwarder {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[key]
}

// counts returns how many forwarders were made and drained for key.
func (f *fakeForwarding) counts(key string) (made, drained int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.made[key], f.drained[key]
}

func (fw *fakeForwarder) Serve() error {
	<-fw.stop
	return nil
}

func (fw *fakeForwarder) Prune(eps []sluice.Endpoint) {
	fw.mu.Lock()
	fw.pruned = eps
	fw.mu.Unlock()
}

func (fw *fakeForwarder) lastPruned() []sluice.Endpoint {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.pruned
}

func (fw *fakeForwarder) Drain(context.Context) error {
	fw.f.mu.Lock()
	fw.f.drained[fw.key]++
	if fw.f.live[fw.key] == fw {
		delete(fw.f.live, fw.key)
	}
	fw.f.mu.Unlock()
	return fw.Close()
}

func (fw *fakeForwarder) Close() error {
	fw.once.Do(func() { close(fw.stop) })
	return fw.sock.Close()
}

// picks returns the endpoint addresses of n picks through fw for client, or the error.
func (fw *fakeForwarder) picks(n int, client string) (map[string]int, error) {
	seen := map[string]int{}
	for range n {
		info := sluice.PickInfo{}
		if client != "" {
			info.Client = netip.MustParseAddrPort(client)
		}
		res, err := fw.picker.Pick(info)
		if err != nil {
			return nil, err
		}
		res.Done(sluice.Outcome{})
		seen[res.Endpoint.Addr]++
	}
	return seen, nil
}

// waitLive waits until key has a live forwarder and returns it.
func (f *fakeForwarding) waitLive(t *testing.T, key string) *fakeForwarder {
	t.Helper()
	var fw *fakeForwarder
	require.Eventually(t, func() bool { fw = f.get(key); return fw != nil }, 10*time.Second, 5*time.Millisecond,
		"a listener %s should open", key)
	return fw
}

// keys is a shorthand for the listener keys of addr at port+testOffset.
func key(proto, addr string, port int) string {
	return proto + " " + net.JoinHostPort(addr, fmt.Sprint(port+testOffset))
}

// testWriter sends output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
