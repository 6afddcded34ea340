package controller

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

// Metrics are the reconciler's metrics: rooms by condition and drift.
// controller-runtime adds its own (reconcile counts, durations, queue).
type Metrics struct {
	drift *prometheus.CounterVec
	rooms *prometheus.Desc

	mu    sync.Mutex
	conds map[types.NamespacedName][]condKey
}

type condKey struct{ typ, status, reason string }

// NewMetrics registers the reconciler's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palaver_operator_topic_drift_total",
			Help: "Changes made to room topics outside the operator that it found, by what it did (corrected under driftPolicy Enforce, reported under Report).",
		}, []string{"action"}),
		rooms: prometheus.NewDesc("palaver_operator_rooms",
			"ChatRooms by condition type, status and reason.",
			[]string{"condition", "status", "reason"}, nil),
		conds: map[types.NamespacedName][]condKey{},
	}
	m.drift.WithLabelValues("corrected")
	m.drift.WithLabelValues("reported")
	reg.MustRegister(m.drift, m)
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.rooms }

// Collect implements prometheus.Collector: it counts the rooms' conditions
// as last written.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	counts := map[condKey]int{}
	for _, cs := range m.conds {
		for _, c := range cs {
			counts[c]++
		}
	}
	m.mu.Unlock()
	for c, n := range counts {
		ch <- prometheus.MustNewConstMetric(m.rooms, prometheus.GaugeValue, float64(n), c.typ, c.status, c.reason)
	}
}

func (m *Metrics) setRoom(key types.NamespacedName, st *chatv1alpha1.ChatRoomStatus) {
	if m == nil {
		return
	}
	var cs []condKey
	for _, typ := range []string{chatv1alpha1.ConditionReady, chatv1alpha1.ConditionProgressing, chatv1alpha1.ConditionConfigDrift} {
		if c := meta.FindStatusCondition(st.Conditions, typ); c != nil {
			cs = append(cs, condKey{typ, string(c.Status), c.Reason})
		}
	}
	m.mu.Lock()
	m.conds[key] = cs
	m.mu.Unlock()
}

func (m *Metrics) deleteRoom(key types.NamespacedName) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.conds, key)
	m.mu.Unlock()
}

func (m *Metrics) driftFound(action string) {
	if m != nil {
		m.drift.WithLabelValues(action).Inc()
	}
}
