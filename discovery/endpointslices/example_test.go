package endpointslices_test

import (
	"context"
	"fmt"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
)

func Example() {
	// In a real program the clientset comes from rest.InClusterConfig; the informer factory
	// is the embedder's, shared with its other controllers.
	client := fake.NewClientset(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-x7k2p", Namespace: "shop",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.0.7"}, Zone: ptr("zone-a")},
			{Addresses: []string{"10.244.1.3"}, Conditions: discoveryv1.EndpointConditions{
				Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}},
		},
	})
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace("shop"))
	updates := make(chan discovery.UpdateEvent, 1) // a metrics adapter would count them
	w, err := endpointslices.New(factory, endpointslices.Options{Hooks: discovery.Hooks{
		Update: func(e discovery.UpdateEvent) {
			select {
			case updates <- e:
			default:
			}
		},
	}})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go w.Run(ctx)                              // or factory.Start(ctx.Done())
	if err := w.WaitForSync(ctx); err != nil { // serve only after the first full list
		panic(err)
	}

	first := make(chan []sluice.Endpoint, 1)
	go w.Source("shop", "web", "http").Watch(ctx, func(eps []sluice.Endpoint) { // e.g. bal.Update
		select {
		case first <- eps:
		default:
		}
	})
	eps, e := <-first, <-updates
	fmt.Println(e.Name, "ready:", e.Ready, "terminating:", e.Terminating, "synced:", e.Synced)
	for _, ep := range eps {
		fmt.Println(ep.Addr, ep.State, ep.Zone)
	}
	// Output:
	// shop/web:http ready: 1 terminating: 1 synced: true
	// 10.244.0.7:8080 ready zone-a
	// 10.244.1.3:8080 terminating
}
