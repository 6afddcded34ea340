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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

// TestChatRoomValidation checks that the real API server enforces the CRD's
// CEL rules, each with a case it must accept so that a rule rejecting
// everything cannot pass.
func TestChatRoomValidation(t *testing.T) {
	ns := newNamespace(t)

	tests := []struct {
		name string
		spec chatv1alpha1.ChatRoomSpec
		// update changes the created ChatRoom's spec; nil checks the create.
		update  func(*chatv1alpha1.ChatRoomSpec)
		wantErr string // empty: accepted
	}{
		{
			name:    "minInSyncReplicas above replicationFactor",
			spec:    chatv1alpha1.ChatRoomSpec{ReplicationFactor: 2, MinInSyncReplicas: 3},
			wantErr: "minInSyncReplicas must not exceed replicationFactor",
		},
		{
			name: "minInSyncReplicas equal to replicationFactor",
			spec: chatv1alpha1.ChatRoomSpec{ReplicationFactor: 3, MinInSyncReplicas: 3},
		},
		{
			name: "minInSyncReplicas without replicationFactor",
			spec: chatv1alpha1.ChatRoomSpec{MinInSyncReplicas: 2},
		},
		{
			name:    "replicationFactor lowered below minInSyncReplicas",
			spec:    chatv1alpha1.ChatRoomSpec{ReplicationFactor: 3, MinInSyncReplicas: 2},
			update:  func(s *chatv1alpha1.ChatRoomSpec) { s.ReplicationFactor = 1 },
			wantErr: "minInSyncReplicas must not exceed replicationFactor",
		},
		{
			name:    "partitions shrink",
			spec:    chatv1alpha1.ChatRoomSpec{Partitions: 3},
			update:  func(s *chatv1alpha1.ChatRoomSpec) { s.Partitions = 2 },
			wantErr: "partitions can only grow",
		},
		{
			name:   "partitions grow",
			spec:   chatv1alpha1.ChatRoomSpec{Partitions: 3},
			update: func(s *chatv1alpha1.ChatRoomSpec) { s.Partitions = 5 },
		},
		{
			name:    "topicName changed",
			spec:    chatv1alpha1.ChatRoomSpec{TopicName: "chat.lobby"},
			update:  func(s *chatv1alpha1.ChatRoomSpec) { s.TopicName = "chat.hall" },
			wantErr: "topicName is immutable",
		},
		{
			name:    "topicName removed",
			spec:    chatv1alpha1.ChatRoomSpec{TopicName: "chat.lobby"},
			update:  func(s *chatv1alpha1.ChatRoomSpec) { s.TopicName = "" },
			wantErr: "topicName can only be set when the ChatRoom is created",
		},
		{
			name:    "topicName added after creation",
			spec:    chatv1alpha1.ChatRoomSpec{},
			update:  func(s *chatv1alpha1.ChatRoomSpec) { s.TopicName = "chat.lobby" },
			wantErr: "topicName can only be set when the ChatRoom is created",
		},
		{
			name:   "other fields change, topicName kept",
			spec:   chatv1alpha1.ChatRoomSpec{TopicName: "chat.lobby"},
			update: func(s *chatv1alpha1.ChatRoomSpec) { s.DisplayName = "Lobby" },
		},
		{
			name:    "topicName with a character Kafka rejects",
			spec:    chatv1alpha1.ChatRoomSpec{TopicName: "chat/lobby"},
			wantErr: "spec.topicName",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			room := &chatv1alpha1.ChatRoom{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("room-%d", i)},
				Spec:       tt.spec,
			}
			err := k8sClient.Create(ctx, room)
			if tt.update != nil {
				require.NoError(t, err, "create")
				// A merge patch carries no resourceVersion, so the
				// reconciler's status writes cannot make it conflict.
				base := room.DeepCopy()
				tt.update(&room.Spec)
				err = k8sClient.Patch(ctx, room, client.MergeFrom(base))
			}
			requireInvalid(t, err, tt.wantErr)
		})
	}
}

// TestChatRoomRetentionTime checks that retention.time must be a Go
// duration, which the operator can decode.
func TestChatRoomRetentionTime(t *testing.T) {
	ns := newNamespace(t)
	for i, tt := range []struct {
		time    string
		wantErr string
	}{
		{time: "168h"},
		{time: "1h30m"},
		{time: "1.5h"},
		{time: "7d", wantErr: "spec.retention.time"},
		{time: "1 week", wantErr: "spec.retention.time"},
		{time: "-1h", wantErr: "spec.retention.time"},
	} {
		t.Run(tt.time, func(t *testing.T) {
			t.Parallel()
			room := newUnstructuredChatRoom(ns, fmt.Sprintf("room-%d", i))
			require.NoError(t, unstructured.SetNestedField(room.Object, tt.time, "spec", "retention", "time"))
			requireInvalid(t, k8sClient.Create(t.Context(), room), tt.wantErr)
		})
	}
}

// TestChatRoomDefaults checks the defaults the API server fills in.
func TestChatRoomDefaults(t *testing.T) {
	ns := newNamespace(t)
	ctx := t.Context()

	typed := &chatv1alpha1.ChatRoom{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "empty-spec"}}
	require.NoError(t, k8sClient.Create(ctx, typed))

	// Without any spec at all, spec's own default {} lets the field defaults apply.
	require.NoError(t, k8sClient.Create(ctx, newUnstructuredChatRoom(ns, "no-spec")))
	var noSpec chatv1alpha1.ChatRoom
	require.NoError(t, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "no-spec"}, &noSpec))

	want := chatv1alpha1.ChatRoomSpec{
		Partitions:     1,
		DeletionPolicy: chatv1alpha1.DeletionPolicyRetain,
		DriftPolicy:    chatv1alpha1.DriftPolicyEnforce,
	}
	require.Equal(t, want, typed.Spec, "empty spec")
	require.Equal(t, want, noSpec.Spec, "no spec")
}

// TestChatRoomObservedGeneration checks that the manager runs the reconciler:
// status.observedGeneration follows metadata.generation.
func TestChatRoomObservedGeneration(t *testing.T) {
	ns := newNamespace(t)
	ctx := t.Context()
	room := &chatv1alpha1.ChatRoom{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby"}}
	require.NoError(t, k8sClient.Create(ctx, room))
	waitObservedGeneration(t, room, 1)

	base := room.DeepCopy()
	room.Spec.Partitions = 4
	require.NoError(t, k8sClient.Patch(ctx, room, client.MergeFrom(base)))
	require.Equal(t, int64(2), room.Generation)
	waitObservedGeneration(t, room, 2)
}

func waitObservedGeneration(t *testing.T, room *chatv1alpha1.ChatRoom, generation int64) {
	t.Helper()
	var got chatv1alpha1.ChatRoom
	require.Eventually(t, func() bool {
		err := k8sClient.Get(t.Context(), client.ObjectKeyFromObject(room), &got)
		return err == nil && got.Status.ObservedGeneration == generation
	}, 10*time.Second, 50*time.Millisecond,
		"status.observedGeneration of %s never became %d (last: %d)",
		room.Name, generation, got.Status.ObservedGeneration)
}

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

// newNamespace creates a namespace for one test. envtest runs no namespace
// controller, so deleting it only marks it terminating; that is enough.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "chatroom-test-"}}
	require.NoError(t, k8sClient.Create(t.Context(), ns))
	t.Cleanup(func() {
		if err := k8sClient.Delete(context.Background(), ns); err != nil {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
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
