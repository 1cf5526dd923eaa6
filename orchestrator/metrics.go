package orchestrator

import (
	"errors"
	"net/http"

	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics exposes the orchestrator in Prometheus form: invocations by
// function and outcome, latency, execution and boot-time histograms,
// retries, worker states and queue depth. It is a Recorder.
type Metrics struct {
	reg         *prometheus.Registry
	invocations *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	exec        *prometheus.HistogramVec
	boot        prometheus.Histogram
	retries     prometheus.Counter
}

// NewMetrics registers the orchestrator's metrics; o supplies the gauges.
func NewMetrics(o *Orchestrator) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.invocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microfaas_invocations_total", Help: "Finished invocations by function and outcome (ok, error, timeout).",
	}, []string{"function", "outcome"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "microfaas_invocation_latency_seconds", Help: "Queued to finished, per function.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	}, []string{"function"})
	m.exec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "microfaas_execution_seconds", Help: "Function execution time on the worker.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"function"})
	m.boot = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "microfaas_worker_boot_seconds", Help: "Worker kernel uptime when it connected (boot time).",
		Buckets: prometheus.LinearBuckets(0.25, 0.25, 16),
	})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "microfaas_invocation_retries_total", Help: "Attempts beyond the first, over finished invocations.",
	})
	states := prometheus.NewDesc("microfaas_workers", "Workers by state.", []string{"state"}, nil)
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "microfaas_queue_depth", Help: "Invocations waiting for a worker.",
	}, func() float64 { return float64(o.Status().QueueDepth) })
	m.reg.MustRegister(m.invocations, m.latency, m.exec, m.boot, m.retries, depth, stateCollector{o, states})
	return m
}

// Record counts one finished invocation.
func (m *Metrics) Record(inv *Invocation) {
	outcome := "ok"
	switch {
	case errors.Is(inv.Err, ErrTimeout):
		outcome = "timeout"
	case inv.Err != nil:
		outcome = "error"
	}
	m.invocations.WithLabelValues(inv.Function, outcome).Inc()
	m.latency.WithLabelValues(inv.Function).Observe(inv.Finished.Sub(inv.Queued).Seconds())
	if inv.Attempts > 1 {
		m.retries.Add(float64(inv.Attempts - 1))
	}
	if !inv.Started.IsZero() {
		m.exec.WithLabelValues(inv.Function).Observe(inv.ExecMS / 1000)
	}
	if inv.Boot.ConnectedMS > 0 && !inv.PoweredOn.IsZero() {
		m.boot.Observe(inv.Boot.ConnectedMS / 1000)
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// stateCollector reports how many workers are in each state, every state
// present (zeros too) so dashboards see a stable series set.
type stateCollector struct {
	o    *Orchestrator
	desc *prometheus.Desc
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[state.Name]int{state.Off: 0, state.Booting: 0, state.Idle: 0, state.Working: 0, state.Stopping: 0, state.Failed: 0}
	for _, w := range c.o.Status().Workers {
		counts[w.State]++
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(s))
	}
}
