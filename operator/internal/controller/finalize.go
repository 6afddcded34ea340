package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

// finalize cleans up after a deleted ChatRoom: it removes the room from
// the registry (if the room name was this ChatRoom's) and, under
// deletionPolicy Delete, deletes the topic (if it is still the one this
// room made). Then it releases the finalizer. When Kafka cannot be reached,
// it retries with backoff and reports DeletionBlocked, and releases the
// finalizer anyway DeletionTimeout after the deletion began, so that a
// namespace never hangs in Terminating because Kafka is gone.
func (r *ChatRoomReconciler) finalize(ctx context.Context, req ctrl.Request, cr *chatv1alpha1.ChatRoom) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	if !controllerutil.ContainsFinalizer(cr, chatv1alpha1.Finalizer) {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	u := newUpdate(cr)
	var failures []string
	topic := topicOf(cr)
	id := u.status.TopicID

	// The registry entry, unless an older ChatRoom elsewhere holds the name.
	nameOwner, err := r.oldestClaimant(ctx, cr, indexRoom, cr.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if nameOwner == nil {
		if err := r.Registry.Tombstone(ctx, cr.Name); err != nil {
			failures = append(failures, fmt.Sprintf("remove room %q from the registry: %v", cr.Name, err))
		}
	}

	// The topic.
	switch {
	case cr.Spec.DeletionPolicy != chatv1alpha1.DeletionPolicyDelete || id == "":
	case cr.Spec.Paused:
		u.event(false, "TopicRetained", "Delete", "the ChatRoom is paused: topic %s is left in Kafka", topic)
	default:
		ts, err := r.View.Refresh(ctx, topic)
		switch {
		case err != nil:
			failures = append(failures, fmt.Sprintf("read topic %s: %v", topic, err))
		case !ts.Exists:
		case ts.ID != id:
			u.event(true, "TopicRetained", "Delete", "topic %s (id %s) is not the one this room made (id %s): left in Kafka", topic, ts.ID, id)
		default:
			if err := r.View.Delete(ctx, topic, id); err != nil {
				failures = append(failures, fmt.Sprintf("delete topic %s: %v", topic, err))
			} else {
				u.event(false, "TopicDeleted", "Delete", "deleted topic %s (id %s)", topic, id)
			}
		}
	}

	if len(failures) > 0 {
		deadline := cr.DeletionTimestamp.Add(r.DeletionTimeout)
		msg := strings.Join(failures, "; ")
		if wait := time.Until(deadline); wait > 0 {
			u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonDeletionBlocked,
				"cannot clean up in Kafka: %s; retrying, and deleting the ChatRoom without cleaning up at %s", msg, deadline.UTC().Format(time.RFC3339))
			if err := r.writeStatus(ctx, u); err != nil {
				return ctrl.Result{}, err
			}
			return ctrl.Result{RequeueAfter: min(r.backoff.When(req), wait)}, nil
		}
		u.event(true, "DeletionReleased", "Delete",
			"gave up cleaning up in Kafka after %s: %s; the registry entry and topic %s may remain", r.DeletionTimeout, msg, topic)
		log.Info("released a ChatRoom without cleaning up in Kafka", "topic", topic, "failures", msg)
	}
	// Record the events against the object while it still exists.
	if err := r.writeStatus(ctx, u); err != nil {
		return ctrl.Result{}, err
	}

	base := cr.DeepCopy()
	controllerutil.RemoveFinalizer(cr, chatv1alpha1.Finalizer)
	if err := r.Patch(ctx, cr, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("remove finalizer of chatroom %s: %w", req.NamespacedName, err)
	}
	r.forget(req.NamespacedName)
	return ctrl.Result{}, nil
}
