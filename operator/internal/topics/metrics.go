package topics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Kafka side of the operator's metrics. A nil *Metrics
// records nothing.
type Metrics struct {
	requestDuration *prometheus.HistogramVec
	requestErrors   *prometheus.CounterVec
	topicErrors     *prometheus.CounterVec
	batchTopics     *prometheus.HistogramVec
	up              prometheus.Gauge
	registryWrites  *prometheus.CounterVec
}

// NewMetrics registers the Kafka metrics with reg (the operator passes
// controller-runtime's registry, so they are served with its own).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "palaver_operator_kafka_request_duration_seconds",
			Help:    "Duration of batched Kafka admin requests, by operation.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"op"}),
		requestErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palaver_operator_kafka_request_errors_total",
			Help: "Kafka admin requests that failed as a whole (Kafka unreachable, timeout), by operation.",
		}, []string{"op"}),
		topicErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palaver_operator_kafka_topic_errors_total",
			Help: "Topics Kafka answered with an error inside a successful request, by operation.",
		}, []string{"op"}),
		batchTopics: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "palaver_operator_kafka_batch_topics",
			Help:    "Topics per batched Kafka admin request, by operation.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}, []string{"op"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "palaver_operator_kafka_up",
			Help: "1 when the last refresh of the cluster view reached Kafka, else 0.",
		}),
		registryWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palaver_operator_registry_writes_total",
			Help: "Records written to the room registry topic, by kind (entry, tombstone) and result (ok, error).",
		}, []string{"kind", "result"}),
	}
	reg.MustRegister(m.requestDuration, m.requestErrors, m.topicErrors, m.batchTopics, m.up, m.registryWrites)
	return m
}

func (m *Metrics) observe(op string, topics int, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.batchTopics.WithLabelValues(op).Observe(float64(topics))
	m.request(op, d, err)
}

// request records a Kafka request that is about brokers, not topics.
func (m *Metrics) request(op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.requestDuration.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.requestErrors.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) topicError(op string) {
	if m != nil {
		m.topicErrors.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) setUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
}

func (m *Metrics) registryWrite(kind string, err error) {
	if m == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.registryWrites.WithLabelValues(kind, res).Inc()
}
