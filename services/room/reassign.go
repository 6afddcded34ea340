package room

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrNotEnoughBrokers: a replication factor above the number of brokers
// cannot be placed.
var ErrNotEnoughBrokers = errors.New("room: replication factor exceeds the number of brokers")

// PlanReplicas returns the replica lists that give every partition of a
// topic rf replicas, for the partitions that need a change only (none when
// every partition has rf replicas).
//
// Replicas that stay keep their order, so the first one, the preferred
// leader, stays first and leadership does not move needlessly. A partition
// short of replicas gets the brokers that hold the fewest replicas, by load
// (replicas per broker id, updated as replicas are placed; nil counts only
// this topic), ties broken by partition so that partitions spread; one with
// too many drops replicas from the end of its list.
func PlanReplicas(current map[int32][]int32, rf int, brokers []int32, load map[int32]int) (map[int32][]int32, error) {
	if rf < 1 || rf > len(brokers) {
		return nil, fmt.Errorf("%w: replication factor %d, %d brokers", ErrNotEnoughBrokers, rf, len(brokers))
	}
	if load == nil {
		load = map[int32]int{}
		for _, rs := range current {
			for _, b := range rs {
				load[b]++
			}
		}
	}
	brokers = slices.Sorted(slices.Values(brokers))
	plan := map[int32][]int32{}
	for _, p := range slices.Sorted(maps.Keys(current)) {
		rs := current[p]
		if len(rs) == rf {
			continue
		}
		next := slices.Clone(rs)
		if len(next) > rf {
			for _, b := range next[rf:] {
				load[b]--
			}
			next = next[:rf]
		}
		for len(next) < rf {
			// Rotate the candidates by partition so equal loads spread.
			var candidates []int32
			for i := range brokers {
				b := brokers[(i+int(p))%len(brokers)]
				if !slices.Contains(next, b) {
					candidates = append(candidates, b)
				}
			}
			best := slices.MinFunc(candidates, func(a, b int32) int { return cmp.Compare(load[a], load[b]) })
			next = append(next, best)
			load[best]++
		}
		plan[p] = next
	}
	return plan, nil
}

// Reassign starts partition reassignments (topic -> partition -> new
// replica list) with one AlterPartitionAssignments request. Kafka copies
// the data to new replicas in the background and drops removed ones once
// the new ones are in sync; Reassignments reports progress. It returns each
// topic's error (the first of its partitions').
func (p *Provisioner) Reassign(ctx context.Context, plans map[string]map[int32][]int32) (map[string]error, error) {
	req := kmsg.NewPtrAlterPartitionAssignmentsRequest()
	req.TimeoutMillis = 30_000
	for _, t := range slices.Sorted(maps.Keys(plans)) {
		rt := kmsg.NewAlterPartitionAssignmentsRequestTopic()
		rt.Topic = t
		for _, part := range slices.Sorted(maps.Keys(plans[t])) {
			rp := kmsg.NewAlterPartitionAssignmentsRequestTopicPartition()
			rp.Partition = part
			rp.Replicas = plans[t][part]
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err == nil {
		err = topicErr(resp.ErrorCode, resp.ErrorMessage, "reassign partitions of %d topics", len(plans))
	}
	if err != nil {
		return nil, fmt.Errorf("room: reassign partitions of %d topics: %w", len(plans), err)
	}
	errs := make(map[string]error, len(plans))
	for _, rt := range resp.Topics {
		errs[rt.Topic] = nil
		for _, rp := range rt.Partitions {
			if e := topicErr(rp.ErrorCode, rp.ErrorMessage, "reassign %s-%d", rt.Topic, rp.Partition); e != nil {
				errs[rt.Topic] = e
				break
			}
		}
	}
	return errs, nil
}

// Reassignment is a partition reassignment in progress.
type Reassignment struct {
	Replicas         []int32 // every replica, old and new
	AddingReplicas   []int32
	RemovingReplicas []int32
}

// Reassignments lists every partition reassignment in progress in the
// cluster (topic -> partition -> reassignment), in one request.
func (p *Provisioner) Reassignments(ctx context.Context) (map[string]map[int32]Reassignment, error) {
	req := kmsg.NewPtrListPartitionReassignmentsRequest()
	req.TimeoutMillis = 30_000
	req.Topics = nil // all of them
	resp, err := req.RequestWith(ctx, p.client)
	if err == nil {
		if e := kerr.ErrorForCode(resp.ErrorCode); e != nil {
			err = e
			if resp.ErrorMessage != nil {
				err = fmt.Errorf("%w: %s", e, *resp.ErrorMessage)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("room: list partition reassignments: %w", err)
	}
	out := map[string]map[int32]Reassignment{}
	for _, rt := range resp.Topics {
		ps := map[int32]Reassignment{}
		for _, rp := range rt.Partitions {
			ps[rp.Partition] = Reassignment{Replicas: rp.Replicas, AddingReplicas: rp.AddingReplicas, RemovingReplicas: rp.RemovingReplicas}
		}
		out[rt.Topic] = ps
	}
	return out, nil
}

// Kafka's replication throttle, as kafka-reassign-partitions.sh --throttle
// sets it: a rate per broker, applying only to the replicas a topic lists.
const (
	// LeaderThrottleRate and FollowerThrottleRate are broker configs: the
	// bytes per second a broker sends to, and fetches for, throttled
	// replicas.
	LeaderThrottleRate   = "leader.replication.throttled.rate"
	FollowerThrottleRate = "follower.replication.throttled.rate"
	// LeaderThrottledReplicas and FollowerThrottledReplicas are topic
	// configs: the partition:broker replicas whose replication is throttled
	// on the sending and on the fetching side.
	LeaderThrottledReplicas   = "leader.replication.throttled.replicas"
	FollowerThrottledReplicas = "follower.replication.throttled.replicas"
)

// ThrottledReplicas returns the topic configs that throttle moving
// partitions: the replicas in place send (leader side), the ones being
// added fetch (follower side). in maps each moving partition to all its
// replicas, old and new, and adding to the ones being added. It returns
// nil when no replica is being added: removing replicas copies nothing.
func ThrottledReplicas(in, adding map[int32][]int32) []ConfigDrift {
	var leaders, followers []string
	for _, p := range slices.Sorted(maps.Keys(in)) {
		for _, b := range slices.Sorted(slices.Values(in[p])) {
			r := fmt.Sprintf("%d:%d", p, b)
			if slices.Contains(adding[p], b) {
				followers = append(followers, r)
			} else {
				leaders = append(leaders, r)
			}
		}
	}
	if len(followers) == 0 {
		return nil
	}
	return []ConfigDrift{
		{Key: LeaderThrottledReplicas, Want: strings.Join(leaders, ",")},
		{Key: FollowerThrottledReplicas, Want: strings.Join(followers, ",")},
	}
}

// Unthrottled returns the drift that removes a topic's throttled replicas.
func Unthrottled() []ConfigDrift {
	return []ConfigDrift{{Key: LeaderThrottledReplicas, Remove: true}, {Key: FollowerThrottledReplicas, Remove: true}}
}

// SetThrottleRate sets the leader and follower replication throttle rates
// of brokers to rate bytes per second, or removes them when rate is 0, in
// one incremental alter-configs request.
func (p *Provisioner) SetThrottleRate(ctx context.Context, brokers []int32, rate int64) error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	for _, b := range brokers {
		r := kmsg.NewIncrementalAlterConfigsRequestResource()
		r.ResourceType = kmsg.ConfigResourceTypeBroker
		r.ResourceName = strconv.Itoa(int(b))
		for _, k := range []string{LeaderThrottleRate, FollowerThrottleRate} {
			c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			c.Name = k
			if rate > 0 {
				c.Op = kmsg.IncrementalAlterConfigOpSet
				c.Value = kmsg.StringPtr(strconv.FormatInt(rate, 10))
			} else {
				c.Op = kmsg.IncrementalAlterConfigOpDelete
			}
			r.Configs = append(r.Configs, c)
		}
		req.Resources = append(req.Resources, r)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return fmt.Errorf("room: set the replication throttle of %d brokers: %w", len(brokers), err)
	}
	var errs error
	for _, r := range resp.Resources {
		errs = errors.Join(errs, topicErr(r.ErrorCode, r.ErrorMessage, "set the replication throttle of broker %s", r.ResourceName))
	}
	return errs
}

// ReplicaBytes returns the size of every replica of the given partitions
// (topic -> partitions), on every broker that holds one: topic ->
// partition -> broker -> bytes, as the brokers' DescribeLogDirs answers
// say (one request per broker). A replica being added grows towards the
// size of the ones in place as it copies their data.
func (p *Provisioner) ReplicaBytes(ctx context.Context, partitions map[string][]int32) (map[string]map[int32]map[int32]int64, error) {
	set := kadm.TopicsSet{}
	for t, ps := range partitions {
		set.Add(t, ps...)
	}
	all, err := p.adm.DescribeAllLogDirs(ctx, set)
	if err != nil {
		return nil, fmt.Errorf("room: describe the log dirs of %d topics: %w", len(partitions), err)
	}
	out := make(map[string]map[int32]map[int32]int64, len(partitions))
	all.Each(func(d kadm.DescribedLogDir) {
		d.Topics.Each(func(dp kadm.DescribedLogDirPartition) {
			if dp.IsFuture {
				return // a copy moving between directories of one broker
			}
			if out[dp.Topic] == nil {
				out[dp.Topic] = map[int32]map[int32]int64{}
			}
			if out[dp.Topic][dp.Partition] == nil {
				out[dp.Topic][dp.Partition] = map[int32]int64{}
			}
			out[dp.Topic][dp.Partition][dp.Broker] = dp.Size
		})
	})
	return out, nil
}
