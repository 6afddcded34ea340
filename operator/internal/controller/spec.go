package controller

import (
	"fmt"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
)

// roomSpec converts a ChatRoom to the room.Spec that provisioning works on,
// without defaults: the same conversion room.ParseManifests makes of a
// manifest for dev mode (a test holds the two together).
func roomSpec(cr *chatv1alpha1.ChatRoom) (room.Spec, error) {
	retention, err := room.ParseRetention(cr.Spec.Retention.Time)
	if err != nil {
		return room.Spec{}, err
	}
	if cr.Spec.ReplicationFactor > 1<<15-1 || cr.Spec.MinInSyncReplicas > 1<<15-1 {
		return room.Spec{}, fmt.Errorf("%w: replication factor and minInSyncReplicas go up to 32767", room.ErrInvalidSpec)
	}
	return room.Spec{
		Name:              cr.Name,
		Namespace:         cr.Namespace,
		Topic:             cr.Spec.TopicName,
		Partitions:        cr.Spec.Partitions,
		ReplicationFactor: int16(cr.Spec.ReplicationFactor),
		MinInSyncReplicas: int16(cr.Spec.MinInSyncReplicas),
		Retention:         retention,
		RetentionBytes:    cr.Spec.Retention.Bytes,
		MaxMessageBytes:   cr.Spec.MaxMessageBytes,
		DisplayName:       cr.Spec.DisplayName,
		Description:       cr.Spec.Description,
	}, nil
}

// desiredSpec is the defaulted, validated room.Spec of a ChatRoom; rf is
// the controller's default replication factor.
func desiredSpec(cr *chatv1alpha1.ChatRoom, rf int16) (room.Spec, error) {
	s, err := roomSpec(cr)
	if err != nil {
		return room.Spec{}, err
	}
	s = s.WithDefaults(rf)
	if err := s.Validate(); err != nil {
		return room.Spec{}, err
	}
	return s, nil
}

// topicOf is the topic a ChatRoom uses, also when its spec is invalid.
func topicOf(cr *chatv1alpha1.ChatRoom) string {
	if cr.Spec.TopicName != "" {
		return cr.Spec.TopicName
	}
	return room.DefaultTopic(cr.Namespace, cr.Name)
}
