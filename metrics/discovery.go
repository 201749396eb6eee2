package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice/discovery"
)

// discoveryMetrics are the metrics of discovery sources, one set of children per source kind
// and name.
type discoveryMetrics struct {
	endpoints, synced *prometheus.GaugeVec
	counts            *prometheus.CounterVec
	sources           table[sourceChildren]
}

type sourceChildren struct {
	updates                       [3]prometheus.Counter // changed, unchanged, error
	ready, terminating, unhealthy prometheus.Gauge
	synced                        prometheus.Gauge
}

func (d *discoveryMetrics) init(m *Metrics) {
	d.counts = m.counter("discovery_updates_total",
		"Results of discovery sources, by source kind (static, dns, endpointslices), name and result: changed (a new set pushed), unchanged, or error (the last good set kept).",
		"source", "name", "result")
	d.endpoints = m.gauge("discovery_endpoints",
		"Endpoints of the set a source has in force, by source kind, name and state: ready, terminating, unhealthy.",
		"source", "name", "state")
	d.synced = m.gauge("discovery_synced",
		"1 once a source has pushed a set since it started, 0 until then, by source kind and name.",
		"source", "name")
	d.sources.make = func(key string) *sourceChildren {
		source, name := splitKey(key)
		s := &sourceChildren{
			ready:       d.endpoints.WithLabelValues(source, name, "ready"),
			terminating: d.endpoints.WithLabelValues(source, name, "terminating"),
			unhealthy:   d.endpoints.WithLabelValues(source, name, "unhealthy"),
			synced:      d.synced.WithLabelValues(source, name),
		}
		for i, r := range [...]string{"changed", "unchanged", "error"} {
			s.updates[i] = d.counts.WithLabelValues(source, name, r)
		}
		return s
	}
}

// splitKey undoes the source + "\x00" + name of a sources key.
func splitKey(key string) (source, name string) {
	for i := range len(key) {
		if key[i] == 0 {
			return key[:i], key[i+1:]
		}
	}
	return key, ""
}

// Discovery returns the hooks of discovery sources (discovery.Static, discovery.DNS,
// discovery/endpointslices), labelled by the source's kind and what it follows, which
// configuration bounds:
//
//	SLUICE_discovery_updates_total{source,name,result}   counter, "changed", "unchanged", "error"
//	SLUICE_discovery_endpoints{source,name,state}        gauge, "ready", "terminating", "unhealthy"
//	SLUICE_discovery_synced{source,name}                 gauge, 1 once a set was pushed
func (m *Metrics) Discovery() discovery.Hooks {
	return discovery.Hooks{Update: m.discovery.update}
}

func (d *discoveryMetrics) update(e discovery.UpdateEvent) {
	s := d.sources.get(e.Source + "\x00" + e.Name) // an update is rare: the key may allocate
	switch {
	case e.Err != nil:
		s.updates[2].Inc()
	case e.Changed:
		s.updates[0].Inc()
	default:
		s.updates[1].Inc()
	}
	s.ready.Set(float64(e.Ready))
	s.terminating.Set(float64(e.Terminating))
	s.unhealthy.Set(float64(e.Unhealthy))
	if e.Synced {
		s.synced.Set(1)
	} else {
		s.synced.Set(0)
	}
}
