// Package topics is the operator's one shared view of the Kafka cluster.
//
// Reconcilers never call Kafka directly: they read topic state from the
// View, which refreshes every tracked topic in one batched request per
// resync period and tells the owner of any topic that changed behind its
// back, and they change topics through it, which coalesces concurrent
// calls of each kind (create, grow, configure, reassign, delete) into one
// Kafka request. The provisioning logic itself is package room's, shared
// with dev mode.
package topics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/twmb/franz-go/pkg/kerr"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"palaver.dev/services/room"
)

// Errors of the view; test them with errors.Is.
var (
	// ErrUnreachable: the view's last attempt to reach Kafka failed; calls
	// fail fast until a refresh succeeds.
	ErrUnreachable = errors.New("topics: Kafka unreachable")
	errNoAnswer    = errors.New("no answer from Kafka for this topic")
)

// Options tunes the view. Zero values take the defaults.
type Options struct {
	// Resync is how often every tracked topic is re-read to find changes
	// made outside the operator (default 30 s).
	Resync time.Duration
	// RetryMin is the first wait before probing Kafka again after a failed
	// refresh; it doubles up to Resync (default 1 s).
	RetryMin time.Duration
	// Timeout bounds each Kafka request (default 10 s).
	Timeout time.Duration
	// Window is how long a batch collects calls (default 5 ms).
	Window time.Duration
	// MaxBatch caps the topics of one request (default 500).
	MaxBatch int
	// InFlight is how many requests of one kind may run at once (default
	// 1). One at a time makes the biggest batches, and Kafka creates a
	// hundred topics in one request in about the time of five requests of
	// one topic.
	InFlight int
	// Expectation is how long the view trusts a change it made over an
	// observation that does not show it yet: brokers learn of new topics,
	// partitions and configs asynchronously (default 15 s). Past it, a
	// topic whose change no observation confirmed is read from Kafka again.
	Expectation time.Duration
	// Throttle is the replication throttle of reassignments that add
	// replicas, in bytes per second per broker (Kafka's leader and follower
	// replication throttled rates); 0 leaves them unthrottled.
	Throttle int64
	Metrics  *Metrics
	Log      logr.Logger
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Resync, 30*time.Second)
	def(&o.RetryMin, time.Second)
	def(&o.Timeout, 10*time.Second)
	def(&o.Window, 5*time.Millisecond)
	def(&o.Expectation, 15*time.Second)
	if o.MaxBatch <= 0 {
		o.MaxBatch = 500
	}
	if o.InFlight <= 0 {
		o.InFlight = 1
	}
	return o
}

// Change is sent on Changes for the owner of a topic that changed.
type Change = event.TypedGenericEvent[types.NamespacedName]

// View is the shared view. Run it with Start (it is a manager.Runnable that
// needs leader election, as the reconcilers do).
type View struct {
	prov    *room.Provisioner
	opts    Options
	changes chan Change
	wake    chan struct{}
	runCtx  context.Context // Start's, for notifications

	mu      sync.Mutex
	entries map[string]*entry
	brokers []int32
	healthy bool
	lastErr error

	// throttleMu orders the changes of the brokers' throttle rate;
	// throttled holds the topics whose replicas are throttled, with the
	// replica lists set.
	throttleMu sync.Mutex
	throttled  map[string]string

	observe       *batcher[string, room.TopicState]
	create        *batcher[room.Spec, string]
	grow          *batcher[int32, struct{}]
	configure     *batcher[[]room.ConfigDrift, struct{}]
	reassign      *batcher[map[int32][]int32, struct{}]
	reassignments *batcher[struct{}, map[int32]room.Reassignment]
	replicaBytes  *batcher[[]int32, map[int32]map[int32]int64]
	remove        *batcher[struct{}, struct{}]
}

// entry is a tracked topic.
type entry struct {
	owner      types.NamespacedName
	observed   room.TopicState
	observedAt time.Time // when the request that observed it started; zero: never
	stale      bool      // re-read before use
	expect     *expectation
	// reported is the effective state as of the last observation, which
	// the next one is compared with.
	reported room.TopicState
}

// expectation is a change the view made and trusts until an observation
// confirms it or it expires.
type expectation struct {
	until      time.Time
	created    string // topic id it was created with
	rf         int16
	partitions int32
	configs    map[string]string
	removed    []string
	deleted    string // id of the topic deleted
}

// New returns a view that talks to Kafka through p.
func New(p *room.Provisioner, opts Options) *View {
	o := opts.withDefaults()
	v := &View{
		prov: p, opts: o,
		changes: make(chan Change, 4096),
		wake:    make(chan struct{}, 1),
		entries: map[string]*entry{},
		healthy: true, throttled: map[string]string{},
		runCtx: context.Background(),
	}
	v.observe = newBatcher("describe", o, v.flushObserve)
	v.create = newBatcher("create", o, v.flushCreate)
	v.grow = newBatcher("grow_partitions", o, v.flushGrow)
	v.configure = newBatcher("configure", o, v.flushConfigure)
	v.reassign = newBatcher("reassign", o, v.flushReassign)
	v.reassignments = newBatcher("list_reassignments", o, v.flushReassignments)
	v.replicaBytes = newBatcher("describe_log_dirs", o, v.flushReplicaBytes)
	v.remove = newBatcher("delete", o, v.flushDelete)
	return v
}

// Changes delivers the owners of topics that changed outside the operator
// (deleted, recreated, reconfigured, repartitioned), and every owner when
// Kafka becomes unreachable or reachable again. Feed it to the controller
// with source.Channel.
func (v *View) Changes() <-chan Change { return v.changes }

// Start runs the batchers and the periodic refresh until ctx is done.
func (v *View) Start(ctx context.Context) error {
	v.mu.Lock()
	v.runCtx = ctx
	v.mu.Unlock()
	var wg sync.WaitGroup
	for _, run := range []func(context.Context){
		v.observe.run, v.create.run, v.grow.run, v.configure.run,
		v.reassign.run, v.reassignments.run, v.replicaBytes.run, v.remove.run, v.refreshLoop,
	} {
		wg.Go(func() { run(ctx) })
	}
	wg.Wait()
	return nil
}

// Track makes the view keep topic current and tell owner about changes.
func (v *View) Track(topic string, owner types.NamespacedName) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.entries[topic]; ok {
		e.owner = owner
		return
	}
	v.entries[topic] = &entry{owner: owner}
}

// Untrack forgets topic, if owner tracks it.
func (v *View) Untrack(topic string, owner types.NamespacedName) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.entries[topic]; ok && e.owner == owner {
		delete(v.entries, topic)
	}
}

// Reachable is nil unless the view's last attempt to reach Kafka failed;
// then it is ErrUnreachable with the cause.
func (v *View) Reachable() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.healthy {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, v.lastErr)
}

// Tracked returns how many topics the view tracks.
func (v *View) Tracked() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.entries)
}

// Brokers returns the ids of the brokers seen last.
func (v *View) Brokers() []int32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.brokers)
}

// Load returns how many replicas of tracked topics each broker holds, for
// placing new replicas.
func (v *View) Load() map[int32]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	load := map[int32]int{}
	for _, b := range v.brokers {
		load[b] = 0
	}
	for _, e := range v.entries {
		for _, rs := range e.observed.Replicas {
			for _, b := range rs {
				load[b]++
			}
		}
	}
	return load
}

// Get returns a topic's state: from the view when it is current, else read
// from Kafka in the next batch. It fails fast with ErrUnreachable while
// Kafka is known to be unreachable.
func (v *View) Get(ctx context.Context, topic string) (room.TopicState, error) {
	v.mu.Lock()
	if !v.healthy {
		err := v.lastErr
		v.mu.Unlock()
		return room.TopicState{}, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if e, ok := v.entries[topic]; ok && e.current(time.Now()) {
		st := e.effective(time.Now())
		v.mu.Unlock()
		return st, nil
	}
	v.mu.Unlock()
	return v.observe.do(ctx, topic, topic)
}

// Refresh reads a topic from Kafka (in the next batch) whatever the view
// holds.
func (v *View) Refresh(ctx context.Context, topic string) (room.TopicState, error) {
	return v.observe.do(ctx, topic, topic)
}

// Invalidate makes the next Get of topic read it from Kafka.
func (v *View) Invalidate(topic string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.entries[topic]; ok {
		e.stale = true
	}
}

// Create creates a room's topic (batched) and returns its id.
func (v *View) Create(ctx context.Context, s room.Spec) (string, error) {
	id, err := v.create.do(ctx, s.Topic, s)
	if err != nil {
		v.Invalidate(s.Topic)
		return "", err
	}
	v.expectChange(s.Topic, func(x *expectation) {
		x.created, x.rf, x.partitions, x.configs = id, s.ReplicationFactor, s.Partitions, s.TopicConfigs()
	})
	return id, nil
}

// SetPartitions raises topic's partition count to n (batched).
func (v *View) SetPartitions(ctx context.Context, topic string, n int32) error {
	if _, err := v.grow.do(ctx, topic, n); err != nil {
		v.Invalidate(topic)
		return err
	}
	v.expectChange(topic, func(x *expectation) { x.partitions = n })
	return nil
}

// Configure applies drift to topic with incremental alter-configs (batched).
func (v *View) Configure(ctx context.Context, topic string, drift []room.ConfigDrift) error {
	if _, err := v.configure.do(ctx, topic, drift); err != nil {
		v.Invalidate(topic)
		return err
	}
	v.expectChange(topic, func(x *expectation) {
		if x.configs == nil {
			x.configs = map[string]string{}
		}
		for _, d := range drift {
			if d.Remove {
				x.removed = append(x.removed, d.Key)
				delete(x.configs, d.Key)
			} else {
				x.configs[d.Key] = d.Want
				x.removed = slices.DeleteFunc(x.removed, func(k string) bool { return k == d.Key })
			}
		}
	})
	return nil
}

// Reassign starts moving topic's partitions to the replica lists of plan
// (batched). The view learns the new replicas from later refreshes.
func (v *View) Reassign(ctx context.Context, topic string, plan map[int32][]int32) error {
	_, err := v.reassign.do(ctx, topic, plan)
	v.Invalidate(topic)
	return err
}

// ReplicaBytes returns the size of every replica of topic's given
// partitions (partition -> broker -> bytes), batched: one DescribeLogDirs
// request per broker for every caller.
func (v *View) ReplicaBytes(ctx context.Context, topic string, partitions []int32) (map[int32]map[int32]int64, error) {
	return v.replicaBytes.do(ctx, topic, partitions)
}

// Throttle throttles the replication of topic's moving partitions (all
// their replicas in, those being added in adding) at Options.Throttle per
// broker, until Unthrottle: the topic lists the replicas (batched with
// other config changes; again only when they changed), and every broker
// gets the rate with the first throttled topic. It returns the rate, 0
// when Options.Throttle is 0 or no replica is being added.
func (v *View) Throttle(ctx context.Context, topic string, in, adding map[int32][]int32) (int64, error) {
	drift := room.ThrottledReplicas(in, adding)
	if v.opts.Throttle <= 0 || drift == nil {
		return 0, nil
	}
	lists := drift[0].Want + " " + drift[1].Want
	v.throttleMu.Lock()
	done := v.throttled[topic] == lists
	v.throttleMu.Unlock()
	if done {
		return v.opts.Throttle, nil
	}
	if _, err := v.configure.do(ctx, topic, drift); err != nil {
		return 0, fmt.Errorf("throttle the replicas of %s: %w", topic, err)
	}
	v.throttleMu.Lock()
	defer v.throttleMu.Unlock()
	if len(v.throttled) == 0 {
		if err := v.setThrottleRate(ctx, v.opts.Throttle); err != nil {
			return 0, err
		}
	}
	v.throttled[topic] = lists
	return v.opts.Throttle, nil
}

// Unthrottle removes the throttle of topic's replicas once its
// reassignment is over, and the brokers' rate with the last throttled
// topic (also one throttled before the controller restarted). It is safe
// to call for a topic that was not throttled.
func (v *View) Unthrottle(ctx context.Context, topic string) error {
	if _, err := v.configure.do(ctx, topic, room.Unthrottled()); err != nil {
		return fmt.Errorf("remove the replication throttle of %s: %w", topic, err)
	}
	v.throttleMu.Lock()
	defer v.throttleMu.Unlock()
	delete(v.throttled, topic)
	if len(v.throttled) > 0 || v.opts.Throttle <= 0 {
		return nil // the rate still serves, or was never set
	}
	return v.setThrottleRate(ctx, 0)
}

// setThrottleRate sets (or, for 0, removes) the replication throttle rate
// of every broker. The caller holds throttleMu.
func (v *View) setThrottleRate(ctx context.Context, rate int64) error {
	ctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	defer cancel()
	brokers := v.Brokers()
	began := time.Now()
	err := v.prov.SetThrottleRate(ctx, brokers, rate)
	v.opts.Metrics.request("throttle_rate", time.Since(began), err)
	if err != nil {
		v.failed(err)
	}
	return err
}

// Reassignments returns topic's partition reassignments in progress
// (batched: one request lists them for every caller).
func (v *View) Reassignments(ctx context.Context, topic string) (map[int32]room.Reassignment, error) {
	return v.reassignments.do(ctx, topic, struct{}{})
}

// Delete deletes topic (batched); id is the topic id expected, so that the
// view does not show the deleted topic while brokers catch up.
func (v *View) Delete(ctx context.Context, topic, id string) error {
	if _, err := v.remove.do(ctx, topic, struct{}{}); err != nil {
		v.Invalidate(topic)
		return err
	}
	v.expectChange(topic, func(x *expectation) { *x = expectation{until: x.until, deleted: id} })
	return nil
}

// expectChange records a change the view made to topic.
func (v *View) expectChange(topic string, change func(*expectation)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.entries[topic]
	if !ok {
		return
	}
	if e.expect == nil {
		e.expect = &expectation{}
	}
	now := time.Now()
	e.expect.until = now.Add(v.opts.Expectation)
	change(e.expect)
	e.settle(now)
	// The owner made this change: it is no news to it.
	if !e.observedAt.IsZero() {
		e.reported = e.effective(now)
	}
}

// current tells whether the entry answers a Get without asking Kafka: it
// was observed, nothing made it stale, and no change the view made went
// unconfirmed past its expectation. An observation that does not show such
// a change was made before it (the read that preceded a create) or lagged
// behind it, so once the view stops trusting the change, that observation
// says nothing about the topic now; taking it for the truth would show a
// topic just created as deleted until the next resync.
func (e *entry) current(now time.Time) bool {
	return !e.observedAt.IsZero() && !e.stale && (e.expect == nil || !now.After(e.expect.until))
}

// effective is the topic as the view believes it is: the last observation
// with the changes the view made since applied on top.
func (e *entry) effective(now time.Time) room.TopicState {
	st := e.observed
	st.Configs = maps.Clone(st.Configs)
	st.ConfigSources = maps.Clone(st.ConfigSources)
	x := e.expect
	if x == nil || now.After(x.until) {
		return st
	}
	if x.deleted != "" {
		return room.TopicState{Topic: st.Topic}
	}
	if x.created != "" && (!st.Exists || st.ID != x.created) {
		st = room.TopicState{Topic: st.Topic, Exists: true, ID: x.created, ReplicationFactor: x.rf,
			Configs: map[string]string{}, ConfigSources: map[string]string{}}
	}
	if st.Configs == nil {
		st.Configs, st.ConfigSources = map[string]string{}, map[string]string{}
	}
	st.Partitions = max(st.Partitions, x.partitions)
	for k, val := range x.configs {
		st.Configs[k] = val
		st.ConfigSources[k] = dynamicTopicConfig
	}
	for _, k := range x.removed {
		delete(st.Configs, k)
		delete(st.ConfigSources, k)
	}
	return st
}

const dynamicTopicConfig = "DYNAMIC_TOPIC_CONFIG"

// settle drops the expectation once the observation shows it, or once it
// expired.
func (e *entry) settle(now time.Time) {
	x := e.expect
	if x == nil {
		return
	}
	if now.After(x.until) || e.confirms(x) {
		e.expect = nil
	}
}

func (e *entry) confirms(x *expectation) bool {
	st := e.observed
	if x.deleted != "" {
		return !st.Exists || st.ID != x.deleted
	}
	if x.created != "" && (!st.Exists || st.ID != x.created) {
		return false
	}
	if st.Partitions < x.partitions {
		return false
	}
	for k, val := range x.configs {
		if st.Configs[k] != val {
			return false
		}
	}
	for _, k := range x.removed {
		if st.ConfigSources[k] == dynamicTopicConfig {
			return false
		}
	}
	return true
}

// material tells whether two states differ in a way the owner must see.
// Keys one state lacks (a state the view made up after a create) are not
// compared.
func material(a, b room.TopicState) bool {
	if a.Exists != b.Exists || a.ID != b.ID || a.Partitions != b.Partitions || a.ReplicationFactor != b.ReplicationFactor {
		return true
	}
	if !maps.EqualFunc(a.Replicas, b.Replicas, slices.Equal) && a.Replicas != nil && b.Replicas != nil {
		return true
	}
	for k, av := range a.Configs {
		if bv, ok := b.Configs[k]; ok && av != bv {
			return true
		}
	}
	for k, as := range a.ConfigSources {
		if bs, ok := b.ConfigSources[k]; ok && as != bs {
			return true
		}
	}
	return false
}

// record stores an observation made by a request that started at began,
// unless a newer one is already stored, and returns the topic's effective
// state and whether it changed materially since the last observation (an
// expectation that expired without being confirmed counts as a change).
func (v *View) record(topic string, st room.TopicState, began time.Time) (room.TopicState, bool) {
	e, ok := v.entries[topic]
	if !ok {
		return st, false
	}
	now := time.Now()
	if began.Before(e.observedAt) {
		return e.effective(now), false
	}
	seen := !e.observedAt.IsZero()
	e.observed, e.observedAt, e.stale = st, began, false
	e.settle(now)
	after := e.effective(now)
	changed := seen && material(e.reported, after)
	e.reported = after
	return after, changed
}

// setHealth records whether Kafka answered, and returns every owner when
// that changed (they all have something new to report).
func (v *View) setHealth(err error) []types.NamespacedName {
	healthy := err == nil
	v.opts.Metrics.setUp(healthy)
	if healthy {
		v.lastErr = nil
	} else {
		v.lastErr = err
	}
	if v.healthy == healthy {
		return nil
	}
	v.healthy = healthy
	if healthy {
		v.opts.Log.Info("Kafka is reachable again")
	} else {
		v.opts.Log.Info("Kafka is unreachable", "err", err.Error())
	}
	owners := make([]types.NamespacedName, 0, len(v.entries))
	for _, e := range v.entries {
		owners = append(owners, e.owner)
	}
	return owners
}

// refreshLoop re-reads every tracked topic each Resync, and probes Kafka
// with backoff (from RetryMin up to Resync) while it is unreachable.
func (v *View) refreshLoop(ctx context.Context) {
	wait := v.opts.Resync
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-v.wake:
			timer.Stop() // since Go 1.23, no stale tick remains
		}
		if err := v.refresh(ctx); err != nil {
			if wait >= v.opts.Resync {
				wait = v.opts.RetryMin
			} else {
				wait = min(2*wait, v.opts.Resync)
			}
		} else {
			wait = v.opts.Resync
		}
		timer.Reset(wait)
	}
}

// refresh reads every tracked topic in one request and notifies the owners
// of those that changed.
func (v *View) refresh(ctx context.Context) error {
	v.mu.Lock()
	topics := slices.Sorted(maps.Keys(v.entries))
	v.mu.Unlock()

	began := time.Now()
	rctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	d, err := v.prov.Describe(rctx, topics...)
	cancel()
	v.opts.Metrics.observe("refresh", len(topics), time.Since(began), err)
	if ctx.Err() != nil {
		return ctx.Err()
	}

	v.mu.Lock()
	notify := v.setHealth(err)
	if err == nil {
		v.brokers = d.Brokers
		for _, t := range topics {
			if terr := d.Errs[t]; terr != nil {
				v.opts.Metrics.topicError("refresh")
				if e, ok := v.entries[t]; ok && !e.stale {
					e.stale = true // the owner's next Get shows the error
					notify = append(notify, e.owner)
				}
				continue
			}
			if _, changed := v.record(t, d.Topics[t], began); changed {
				notify = append(notify, v.entries[t].owner)
			}
		}
	}
	v.mu.Unlock()
	v.opts.Log.V(1).Info("refreshed the cluster view", "topics", len(topics), "changed", len(notify), "took", time.Since(began), "err", err)
	v.notify(notify)
	return err
}

// notify sends owners (each once) on Changes, blocking while the
// controller catches up, until the view stops.
func (v *View) notify(owners []types.NamespacedName) {
	if len(owners) == 0 {
		return
	}
	v.mu.Lock()
	ctx := v.runCtx
	v.mu.Unlock()
	slices.SortFunc(owners, func(a, b types.NamespacedName) int {
		if a.Namespace != b.Namespace {
			return strings.Compare(a.Namespace, b.Namespace)
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, o := range slices.Compact(owners) {
		select {
		case v.changes <- Change{Object: o}:
		case <-ctx.Done():
			return
		}
	}
}

// failed records a failed request. When Kafka did not answer at all (as
// opposed to refusing the request), it is unreachable until a refresh
// succeeds, which the refresh loop now tries at once.
func (v *View) failed(err error) {
	var kerrErr *kerr.Error
	if errors.As(err, &kerrErr) || errors.Is(err, context.Canceled) {
		return
	}
	v.mu.Lock()
	notify := v.setHealth(err)
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
	v.notify(notify)
}

func (v *View) flushObserve(ctx context.Context, items map[string]string) (map[string]result[room.TopicState], error) {
	topics := slices.Sorted(maps.Keys(items))
	began := time.Now()
	d, err := v.prov.Describe(ctx, topics...)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	out := make(map[string]result[room.TopicState], len(topics))
	v.mu.Lock()
	v.setHealth(nil)
	v.brokers = d.Brokers
	for _, t := range topics {
		if terr := d.Errs[t]; terr != nil {
			v.opts.Metrics.topicError("describe")
			out[t] = result[room.TopicState]{err: terr}
			continue
		}
		st, _ := v.record(t, d.Topics[t], began)
		out[t] = result[room.TopicState]{val: st}
	}
	v.mu.Unlock()
	return out, nil
}

// perTopic turns per-topic errors into answers, counting the errors.
func perTopic[R any](v *View, op string, errs map[string]error, val func(string) R) map[string]result[R] {
	out := make(map[string]result[R], len(errs))
	for t, err := range errs {
		if err != nil {
			v.opts.Metrics.topicError(op)
			out[t] = result[R]{err: err}
			continue
		}
		var r R
		if val != nil {
			r = val(t)
		}
		out[t] = result[R]{val: r}
	}
	return out
}

func (v *View) flushCreate(ctx context.Context, items map[string]room.Spec) (map[string]result[string], error) {
	ids, errs, err := v.prov.Create(ctx, slices.Collect(maps.Values(items))...)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	return perTopic(v, "create", errs, func(t string) string { return ids[t] }), nil
}

func (v *View) flushGrow(ctx context.Context, items map[string]int32) (map[string]result[struct{}], error) {
	errs, err := v.prov.SetPartitions(ctx, items)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	return perTopic[struct{}](v, "grow_partitions", errs, nil), nil
}

func (v *View) flushConfigure(ctx context.Context, items map[string][]room.ConfigDrift) (map[string]result[struct{}], error) {
	errs, err := v.prov.Configure(ctx, items)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	return perTopic[struct{}](v, "configure", errs, nil), nil
}

func (v *View) flushReassign(ctx context.Context, items map[string]map[int32][]int32) (map[string]result[struct{}], error) {
	errs, err := v.prov.Reassign(ctx, items)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	return perTopic[struct{}](v, "reassign", errs, nil), nil
}

func (v *View) flushReassignments(ctx context.Context, items map[string]struct{}) (map[string]result[map[int32]room.Reassignment], error) {
	all, err := v.prov.Reassignments(ctx)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	out := make(map[string]result[map[int32]room.Reassignment], len(items))
	for t := range items {
		out[t] = result[map[int32]room.Reassignment]{val: all[t]}
	}
	return out, nil
}

func (v *View) flushReplicaBytes(ctx context.Context, items map[string][]int32) (map[string]result[map[int32]map[int32]int64], error) {
	all, err := v.prov.ReplicaBytes(ctx, items)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	out := make(map[string]result[map[int32]map[int32]int64], len(items))
	for t := range items {
		out[t] = result[map[int32]map[int32]int64]{val: all[t]}
	}
	return out, nil
}

func (v *View) flushDelete(ctx context.Context, items map[string]struct{}) (map[string]result[struct{}], error) {
	errs, err := v.prov.Delete(ctx, slices.Sorted(maps.Keys(items))...)
	if err != nil {
		v.failed(err)
		return nil, err
	}
	return perTopic[struct{}](v, "delete", errs, nil), nil
}
