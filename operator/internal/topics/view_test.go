package topics

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"palaver.dev/services/room"
)

func observed(id string, partitions int32, retention string) room.TopicState {
	return room.TopicState{
		Topic: "t", Exists: true, ID: id, Partitions: partitions, ReplicationFactor: 1,
		Replicas: map[int32][]int32{0: {0}},
		Configs:  map[string]string{"retention.ms": retention, "max.message.bytes": "1048588"},
		ConfigSources: map[string]string{
			"retention.ms": "DYNAMIC_TOPIC_CONFIG", "max.message.bytes": "DEFAULT_CONFIG",
		},
	}
}

// TestExpectations checks that the view trusts its own changes over older
// observations until one confirms them or they expire, and tells the owner
// only about changes it did not make.
func TestExpectations(t *testing.T) {
	v := New(nil, Options{Expectation: time.Hour})
	owner := types.NamespacedName{Namespace: "ns", Name: "r"}
	v.Track("t", owner)
	now := time.Now()

	// First observation: missing.
	st, changed := v.record("t", room.TopicState{Topic: "t"}, now)
	require.False(t, st.Exists)
	require.False(t, changed, "a first observation is no change")

	// The view creates the topic; a lagging observation still shows none.
	v.expectChange("t", func(x *expectation) {
		x.created, x.rf, x.partitions, x.configs = "id1", 1, 1, map[string]string{"retention.ms": "100"}
	})
	st, changed = v.record("t", room.TopicState{Topic: "t"}, now.Add(time.Second))
	require.True(t, st.Exists)
	require.Equal(t, "id1", st.ID)
	require.Equal(t, "100", st.Configs["retention.ms"])
	require.False(t, changed)

	// The observation catches up: confirmed, no news.
	st, changed = v.record("t", observed("id1", 1, "100"), now.Add(2*time.Second))
	require.False(t, changed)
	require.Nil(t, v.entries["t"].expect)
	require.Equal(t, "1048588", st.Configs["max.message.bytes"])

	// An older observation is ignored.
	_, changed = v.record("t", room.TopicState{Topic: "t"}, now.Add(time.Second))
	require.False(t, changed)
	require.True(t, v.entries["t"].observed.Exists)

	// Someone else changes the retention: news.
	_, changed = v.record("t", observed("id1", 1, "999"), now.Add(3*time.Second))
	require.True(t, changed)

	// The topic is recreated behind the view's back: news.
	_, changed = v.record("t", observed("id2", 1, "999"), now.Add(4*time.Second))
	require.True(t, changed)
}

// TestExpectationExpires checks that a change the view made but never saw
// applied counts as a change once the expectation expires, so the owner
// tries again.
func TestExpectationExpires(t *testing.T) {
	v := New(nil, Options{Expectation: 50 * time.Millisecond})
	v.Track("t", types.NamespacedName{Name: "r"})
	now := time.Now()
	v.record("t", observed("id1", 1, "100"), now)
	v.expectChange("t", func(x *expectation) { x.partitions = 3 })
	st, changed := v.record("t", observed("id1", 1, "100"), now.Add(time.Millisecond))
	require.Equal(t, int32(3), st.Partitions)
	require.False(t, changed)
	time.Sleep(60 * time.Millisecond)
	st, changed = v.record("t", observed("id1", 1, "100"), time.Now())
	require.Equal(t, int32(1), st.Partitions)
	require.True(t, changed)
}

// TestUnreachableFailsFast checks that Get answers at once while Kafka is
// known to be unreachable, and that both transitions notify every owner.
func TestUnreachableFailsFast(t *testing.T) {
	v := New(nil, Options{})
	a, b := types.NamespacedName{Name: "a"}, types.NamespacedName{Name: "b"}
	v.Track("ta", a)
	v.Track("tb", b)
	v.mu.Lock()
	owners := v.setHealth(errTest)
	v.mu.Unlock()
	require.ElementsMatch(t, []types.NamespacedName{a, b}, owners)
	_, err := v.Get(t.Context(), "ta")
	require.ErrorIs(t, err, ErrUnreachable)
	require.ErrorIs(t, v.Reachable(), errTest)
	v.mu.Lock()
	require.Len(t, v.setHealth(nil), 2)
	require.Empty(t, v.setHealth(nil))
	v.mu.Unlock()
	require.NoError(t, v.Reachable())
}

var errTest = testErr("connection refused")

type testErr string

func (e testErr) Error() string { return string(e) }

// TestUnconfirmedChangeIsReadAgain checks that once the view stops trusting
// a change no observation confirmed, Get asks Kafka instead of answering
// with the observation made before the change: the read that preceded a
// create says "missing", and serving it after the expectation expired made
// a room take its own new topic for one deleted outside the operator.
func TestUnconfirmedChangeIsReadAgain(t *testing.T) {
	v := New(nil, Options{Expectation: 50 * time.Millisecond})
	v.Track("t", types.NamespacedName{Name: "r"})
	// The batchers do not run: a Get that asks Kafka fails with its
	// (canceled) context; one served by the view answers.
	canceled, cancel := context.WithCancel(t.Context())
	cancel()

	v.record("t", room.TopicState{Topic: "t"}, time.Now()) // the read before the create
	v.expectChange("t", func(x *expectation) {
		x.created, x.rf, x.partitions, x.configs = "id1", 1, 1, map[string]string{"retention.ms": "100"}
	})
	st, err := v.Get(canceled, "t")
	require.NoError(t, err, "served by the view while it trusts its create")
	require.True(t, st.Exists)
	require.Equal(t, "id1", st.ID)

	require.Eventually(t, func() bool {
		_, err := v.Get(canceled, "t")
		return errors.Is(err, context.Canceled)
	}, 10*time.Second, 10*time.Millisecond, "after the expectation, Get still answers from the read made before the create")

	// A read that confirms the create makes the entry current again.
	v.record("t", observed("id1", 1, "100"), time.Now())
	st, err = v.Get(canceled, "t")
	require.NoError(t, err)
	require.Equal(t, "id1", st.ID)
}
