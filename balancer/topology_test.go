package balancer_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

// TestTopologyAsKubeProxy checks Options.Zone, Node and HintsOnly against kube-proxy's rules
// for a Service's cluster endpoints (CategorizeEndpoints and topologyModeFromHints in
// pkg/proxy/topology.go): hints count only when every ready endpoint has them and some ready
// endpoint is hinted for this node (node hints, which win) or zone; then only the endpoints
// hinted so are used, else every ready endpoint; with none ready, every serving terminating
// endpoint, topology aside. Load-based spill-over, which kube-proxy does not have, is off.
func TestTopologyAsKubeProxy(t *testing.T) {
	type ep struct {
		addr, zone, forZones, forNodes string
		state                          sluice.State
	}
	const (
		ready       = sluice.Ready
		terminating = sluice.Terminating
	)
	for _, tc := range []struct {
		name       string
		zone, node string
		eps        []ep
		want       []string
	}{{
		name: "zone hints",
		zone: "a",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "", ready}, {"10.0.0.2:80", "b", "b", "", ready}, {"10.0.0.3:80", "c", "c", "", ready}, {"10.0.0.4:80", "a", "a", "", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.4:80"},
	}, {
		name: "several zones per endpoint",
		zone: "c",
		eps:  []ep{{"10.0.0.1:80", "a", "a,b,c", "", ready}, {"10.0.0.2:80", "b", "b,c", "", ready}, {"10.0.0.3:80", "b", "b,d", "", ready}, {"10.0.0.4:80", "c", "c", "", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"},
	}, {
		name: "a ready endpoint without hints: no topology, whatever the endpoints' zones",
		zone: "a",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "", ready}, {"10.0.0.2:80", "b", "b", "", ready}, {"10.0.0.3:80", "c", "", "", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"},
	}, {
		name: "no hints at all: every zone",
		zone: "a",
		eps:  []ep{{"10.0.0.1:80", "a", "", "", ready}, {"10.0.0.2:80", "b", "", "", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80"},
	}, {
		name: "terminating endpoints need no hints",
		zone: "a",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "", ready}, {"10.0.0.2:80", "b", "b", "", ready}, {"10.0.0.3:80", "a", "", "", terminating}},
		want: []string{"10.0.0.1:80"},
	}, {
		name: "only a terminating endpoint hinted for the zone: no topology",
		zone: "a",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "", terminating}, {"10.0.0.2:80", "b", "b", "", ready}, {"10.0.0.3:80", "c", "c", "", ready}},
		want: []string{"10.0.0.2:80", "10.0.0.3:80"},
	}, {
		name: "no endpoint for the zone: no topology",
		zone: "b",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "", ready}, {"10.0.0.2:80", "c", "c", "", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80"},
	}, {
		name: "no zone of our own: no topology",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "", ready}, {"10.0.0.2:80", "b", "b", "", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80"},
	}, {
		name: "node hints win over zone hints",
		zone: "a", node: "n1",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "n1", ready}, {"10.0.0.2:80", "a", "a", "n2", ready}, {"10.0.0.3:80", "b", "b", "n3", ready}},
		want: []string{"10.0.0.1:80"},
	}, {
		name: "no endpoint for the node: zone hints",
		zone: "a", node: "n9",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "n1", ready}, {"10.0.0.2:80", "a", "a", "n2", ready}, {"10.0.0.3:80", "b", "b", "n3", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80"},
	}, {
		name: "a ready endpoint without node hints: zone hints",
		zone: "a", node: "n1",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "n1", ready}, {"10.0.0.2:80", "a", "a", "", ready}, {"10.0.0.3:80", "b", "b", "n3", ready}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80"},
	}, {
		name: "nothing ready: every terminating endpoint, topology aside",
		zone: "a", node: "n1",
		eps:  []ep{{"10.0.0.1:80", "a", "a", "n1", terminating}, {"10.0.0.2:80", "b", "b", "n2", terminating}},
		want: []string{"10.0.0.1:80", "10.0.0.2:80"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			set := make([]sluice.Endpoint, len(tc.eps))
			for i, e := range tc.eps {
				set[i] = sluice.Endpoint{Addr: e.addr, Zone: e.zone, ForZones: e.forZones, ForNodes: e.forNodes, State: e.state}
			}
			b := newBalancer(t, balancer.RoundRobin{}, balancer.Options{Zone: tc.zone, Node: tc.node, HintsOnly: true, ZoneSpillFactor: -1}, set)
			got := map[string]bool{}
			for range 100 {
				got[pick(t, b, sluice.PickInfo{})] = true
			}
			want := map[string]bool{}
			for _, a := range tc.want {
				want[a] = true
			}
			assert.Equal(t, want, got, "the endpoints kube-proxy would use")
		})
	}
}
