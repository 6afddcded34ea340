package controller

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
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
			name:    "topicName .",
			spec:    chatv1alpha1.ChatRoomSpec{TopicName: "."},
			wantErr: "topicName cannot be . or ..",
		},
		{
			name:    "topicName ..",
			spec:    chatv1alpha1.ChatRoomSpec{TopicName: ".."},
			wantErr: "topicName cannot be . or ..",
		},
		{
			name: "topicName of dots and more",
			spec: chatv1alpha1.ChatRoomSpec{TopicName: "...chat..lobby"},
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
// duration of at least a minute, or "unlimited", which the operator can
// decode (room.ParseRetention).
func TestChatRoomRetentionTime(t *testing.T) {
	ns := newNamespace(t)
	for i, tt := range []struct {
		time    string
		wantErr string
	}{
		{time: "168h"},
		{time: "1h30m"},
		{time: "1.5h"},
		{time: "1m"},
		{time: "unlimited"},
		{time: "59s", wantErr: "retention.time must be at least 1m, or unlimited"},
		{time: "0s", wantErr: "retention.time must be at least 1m, or unlimited"},
		{time: "7d", wantErr: "spec.retention.time"},
		{time: "1 week", wantErr: "spec.retention.time"},
		{time: "-1h", wantErr: "spec.retention.time"},
		{time: "-1", wantErr: "spec.retention.time"},
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
		Retention:      chatv1alpha1.Retention{Time: "168h"},
		DeletionPolicy: chatv1alpha1.DeletionPolicyRetain,
		DriftPolicy:    chatv1alpha1.DriftPolicyEnforce,
	}
	require.Equal(t, want, typed.Spec, "empty spec")
	require.Equal(t, want, noSpec.Spec, "no spec")

	// The CRD's default retention is room's, which dev mode applies.
	d, err := room.ParseRetention(want.Retention.Time)
	require.NoError(t, err)
	require.Equal(t, room.DefaultRetention, d)
}

// TestChatRoomNameLength checks that the API server rejects a ChatRoom
// whose name cannot be a room name.
func TestChatRoomNameLength(t *testing.T) {
	ns := newNamespace(t)
	requireInvalid(t, k8sClient.Create(t.Context(), newRoom(ns, strings.Repeat("a", 63), chatv1alpha1.ChatRoomSpec{})), "")
	requireInvalid(t, k8sClient.Create(t.Context(), newRoom(ns, strings.Repeat("b", 64), chatv1alpha1.ChatRoomSpec{})),
		"at most 63 characters")
}
