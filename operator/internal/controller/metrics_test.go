package controller

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

// TestMetrics checks the operator's own metrics: rooms by condition, and
// that every metric passes the Prometheus linter.
func TestMetrics(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	good := createRoom(t, newRoom(ns, uniqueRoom("counted"), chatv1alpha1.ChatRoomSpec{}))
	bad := createRoom(t, newRoom(ns, uniqueRoom("uncounted"), chatv1alpha1.ChatRoomSpec{ReplicationFactor: 2}))
	waitReady(t, good)
	waitCondition(t, bad, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonInvalidConfig})

	const want = `
# HELP palaver_operator_rooms ChatRooms by condition type, status and reason.
# TYPE palaver_operator_rooms gauge
palaver_operator_rooms{condition="ConfigDrift",reason="InSync",status="False"} 1
palaver_operator_rooms{condition="Progressing",reason="InvalidConfig",status="False"} 1
palaver_operator_rooms{condition="Progressing",reason="Provisioned",status="False"} 1
palaver_operator_rooms{condition="Ready",reason="InvalidConfig",status="False"} 1
palaver_operator_rooms{condition="Ready",reason="Provisioned",status="True"} 1
`
	require.NoError(t, testutil.GatherAndCompare(op.registry, strings.NewReader(want), "palaver_operator_rooms"))

	problems, err := testutil.GatherAndLint(op.registry)
	require.NoError(t, err)
	require.Empty(t, problems)
	for _, name := range []string{
		"palaver_operator_kafka_request_duration_seconds", "palaver_operator_kafka_batch_topics",
		"palaver_operator_kafka_up", "palaver_operator_registry_writes_total", "palaver_operator_topic_drift_total",
	} {
		n, err := testutil.GatherAndCount(op.registry, name)
		require.NoError(t, err)
		require.Positive(t, n, name)
	}
}
