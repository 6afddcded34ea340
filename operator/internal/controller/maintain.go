package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
)

// maintain keeps an existing topic of this room at its spec: partitions,
// then configuration, then replication factor, reporting or correcting
// drift by the room's policy; then it publishes the room.
func (r *ChatRoomReconciler) maintain(ctx context.Context, req ctrl.Request, u *update, m *memo, spec room.Spec, ts room.TopicState) ctrl.Result {
	cr := u.cr
	if len(ts.Replicas) == 0 {
		// The view made this state up after creating the topic; placing
		// replicas needs the real one.
		var err error
		if ts, err = r.View.Refresh(ctx, spec.Topic); err != nil {
			return r.kafkaFailed(req, u, "read topic "+spec.Topic, err)
		}
	}
	u.status.Partitions, u.status.ReplicationFactor = ts.Partitions, int32(ts.ReplicationFactor)
	applied := r.specApplied(u)
	// Under Report, the controller applies a new spec once and then leaves
	// the topic alone; under Enforce, it always restores the spec.
	enforce := !cr.Spec.Paused && (cr.Spec.DriftPolicy != chatv1alpha1.DriftPolicyReport || !applied)
	var drift []string // differences left in place

	// Partitions.
	switch {
	case ts.Partitions > spec.Partitions:
		drift = append(drift, fmt.Sprintf("partitions: spec %d, topic %d (Kafka cannot remove partitions)", spec.Partitions, ts.Partitions))
	case ts.Partitions < spec.Partitions && !enforce:
		drift = append(drift, fmt.Sprintf("partitions: spec %d, topic %d", spec.Partitions, ts.Partitions))
	case ts.Partitions < spec.Partitions:
		if err := r.View.SetPartitions(ctx, spec.Topic, spec.Partitions); err != nil {
			u.progressing(chatv1alpha1.ReasonPartitionsIncreasing, "adding partitions to %s: %d -> %d", spec.Topic, ts.Partitions, spec.Partitions)
			return r.kafkaFailed(req, u, fmt.Sprintf("grow topic %s to %d partitions", spec.Topic, spec.Partitions), err)
		}
		u.event(false, "PartitionsIncreased", "Update", "topic %s: %d -> %d partitions", spec.Topic, ts.Partitions, spec.Partitions)
		u.status.Partitions = spec.Partitions
	}

	// Replication: a reassignment under way, or one to start.
	rf := int(spec.ReplicationFactor)
	var moving map[int32]room.Reassignment
	if unevenRF(ts, rf) || u.status.Reassignment != nil {
		var err error
		if moving, err = r.View.Reassignments(ctx, spec.Topic); err != nil {
			return r.kafkaFailed(req, u, "list reassignments of "+spec.Topic, err)
		}
		// Progress is read from fresh metadata, not the view's last refresh.
		if u.status.Reassignment != nil || len(moving) > 0 {
			if ts, err = r.View.Refresh(ctx, spec.Topic); err != nil {
				return r.kafkaFailed(req, u, "read topic "+spec.Topic, err)
			}
		}
	}
	reassigning := len(moving) > 0
	uneven := unevenRF(ts, rf)
	u.status.ReplicationFactor = int32(settledRF(ts, moving))

	// Configuration. min.insync.replicas never goes above the replicas in
	// sync: it rises only once a reassignment that adds replicas is done,
	// and falls before one that removes them starts.
	eff := spec
	if n := int16(u.status.ReplicationFactor); n > 0 && eff.MinInSyncReplicas > n {
		eff.MinInSyncReplicas = n
	}
	diffs := room.Drift(eff, ts)
	if reassigning {
		diffs = slices.DeleteFunc(diffs, func(d room.ConfigDrift) bool {
			return d.Key == "min.insync.replicas" && d.Want > d.Have
		})
	}
	if len(diffs) > 0 {
		if !enforce {
			for _, d := range diffs {
				drift = append(drift, describeDrift(d))
			}
		} else {
			if err := r.View.Configure(ctx, spec.Topic, diffs); err != nil {
				return r.kafkaFailed(req, u, "configure topic "+spec.Topic, err)
			}
			list := make([]string, len(diffs))
			for i, d := range diffs {
				list[i] = describeDrift(d)
			}
			if applied {
				r.Metrics.driftFound("corrected")
				u.event(true, "DriftCorrected", "Update", "topic %s was changed outside the operator; restored %s", spec.Topic, strings.Join(list, "; "))
			} else {
				u.event(false, "ConfigUpdated", "Update", "topic %s: %s", spec.Topic, strings.Join(list, "; "))
			}
		}
	}

	// Replication factor.
	switch {
	case reassigning:
		total, done := int32(len(ts.Replicas)), int32(0)
		for p, rs := range ts.Replicas {
			if _, ok := moving[p]; !ok && len(rs) == rf {
				done++
			}
		}
		in, adding := map[int32][]int32{}, map[int32][]int32{}
		for p, m := range moving {
			in[p], adding[p] = m.Replicas, m.AddingReplicas
		}
		sizes, err := r.View.ReplicaBytes(ctx, spec.Topic, slices.Sorted(maps.Keys(moving)))
		if err != nil {
			return r.kafkaFailed(req, u, "read the replica sizes of topic "+spec.Topic, err)
		}
		// Again after a restart of the controller, or when the data moves
		// differently from the plan.
		throttle, err := r.View.Throttle(ctx, spec.Topic, in, adding)
		if err != nil {
			return r.kafkaFailed(req, u, "throttle the reassignment of topic "+spec.Topic, err)
		}
		ra := u.status.Reassignment
		if ra == nil || ra.TargetReplicationFactor != int32(rf) {
			ra = &chatv1alpha1.Reassignment{TargetReplicationFactor: int32(rf), StartedAt: ptrTo(metav1.Now())}
		}
		ra.PartitionsTotal, ra.PartitionsDone, ra.Throttle = total, done, throttle
		ra.BytesRemaining = bytesRemaining(moving, sizes)
		u.status.Reassignment = ra
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonReplicationChanging,
			"moving replicas of topic %s to replication factor %d: %d of %d partitions done", spec.Topic, rf, done, total)
		return ctrl.Result{RequeueAfter: r.ProgressInterval}
	case uneven && !enforce:
		drift = append(drift, fmt.Sprintf("replicationFactor: spec %d, topic %d", rf, u.status.ReplicationFactor))
	case uneven && len(ts.Replicas) == 0:
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonReplicationChanging,
			"waiting for Kafka to show the replicas of topic %s before moving them to replication factor %d", spec.Topic, rf)
		return ctrl.Result{RequeueAfter: r.ProgressInterval}
	case uneven:
		brokers := r.View.Brokers()
		plan, err := room.PlanReplicas(ts.Replicas, rf, brokers, r.View.Load())
		if err != nil {
			u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonInvalidConfig,
				"replicationFactor %d exceeds the %d broker(s) of the Kafka cluster", rf, len(brokers))
			return ctrl.Result{RequeueAfter: r.RetryMax}
		}
		in, adding := map[int32][]int32{}, map[int32][]int32{}
		for p, next := range plan {
			cur := ts.Replicas[p]
			add := slices.DeleteFunc(slices.Clone(next), func(b int32) bool { return slices.Contains(cur, b) })
			in[p], adding[p] = append(slices.Clone(cur), add...), add
		}
		// The throttle goes first, so that no byte moves unthrottled.
		throttle, err := r.View.Throttle(ctx, spec.Topic, in, adding)
		if err != nil {
			u.progressing(chatv1alpha1.ReasonReplicationChanging, "moving replicas of topic %s to replication factor %d", spec.Topic, rf)
			return r.kafkaFailed(req, u, "throttle the reassignment of topic "+spec.Topic, err)
		}
		if err := r.View.Reassign(ctx, spec.Topic, plan); err != nil {
			u.progressing(chatv1alpha1.ReasonReplicationChanging, "moving replicas of topic %s to replication factor %d", spec.Topic, rf)
			return r.kafkaFailed(req, u, fmt.Sprintf("reassign topic %s to replication factor %d", spec.Topic, rf), err)
		}
		u.status.Reassignment = &chatv1alpha1.Reassignment{
			TargetReplicationFactor: int32(rf), PartitionsTotal: int32(len(ts.Replicas)),
			PartitionsDone: int32(len(ts.Replicas) - len(plan)), Throttle: throttle, StartedAt: ptrTo(metav1.Now()),
		}
		u.event(false, "ReplicationChanging", "Update", "topic %s: moving %d partition(s) from replication factor %d to %d",
			spec.Topic, len(plan), u.status.ReplicationFactor, rf)
		u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonReplicationChanging,
			"moving replicas of topic %s to replication factor %d: %d of %d partitions done",
			spec.Topic, rf, u.status.Reassignment.PartitionsDone, u.status.Reassignment.PartitionsTotal)
		return ctrl.Result{RequeueAfter: r.ProgressInterval}
	case u.status.Reassignment != nil:
		if err := r.View.Unthrottle(ctx, spec.Topic); err != nil {
			return r.kafkaFailed(req, u, "remove the replication throttle of topic "+spec.Topic, err)
		}
		u.event(false, "ReplicationChanged", "Update", "topic %s: replication factor %d", spec.Topic, rf)
		u.status.Reassignment = nil
	}

	if len(drift) > 0 {
		msg := fmt.Sprintf("topic %s differs from the spec: %s", spec.Topic, strings.Join(drift, "; "))
		if c := u.cond(chatv1alpha1.ConditionConfigDrift); c == nil || c.Status != metav1.ConditionTrue || c.Message != truncate(msg) {
			r.Metrics.driftFound("reported")
			u.event(true, chatv1alpha1.ReasonDriftDetected, "Observe", "%s", msg)
		}
		u.set(chatv1alpha1.ConditionConfigDrift, metav1.ConditionTrue, chatv1alpha1.ReasonDriftDetected, "%s", msg)
	} else {
		u.set(chatv1alpha1.ConditionConfigDrift, metav1.ConditionFalse, chatv1alpha1.ReasonInSync, "topic %s matches the spec", spec.Topic)
	}

	if cr.Spec.Paused {
		if len(drift) > 0 {
			u.ready(metav1.ConditionFalse, chatv1alpha1.ReasonPaused, "topic %s differs from the spec; the ChatRoom is paused, so the controller changes nothing in Kafka", spec.Topic)
		} else {
			u.ready(metav1.ConditionTrue, chatv1alpha1.ReasonPaused, "topic %s matches the spec; the ChatRoom is paused, so the controller changes nothing in Kafka", spec.Topic)
		}
		return ctrl.Result{}
	}
	return r.publish(ctx, req, u, m, spec)
}

// publish writes the room's registry entry when it changed, then reports
// the room Ready.
func (r *ChatRoomReconciler) publish(ctx context.Context, req ctrl.Request, u *update, m *memo, spec room.Spec) ctrl.Result {
	info := spec.Info()
	info.Partitions = max(info.Partitions, u.status.Partitions)
	if m.published == nil || *m.published != info {
		if err := r.Registry.Publish(ctx, info); err != nil {
			return r.kafkaFailed(req, u, "publish the room to "+room.RegistryTopic, err)
		}
		m.published = &info
	}
	r.backoff.Forget(req)
	u.ready(metav1.ConditionTrue, chatv1alpha1.ReasonProvisioned, "topic %s: %d partition(s), replication factor %d",
		spec.Topic, u.status.Partitions, u.status.ReplicationFactor)
	return ctrl.Result{}
}

func describeDrift(d room.ConfigDrift) string {
	if d.Remove {
		return fmt.Sprintf("%s: override %s removed (broker default)", d.Key, d.Have)
	}
	return fmt.Sprintf("%s: spec %s, topic %s", d.Key, d.Want, orNone(d.Have))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func ptrTo[T any](v T) *T { return &v }

// bytesRemaining is what the replicas being added have yet to copy: for
// each, the size of the largest replica in place less its own.
func bytesRemaining(moving map[int32]room.Reassignment, sizes map[int32]map[int32]int64) int64 {
	var left int64
	for p, m := range moving {
		var source int64
		for _, b := range m.Replicas {
			if !slices.Contains(m.AddingReplicas, b) {
				source = max(source, sizes[p][b])
			}
		}
		for _, b := range m.AddingReplicas {
			left += max(source-sizes[p][b], 0)
		}
	}
	return left
}

// unevenRF tells whether some partition of the topic does not have rf
// replicas.
func unevenRF(ts room.TopicState, rf int) bool {
	if len(ts.Replicas) == 0 {
		return ts.Exists && int(ts.ReplicationFactor) != rf
	}
	return slices.ContainsFunc(slices.Collect(maps.Values(ts.Replicas)), func(rs []int32) bool { return len(rs) != rf })
}

// settledRF is the replication factor the topic has for sure: the fewest
// replicas of a partition, not counting replicas still being added (while
// data moves, the metadata lists old and new replicas together).
func settledRF(ts room.TopicState, moving map[int32]room.Reassignment) int {
	if len(ts.Replicas) == 0 {
		return int(ts.ReplicationFactor) // a topic the view made up after creating it
	}
	n := -1
	for p, rs := range ts.Replicas {
		k := len(rs)
		if ra, ok := moving[p]; ok {
			k -= len(ra.AddingReplicas)
		}
		if n < 0 || k < n {
			n = k
		}
	}
	return max(n, 0)
}
