package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

// TestReplicationFactorChange checks a change of replication factor by
// partition reassignment on a 3-node cluster, up from 1 to 3 and down to
// 2, with min.insync.replicas following (2 at RF 3, 1 at RF 2) without
// ever exceeding the replicas in place.
func TestReplicationFactorChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node Kafka cluster")
	}
	kc := kafkatest.NewCluster(t, 3)
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{bootstrap: kc.Bootstrap()}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("durable"), chatv1alpha1.ChatRoomSpec{Partitions: 3, ReplicationFactor: 1}))
	got := waitReady(t, cr)
	require.Equal(t, int32(1), got.Status.ReplicationFactor)
	topic := got.Status.TopicName

	for _, step := range []struct {
		rf     int32
		minISR string
	}{{3, "2"}, {2, "1"}} {
		t.Run(fmt.Sprintf("to RF %d", step.rf), func(t *testing.T) {
			patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.ReplicationFactor = step.rf })
			waitEvent(t, cr, "ReplicationChanging", fmt.Sprintf("to %d", step.rf))
			got := waitReady(t, cr)
			require.Equal(t, step.rf, got.Status.ReplicationFactor)
			require.Nil(t, got.Status.Reassignment, "reassignment left in status")
			st := waitTopic(t, op.prov, topic, func(st room.TopicState) string {
				for p, rs := range st.Replicas {
					if len(rs) != int(step.rf) {
						return fmt.Sprintf("partition %d has replicas %v", p, rs)
					}
				}
				if st.Configs["min.insync.replicas"] != step.minISR {
					return "min.insync.replicas " + st.Configs["min.insync.replicas"]
				}
				return ""
			})
			require.Equal(t, int32(3), st.Partitions)
		})
	}
	waitEvent(t, cr, "ReplicationChanged", "replication factor 2")
}

// TestKafkaOutage stops the only broker of a private cluster: rooms report
// KafkaUnreachable (Ready Unknown for a room that had its topic, False for
// one that never did) and recover when it is back; and a namespace deleted
// while Kafka is gone does not hang: its ChatRooms say DeletionBlocked, then
// go after the deletion timeout.
func TestKafkaOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops a Kafka broker")
	}
	kc := kafkatest.NewCluster(t, 1)
	ns, nsGone := newNamespace(t), newNamespace(t)
	const deletionTimeout = 15 * time.Second
	op := startOperator(t, operatorOptions{bootstrap: kc.Bootstrap(), deletionTimeout: deletionTimeout}, ns, nsGone)
	reg := registry(t, op.cluster)

	t.Run("unreachable then recovered", func(t *testing.T) {
		ready := createRoom(t, newRoom(ns, uniqueRoom("steady"), chatv1alpha1.ChatRoomSpec{}))
		waitReady(t, ready)

		require.NoError(t, kc.StopNode(0))
		waitCondition(t, ready, condition{typ: chatv1alpha1.ConditionReady, status: "Unknown", reason: chatv1alpha1.ReasonKafkaUnreachable})
		fresh := createRoom(t, newRoom(ns, uniqueRoom("newcomer"), chatv1alpha1.ChatRoomSpec{}))
		waitCondition(t, fresh, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonKafkaUnreachable})
		waitEvent(t, ready, chatv1alpha1.ReasonKafkaUnreachable, "")

		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		require.NoError(t, kc.StartNode(ctx, 0))
		waitReady(t, ready)
		waitReady(t, fresh)
	})

	t.Run("namespace deleted with Kafka gone", func(t *testing.T) {
		var rooms []*chatv1alpha1.ChatRoom
		for _, policy := range []chatv1alpha1.DeletionPolicy{chatv1alpha1.DeletionPolicyDelete, chatv1alpha1.DeletionPolicyRetain} {
			cr := createRoom(t, newRoom(nsGone, uniqueRoom("doomed"), chatv1alpha1.ChatRoomSpec{DeletionPolicy: policy}))
			waitReady(t, cr)
			rooms = append(rooms, cr)
		}
		require.NoError(t, kc.KillNode(0))

		// What the namespace controller does: mark the namespace
		// terminating, then delete what is in it.
		require.NoError(t, k8sClient.Delete(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsGone}}))
		deleted := time.Now()
		for _, cr := range rooms {
			require.NoError(t, k8sClient.Delete(t.Context(), cr))
		}
		for _, cr := range rooms {
			waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonDeletionBlocked})
		}
		for _, cr := range rooms {
			eventually(t, waitTimeout, func() string {
				var got chatv1alpha1.ChatRoom
				err := k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), &got)
				if apierrors.IsNotFound(err) {
					return ""
				}
				return fmt.Sprintf("%s still there (%v): %s", cr.Name, err, conditionsString(&got))
			})
		}
		require.GreaterOrEqual(t, time.Since(deleted), deletionTimeout-time.Second,
			"the finalizer was released before the deletion timeout")

		// Once Kafka is back, the registry entries left behind go.
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		require.NoError(t, kc.StartNode(ctx, 0))
		for _, cr := range rooms {
			waitRegistry(t, reg, cr.Name, func(_ room.Info, err error) string {
				if !isNotFound(err) {
					return "still in the registry"
				}
				return ""
			})
		}
	})
}
