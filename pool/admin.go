package pool

import (
	"fmt"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// Admin returns what package admin's dashboard shows of the pool, named name: each endpoint
// with its health as the checker sees it (an endpoint held out by outlier detection is
// ejected; one whose probes fail, unhealthy), the balancer's in-flight count (-1 when its
// policy counts none, as round robin) and latency estimate, and the reason of its last ejection or failure. It reads the checker's and the
// balancer's snapshots, so it is safe to call from the admin handler at any time:
//
//	admin.New(admin.Options{Pools: func() []admin.Pool { return []admin.Pool{api.Admin("api")} }})
func (p *Pool) Admin(name string) admin.Pool {
	out := admin.Pool{Name: name, Policy: policyName(p.policy)}
	load := map[string]balancer.EndpointStats{}
	bs := p.bal.Stats()
	for _, st := range bs.Endpoints {
		load[st.Endpoint.Addr] = st
	}
	for _, st := range p.check.Endpoints() {
		e := admin.EndpointOf(st.Endpoint)
		e.State = admin.StateOf(st.State)
		if st.Ejected {
			e.State = admin.StateEjected
		}
		if !bs.CountsInFlight {
			e.InFlight = -1
		}
		if b, ok := load[st.Endpoint.Addr]; ok {
			if bs.CountsInFlight {
				e.InFlight = int(b.InFlight)
			}
			e.Latency = b.Latency
		}
		switch {
		case st.EjectionReason != 0 && st.Ejected:
			e.Ejections = []admin.Ejection{{At: st.Changed, Reason: st.EjectionReason.String(), For: st.EjectedUntil.Sub(st.Changed)}}
		case st.State == sluice.Unhealthy && st.Reason != 0:
			e.Ejections = []admin.Ejection{{At: st.Changed, Reason: reason(st)}}
		}
		out.Endpoints = append(out.Endpoints, e)
	}
	return out
}

// reason says why an endpoint is out: the checker's reason, with the last probe's error.
func reason(st healthcheck.EndpointStatus) string {
	if st.ProbeErr != nil {
		return st.Reason.String() + ": " + st.ProbeErr.Error()
	}
	return st.Reason.String()
}

// policyName names a balancing policy for people: "round-robin" for balancer.RoundRobin{}.
func policyName(p balancer.Policy) string {
	name := fmt.Sprintf("%T", p)
	name = name[strings.LastIndex(name, ".")+1:]
	upper := func(i int) bool { return i >= 0 && i < len(name) && name[i] >= 'A' && name[i] <= 'Z' }
	var b strings.Builder
	for i := range len(name) {
		// A word starts at a capital after a small letter (Round|Robin), or at the last
		// capital of a run followed by a small letter (Client|IP|Affinity).
		if i > 0 && upper(i) && (!upper(i-1) || i+1 < len(name) && !upper(i+1)) {
			b.WriteByte('-')
		}
		c := name[i]
		if upper(i) {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}
