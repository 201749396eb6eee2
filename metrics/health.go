package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// probeResults and changeReasons are the label values of healthcheck.ProbeResult and
// healthcheck.Reason, whose own names have spaces.
var (
	probeResults  = [...]string{"ok", "timeout", "unreachable", "bad_response", "other"}
	changeReasons = [...]string{"other", "probe_failed", "probe_passed", "consecutive_5xx",
		"consecutive_gateway_failures", "success_rate_outlier", "failure_percentage_outlier", "ejection_ended"}
	spillTiers   = [...]string{"other", "node", "zone"}
	spillReasons = [...]string{"none", "degraded", "busy", "retry"}
)

func index[T ~uint8](v T, n int, other int) int {
	if int(v) < n {
		return int(v)
	}
	return other
}

// healthMetrics are the metrics of health checkers and balancers, one set of children per pool
// name.
type healthMetrics struct {
	probes, changes, panics, spills *prometheus.CounterVec
	probeLatency                    *prometheus.HistogramVec
	panic, pickable                 *prometheus.GaugeVec
	pools                           table[poolChildren]
}

type poolChildren struct {
	h            *healthMetrics
	name         string
	probes       table[[len(probeResults)]prometheus.Counter] // by probe kind
	probeLatency prometheus.Observer
	changes      [len(changeReasons)]prometheus.Counter
	panics       prometheus.Counter
	panic        prometheus.Gauge
	pickable     prometheus.Gauge
	spills       [len(spillTiers)][len(spillReasons)]slot[prometheus.Counter]
}

func (h *healthMetrics) init(m *Metrics) {
	h.probes = m.counter("health_probes_total",
		"Active health probes, by pool, probe kind (http, tcp, grpc, custom) and result: ok, timeout, unreachable, bad_response.",
		"pool", "probe", "result")
	h.probeLatency = m.histogram("health_probe_duration_seconds", "Time each active probe took, by pool.", "pool")
	h.changes = m.counter("health_changes_total",
		"Changes of an endpoint's health, by pool and reason: probe_failed and probe_passed (active checks), consecutive_5xx, consecutive_gateway_failures, success_rate_outlier and failure_percentage_outlier (ejections), ejection_ended.",
		"pool", "reason")
	h.panics = m.counter("balancer_panics_total",
		"Times a balancer entered panic mode (too few Ready endpoints, so Unhealthy ones take traffic), by pool.", "pool")
	h.panic = m.gauge("balancer_panic", "1 while a balancer is in panic mode, by pool.", "pool")
	h.pickable = m.gauge("balancer_pickable_endpoints", "Endpoints a balancer's picks may choose from, by pool.", "pool")
	h.spills = m.counter("balancer_spills_total",
		"Picks that left the local node's or zone's endpoints for wider ones, by pool, tier left (node, zone) and reason: degraded, busy, retry.",
		"pool", "tier", "reason")
	h.pools.make = func(name string) *poolChildren {
		p := &poolChildren{h: h, name: name,
			probeLatency: h.probeLatency.WithLabelValues(name),
			panics:       h.panics.WithLabelValues(name),
			panic:        h.panic.WithLabelValues(name),
			pickable:     h.pickable.WithLabelValues(name),
		}
		for i, r := range changeReasons[1:] {
			p.changes[i+1] = h.changes.WithLabelValues(name, r)
		}
		p.changes[0] = p.changes[1] // never used: a Reason is never zero
		p.probes.make = func(probe string) *[len(probeResults)]prometheus.Counter {
			var cs [len(probeResults)]prometheus.Counter
			for i, r := range probeResults {
				cs[i] = h.probes.WithLabelValues(name, probe, r)
			}
			return &cs
		}
		return p
	}
}

// Health returns the hooks of the health checker of the pool named name (a label value), for
// healthcheck.Options.Hooks:
//
//	SLUICE_health_probes_total{pool,probe,result}     counter, result "ok", "timeout", "unreachable", "bad_response"
//	SLUICE_health_probe_duration_seconds{pool}        histogram
//	SLUICE_health_changes_total{pool,reason}          counter: ejections and returns by reason
//
// reason is "probe_failed", "probe_passed", "ejection_ended", or the outlier detector that
// ejected the endpoint ("consecutive_5xx", "consecutive_gateway_failures",
// "success_rate_outlier", "failure_percentage_outlier"). WatchHealth adds the endpoints by
// state.
func (m *Metrics) Health(name string) healthcheck.Hooks {
	p := m.health.pools.get(name)
	return healthcheck.Hooks{ProbeDone: p.probeDone, Change: p.change}
}

func (p *poolChildren) probeDone(e healthcheck.ProbeEvent) {
	p.probes.get(e.Probe)[index(e.Result, len(probeResults)-1, len(probeResults)-1)].Inc()
	p.probeLatency.Observe(e.Latency.Seconds())
}

func (p *poolChildren) change(e healthcheck.ChangeEvent) {
	if i := index(e.Reason, len(changeReasons), 0); i > 0 {
		p.changes[i].Inc()
	}
}

// Balancer returns the hooks of the balancer of the pool named name (a label value), for
// balancer.Options.Hooks:
//
//	SLUICE_balancer_panic{pool}                      gauge, 1 in panic mode
//	SLUICE_balancer_panics_total{pool}               counter, panic modes entered
//	SLUICE_balancer_pickable_endpoints{pool}         gauge
//	SLUICE_balancer_spills_total{pool,tier,reason}   counter, tier "node" or "zone"; reason
//	                                                 "degraded", "busy" or "retry"
//
// Hooks.Pick, on the hottest path, is left nil: the proxy's try counters count picks.
func (m *Metrics) Balancer(name string) balancer.Hooks {
	p := m.health.pools.get(name)
	return balancer.Hooks{Spill: p.spill, Panic: p.panicked, Update: p.update}
}

func (p *poolChildren) spill(e balancer.SpillEvent) {
	ti, ri := index(e.From, len(spillTiers), 0), index(e.Reason, len(spillReasons), 0)
	p.spills[ti][ri].get(func() prometheus.Counter {
		return p.h.spills.WithLabelValues(p.name, spillTiers[ti], spillReasons[ri])
	}).Inc()
}

func (p *poolChildren) panicked(e balancer.PanicEvent) {
	if e.Panic {
		p.panics.Inc()
		p.panic.Set(1)
	} else {
		p.panic.Set(0)
	}
}

func (p *poolChildren) update(e balancer.UpdateEvent) {
	p.pickable.Set(float64(e.Pickable))
	if e.Panic {
		p.panic.Set(1)
	} else {
		p.panic.Set(0)
	}
}

// healthStates are the states WatchHealth reports endpoints in.
var healthStates = [...]sluice.State{sluice.Ready, sluice.Unhealthy, sluice.Terminating}
