// Package controller holds the operator's reconcilers.
package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/operator/internal/topics"
	"palaver.dev/services/room"
)

// Field indexes of ChatRooms in the manager's cache.
const (
	indexRoom  = "chatroom.room"  // metadata.name: the registry key
	indexTopic = "chatroom.topic" // the topic the ChatRoom uses
)

// Registry writes the room registry topic (topics.Registry).
type Registry interface {
	Publish(ctx context.Context, in room.Info) error
	Tombstone(ctx context.Context, name string) error
}

// ChatRoomReconciler makes each ChatRoom's Kafka topic match its spec,
// publishes the room to the registry topic, and reports what it found.
type ChatRoomReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// View is the shared view of the Kafka cluster all reads and changes
	// go through.
	View     *topics.View
	Registry Registry
	Metrics  *Metrics // nil: none

	// DefaultReplicationFactor applies to ChatRooms that set none.
	DefaultReplicationFactor int16
	// DeletionTimeout is how long a deletion waits for Kafka before the
	// finalizer is released anyway (default 5 min).
	DeletionTimeout time.Duration
	// RetryMin and RetryMax bound a room's exponential backoff after a
	// Kafka error (default 1 s and 5 min).
	RetryMin, RetryMax time.Duration
	// ProgressInterval is how often a replica reassignment's progress is
	// read (default 5 s).
	ProgressInterval time.Duration
	// MaxConcurrentReconciles defaults to 64: reconciles mostly wait on
	// the API server and on batched Kafka calls, so more of them make
	// bigger batches.
	MaxConcurrentReconciles int
	// SkipNameValidation lets tests run several managers in one process.
	SkipNameValidation bool

	mem     *memory
	backoff workqueue.TypedRateLimiter[reconcile.Request]
}

// The controller reads and patches ChatRooms (finalizer), patches their
// status and records events. Leader election's Lease is in a namespaced
// Role (config/rbac/leader_election_role.yaml). Kafka credentials are
// mounted files, not read through the API.
// +kubebuilder:rbac:groups=chat.palaver.dev,resources=chatrooms,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=chat.palaver.dev,resources=chatrooms/status,verbs=get;patch
// +kubebuilder:rbac:groups=chat.palaver.dev,resources=chatrooms/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one ChatRoom's topic to its spec and reports what it saw.
func (r *ChatRoomReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cr chatv1alpha1.ChatRoom
	if err := r.Get(ctx, req.NamespacedName, &cr); err != nil {
		if client.IgnoreNotFound(err) == nil {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	m := r.mem.get(req.NamespacedName, cr.UID)
	if m.status != nil {
		cr.Status = *m.status.DeepCopy()
	}
	logf.FromContext(ctx).V(1).Info("reconcile", "generation", cr.Generation, "remembered", m.status != nil, "conditions", len(cr.Status.Conditions))

	if !cr.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, req, &cr)
	}
	if !controllerutil.ContainsFinalizer(&cr, chatv1alpha1.Finalizer) {
		base := cr.DeepCopy()
		controllerutil.AddFinalizer(&cr, chatv1alpha1.Finalizer)
		if err := r.Patch(ctx, &cr, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer to chatroom %s: %w", req.NamespacedName, err)
		}
	}

	u := newUpdate(&cr)
	res := r.provision(ctx, req, u, m)
	if err := r.writeStatus(ctx, u); err != nil {
		return ctrl.Result{}, err
	}
	if res.RequeueAfter == 0 {
		r.backoff.Forget(req) // nothing failed: the next failure backs off from the start
	}
	return res, nil
}

// provision does the work and fills u; the result asks for a retry or a
// progress check.
func (r *ChatRoomReconciler) provision(ctx context.Context, req ctrl.Request, u *update, m *memo) ctrl.Result {
	cr := u.cr
	u.status.TopicName = topicOf(cr)
	spec, err := desiredSpec(cr, r.DefaultReplicationFactor)
	if err != nil {
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonInvalidConfig, "%v", err)
		return ctrl.Result{}
	}
	if reason, msg, err := r.conflict(ctx, cr); err != nil {
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonKafkaError, "check other ChatRooms: %v", err)
		return ctrl.Result{RequeueAfter: r.backoff.When(req)}
	} else if reason != "" {
		r.untrack(req.NamespacedName, m)
		u.ready(metav1.ConditionFalse, reason, "%s", msg)
		return ctrl.Result{}
	}

	if m.topic != spec.Topic {
		r.View.Track(spec.Topic, req.NamespacedName)
		m.topic = spec.Topic
	}
	ts, err := r.View.Get(ctx, spec.Topic)
	if err != nil {
		return r.kafkaFailed(req, u, "read topic "+spec.Topic, err)
	}

	owned := u.status.TopicID
	if !ts.Exists && owned != "" {
		// The room's topic is gone only if Kafka says so now: never on a
		// read made before the room's last look at it.
		if ts, err = r.View.Refresh(ctx, spec.Topic); err != nil {
			return r.kafkaFailed(req, u, "read topic "+spec.Topic, err)
		}
	}
	switch {
	case !ts.Exists:
		return r.create(ctx, req, u, m, spec, owned)
	case owned == "":
		creating := u.cond(chatv1alpha1.ConditionProgressing)
		resumed := creating != nil && creating.Status == metav1.ConditionTrue && creating.Reason == chatv1alpha1.ReasonCreating
		switch {
		case resumed:
			// This controller asked Kafka to create the topic and stopped
			// before it learnt the answer.
			u.event(false, "TopicCreated", "Create", "found topic %s (id %s), created by an earlier attempt", spec.Topic, ts.ID)
		case cr.Spec.AdoptExisting:
			u.event(false, "TopicAdopted", "Adopt", "adopted the existing topic %s (id %s)", spec.Topic, ts.ID)
		default:
			u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonTopicConflict,
				"topic %s already exists and was not created for this ChatRoom; set spec.adoptExisting: true to take it over", spec.Topic)
			return ctrl.Result{}
		}
	case owned != ts.ID:
		if !cr.Spec.AdoptExisting {
			u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonTopicRecreatedExternally,
				"topic %s was deleted and recreated outside the operator (topic id %s, this room's was %s); set spec.adoptExisting: true to take over the new topic",
				spec.Topic, ts.ID, owned)
			return ctrl.Result{}
		}
		u.event(true, "TopicAdopted", "Adopt", "topic %s was recreated outside the operator (topic id %s, was %s); adopted it", spec.Topic, ts.ID, owned)
	}
	u.status.TopicID = ts.ID
	return r.maintain(ctx, req, u, m, spec, ts)
}

// create creates a missing topic. owned is the id of the topic the room
// had, if any: then it was deleted outside the operator.
func (r *ChatRoomReconciler) create(ctx context.Context, req ctrl.Request, u *update, m *memo, spec room.Spec, owned string) ctrl.Result {
	cr := u.cr
	u.status.Partitions, u.status.ReplicationFactor, u.status.Reassignment = 0, 0, nil
	if cr.Spec.Paused {
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonPaused, "topic %s does not exist; the ChatRoom is paused", spec.Topic)
		return ctrl.Result{}
	}
	if owned != "" && cr.Spec.DriftPolicy == chatv1alpha1.DriftPolicyReport && r.specApplied(u) {
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonTopicDeletedExternally,
			"topic %s (id %s) was deleted outside the operator; driftPolicy Report keeps the controller from recreating it", spec.Topic, owned)
		r.Metrics.driftFound("reported")
		return ctrl.Result{}
	}
	if brokers := r.View.Brokers(); len(brokers) > 0 && int(spec.ReplicationFactor) > len(brokers) {
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonInvalidConfig,
			"replicationFactor %d exceeds the %d broker(s) of the Kafka cluster", spec.ReplicationFactor, len(brokers))
		return ctrl.Result{RequeueAfter: r.RetryMax}
	}

	// Say Creating before asking Kafka: if the controller stops before it
	// learns the answer, the next attempt finds the topic and knows it is
	// this room's.
	u.status.TopicID = ""
	u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonCreating, "creating topic %s", spec.Topic)
	u.quiet = true
	if err := r.writeStatus(ctx, u); err != nil {
		return ctrl.Result{RequeueAfter: r.backoff.When(req)}
	}
	id, err := r.View.Create(ctx, spec)
	switch {
	case err == nil:
	case errors.Is(err, room.ErrTopicExists) && owned != "":
		return r.reappeared(ctx, req, u, m, spec, owned)
	case errors.Is(err, room.ErrTopicExists):
		// Made by someone else between the read and the create: not ours.
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonTopicConflict,
			"topic %s was created outside the operator while this ChatRoom was creating it; set spec.adoptExisting: true to take it over", spec.Topic)
		return ctrl.Result{}
	default:
		return r.kafkaFailed(req, u, "create topic "+spec.Topic, err)
	}
	r.backoff.Forget(req)
	u.status.TopicID = id
	u.status.Partitions, u.status.ReplicationFactor = spec.Partitions, int32(spec.ReplicationFactor)
	if owned != "" {
		u.event(true, chatv1alpha1.ReasonTopicDeletedExternally, "Create",
			"topic %s (id %s) was deleted outside the operator; created it again, empty (id %s)", spec.Topic, owned, id)
		r.Metrics.driftFound("corrected")
	}
	u.event(false, "TopicCreated", "Create", "created topic %s (id %s): %d partition(s), replication factor %d",
		spec.Topic, id, spec.Partitions, spec.ReplicationFactor)
	u.set(chatv1alpha1.ConditionConfigDrift, metav1.ConditionFalse, chatv1alpha1.ReasonInSync, "topic %s matches the spec", spec.Topic)
	return r.publish(ctx, req, u, m, spec)
}

// reappeared handles a create refused because the topic exists, after
// Kafka had just said that the room's topic (id owned) was gone: if the
// topic there is the room's own, it never went, and the room carries on
// with it; if it is another, someone recreated it in between.
func (r *ChatRoomReconciler) reappeared(ctx context.Context, req ctrl.Request, u *update, m *memo, spec room.Spec, owned string) ctrl.Result {
	u.status.TopicID = owned
	ts, err := r.View.Refresh(ctx, spec.Topic)
	switch {
	case err != nil:
		return r.kafkaFailed(req, u, "read topic "+spec.Topic, err)
	case !ts.Exists:
		// Kafka both has the name and shows no topic: a deletion still
		// under way. Look again.
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonCreating, "topic %s is still being deleted in Kafka; creating it again once it is gone", spec.Topic)
		return ctrl.Result{RequeueAfter: r.backoff.When(req)}
	case ts.ID != owned && u.cr.Spec.AdoptExisting:
		u.event(true, "TopicAdopted", "Adopt", "topic %s was recreated outside the operator (topic id %s, was %s); adopted it", spec.Topic, ts.ID, owned)
		u.status.TopicID = ts.ID
	case ts.ID != owned:
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonTopicRecreatedExternally,
			"topic %s was deleted and recreated outside the operator (topic id %s, this room's was %s); set spec.adoptExisting: true to take over the new topic",
			spec.Topic, ts.ID, owned)
		return ctrl.Result{}
	}
	return r.maintain(ctx, req, u, m, spec, ts)
}

// kafkaFailed reports a failed Kafka call and schedules the room's next
// attempt with exponential backoff.
func (r *ChatRoomReconciler) kafkaFailed(req ctrl.Request, u *update, what string, err error) ctrl.Result {
	reason := kafkaReason(err)
	status := metav1.ConditionFalse
	if reason == chatv1alpha1.ReasonKafkaUnreachable && u.status.TopicID != "" {
		// The topic was there when last seen; now nobody knows.
		status = metav1.ConditionUnknown
	}
	u.ready(status, reason, "%s: %v", what, err)
	return ctrl.Result{RequeueAfter: r.backoff.When(req)}
}

// specApplied tells whether the current generation's spec was applied
// once already: under driftPolicy Report, a difference found after that is
// drift to report, one found before is the user's change to apply.
func (r *ChatRoomReconciler) specApplied(u *update) bool {
	c := u.cond(chatv1alpha1.ConditionConfigDrift)
	return c != nil && c.ObservedGeneration == u.cr.Generation
}

// conflict finds an older ChatRoom that holds the same room name (in
// another namespace: room names are global) or the same topic. Deleting
// ChatRooms keep their claim until they are gone, so that the next one
// publishes only after the old entry's tombstone.
func (r *ChatRoomReconciler) conflict(ctx context.Context, cr *chatv1alpha1.ChatRoom) (reason, msg string, err error) {
	if o, err := r.oldestClaimant(ctx, cr, indexRoom, cr.Name); err != nil {
		return "", "", err
	} else if o != nil {
		return chatv1alpha1.ReasonNameConflict, fmt.Sprintf(
			"room name %q is taken by the older ChatRoom %s/%s; room names are global (users join rooms by name), so rename this one",
			cr.Name, o.Namespace, o.Name), nil
	}
	if o, err := r.oldestClaimant(ctx, cr, indexTopic, topicOf(cr)); err != nil {
		return "", "", err
	} else if o != nil {
		return chatv1alpha1.ReasonTopicConflict, fmt.Sprintf("topic %s is used by the older ChatRoom %s/%s", topicOf(cr), o.Namespace, o.Name), nil
	}
	return "", "", nil
}

// oldestClaimant returns the oldest other ChatRoom with value in index if
// it is older than cr (by creation time, then namespace), else nil.
func (r *ChatRoomReconciler) oldestClaimant(ctx context.Context, cr *chatv1alpha1.ChatRoom, index, value string) (*chatv1alpha1.ChatRoom, error) {
	var list chatv1alpha1.ChatRoomList
	if err := r.List(ctx, &list, client.MatchingFields{index: value}); err != nil {
		return nil, fmt.Errorf("list chatrooms by %s: %w", index, err)
	}
	var oldest *chatv1alpha1.ChatRoom
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID != cr.UID && older(o, cr) && (oldest == nil || older(o, oldest)) {
			oldest = o
		}
	}
	return oldest, nil
}

func older(a, b *chatv1alpha1.ChatRoom) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	// Creation times have one-second resolution. Within the same second, a
	// room that already has its topic keeps its claim: a newcomer must never
	// take over a room that users are in.
	if ap, bp := a.Status.TopicID != "", b.Status.TopicID != ""; ap != bp {
		return ap
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

func (r *ChatRoomReconciler) untrack(key types.NamespacedName, m *memo) {
	if m.topic != "" {
		r.View.Untrack(m.topic, key)
		m.topic = ""
	}
}

// forget drops what the controller keeps of a ChatRoom that is gone.
func (r *ChatRoomReconciler) forget(key types.NamespacedName) {
	if m, ok := r.mem.lookup(key); ok {
		r.untrack(key, m)
	}
	r.mem.forget(key)
	r.backoff.Forget(reconcile.Request{NamespacedName: key})
	r.Metrics.deleteRoom(key)
}

// SetupWithManager registers the reconciler, its cache indexes and the
// view's change notifications with mgr. The view must be added to mgr as a
// runnable too.
func (r *ChatRoomReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.DeletionTimeout <= 0 {
		r.DeletionTimeout = 5 * time.Minute
	}
	if r.RetryMin <= 0 {
		r.RetryMin = time.Second
	}
	if r.RetryMax <= 0 {
		r.RetryMax = 5 * time.Minute
	}
	if r.ProgressInterval <= 0 {
		r.ProgressInterval = 5 * time.Second
	}
	if r.MaxConcurrentReconciles <= 0 {
		r.MaxConcurrentReconciles = 64
	}
	r.mem = newMemory()
	r.backoff = workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](r.RetryMin, r.RetryMax)

	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &chatv1alpha1.ChatRoom{}, indexRoom, func(o client.Object) []string {
		return []string{o.GetName()}
	}); err != nil {
		return fmt.Errorf("index chatrooms by room: %w", err)
	}
	if err := idx.IndexField(ctx, &chatv1alpha1.ChatRoom{}, indexTopic, func(o client.Object) []string {
		return []string{topicOf(o.(*chatv1alpha1.ChatRoom))}
	}); err != nil {
		return fmt.Errorf("index chatrooms by topic: %w", err)
	}

	skip := r.SkipNameValidation
	return ctrl.NewControllerManagedBy(mgr).
		For(&chatv1alpha1.ChatRoom{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, deletionStarted{}))).
		// When a ChatRoom goes, the younger ones that wanted its room name
		// or topic get their turn.
		Watches(&chatv1alpha1.ChatRoom{}, handler.EnqueueRequestsFromMapFunc(r.claimants),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc:  func(event.CreateEvent) bool { return false },
				UpdateFunc:  func(event.UpdateEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
			})).
		WatchesRawSource(source.Channel(r.View.Changes(), handler.TypedEnqueueRequestsFromMapFunc(
			func(_ context.Context, key types.NamespacedName) []reconcile.Request {
				return []reconcile.Request{{NamespacedName: key}}
			}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles, SkipNameValidation: &skip}).
		Named("chatroom").
		Complete(r)
}

// claimants maps a deleted ChatRoom to the ChatRooms that share its room
// name or topic.
func (r *ChatRoomReconciler) claimants(ctx context.Context, o client.Object) []reconcile.Request {
	cr, ok := o.(*chatv1alpha1.ChatRoom)
	if !ok {
		return nil
	}
	var reqs []reconcile.Request
	for index, value := range map[string]string{indexRoom: cr.Name, indexTopic: topicOf(cr)} {
		var list chatv1alpha1.ChatRoomList
		if err := r.List(ctx, &list, client.MatchingFields{index: value}); err != nil {
			continue
		}
		for _, other := range list.Items {
			if other.UID != cr.UID {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&other)})
			}
		}
	}
	return reqs
}

// deletionStarted passes the update that sets a deletion timestamp.
type deletionStarted struct{ predicate.Funcs }

func (deletionStarted) Update(e event.UpdateEvent) bool {
	return e.ObjectOld != nil && e.ObjectNew != nil &&
		e.ObjectOld.GetDeletionTimestamp() == nil && e.ObjectNew.GetDeletionTimestamp() != nil
}
