package presence

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the presence service's Prometheus instruments. Labels are
// bounded: rooms come from the registry, types and reasons from this
// package; user ids never become labels.
type Metrics struct {
	OnlineUsers    *prometheus.GaugeVec   // room
	Connections    *prometheus.GaugeVec   // room
	Events         *prometheus.CounterVec // type: events applied
	Dropped        *prometheus.CounterVec // reason
	Expiries       prometheus.Counter     // connections expired with their gateway
	GatewaysLost   prometheus.Counter     // gateways expired for silence
	PublishLatency prometheus.Histogram   // first unpublished change's record time -> state stored
	Publications   prometheus.Counter
	Partitions     prometheus.Gauge
	Takeovers      prometheus.Counter
}

// NewMetrics makes the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "palaver", "presence"
	m := &Metrics{
		OnlineUsers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "online_users",
			Help: "Users online per room, in the partitions this replica owns."}, []string{"room"}),
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections",
			Help: "Connections per room, in the partitions this replica owns."}, []string{"room"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_total",
			Help: "Events read from the events topic, by type (dropped ones included)."}, []string{"type"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_dropped_total",
			Help: "Events that changed nothing, by reason."}, []string{"reason"}),
		Expiries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "expired_connections_total",
			Help: "Connections removed because their gateway stopped sending heartbeats."}),
		GatewaysLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "expired_gateways_total",
			Help: "Gateways whose heartbeats stopped without a clean shutdown."}),
		PublishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "publish_latency_seconds",
			Help:    "Time from the first change of a room not yet published (its event's record time) to its new state being stored.",
			Buckets: []float64{.001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1.024, 2.048, 5, 10}}),
		Publications: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "publications_total",
			Help: "Room states written to the state topic."}),
		Partitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "partitions",
			Help: "Partitions of the events topic this replica owns."}),
		Takeovers: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "takeovers_total",
			Help: "Partitions taken over, each rebuilt from the state topic."}),
	}
	for _, t := range []string{TypeJoin, TypeLeave, TypeTyping, TypeHeartbeat, TypeShutdown, "invalid"} {
		m.Events.WithLabelValues(t)
	}
	for _, r := range []string{DropMalformed, DropUnknownType, DropVersion, DropUnknownRoom, DropTypingFlood, DropNotPresent, DropAlreadyIn, DropBeforeResume} {
		m.Dropped.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.OnlineUsers, m.Connections, m.Events, m.Dropped, m.Expiries, m.GatewaysLost,
			m.PublishLatency, m.Publications, m.Partitions, m.Takeovers)
	}
	return m
}
