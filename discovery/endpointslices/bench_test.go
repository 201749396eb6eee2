package endpointslices_test

import (
	"fmt"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/sluiceproxy/sluice/discovery/endpointslices"
)

// BenchmarkMerge measures rebuilding a Service's set from 100-endpoint slices, the work a
// Source does once per coalescing interval after a change.
func BenchmarkMerge(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		var list []*discoveryv1.EndpointSlice
		for s := 0; s*100 < n; s++ {
			es := slice(fmt.Sprintf("s%d", s), "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8080)})
			for i := 0; i < 100 && s*100+i < n; i++ {
				es.Endpoints = append(es.Endpoints, ep(fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1), nil, nil, nil))
			}
			list = append(list, es)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if got := endpointslices.Merge(list, "http"); len(got) != n {
					b.Fatalf("merged %d endpoints, want %d", len(got), n)
				}
			}
		})
	}
}
