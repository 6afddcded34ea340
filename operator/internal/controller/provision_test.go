package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
)

// TestCreateReady checks the main path: a ChatRoom becomes Ready with a
// topic configured as its spec says, and the room is in the registry.
func TestCreateReady(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	reg := registry(t, op.cluster)
	name := uniqueRoom("lobby")
	cr := createRoom(t, newRoom(ns, name, chatv1alpha1.ChatRoomSpec{
		Partitions:      2,
		Retention:       chatv1alpha1.Retention{Time: "1h", Bytes: 1 << 20},
		MaxMessageBytes: 65536,
		DisplayName:     "Lobby",
		Description:     "Say hello.",
	}))

	got := waitReady(t, cr)
	topic := room.DefaultTopic(ns, name)
	require.Equal(t, topic, got.Status.TopicName)
	require.NotEmpty(t, got.Status.TopicID)
	require.Equal(t, int32(2), got.Status.Partitions)
	require.Equal(t, int32(1), got.Status.ReplicationFactor)
	require.Equal(t, got.Generation, got.Status.ObservedGeneration)
	require.Contains(t, got.Finalizers, chatv1alpha1.Finalizer)
	for typ, status := range map[string]string{chatv1alpha1.ConditionProgressing: "False", chatv1alpha1.ConditionConfigDrift: "False"} {
		c := meta.FindStatusCondition(got.Status.Conditions, typ)
		require.NotNil(t, c, typ)
		require.Equal(t, status, string(c.Status), typ)
	}

	st := waitTopic(t, op.prov, topic, func(st room.TopicState) string {
		if !st.Exists {
			return "missing"
		}
		return ""
	})
	require.Equal(t, got.Status.TopicID, st.ID)
	require.Equal(t, int32(2), st.Partitions)
	require.Equal(t, int16(1), st.ReplicationFactor)
	for k, v := range map[string]string{
		"retention.ms":           "3600000",
		"segment.ms":             "360000", // a tenth of retention, so it really applies
		"retention.bytes":        "1048576",
		"max.message.bytes":      "65536",
		"min.insync.replicas":    "1",
		"message.timestamp.type": "LogAppendTime",
		"cleanup.policy":         "delete",
	} {
		require.Equal(t, v, st.Configs[k], k)
	}

	waitRegistry(t, reg, name, func(in room.Info, err error) string {
		if err != nil {
			return err.Error()
		}
		want := room.Info{V: 1, Name: name, Namespace: ns, Topic: topic, Partitions: 2, MaxMessageBytes: 65536, DisplayName: "Lobby", Description: "Say hello."}
		if in != want {
			return fmt.Sprintf("%+v, want %+v", in, want)
		}
		return ""
	})
	waitEvent(t, cr, "TopicCreated", topic)
	// One event for the whole creation: events mark changes only.
	require.Equal(t, []string{"TopicCreated"}, eventReasons(t, cr))
}

// TestPartitionGrowth checks that partitions grow in Kafka and in the
// registry entry.
func TestPartitionGrowth(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	reg := registry(t, op.cluster)
	name := uniqueRoom("busy")
	cr := createRoom(t, newRoom(ns, name, chatv1alpha1.ChatRoomSpec{}))
	before := meta.FindStatusCondition(waitReady(t, cr).Status.Conditions, chatv1alpha1.ConditionReady)

	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.Partitions = 4 })
	got := waitReady(t, cr)
	require.Equal(t, int32(4), got.Status.Partitions)
	after := meta.FindStatusCondition(got.Status.Conditions, chatv1alpha1.ConditionReady)
	require.Equal(t, before.LastTransitionTime, after.LastTransitionTime, "Ready stayed True: no transition")
	require.Equal(t, int64(2), after.ObservedGeneration)
	waitTopic(t, op.prov, got.Status.TopicName, func(st room.TopicState) string {
		if st.Partitions != 4 {
			return fmt.Sprintf("%d partitions", st.Partitions)
		}
		return ""
	})
	waitRegistry(t, reg, name, func(in room.Info, err error) string {
		if err != nil || in.Partitions != 4 {
			return fmt.Sprintf("%+v, %v; want 4 partitions", in, err)
		}
		return ""
	})
	waitEvent(t, cr, "PartitionsIncreased", "1 -> 4")
}

// TestChangeSoonAfterCreation changes a ChatRoom at several moments after
// its creation: while the view still trusts the create it made, once it
// stopped trusting it but before the first resync read the topic again,
// across resyncs, and while the previous change is still being applied.
// Every change is applied to the room's own topic, which is never taken for
// one deleted or created outside the operator, and which the room still
// deletes with itself.
func TestChangeSoonAfterCreation(t *testing.T) {
	ns := newNamespace(t)
	// Shorter than the defaults (15 s, 30 s), so that the test does not
	// take minutes; what matters is the order: the expectation expires
	// well before the first resync.
	const expectation, resync = 2 * time.Second, 20 * time.Second
	op := startOperator(t, operatorOptions{resync: resync, expectation: expectation}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("early"), chatv1alpha1.ChatRoomSpec{DeletionPolicy: chatv1alpha1.DeletionPolicyDelete}))
	created := time.Now()
	id := waitOwnTopicReady(t, cr, "").Status.TopicID
	topic := room.DefaultTopic(ns, cr.Name)

	partitions := int32(1)
	// The view started a moment before the ChatRoom was created, and first
	// reads every topic again one resync after that: at 5 s and 10 s, the
	// view no longer trusts its last change (made at creation, then at 5
	// s) and has not read the topic since creation; 22 s and 26 s come
	// after that first resync.
	for _, at := range []time.Duration{5 * time.Second, 10 * time.Second, 22 * time.Second, 26 * time.Second} {
		select {
		case <-time.After(time.Until(created.Add(at))): // a moment of the test, not a wait for an event
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
		partitions++
		patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.Partitions = partitions })
		got := waitOwnTopicReady(t, cr, id)
		require.Equal(t, partitions, got.Status.Partitions)
		t.Logf("%d partitions at %s after creation", partitions, time.Since(created).Round(100*time.Millisecond))
	}

	// Changes that follow one another without waiting.
	for _, change := range []func(*chatv1alpha1.ChatRoomSpec){
		func(s *chatv1alpha1.ChatRoomSpec) { s.Partitions++ },
		func(s *chatv1alpha1.ChatRoomSpec) { s.Retention.Time = "2h" },
		func(s *chatv1alpha1.ChatRoomSpec) { s.Partitions++ },
	} {
		patchSpec(t, cr, change)
	}
	got := waitOwnTopicReady(t, cr, id)
	require.Equal(t, partitions+2, got.Status.Partitions)
	st := waitTopic(t, op.prov, topic, func(st room.TopicState) string {
		if st.Partitions != partitions+2 || st.Configs["retention.ms"] != "7200000" {
			return "changes not applied"
		}
		return ""
	})
	require.Equal(t, id, st.ID)
	reasons := eventReasons(t, cr)
	require.Equal(t, 1, len(slices.DeleteFunc(slices.Clone(reasons), func(r string) bool { return r != "TopicCreated" })),
		"one TopicCreated event: %q", reasons)

	// The room still owns its topic: it goes with the ChatRoom.
	require.NoError(t, k8sClient.Delete(t.Context(), cr))
	waitTopic(t, op.prov, topic, func(st room.TopicState) string {
		if st.Exists {
			return "still in Kafka"
		}
		return ""
	})
}

// waitOwnTopicReady waits until cr is Ready for its current generation
// with the topic id id (any when empty), and fails at once when the room
// takes its own topic for someone else's.
func waitOwnTopicReady(t *testing.T, cr *chatv1alpha1.ChatRoom, id string) *chatv1alpha1.ChatRoom {
	t.Helper()
	var got chatv1alpha1.ChatRoom
	eventually(t, waitTimeout, func() string {
		if err := k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), &got); err != nil {
			return err.Error()
		}
		for _, reason := range eventReasons(t, cr) {
			switch reason {
			case chatv1alpha1.ReasonTopicDeletedExternally, chatv1alpha1.ReasonTopicConflict, chatv1alpha1.ReasonTopicRecreatedExternally, "TopicAdopted":
				t.Fatalf("%s took its own topic for someone else's: event %s; conditions: %s", cr.Name, reason, conditionsString(&got))
			}
		}
		c := meta.FindStatusCondition(got.Status.Conditions, chatv1alpha1.ConditionReady)
		switch {
		case c == nil || c.Status != metav1.ConditionTrue || c.Reason != chatv1alpha1.ReasonProvisioned || c.ObservedGeneration != got.Generation:
			return fmt.Sprintf("%s not Ready at generation %d: %s", cr.Name, got.Generation, conditionsString(&got))
		case id != "" && got.Status.TopicID != id:
			t.Fatalf("%s: topic id %s, was %s", cr.Name, got.Status.TopicID, id)
		}
		return ""
	})
	return &got
}

// TestDriftEnforce checks that a change made to the topic outside the
// ChatRoom is found by the periodic refresh and undone.
func TestDriftEnforce(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("enforced"), chatv1alpha1.ChatRoomSpec{}))
	topic := waitReady(t, cr).Status.TopicName

	alterOutOfBand(t, op.prov, topic, "retention.ms", "60000")
	waitEvent(t, cr, "DriftCorrected", "retention.ms: spec 604800000, topic 60000")
	waitTopic(t, op.prov, topic, func(st room.TopicState) string {
		if st.Configs["retention.ms"] != "604800000" {
			return "retention.ms " + st.Configs["retention.ms"]
		}
		return ""
	})
	got := waitReady(t, cr)
	require.Equal(t, "False", string(meta.FindStatusCondition(got.Status.Conditions, chatv1alpha1.ConditionConfigDrift).Status))
}

// TestDriftReport checks that under driftPolicy Report a change made
// outside the ChatRoom is reported and left alone, while a change of the
// spec is still applied.
func TestDriftReport(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("reported"), chatv1alpha1.ChatRoomSpec{DriftPolicy: chatv1alpha1.DriftPolicyReport}))
	topic := waitReady(t, cr).Status.TopicName

	alterOutOfBand(t, op.prov, topic, "retention.ms", "60000")
	got := waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionConfigDrift, status: "True",
		reason: chatv1alpha1.ReasonDriftDetected, message: "retention.ms: spec 604800000, topic 60000"})
	require.Equal(t, "True", string(meta.FindStatusCondition(got.Status.Conditions, chatv1alpha1.ConditionReady).Status),
		"drift under Report leaves the room Ready")
	waitEvent(t, cr, chatv1alpha1.ReasonDriftDetected, "")
	// Left alone: still drifted after several refreshes.
	time.Sleep(3 * time.Second)
	st := waitTopic(t, op.prov, topic, func(room.TopicState) string { return "" })
	require.Equal(t, "60000", st.Configs["retention.ms"])

	// A new spec is applied, drift included.
	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.Retention.Time = "2h" })
	waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionConfigDrift, status: "False", reason: chatv1alpha1.ReasonInSync})
	waitTopic(t, op.prov, topic, func(st room.TopicState) string {
		if st.Configs["retention.ms"] != "7200000" {
			return "retention.ms " + st.Configs["retention.ms"]
		}
		return ""
	})
}

// TestTopicDeletedOutOfBand checks that a topic deleted behind the
// operator's back is found and, under Enforce, created again (a new topic
// id), with a warning event.
func TestTopicDeletedOutOfBand(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("phoenix"), chatv1alpha1.ChatRoomSpec{}))
	first := waitReady(t, cr)

	deleteOutOfBand(t, op.prov, first.Status.TopicName)
	waitEvent(t, cr, chatv1alpha1.ReasonTopicDeletedExternally, "created it again, empty")
	var got *chatv1alpha1.ChatRoom
	eventually(t, waitTimeout, func() string {
		got = waitReady(t, cr)
		if got.Status.TopicID == first.Status.TopicID {
			return "topic id unchanged"
		}
		return ""
	})
	st := waitTopic(t, op.prov, first.Status.TopicName, func(st room.TopicState) string {
		if !st.Exists {
			return "missing"
		}
		return ""
	})
	require.Equal(t, got.Status.TopicID, st.ID)
}

// TestTopicRecreatedExternally checks that under Report a deleted topic is
// reported, not recreated; that a topic recreated by someone else (a new
// topic id) is reported and not used; and that adoptExisting takes it.
func TestTopicRecreatedExternally(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("impostor"), chatv1alpha1.ChatRoomSpec{DriftPolicy: chatv1alpha1.DriftPolicyReport}))
	first := waitReady(t, cr)
	topic := first.Status.TopicName

	deleteOutOfBand(t, op.prov, topic)
	waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonTopicDeletedExternally})

	spec := room.Spec{Name: cr.Name, Namespace: ns}.WithDefaults(1)
	createOutOfBand(t, op.prov, spec)
	got := waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "False",
		reason: chatv1alpha1.ReasonTopicRecreatedExternally, message: "adoptExisting"})
	require.Equal(t, first.Status.TopicID, got.Status.TopicID, "status keeps the id of the room's own topic")

	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.AdoptExisting = true })
	got = waitReady(t, cr)
	st := waitTopic(t, op.prov, topic, func(room.TopicState) string { return "" })
	require.Equal(t, st.ID, got.Status.TopicID)
	require.NotEqual(t, first.Status.TopicID, got.Status.TopicID)
}

// TestAdoption checks that an existing topic is not taken without
// adoptExisting, and is (and brought to the spec) with it.
func TestAdoption(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	name := uniqueRoom("legacy")
	spec := room.Spec{Name: name, Namespace: ns, Retention: 3 * time.Hour}.WithDefaults(1)
	id := createOutOfBand(t, op.prov, spec)

	cr := createRoom(t, newRoom(ns, name, chatv1alpha1.ChatRoomSpec{Partitions: 2}))
	waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonTopicConflict, message: "adoptExisting"})
	require.Empty(t, getRoom(t, cr).Status.TopicID)

	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.AdoptExisting = true })
	got := waitReady(t, cr)
	require.Equal(t, id, got.Status.TopicID)
	waitTopic(t, op.prov, spec.Topic, func(st room.TopicState) string {
		if st.Partitions != 2 || st.Configs["retention.ms"] != "604800000" {
			return "not brought to the spec"
		}
		return ""
	})
	waitEvent(t, cr, "TopicAdopted", "")
}

// TestNameConflict checks that two ChatRooms with the same name in two
// namespaces do not share the registry entry: the younger one reports
// NameConflict until the older one goes, then takes the name.
func TestNameConflict(t *testing.T) {
	nsA, nsB := newNamespace(t), newNamespace(t)
	op := startOperator(t, operatorOptions{}, nsA, nsB)
	reg := registry(t, op.cluster)
	name := uniqueRoom("town-square")
	a := createRoom(t, newRoom(nsA, name, chatv1alpha1.ChatRoomSpec{DisplayName: "A"}))
	waitReady(t, a)
	b := createRoom(t, newRoom(nsB, name, chatv1alpha1.ChatRoomSpec{DisplayName: "B"}))
	waitCondition(t, b, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonNameConflict, message: nsA + "/" + name})
	waitRegistry(t, reg, name, func(in room.Info, err error) string {
		if err != nil || in.Namespace != nsA {
			return fmt.Sprintf("%+v, %v; want A's", in, err)
		}
		return ""
	})

	require.NoError(t, k8sClient.Delete(t.Context(), a))
	waitReady(t, b)
	waitRegistry(t, reg, name, func(in room.Info, err error) string {
		if err != nil || in.Namespace != nsB || in.DisplayName != "B" {
			return fmt.Sprintf("%+v, %v; want B's", in, err)
		}
		return ""
	})
}

// TestInvalidReplicationFactor checks the condition a replication factor
// above the cluster's brokers gets.
func TestInvalidReplicationFactor(t *testing.T) {
	ns := newNamespace(t)
	startOperator(t, operatorOptions{}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("too-safe"), chatv1alpha1.ChatRoomSpec{ReplicationFactor: 3}))
	waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonInvalidConfig,
		message: "replicationFactor 3 exceeds the 1 broker(s) of the Kafka cluster"})

	// Fixing the spec fixes the room.
	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.ReplicationFactor = 1 })
	waitReady(t, cr)
}

// TestDeletionPolicies checks both deletion policies: the registry entry
// goes either way; the topic goes only under Delete.
func TestDeletionPolicies(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	reg := registry(t, op.cluster)
	for _, policy := range []chatv1alpha1.DeletionPolicy{chatv1alpha1.DeletionPolicyRetain, chatv1alpha1.DeletionPolicyDelete} {
		t.Run(string(policy), func(t *testing.T) {
			name := uniqueRoom(strings.ToLower(string(policy)))
			cr := createRoom(t, newRoom(ns, name, chatv1alpha1.ChatRoomSpec{DeletionPolicy: policy}))
			topic := waitReady(t, cr).Status.TopicName
			waitRegistry(t, reg, name, func(_ room.Info, err error) string {
				if err != nil {
					return err.Error()
				}
				return ""
			})

			require.NoError(t, k8sClient.Delete(t.Context(), cr))
			eventually(t, waitTimeout, func() string {
				var got chatv1alpha1.ChatRoom
				if err := k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), &got); err == nil {
					return "ChatRoom still there: " + conditionsString(&got)
				}
				return ""
			})
			waitRegistry(t, reg, name, func(_ room.Info, err error) string {
				if !isNotFound(err) {
					return "still in the registry"
				}
				return ""
			})
			waitTopic(t, op.prov, topic, func(st room.TopicState) string {
				if st.Exists != (policy == chatv1alpha1.DeletionPolicyRetain) {
					return fmt.Sprintf("exists=%v under %s", st.Exists, policy)
				}
				return ""
			})
		})
	}
}

// TestPaused checks that a paused ChatRoom changes nothing in Kafka and
// says so, and resumes when unpaused.
func TestPaused(t *testing.T) {
	ns := newNamespace(t)
	op := startOperator(t, operatorOptions{}, ns)
	cr := createRoom(t, newRoom(ns, uniqueRoom("frozen"), chatv1alpha1.ChatRoomSpec{Paused: true}))
	waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonPaused})
	topic := room.DefaultTopic(ns, cr.Name)
	st := waitTopic(t, op.prov, topic, func(room.TopicState) string { return "" })
	require.False(t, st.Exists, "a paused ChatRoom created its topic")

	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.Paused = false })
	waitReady(t, cr)
	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.Paused, s.Partitions = true, 3 })
	got := waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "False", reason: chatv1alpha1.ReasonPaused})
	require.Equal(t, int32(1), got.Status.Partitions)
	waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionConfigDrift, status: "True", message: "partitions: spec 3, topic 1"})
	patchSpec(t, cr, func(s *chatv1alpha1.ChatRoomSpec) { s.Paused = false })
	require.Equal(t, int32(3), waitReady(t, cr).Status.Partitions)
}

func alterOutOfBand(t *testing.T, p *room.Provisioner, topic, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.ApplyConfigs(ctx, topic, []room.ConfigDrift{{Key: key, Want: value}}))
}

func deleteOutOfBand(t *testing.T, p *room.Provisioner, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.DeleteTopics(ctx, topic))
}

// createOutOfBand creates a topic the way someone else would, retrying
// while Kafka still finishes deleting an earlier one of the same name.
func createOutOfBand(t *testing.T, p *room.Provisioner, s room.Spec) string {
	t.Helper()
	var id string
	eventually(t, waitTimeout, func() string {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		ids, errs, err := p.Create(ctx, s)
		if err == nil {
			err = errs[s.Topic]
		}
		if err != nil {
			return err.Error()
		}
		id = ids[s.Topic]
		return ""
	})
	return id
}
