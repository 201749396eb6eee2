package main

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// metrics counts what the proxies report and what the controller does, and writes it in the
// Prometheus text format. It needs no metrics library: a few atomic counters suffice.
type metrics struct {
	requests [6]atomic.Int64 // by status class: 0 for anything outside 1xx–5xx
	failures [7]atomic.Int64 // by sluice.Failure of the last try
	retries  atomic.Int64    // tries beyond the first
	bytes    atomic.Int64
	byRoute  sync.Map // route name → *[6]atomic.Int64

	rebuilds, rebuildErrors           atomic.Int64
	ingresses, invalid, routes, pools atomic.Int64
	passthroughHosts                  atomic.Int64

	// passthrough, with -enable-ssl-passthrough, returns the counters of the HTTPS port's SNI
	// proxy; main sets it before the admin listener serves.
	passthrough func() tcpproxy.Stats
}

// RequestDone counts one finished request, as the proxies' Hooks.RequestDone. It is called on
// every request and allocates only the first time a route is seen.
func (m *metrics) RequestDone(_ *http.Request, s proxy.RequestEvent) {
	class := s.Status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	m.requests[class].Add(1)
	if int(s.Failure) < len(m.failures) {
		m.failures[s.Failure].Add(1)
	}
	if s.Tries > 1 {
		m.retries.Add(int64(s.Tries - 1))
	}
	m.bytes.Add(s.Bytes)
	if s.Route != "" {
		v, ok := m.byRoute.Load(s.Route)
		if !ok {
			v, _ = m.byRoute.LoadOrStore(s.Route, new([6]atomic.Int64))
		}
		v.(*[6]atomic.Int64)[class].Add(1)
	}
}

var classNames = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// ServeHTTP writes the counters in the Prometheus text exposition format.
func (m *metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.write(w)
}

func (m *metrics) write(w io.Writer) {
	head := func(name, typ, help string) { fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ) }
	head("sluice_requests_total", "counter", "Requests forwarded, by response status class.")
	for i := range m.requests {
		fmt.Fprintf(w, "sluice_requests_total{class=%q} %d\n", classNames[i], m.requests[i].Load())
	}
	head("sluice_route_requests_total", "counter", "Requests forwarded, by route and response status class.")
	var names []string
	m.byRoute.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	sort.Strings(names)
	for _, n := range names {
		v, _ := m.byRoute.Load(n)
		counts := v.(*[6]atomic.Int64)
		for i := range counts {
			if x := counts[i].Load(); x > 0 {
				fmt.Fprintf(w, "sluice_route_requests_total{route=\"%s\",class=%q} %d\n", labelEscaper.Replace(n), classNames[i], x)
			}
		}
	}
	head("sluice_upstream_failures_total", "counter", "Requests whose last try failed, by failure.")
	for f := sluice.ConnectFailure; int(f) < len(m.failures); f++ {
		fmt.Fprintf(w, "sluice_upstream_failures_total{failure=%q} %d\n", f.String(), m.failures[f].Load())
	}
	for _, c := range []struct {
		name, typ, help string
		v               *atomic.Int64
	}{
		{"sluice_retries_total", "counter", "Tries beyond the first.", &m.retries},
		{"sluice_response_bytes_total", "counter", "Response body bytes sent to clients.", &m.bytes},
		{"sluice_rebuilds_total", "counter", "Route tables built and swapped in.", &m.rebuilds},
		{"sluice_rebuild_errors_total", "counter", "Route tables refused (the previous one kept serving).", &m.rebuildErrors},
		{"sluice_ingresses", "gauge", "Ingresses served.", &m.ingresses},
		{"sluice_invalid_ingresses", "gauge", "Ingresses whose current version is invalid.", &m.invalid},
		{"sluice_routes", "gauge", "Routes in the current table.", &m.routes},
		{"sluice_pools", "gauge", "Backend pools (Service port and policy).", &m.pools},
		{"sluice_passthrough_hosts", "gauge", "Hosts whose TLS connections are passed through to their pods.", &m.passthroughHosts},
	} {
		head(c.name, c.typ, c.help)
		fmt.Fprintf(w, "%s %d\n", c.name, c.v.Load())
	}
	if m.passthrough == nil {
		return
	}
	st := m.passthrough()
	head("sluice_passthrough_connections_open", "gauge", "Connections the HTTPS port's SNI proxy holds now: reading their ClientHello, or passed through to a pod.")
	fmt.Fprintf(w, "sluice_passthrough_connections_open %d\n", st.Active)
	head("sluice_passthrough_connections_total", "counter", "Connections accepted on the HTTPS port, passed through or handed to the HTTPS server.")
	fmt.Fprintf(w, "sluice_passthrough_connections_total %d\n", st.Accepted)
	head("sluice_passthrough_refused_total", "counter", "Connections the HTTPS port's SNI proxy closed, by reason.")
	fmt.Fprintf(w, "sluice_passthrough_refused_total{reason=\"bad_hello\"} %d\n", st.BadHello)
	fmt.Fprintf(w, "sluice_passthrough_refused_total{reason=\"no_endpoint\"} %d\n", st.NoEndpoint)
}

// labelEscaper escapes a label value as the text format wants.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
