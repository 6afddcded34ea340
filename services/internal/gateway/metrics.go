package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/protocol"
)

// Disconnect reasons, the values of palaver_gateway_disconnects_total's
// reason label.
const (
	reasonSlowConsumer = "slow_consumer"
	reasonRateLimited  = "rate_limited"
	reasonUnauthorized = "unauthorized"
	reasonBadFrame     = "bad_frame"
	reasonGoingAway    = "going_away"
	reasonClient       = "client"
)

// Metrics are the gateway's Prometheus instruments. Labels are bounded:
// rooms come from the registry, reasons and codes from this package; user
// ids never become labels.
type Metrics struct {
	Connections       prometheus.Gauge
	Joins             prometheus.Counter
	MessagesReceived  *prometheus.CounterVec // room: sends stored (duplicates excluded)
	MessagesDelivered *prometheus.CounterVec // room: message frames written to sockets
	ProduceLatency    prometheus.Histogram   // send accepted -> Kafka acknowledged
	DeliveryLatency   prometheus.Histogram   // record timestamp -> socket write, live messages
	Recoveries        *prometheus.CounterVec // source: ring or kafka
	Disconnects       *prometheus.CounterVec // reason
	RejectedFrames    *prometheus.CounterVec // reason: the error code answered
	TailRestarts      prometheus.Counter
	DedupHits         prometheus.Counter
	Undecodable       *prometheus.CounterVec // room
	DuplicateRecords  *prometheus.CounterVec // room: later copies of a message skipped by the room's tail
	Rooms             prometheus.Gauge
	HistoryQueries    *prometheus.CounterVec // source: history, kafka_fallback or kafka

	presence *presenceMetrics
}

// NewMetrics makes the gateway's metrics and registers them with reg (nil:
// not registered, for tests that only need the values).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "palaver", "gateway"
	latency := []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1.024, 2.048, 5, 10}
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections",
			Help: "Open WebSocket connections."}),
		Joins: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "joins_total",
			Help: "Room joins answered with joined."}),
		MessagesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_received_total",
			Help: "Messages received from clients and stored in Kafka (duplicates excluded)."}, []string{"room"}),
		MessagesDelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_delivered_total",
			Help: "Message frames written to client sockets."}, []string{"room"}),
		ProduceLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "produce_latency_seconds",
			Help: "Time from a send being accepted to Kafka acknowledging it (acks=all).", Buckets: latency}),
		DeliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "delivery_latency_seconds",
			Help: "Time from a message's record timestamp to its frame being written to a socket, for live deliveries.", Buckets: latency}),
		Recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "recoveries_total",
			Help: "Joins with a cursor, by where the missed messages came from."}, []string{"source"}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "disconnects_total",
			Help: "Closed WebSocket connections, by reason."}, []string{"reason"}),
		RejectedFrames: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejected_frames_total",
			Help: "Client commands answered with an error, by error code."}, []string{"reason"}),
		TailRestarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "tail_restarts_total",
			Help: "Room tail readers replaced after a read error or a stall."}),
		DedupHits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dedup_hits_total",
			Help: "Sends answered with an already stored message's position."}),
		Undecodable: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "undecodable_records_total",
			Help: "Records of room topics skipped because they are not valid envelopes."}, []string{"room"}),
		DuplicateRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "duplicate_records_total",
			Help: "Later copies of a message (same sender and client message id within the dedup window) that the room's tail read and did not deliver."}, []string{"room"}),
		Rooms: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "rooms_tailed",
			Help: "Rooms this gateway tails because they have local members."}),
		HistoryQueries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "history_queries_total",
			Help: "Scroll-back pages served, by source: the history service, Kafka after history could not answer, or Kafka without history."}, []string{"source"}),
	}
	for _, r := range []string{reasonSlowConsumer, reasonRateLimited, reasonUnauthorized, reasonBadFrame, reasonGoingAway, reasonClient} {
		m.Disconnects.WithLabelValues(r)
	}
	for _, s := range []string{"ring", "kafka"} {
		m.Recoveries.WithLabelValues(s)
	}
	for _, c := range []string{protocol.CodeBadFrame, protocol.CodeUnknownOp, protocol.CodeUnsupportedVersion, protocol.CodeUnauthorized, protocol.CodeForbidden,
		protocol.CodeNotFound, protocol.CodeNotJoined, protocol.CodeBadRequest, protocol.CodeTooLarge, protocol.CodeInvalidUTF8, protocol.CodeRateLimited, protocol.CodeUnavailable, protocol.CodeInternal} {
		m.RejectedFrames.WithLabelValues(c)
	}
	m.presence = newPresenceMetrics(reg)
	if reg != nil {
		reg.MustRegister(m.Connections, m.Joins, m.MessagesReceived, m.MessagesDelivered, m.ProduceLatency,
			m.DeliveryLatency, m.Recoveries, m.Disconnects, m.RejectedFrames, m.TailRestarts, m.DedupHits,
			m.Undecodable, m.DuplicateRecords, m.Rooms, m.HistoryQueries)
	}
	return m
}

// room creates the series of a room's counters at zero, so that an alert
// on their rate sees the room before its first event.
func (m *Metrics) room(name string) {
	m.MessagesReceived.WithLabelValues(name)
	m.MessagesDelivered.WithLabelValues(name)
	m.Undecodable.WithLabelValues(name)
	m.DuplicateRecords.WithLabelValues(name)
}

func (m *Metrics) hub() roomhub.Metrics {
	return roomhub.Metrics{Recoveries: m.Recoveries, TailRestarts: m.TailRestarts, Undecodable: m.Undecodable,
		Duplicates: m.DuplicateRecords, Rooms: m.Rooms}
}
