package main

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice/metrics"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// controllerMetrics are what /metrics serves: the requests, tries, cache, rate limits, TLS and
// EndpointSlices as package metrics counts them from their hooks, and what the controller
// itself does, counted here with atomics and read at each scrape.
type controllerMetrics struct {
	*metrics.Metrics

	rebuilds, rebuildErrors           atomic.Int64
	ingresses, invalid, routes, pools atomic.Int64
	passthroughHosts                  atomic.Int64

	// passthrough, with -enable-ssl-passthrough, returns the counters of the HTTPS port's SNI
	// proxy; main sets it before the admin listener serves.
	passthrough func() tcpproxy.Stats
}

// newControllerMetrics returns metrics in a registry of their own, which Handler serves.
func newControllerMetrics() (*controllerMetrics, error) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registerer: reg})
	if err != nil {
		return nil, err
	}
	cm := &controllerMetrics{Metrics: m}
	if err := reg.Register(controllerCollector{cm}); err != nil {
		return nil, err
	}
	return cm, nil
}

// controllerCollector reads the controller's counters at each scrape.
type controllerCollector struct{ m *controllerMetrics }

var (
	descRebuilds         = prometheus.NewDesc("sluice_rebuilds_total", "Route tables built and swapped in.", nil, nil)
	descRebuildErrors    = prometheus.NewDesc("sluice_rebuild_errors_total", "Route tables refused (the previous one kept serving).", nil, nil)
	descIngresses        = prometheus.NewDesc("sluice_ingresses", "Ingresses served.", nil, nil)
	descInvalid          = prometheus.NewDesc("sluice_invalid_ingresses", "Ingresses whose current version is invalid.", nil, nil)
	descRoutes           = prometheus.NewDesc("sluice_routes", "Routes in the current table.", nil, nil)
	descPools            = prometheus.NewDesc("sluice_pools", "Backend pools (Service port and policy).", nil, nil)
	descPassthroughHosts = prometheus.NewDesc("sluice_passthrough_hosts", "Hosts whose TLS connections are passed through to their pods.", nil, nil)
	descPassthroughOpen  = prometheus.NewDesc("sluice_passthrough_connections_open",
		"Connections the HTTPS port's SNI proxy holds now: reading their ClientHello, or passed through to a pod.", nil, nil)
	descPassthroughTotal = prometheus.NewDesc("sluice_passthrough_connections_total",
		"Connections accepted on the HTTPS port, passed through or handed to the HTTPS server.", nil, nil)
	descPassthroughRefused = prometheus.NewDesc("sluice_passthrough_refused_total",
		"Connections the HTTPS port's SNI proxy closed, by reason.", []string{"reason"}, nil)
)

// Describe implements prometheus.Collector.
func (c controllerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRebuilds, descRebuildErrors, descIngresses, descInvalid, descRoutes,
		descPools, descPassthroughHosts, descPassthroughOpen, descPassthroughTotal, descPassthroughRefused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c controllerCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	for _, v := range []struct {
		d   *prometheus.Desc
		typ prometheus.ValueType
		v   *atomic.Int64
	}{
		{descRebuilds, prometheus.CounterValue, &m.rebuilds},
		{descRebuildErrors, prometheus.CounterValue, &m.rebuildErrors},
		{descIngresses, prometheus.GaugeValue, &m.ingresses},
		{descInvalid, prometheus.GaugeValue, &m.invalid},
		{descRoutes, prometheus.GaugeValue, &m.routes},
		{descPools, prometheus.GaugeValue, &m.pools},
		{descPassthroughHosts, prometheus.GaugeValue, &m.passthroughHosts},
	} {
		ch <- prometheus.MustNewConstMetric(v.d, v.typ, float64(v.v.Load()))
	}
	if m.passthrough == nil {
		return
	}
	st := m.passthrough()
	ch <- prometheus.MustNewConstMetric(descPassthroughOpen, prometheus.GaugeValue, float64(st.Active))
	ch <- prometheus.MustNewConstMetric(descPassthroughTotal, prometheus.CounterValue, float64(st.Accepted))
	ch <- prometheus.MustNewConstMetric(descPassthroughRefused, prometheus.CounterValue, float64(st.BadHello), "bad_hello")
	ch <- prometheus.MustNewConstMetric(descPassthroughRefused, prometheus.CounterValue, float64(st.NoEndpoint), "no_endpoint")
}
