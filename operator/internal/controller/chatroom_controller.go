// Package controller holds the operator's reconcilers.
package controller

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
)

// ChatRoomReconciler makes each ChatRoom's Kafka topic match its spec.
//
// For now it only records which generation it has seen; the Kafka side
// comes with the topic management work.
type ChatRoomReconciler struct {
	client.Client
	Recorder events.EventRecorder

	// KafkaBootstrapServers are the brokers the topics live on.
	KafkaBootstrapServers []string
	// DefaultReplicationFactor applies to ChatRooms that set none.
	DefaultReplicationFactor int32
}

// +kubebuilder:rbac:groups=chat.palaver.dev,resources=chatrooms,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=chat.palaver.dev,resources=chatrooms/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=chat.palaver.dev,resources=chatrooms/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Reconcile brings one ChatRoom's topic to its spec and reports what it saw.
func (r *ChatRoomReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)

	var room chatv1alpha1.ChatRoom
	if err := r.Get(ctx, req.NamespacedName, &room); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if room.Status.ObservedGeneration == room.Generation {
		return ctrl.Result{}, nil
	}
	base := room.DeepCopy()
	room.Status.ObservedGeneration = room.Generation
	if err := r.Status().Patch(ctx, &room, client.MergeFrom(base)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("update status of chatroom %s: %w", req.NamespacedName, err)
	}
	log.V(1).Info("observed generation", "generation", room.Generation)
	return ctrl.Result{}, nil
}

// SetupWithManager registers the reconciler with mgr.
func (r *ChatRoomReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&chatv1alpha1.ChatRoom{}).
		Named("chatroom").
		Complete(r)
}
