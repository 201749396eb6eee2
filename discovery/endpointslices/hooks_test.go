package endpointslices_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
)

// nextUpdate waits for an UpdateEvent that satisfies ok, skipping others.
func nextUpdate(t *testing.T, events <-chan discovery.UpdateEvent, what string, ok func(discovery.UpdateEvent) bool) discovery.UpdateEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-events:
			if ok(e) {
				return e
			}
		case <-timeout:
			t.Fatalf("no UpdateEvent with %s", what)
		}
	}
}

func TestHooks_Update(t *testing.T) {
	client := fake.NewClientset()
	factory := informers.NewSharedInformerFactory(client, 0)
	events := make(chan discovery.UpdateEvent, 64)
	w, err := endpointslices.New(factory, endpointslices.Options{Coalesce: time.Millisecond,
		Hooks: discovery.Hooks{Update: func(e discovery.UpdateEvent) { events <- e }}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	assert.Equal(t, endpointslices.Stats{}, w.Stats(), "nothing started")
	factory.Start(ctx.Done())
	require.NoError(t, w.WaitForSync(ctx))

	go w.Source("default", "web", "http").Watch(ctx, func([]sluice.Endpoint) {})
	e := nextUpdate(t, events, "the first set", func(discovery.UpdateEvent) bool { return true })
	assert.Equal(t, discovery.UpdateEvent{Source: "endpointslices", Name: "default/web:http", Changed: true, Synced: true}, e,
		"the first, empty set is pushed")
	assert.Equal(t, endpointslices.Stats{Synced: true, Services: 1, Sources: 1}, w.Stats())

	_, err = client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice("web-1", "web", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{port("http", 80)},
		ep("10.244.0.1", nil, nil, nil), ep("10.244.0.2", ptr(false), ptr(true), ptr(true))), metav1.CreateOptions{})
	require.NoError(t, err)
	e = nextUpdate(t, events, "two endpoints", func(e discovery.UpdateEvent) bool { return e.Ready+e.Terminating == 2 })
	assert.Equal(t, 1, e.Ready)
	assert.Equal(t, 1, e.Terminating, "serving and terminating")
	assert.True(t, e.Changed)
	assert.NoError(t, e.Err)
}

// failingResolver fails every lookup.
type failingResolver struct{}

func (failingResolver) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) {
	return nil, errors.New("SERVFAIL")
}

func (failingResolver) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", nil, errors.New("SERVFAIL")
}

func TestHooks_UpdateFQDNError(t *testing.T) {
	client := fake.NewClientset(slice("web-f", "web", discoveryv1.AddressTypeFQDN,
		[]discoveryv1.EndpointPort{port("http", 80)}, ep("db.example.com", nil, nil, nil)))
	factory := informers.NewSharedInformerFactory(client, 0)
	events := make(chan discovery.UpdateEvent, 64)
	w, err := endpointslices.New(factory, endpointslices.Options{Coalesce: time.Millisecond,
		FQDN:  &endpointslices.FQDNOptions{Resolver: failingResolver{}},
		Hooks: discovery.Hooks{Update: func(e discovery.UpdateEvent) { events <- e }}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	factory.Start(ctx.Done())
	require.NoError(t, w.WaitForSync(ctx))
	go w.Source("default", "web", "").Watch(ctx, func([]sluice.Endpoint) {})
	e := nextUpdate(t, events, "the first set", func(discovery.UpdateEvent) bool { return true })
	assert.Equal(t, "default/web", e.Name, "no port asked for")
	assert.ErrorContains(t, e.Err, "db.example.com", "the failed lookup is reported")
	assert.Zero(t, e.Ready, "a name never resolved contributes nothing")
}
