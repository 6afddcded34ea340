package controller

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/operator/internal/topics"
	"palaver.dev/services/room"
)

// update is one reconcile's work on a ChatRoom's status: the status being
// built, and the events that go with it.
type update struct {
	cr     *chatv1alpha1.ChatRoom
	status chatv1alpha1.ChatRoomStatus
	events []roomEvent
	// quiet: the status written is a step within the reconcile, not a
	// state to announce.
	quiet bool
}

type roomEvent struct {
	warning        bool
	reason, action string
	note           string
}

func newUpdate(cr *chatv1alpha1.ChatRoom) *update {
	u := &update{cr: cr, status: *cr.Status.DeepCopy()}
	u.status.TopicID = kafkaTopicID(u.status.TopicID)
	return u
}

// kafkaTopicID spells a topic id as Kafka does (room.TopicID). Earlier
// versions of the controller wrote status.topicID in standard base64 with
// padding; such an id is the same topic, rewritten on the next status write.
func kafkaTopicID(id string) string {
	if b, err := base64.StdEncoding.DecodeString(id); err == nil && len(b) == 16 && len(id) == 24 {
		return room.TopicID([16]byte(b))
	}
	return id
}

// set sets a condition; meta.SetStatusCondition moves LastTransitionTime
// only when the status changes.
func (u *update) set(typ string, status metav1.ConditionStatus, reason, format string, args ...any) {
	meta.SetStatusCondition(&u.status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: truncate(fmt.Sprintf(format, args...)),
		ObservedGeneration: u.cr.Generation,
	})
}

// ready sets Ready and Progressing together.
func (u *update) ready(status metav1.ConditionStatus, reason, format string, args ...any) {
	u.set(chatv1alpha1.ConditionReady, status, reason, format, args...)
	switch reason {
	case chatv1alpha1.ReasonCreating, chatv1alpha1.ReasonPartitionsIncreasing, chatv1alpha1.ReasonReplicationChanging:
		u.set(chatv1alpha1.ConditionProgressing, metav1.ConditionTrue, reason, format, args...)
	case chatv1alpha1.ReasonKafkaUnreachable, chatv1alpha1.ReasonKafkaError:
		// Progressing keeps saying what the controller was doing.
		if meta.FindStatusCondition(u.status.Conditions, chatv1alpha1.ConditionProgressing) == nil {
			u.set(chatv1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, format, args...)
		}
	default:
		u.set(chatv1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, format, args...)
	}
}

// progressing sets Progressing alone, for work in progress that a Kafka
// error interrupted.
func (u *update) progressing(reason, format string, args ...any) {
	u.set(chatv1alpha1.ConditionProgressing, metav1.ConditionTrue, reason, format, args...)
}

// event queues an event, recorded once the status is written.
func (u *update) event(warning bool, reason, action, format string, args ...any) {
	u.events = append(u.events, roomEvent{warning: warning, reason: reason, action: action, note: truncate(fmt.Sprintf(format, args...))})
}

func (u *update) cond(typ string) *metav1.Condition {
	return meta.FindStatusCondition(u.status.Conditions, typ)
}

// warningReasons are the Ready reasons a user must act on (or wait out).
var warningReasons = map[string]bool{
	chatv1alpha1.ReasonInvalidConfig:            true,
	chatv1alpha1.ReasonKafkaUnreachable:         true,
	chatv1alpha1.ReasonKafkaError:               true,
	chatv1alpha1.ReasonTopicConflict:            true,
	chatv1alpha1.ReasonNameConflict:             true,
	chatv1alpha1.ReasonTopicRecreatedExternally: true,
	chatv1alpha1.ReasonTopicDeletedExternally:   true,
	chatv1alpha1.ReasonDeletionBlocked:          true,
}

// writeStatus patches the status subresource when the status changed, and
// records the events of the update, or, when there are none, one for a
// transition of Ready: events mark changes only.
func (r *ChatRoomReconciler) writeStatus(ctx context.Context, u *update) error {
	cr := u.cr
	key := client.ObjectKeyFromObject(cr)
	u.status.ObservedGeneration = cr.Generation
	before := meta.FindStatusCondition(cr.Status.Conditions, chatv1alpha1.ConditionReady)
	after := u.cond(chatv1alpha1.ConditionReady)
	if after != nil && len(u.events) == 0 && !u.quiet && (before == nil || before.Status != after.Status || before.Reason != after.Reason) {
		u.event(warningReasons[after.Reason], after.Reason, "Reconcile", "%s", after.Message)
	}
	if !equality.Semantic.DeepEqual(cr.Status, u.status) {
		base := cr.DeepCopy()
		cr.Status = *u.status.DeepCopy()
		if err := r.Status().Patch(ctx, cr, client.MergeFrom(base)); err != nil {
			cr.Status = base.Status
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("update status of chatroom %s: %w", key, err)
		}
		r.mem.get(key, cr.UID).status = cr.Status.DeepCopy()
	}
	r.Metrics.setRoom(key, &cr.Status)
	for _, e := range u.events {
		typ := corev1.EventTypeNormal
		if e.warning {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(cr, nil, typ, e.reason, e.action, "%s", e.note)
	}
	u.events, u.quiet = nil, false
	return nil
}

// kafkaReason tells a Kafka error that a user must fix (the request was
// refused) from one that retrying fixes (Kafka did not answer).
func kafkaReason(err error) string {
	var ke *kerr.Error
	switch {
	case errors.Is(err, topics.ErrUnreachable):
		return chatv1alpha1.ReasonKafkaUnreachable
	case errors.Is(err, room.ErrNotEnoughBrokers),
		errors.Is(err, kerr.InvalidReplicationFactor), errors.Is(err, kerr.InvalidPartitions),
		errors.Is(err, kerr.InvalidConfig), errors.Is(err, kerr.PolicyViolation),
		errors.Is(err, kerr.InvalidReplicaAssignment), errors.Is(err, kerr.InvalidTopicException):
		return chatv1alpha1.ReasonInvalidConfig
	case errors.As(err, &ke) && !ke.Retriable:
		return chatv1alpha1.ReasonKafkaError
	}
	return chatv1alpha1.ReasonKafkaUnreachable
}

// truncate keeps condition messages and event notes within the API's
// limits (32 KiB for a condition message, 1 KiB for an event note).
func truncate(s string) string {
	const limit = 1000
	if len(s) <= limit {
		return s
	}
	return strings.ToValidUTF8(s[:limit-3], "") + "..."
}
