package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the sidecar's Prometheus metrics, on a registry of its own.
// Labels hold method names, outcomes and rules: never a pseudonym, an
// identifier or a token.
type metrics struct {
	reg      *prometheus.Registry
	lookups  *prometheus.CounterVec
	refusals *prometheus.CounterVec
	erasures prometheus.Counter
	fsync    prometheus.Histogram
	lag      prometheus.Gauge
	gpc      prometheus.Counter
	byMethod map[string][2]prometheus.Counter // read-only once made: lookups' (miss, hit) counters by method
}

func newMetrics(stats func() (pending int, oldest time.Time), applied func() (uint64, bool)) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "personify_lookups_total",
		Help: "Lookups answered, by method and outcome (hit: in a segment, or some segments served; miss: none)."}, []string{"method", "outcome"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "personify_refusals_total",
		Help: "Requests refused, by rule: unauthenticated, permission_denied, body_too_large, batch_too_large, invalid_argument, not_found, key_changed, failed_precondition, unavailable, internal."}, []string{"rule"})
	m.byMethod = make(map[string][2]prometheus.Counter, len(lookupMethods))
	for _, method := range lookupMethods {
		m.byMethod[method] = [2]prometheus.Counter{m.lookups.WithLabelValues(method, "miss"), m.lookups.WithLabelValues(method, "hit")}
	}
	m.erasures = prometheus.NewCounter(prometheus.CounterOpts{Name: "personify_erasures_total", Help: "Erasures (Forget) completed through this sidecar."})
	m.gpc = prometheus.NewCounter(prometheus.CounterOpts{Name: "personify_gpc_optouts_total", Help: "Do-not-sell opt-outs applied for a Global Privacy Control signal (Sec-GPC: 1)."})
	m.fsync = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "personify_fsync_seconds", Help: "Latency of each fsync of the data directory's log and snapshots.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	m.lag = prometheus.NewGauge(prometheus.GaugeOpts{Name: "personify_replica_lag_seconds",
		Help: "How long the last catch-up with the fleet's journal took (a replica's lag behind the fleet); 0 outside a fleet."})
	m.reg.MustRegister(m.lookups, m.refusals, m.erasures, m.gpc, m.fsync, m.lag,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "personify_erasures_pending",
		Help: "Erasures durable but not yet physically complete (a file or journal row may still hold the person)."},
		func() float64 { n, _ := stats(); return float64(n) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "personify_erasure_oldest_pending_age_seconds",
		Help: "Age of the oldest erasure pending physical deletion; 0 when none."},
		func() float64 {
			_, oldest := stats()
			if oldest.IsZero() {
				return 0
			}
			return time.Since(oldest).Seconds()
		}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "personify_replica_applied",
		Help: "The fleet journal position this replica has applied; 0 outside a fleet."},
		func() float64 { n, _ := applied(); return float64(n) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "personify_ready", Help: "1 once the engine is open and caught up."},
		func() float64 {
			if _, ok := applied(); ok {
				return 1
			}
			return 0
		}))
	return m
}

// lookupMethods are the methods lookup counts; their counters are made
// once, so that a lookup does not hash its labels.
var lookupMethods = []string{"segments", "batch_segments", "in", "batch_in", "pseudonymize", "batch_pseudonymize"}

func (m *metrics) lookup(method string, hit bool) {
	c, ok := m.byMethod[method]
	if !ok {
		c = [2]prometheus.Counter{m.lookups.WithLabelValues(method, "miss"), m.lookups.WithLabelValues(method, "hit")}
	}
	if hit {
		c[1].Inc()
	} else {
		c[0].Inc()
	}
}

func (m *metrics) refuse(rule string) { m.refusals.WithLabelValues(rule).Inc() }
