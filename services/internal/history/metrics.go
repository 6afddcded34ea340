package history

import "github.com/prometheus/client_golang/prometheus"

// Reasons a record is skipped, the values of
// palaver_history_skipped_records_total's reason label.
const (
	reasonEmpty       = "empty"
	reasonTooLarge    = "too_large"
	reasonInvalidUTF8 = "invalid_utf8"
	reasonMalformed   = "malformed"
	reasonVersion     = "unsupported_version"
	reasonMissing     = "missing_field"
	reasonWrongRoom   = "wrong_room"
	reasonOffset      = "offset_out_of_range"
)

// Metrics are the history service's Prometheus instruments. Labels are
// bounded: rooms come from the registry, partitions from their topics,
// reasons and kinds from this package.
type Metrics struct {
	Ingested      *prometheus.CounterVec // room
	Skipped       *prometheus.CounterVec // reason
	Trimmed       *prometheus.CounterVec // room: rows removed because the topic no longer has them
	Duplicates    *prometheus.CounterVec // room: later copies of messages, not stored
	Lag           *prometheus.GaugeVec   // room, partition: records in the topic not yet stored
	Remaining     prometheus.Gauge       // rebuild: records behind, summed, until first caught up
	CommitLatency prometheus.Histogram
	CommitSize    prometheus.Histogram
	QueryLatency  *prometheus.HistogramVec // kind: before, after, around, search
	StoreBytes    prometheus.Gauge
	LogRestarts   *prometheus.CounterVec // store, at: idle, bound
	Rooms         prometheus.Gauge
}

// queryKinds are the values of query_duration_seconds' kind label.
var queryKinds = []string{"before", "after", "around", "search"}

// NewMetrics makes the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "palaver", "history"
	latency := []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1.024, 2.048, 5}
	m := &Metrics{
		Ingested: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ingested_messages_total",
			Help: "Messages stored (replays, later copies and skipped records excluded)."}, []string{"room"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "skipped_records_total",
			Help: "Records of room topics that are not valid message envelopes, by reason."}, []string{"reason"}),
		Trimmed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "trimmed_messages_total",
			Help: "Messages removed because their topic no longer holds them (retention, deleted records, re-created topic)."}, []string{"room"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "duplicate_records_total",
			Help: "Later copies of messages (same sender and client message id, a higher offset of the same partition, within the gateway's dedup window of the copy kept) not stored."}, []string{"room"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "lag_messages",
			Help: "Records of a room partition not yet stored: the partition's end seen in the last fetch minus the committed position."}, []string{"room", "partition"}),
		Remaining: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "rebuild_remaining_messages",
			Help: "Records still to store before the replica first caught up (0 once it has)."}),
		CommitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "commit_duration_seconds",
			Help: "Time to write one batch and its positions in one transaction.", Buckets: latency}),
		CommitSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "commit_records",
			Help: "Records per committed batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		QueryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "query_duration_seconds",
			Help: "Time to answer a query, by kind (before, after, around, search), waits for read-your-writes included.", Buckets: latency}, []string{"kind"}),
		StoreBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "store_bytes",
			Help: "Size of the store on disk (database and write-ahead log)."}),
		LogRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "wal_restarts_total",
			Help: "Times a store file's writer started its write-ahead log again from its beginning, at an idle moment or at the log's bound."}, []string{"store", "at"}),
		Rooms: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "rooms",
			Help: "Rooms this replica serves."}),
	}
	if reg != nil {
		reg.MustRegister(m.Ingested, m.Skipped, m.Trimmed, m.Duplicates, m.Lag, m.Remaining, m.CommitLatency, m.CommitSize,
			m.QueryLatency, m.StoreBytes, m.LogRestarts, m.Rooms)
	}
	// Every kind's series from the start: rate() needs two samples, and a
	// series born with the first query would hide that query.
	for _, kind := range queryKinds {
		m.QueryLatency.WithLabelValues(kind)
	}
	return m
}

// logRestartsAt are the values of wal_restarts_total's at label; New
// creates the series of every store file.
var logRestartsAt = []string{"idle", "bound"}
