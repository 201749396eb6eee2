package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice/ratelimit"
)

// results is the last value of ratelimit.Result.
const results = int(ratelimit.Cancelled)

// ratelimitMetrics are the metrics of limiters (package ratelimit), one set of children per
// limiter name.
type ratelimitMetrics struct {
	decisions, errors, admissions *prometheus.CounterVec
	names                         table[limiterChildren]
}

type limiterChildren struct {
	r          *ratelimitMetrics
	name       string
	limits     table[[results + 1]prometheus.Counter]
	errors     prometheus.Counter
	admissions [2]prometheus.Counter // refused, admitted
}

func (r *ratelimitMetrics) init(m *Metrics) {
	r.decisions = m.counter("ratelimit_decisions_total",
		"Requests a rate limiter decided on, by limiter, limit and result: allowed, delayed, limited, failed-closed, cancelled. limit names the Limit that refused or delayed the request, or is empty when every Limit admitted it at once.",
		"limiter", "limit", "result")
	r.errors = m.counter("ratelimit_errors_total",
		"Decisions a Limit's Store failed, by limiter.", "limiter")
	r.admissions = m.counter("ratelimit_admissions_total",
		"Requests a concurrency limiter counted, by limiter and result: admitted or refused.", "limiter", "result")
	r.names.make = func(name string) *limiterChildren {
		l := &limiterChildren{r: r, name: name, errors: r.errors.WithLabelValues(name)}
		l.admissions[0] = r.admissions.WithLabelValues(name, "refused")
		l.admissions[1] = r.admissions.WithLabelValues(name, "admitted")
		l.limits.make = func(limit string) *[results + 1]prometheus.Counter {
			var cs [results + 1]prometheus.Counter
			for res := ratelimit.Allowed; int(res) <= results; res++ {
				cs[res] = r.decisions.WithLabelValues(name, limit, res.String())
			}
			return &cs
		}
		return l
	}
}

// RateLimit returns the hooks of the limiter named name (a label value), for
// ratelimit.Options.Hooks and ratelimit.ConcurrencyOptions.Hooks:
//
//	SLUICE_ratelimit_decisions_total{limiter,limit,result}   counter, result as ratelimit.Result.String
//	SLUICE_ratelimit_errors_total{limiter}                   counter, Store failures
//	SLUICE_ratelimit_admissions_total{limiter,result}        counter, "admitted" or "refused"
//
// limit is the Name of the Limit that refused or delayed the request, or "" when every Limit
// admitted it at once. WatchLimiter and WatchConcurrency add the gauges of keys held.
func (m *Metrics) RateLimit(name string) ratelimit.Hooks {
	l := m.ratelimit.names.get(name)
	return ratelimit.Hooks{Decision: l.decision, Admission: l.admission}
}

func (l *limiterChildren) decision(e ratelimit.DecisionEvent) {
	if r := int(e.Result); r > 0 && r <= results {
		l.limits.get(e.Name)[r].Inc()
	}
	if e.Err != nil {
		l.errors.Inc()
	}
}

func (l *limiterChildren) admission(e ratelimit.AdmissionEvent) {
	if e.Admitted {
		l.admissions[1].Inc()
	} else {
		l.admissions[0].Inc()
	}
}
