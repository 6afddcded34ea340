package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// waitTimeout bounds every wait of the tests: generous, since the machine
// may be busy; waits end as soon as the condition holds.
const waitTimeout = 2 * time.Minute

// eventually polls cond every interval until it returns "" (done) or
// timeout passes, then fails the test with cond's last answer.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, why)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("test ended while waiting: %s", why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// newNamespace creates a namespace for one test. envtest runs no namespace
// controller, so deleting it only marks it terminating; that is enough.
func newNamespace(t *testing.T) string {
	t.Helper()
	needEnvtest(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "chatroom-test-"}}
	require.NoError(t, k8sClient.Create(t.Context(), ns))
	t.Cleanup(func() {
		if err := k8sClient.Delete(context.Background(), ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// uniqueRoom returns a room name no other test uses: room names are global
// in the registry topic the tests share.
func uniqueRoom(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e10)
}

func newRoom(ns, name string, spec chatv1alpha1.ChatRoomSpec) *chatv1alpha1.ChatRoom {
	return &chatv1alpha1.ChatRoom{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func createRoom(t *testing.T, cr *chatv1alpha1.ChatRoom) *chatv1alpha1.ChatRoom {
	t.Helper()
	require.NoError(t, k8sClient.Create(t.Context(), cr))
	return cr
}

func getRoom(t *testing.T, cr *chatv1alpha1.ChatRoom) *chatv1alpha1.ChatRoom {
	t.Helper()
	var got chatv1alpha1.ChatRoom
	require.NoError(t, k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), &got))
	return &got
}

// patchSpec changes a ChatRoom's spec with a merge patch, which carries no
// resourceVersion and so cannot conflict with the controller's writes.
func patchSpec(t *testing.T, cr *chatv1alpha1.ChatRoom, change func(*chatv1alpha1.ChatRoomSpec)) {
	t.Helper()
	cur := getRoom(t, cr)
	base := cur.DeepCopy()
	change(&cur.Spec)
	require.NoError(t, k8sClient.Patch(t.Context(), cur, client.MergeFrom(base)))
}

// condition describes a wanted condition; an empty field matches anything.
type condition struct {
	typ, status, reason, message string
}

// waitCondition waits until cr has the condition, for its current
// generation, and returns the ChatRoom as it then was.
func waitCondition(t *testing.T, cr *chatv1alpha1.ChatRoom, want condition) *chatv1alpha1.ChatRoom {
	t.Helper()
	var got chatv1alpha1.ChatRoom
	eventually(t, waitTimeout, func() string {
		if err := k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), &got); err != nil {
			return err.Error()
		}
		c := meta.FindStatusCondition(got.Status.Conditions, want.typ)
		switch {
		case c == nil:
			return fmt.Sprintf("%s has no %s condition; conditions: %s", cr.Name, want.typ, conditionsString(&got))
		case want.status != "" && string(c.Status) != want.status,
			want.reason != "" && c.Reason != want.reason,
			want.message != "" && !strings.Contains(c.Message, want.message),
			c.ObservedGeneration != got.Generation:
			return fmt.Sprintf("%s: want %s=%s %s %q at generation %d; conditions: %s",
				cr.Name, want.typ, want.status, want.reason, want.message, got.Generation, conditionsString(&got))
		}
		return ""
	})
	return &got
}

// waitReady waits until cr is Ready for its current generation.
func waitReady(t *testing.T, cr *chatv1alpha1.ChatRoom) *chatv1alpha1.ChatRoom {
	t.Helper()
	return waitCondition(t, cr, condition{typ: chatv1alpha1.ConditionReady, status: "True", reason: chatv1alpha1.ReasonProvisioned})
}

func conditionsString(cr *chatv1alpha1.ChatRoom) string {
	var parts []string
	for _, c := range cr.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s/%s(g%d): %s", c.Type, c.Status, c.Reason, c.ObservedGeneration, c.Message))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// waitTopic waits until the topic's state in Kafka satisfies check, which
// returns "" when it does.
func waitTopic(t *testing.T, p *room.Provisioner, topic string, check func(room.TopicState) string) room.TopicState {
	t.Helper()
	var st room.TopicState
	eventually(t, waitTimeout, func() string {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		states, err := p.Observe(ctx, topic)
		if err != nil {
			return err.Error()
		}
		st = states[topic]
		if why := check(st); why != "" {
			return fmt.Sprintf("topic %s: %s (state %+v)", topic, why, st)
		}
		return ""
	})
	return st
}

// waitEvent waits for an event with reason about cr whose note contains
// text, and returns the note.
func waitEvent(t *testing.T, cr *chatv1alpha1.ChatRoom, reason, text string) string {
	t.Helper()
	var note string
	eventually(t, waitTimeout, func() string {
		var list eventsv1.EventList
		if err := k8sClient.List(t.Context(), &list, client.InNamespace(cr.Namespace)); err != nil {
			return err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name != cr.Name {
				continue
			}
			if e.Reason == reason && strings.Contains(e.Note, text) {
				note = e.Note
				return ""
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		var cur chatv1alpha1.ChatRoom
		_ = k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), &cur)
		return fmt.Sprintf("no %s event about %s saying %q; events: %q; conditions: %s", reason, cr.Name, text, seen, conditionsString(&cur))
	})
	return note
}

// eventReasons returns the reasons of the events about cr, in order.
func eventReasons(t *testing.T, cr *chatv1alpha1.ChatRoom) []string {
	t.Helper()
	var list eventsv1.EventList
	require.NoError(t, k8sClient.List(t.Context(), &list, client.InNamespace(cr.Namespace)))
	slices.SortFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == cr.Name {
			out = append(out, e.Reason)
		}
	}
	return out
}

// registry follows the registry topic for a test.
func registry(t *testing.T, cluster *kafkabus.Cluster) *room.Registry {
	t.Helper()
	reg := room.NewRegistry(cluster, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return reg
}

// waitRegistry waits until the registry's entry of name satisfies check
// (called with ErrNotFound for a missing entry).
func waitRegistry(t *testing.T, reg *room.Registry, name string, check func(room.Info, error) string) {
	t.Helper()
	eventually(t, waitTimeout, func() string {
		in, err := reg.Get(name)
		if why := check(in, err); why != "" {
			return fmt.Sprintf("registry entry %q: %s", name, why)
		}
		return ""
	})
}

func isNotFound(err error) bool { return errors.Is(err, room.ErrNotFound) }

// requireInvalid checks that err is nil when wantErr is empty, and otherwise
// an Invalid error from the API server that mentions wantErr.
func requireInvalid(t *testing.T, err error, wantErr string) {
	t.Helper()
	if wantErr == "" {
		require.NoError(t, err)
		return
	}
	require.Error(t, err)
	require.Truef(t, apierrors.IsInvalid(err), "want an Invalid error, got %v", err)
	require.ErrorContains(t, err, wantErr)
}

// newUnstructuredChatRoom returns a ChatRoom without a spec, for sending what
// the typed client cannot (no spec, invalid strings).
func newUnstructuredChatRoom(namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(chatv1alpha1.GroupVersion.WithKind("ChatRoom"))
	u.SetNamespace(namespace)
	u.SetName(name)
	return u
}
