package controller

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/kafkabus"
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

// TestReassignmentThrottle raises the replication factor of a topic that
// holds data, under a throttle: while the replicas move, Kafka throttles
// them (the topic lists them, the brokers have the rate),
// status.reassignment shows the partitions done rising, partitions of
// different sizes finishing one after the other, and once all are done
// the throttle is gone.
func TestReassignmentThrottle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node Kafka cluster")
	}
	kc := kafkatest.NewCluster(t, 3)
	ns := newNamespace(t)
	const throttle = 128 << 10
	startOperator(t, operatorOptions{bootstrap: kc.Bootstrap(), throttle: throttle}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("heavy"), chatv1alpha1.ChatRoomSpec{Partitions: 3, ReplicationFactor: 1}))
	topic := waitReady(t, cr).Status.TopicName

	kcfg := kafkabus.Config{Brokers: strings.Split(kc.Bootstrap(), ",")}
	client, err := kcfg.AdminClient()
	require.NoError(t, err)
	t.Cleanup(client.Close)
	adm := kadm.NewClient(client)
	// Each partition's leader sends it to two new replicas at 128 KiB/s
	// (on average): partitions of different sizes finish one by one.
	produce(t, kc.Bootstrap(), topic, map[int32]int{0: 64 << 10, 1: 768 << 10, 2: 2 << 20})

	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.ReplicationFactor = 3 })
	began := time.Now()
	var done []int32      // the partitionsDone values seen, in order
	var remaining []int64 // the bytesRemaining values seen, in order
	throttled := false
	eventually(t, waitTimeout, func() string {
		got := getRoom(t, cr)
		if ra := got.Status.Reassignment; ra != nil {
			require.Equal(t, int64(throttle), ra.Throttle)
			require.Equal(t, int32(3), ra.PartitionsTotal)
			if n := len(done); n == 0 || done[n-1] != ra.PartitionsDone {
				require.Truef(t, n == 0 || ra.PartitionsDone > done[n-1], "partitions done went back: %v then %d", done, ra.PartitionsDone)
				done = append(done, ra.PartitionsDone)
				t.Logf("%s: %d of %d partitions done", time.Since(began).Round(100*time.Millisecond), ra.PartitionsDone, ra.PartitionsTotal)
			}
			if n := len(remaining); n == 0 || remaining[n-1] != ra.BytesRemaining {
				remaining = append(remaining, ra.BytesRemaining)
				t.Logf("%s: %d bytes to copy", time.Since(began).Round(100*time.Millisecond), ra.BytesRemaining)
			}
			if !throttled && ra.PartitionsDone < 2 {
				replicas, rates := throttleConfigs(t, adm, topic)
				require.Contains(t, replicas[room.FollowerThrottledReplicas], "2:", "partition 2's new replicas are throttled")
				require.NotEmpty(t, replicas[room.LeaderThrottledReplicas])
				for b, r := range rates {
					require.Equal(t, map[string]string{room.LeaderThrottleRate: "131072", room.FollowerThrottleRate: "131072"}, r, "broker %d", b)
				}
				require.Len(t, rates, 3)
				throttled = true
			}
			return "replicas moving"
		}
		c := meta.FindStatusCondition(got.Status.Conditions, chatv1alpha1.ConditionReady)
		if c == nil || c.Reason != chatv1alpha1.ReasonProvisioned || c.ObservedGeneration != got.Generation {
			return "not Ready: " + conditionsString(got)
		}
		return ""
	})
	took := time.Since(began)
	t.Logf("reassignment took %s; partitions done seen: %v", took.Round(100*time.Millisecond), done)
	require.True(t, throttled, "the throttle was never seen in Kafka")
	require.True(t, slices.ContainsFunc(done, func(n int32) bool { return n > 0 && n < 3 }), "progress never moved between none and all: %v", done)
	require.Greater(t, took, 10*time.Second, "4 MiB moved faster than the throttle allows")
	// Measured (0 is unset: not measured yet), moving, and falling. Kafka's
	// throttle lets a burst through first (its rate is an average over
	// about 10 s), so the first figure is not the whole 5.7 MiB.
	measured := slices.DeleteFunc(slices.Clone(remaining), func(n int64) bool { return n == 0 })
	require.GreaterOrEqual(t, len(measured), 3, "bytes to copy hardly moved: %v", remaining)
	require.Greater(t, measured[0], int64(1<<20), "bytes to copy: %v", remaining)
	require.Less(t, measured[len(measured)-1], measured[0]/2, "bytes to copy did not fall: %v", remaining)
	require.Equal(t, int32(3), getRoom(t, cr).Status.ReplicationFactor)

	// The throttle went with the reassignment.
	eventually(t, waitTimeout, func() string {
		replicas, rates := throttleConfigs(t, adm, topic)
		if len(replicas) > 0 || len(rates) > 0 {
			return fmt.Sprintf("throttle left: topic %v, brokers %v", replicas, rates)
		}
		return ""
	})
}

// throttleConfigs returns the replication throttle set on topic (its
// throttled replica lists) and on the brokers (their rates), as Kafka
// reports them: only the values set, not defaults.
func throttleConfigs(t *testing.T, adm *kadm.Client, topic string) (replicas map[string]string, rates map[int32]map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tc, err := adm.DescribeTopicConfigs(ctx, topic)
	require.NoError(t, err)
	rc, err := tc.On(topic, nil)
	require.NoError(t, err)
	replicas = map[string]string{}
	for _, c := range rc.Configs {
		if (c.Key == room.LeaderThrottledReplicas || c.Key == room.FollowerThrottledReplicas) && c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.MaybeValue() != "" {
			replicas[c.Key] = c.MaybeValue()
		}
	}
	bc, err := adm.DescribeBrokerConfigs(ctx, 0, 1, 2)
	require.NoError(t, err)
	rates = map[int32]map[string]string{}
	for _, r := range bc {
		require.NoError(t, r.Err)
		for _, c := range r.Configs {
			if (c.Key == room.LeaderThrottleRate || c.Key == room.FollowerThrottleRate) && c.Source == kmsg.ConfigSourceDynamicBrokerConfig {
				b, err := strconv.Atoi(r.Name)
				require.NoError(t, err)
				if rates[int32(b)] == nil {
					rates[int32(b)] = map[string]string{}
				}
				rates[int32(b)][c.Key] = c.MaybeValue()
			}
		}
	}
	return replicas, rates
}

// produce writes incompressible records of 32 KiB to the partitions of
// topic, about bytes[p] to partition p.
func produce(t *testing.T, bootstrap, topic string, bytes map[int32]int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	require.NoError(t, err)
	defer cl.Close()
	var records []*kgo.Record
	for p, n := range bytes {
		for sent := 0; sent < n; sent += 32 << 10 {
			v := make([]byte, 32<<10)
			_, _ = rand.Read(v)
			records = append(records, &kgo.Record{Topic: topic, Partition: p, Value: v})
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, records...).FirstErr())
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
