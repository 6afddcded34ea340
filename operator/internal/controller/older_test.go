package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

// TestOlderKeepsAProvisionedClaim: two ChatRooms of one room name created
// within the same second (creation times have one-second resolution): the
// one that already has its topic stays the owner, whatever the namespaces.
func TestOlderKeepsAProvisionedClaim(t *testing.T) {
	second := metav1.NewTime(time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC))
	room := func(ns, topicID string) *chatv1alpha1.ChatRoom {
		cr := &chatv1alpha1.ChatRoom{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby", CreationTimestamp: second}}
		cr.Status.TopicID = topicID
		return cr
	}
	provisioned, newcomer := room("zeta", "AAAAAAAAAAAAAAAAAAAAAA"), room("alpha", "")
	if !older(provisioned, newcomer) || older(newcomer, provisioned) {
		t.Fatal("a newcomer created in the same second took the claim of a provisioned room")
	}
	a, b := room("alpha", ""), room("zeta", "")
	if !older(a, b) || older(b, a) {
		t.Fatal("ties between unprovisioned rooms are not broken by namespace")
	}
	earlier := room("zeta", "")
	earlier.CreationTimestamp = metav1.NewTime(second.Add(-time.Second))
	if !older(earlier, provisioned) {
		t.Fatal("creation time does not come first")
	}
}
