// Package metrics exposes what asyncfn does in the Prometheus exposition format. It
// implements asyncfn.Observer (batches accepted, rejected, run, finished), wraps a Store
// to count its errors, reads queue depth from the store at scrape time, and counts HTTP
// responses. Everything is registered on a registry of its own, never the global one, so
// that several services in one process (tests) do not collide.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/asyncfn/asyncfn"
)

// Unknown is the function label of requests for routes that serve no function, so that
// strangers probing random paths cannot grow the number of series without bound.
const Unknown = "unknown"

// Buckets of the duration histograms, in seconds. Accepting is a store write (sub-ms to
// tens of ms); waiting and running span milliseconds to Snowflake's 10-minute limit.
var (
	acceptBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	batchBuckets  = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// Metrics holds asyncfn's metrics and the registry they are exposed from.
type Metrics struct {
	asyncfn.NopObserver

	registry  *prometheus.Registry
	functions map[string]bool

	accepted     *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	rowsAccepted *prometheus.CounterVec
	succeeded    *prometheus.CounterVec
	failed       *prometheus.CounterVec
	attempts     *prometheus.CounterVec
	rows         *prometheus.CounterVec
	running      *prometheus.GaugeVec
	acceptTime   *prometheus.HistogramVec
	queueWait    *prometheus.HistogramVec
	runTime      *prometheus.HistogramVec
	batchTime    *prometheus.HistogramVec

	storeErrors *prometheus.CounterVec
	storeTime   *prometheus.HistogramVec

	httpResponses *prometheus.CounterVec
	httpTime      *prometheus.HistogramVec
	throttled     prometheus.Counter
}

// New returns the metrics of a process serving the functions in reg, with the Go runtime
// and process collectors registered beside them.
func New(reg *asyncfn.Registry) *Metrics {
	m := &Metrics{registry: prometheus.NewRegistry(), functions: map[string]bool{}}
	for _, name := range reg.Names() {
		m.functions[name] = true
	}
	fn := []string{"function"}
	m.accepted = m.counter("asyncfn_batches_accepted_total", "Batches stored by a POST (retries of a stored batch not included).", fn)
	m.duplicates = m.counter("asyncfn_batches_duplicate_total", "POSTs of a batch already stored (Snowflake's retries), answered from its state.", fn)
	m.rejected = m.counter("asyncfn_batches_rejected_total", "POSTs refused before their batch was stored, by reason (overloaded, conflict, bad_request, too_large, unsupported_encoding, unknown_function, unavailable, internal).", []string{"function", "reason"})
	m.rowsAccepted = m.counter("asyncfn_rows_accepted_total", "Rows in the batches accepted.", fn)
	m.succeeded = m.counter("asyncfn_batches_succeeded_total", "Batches that succeeded.", fn)
	m.failed = m.counter("asyncfn_batches_failed_total", "Batches that failed for good, by error kind (invalid_input, internal).", []string{"function", "kind"})
	m.attempts = m.counter("asyncfn_batch_attempts_total", "Attempts on batches by this process's workers, by outcome (succeeded, failed, retried, handed_back, lost).", []string{"function", "outcome"})
	m.rows = m.counter("asyncfn_rows_processed_total", "Rows of the batches that succeeded.", fn)
	m.running = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "asyncfn_running_batches", Help: "Batches this process's workers are running now."}, fn)
	m.registry.MustRegister(m.running)
	m.acceptTime = m.histogram("asyncfn_accept_duration_seconds", "Time to store (or find) a POSTed batch, without the wait for a synchronous answer.", acceptBuckets, fn)
	m.queueWait = m.histogram("asyncfn_queue_wait_seconds", "Time a batch waited for a worker: since it was accepted, or since its backoff ended for a retry.", batchBuckets, fn)
	m.runTime = m.histogram("asyncfn_function_duration_seconds", "Time the function ran on a batch, per attempt.", batchBuckets, fn)
	m.batchTime = m.histogram("asyncfn_batch_duration_seconds", "Time from accepting a batch to its final outcome.", batchBuckets, fn)
	m.storeErrors = m.counter("asyncfn_store_errors_total", "Store operations that failed (not counting the contract's expected answers such as not found or duplicate).", []string{"operation"})
	m.storeTime = m.histogram("asyncfn_store_operation_duration_seconds", "Time of store operations.", acceptBuckets, []string{"operation"})
	for _, op := range storeOperations {
		m.storeErrors.WithLabelValues(op) // exported at 0, so that an alert sees the first error as a rise
	}
	m.httpResponses = m.counter("asyncfn_http_responses_total", "HTTP responses sent, by method and status code.", []string{"method", "code"})
	m.httpTime = m.histogram("asyncfn_http_request_duration_seconds", "Time to answer HTTP requests, held polls included.", batchBuckets, []string{"method"})
	m.throttled = prometheus.NewCounter(prometheus.CounterOpts{Name: "asyncfn_http_too_many_requests_total", Help: "429 answers sent: Snowflake was asked to slow down."})
	m.registry.MustRegister(m.throttled,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) counter(name, help string, labels []string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	m.registry.MustRegister(c)
	return c
}

func (m *Metrics) histogram(name, help string, buckets []float64, labels []string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	m.registry.MustRegister(h)
	return h
}

// Registry returns the registry the metrics are on, to register more.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the metrics in the exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// function returns the label for a function name: itself if served, else Unknown.
func (m *Metrics) function(name string) string {
	if m.functions[name] {
		return name
	}
	return Unknown
}

// BatchAccepted implements asyncfn.Observer.
func (m *Metrics) BatchAccepted(i asyncfn.AcceptInfo) {
	fn := m.function(i.Key.Function)
	m.acceptTime.WithLabelValues(fn).Observe(i.Duration.Seconds())
	if i.Duplicate {
		m.duplicates.WithLabelValues(fn).Inc()
		return
	}
	m.accepted.WithLabelValues(fn).Inc()
	m.rowsAccepted.WithLabelValues(fn).Add(float64(i.Rows))
}

// BatchRejected implements asyncfn.Observer.
func (m *Metrics) BatchRejected(function, reason string) {
	m.rejected.WithLabelValues(m.function(function), reason).Inc()
}

// BatchStarted implements asyncfn.Observer.
func (m *Metrics) BatchStarted(i asyncfn.RunInfo) {
	fn := m.function(i.Key.Function)
	m.running.WithLabelValues(fn).Inc()
	m.queueWait.WithLabelValues(fn).Observe(i.QueueWait.Seconds())
}

// BatchFinished implements asyncfn.Observer.
func (m *Metrics) BatchFinished(i asyncfn.RunInfo) {
	fn := m.function(i.Key.Function)
	m.running.WithLabelValues(fn).Dec()
	m.runTime.WithLabelValues(fn).Observe(i.Run.Seconds())
	m.attempts.WithLabelValues(fn, string(i.Outcome)).Inc()
	switch i.Outcome {
	case asyncfn.OutcomeSucceeded:
		m.succeeded.WithLabelValues(fn).Inc()
		m.rows.WithLabelValues(fn).Add(float64(i.Rows))
	case asyncfn.OutcomeFailed:
		kind := asyncfn.Internal
		if i.Error != nil {
			kind = i.Error.Kind
		}
		m.failed.WithLabelValues(fn, string(kind)).Inc()
	}
	if i.Outcome.Final() {
		m.batchTime.WithLabelValues(fn).Observe(i.Total.Seconds())
	}
}

// methods are the HTTP methods counted under their own name; any other is "other", so
// that a client inventing methods cannot grow the number of series.
var methods = map[string]bool{http.MethodGet: true, http.MethodPost: true, http.MethodHead: true,
	http.MethodPut: true, http.MethodDelete: true, http.MethodPatch: true, http.MethodOptions: true}

// ObserveHTTP records one HTTP response; pass it to asyncfnhttp.ObserveRequests. Its
// labels come from fixed sets: the method (or "other") and the status code, which the
// server chooses.
func (m *Metrics) ObserveHTTP(r *http.Request, status int, d time.Duration) {
	method := r.Method
	if !methods[method] {
		method = "other"
	}
	m.httpResponses.WithLabelValues(method, strconv.Itoa(status)).Inc()
	m.httpTime.WithLabelValues(method).Observe(d.Seconds())
	if status == http.StatusTooManyRequests {
		m.throttled.Inc()
	}
}

// WatchStore registers gauges of the store's live batches by state, read with Stats at
// each scrape (bounded by timeout, default 2s), and asyncfn_store_up, 0 when that read
// fails. Only one process sharing a store needs it, but every one may have it.
func (m *Metrics) WatchStore(store asyncfn.Store, timeout time.Duration) {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	m.registry.MustRegister(&storeCollector{store: store, timeout: timeout})
}

var (
	queuedDesc  = prometheus.NewDesc("asyncfn_queued_batches", "Batches waiting for a worker, in the whole store (every process sharing it).", nil, nil)
	batchesDesc = prometheus.NewDesc("asyncfn_store_batches", "Live batches in the store by state (queued, running, succeeded, failed).", []string{"state"}, nil)
	upDesc      = prometheus.NewDesc("asyncfn_store_up", "1 if the store answered the last scrape's count of batches, else 0.", nil, nil)
)

// storeCollector reads the store's counts at scrape time, so that they are never stale
// and cost nothing between scrapes.
type storeCollector struct {
	store   asyncfn.Store
	timeout time.Duration
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queuedDesc
	ch <- batchesDesc
	ch <- upDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.store.Stats(ctx, time.Now())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(st.Queued))
	for _, s := range []struct {
		state string
		n     int
	}{{"queued", st.Queued}, {"running", st.Running}, {"succeeded", st.Succeeded}, {"failed", st.Failed}} {
		ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.GaugeValue, float64(s.n), s.state)
	}
}
