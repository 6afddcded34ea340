package room

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Errors of provisioning; test them with errors.Is.
var (
	// ErrTopicExists: the topic exists but was not made for this room, and
	// adopting it was not allowed.
	ErrTopicExists = errors.New("room: topic already exists")
	// ErrPartitionDecrease: Kafka cannot remove partitions.
	ErrPartitionDecrease = errors.New("room: partitions cannot decrease")
)

// TopicState is what Kafka says about a topic.
type TopicState struct {
	Topic             string
	Exists            bool
	ID                string // topic id as Kafka spells it (TopicID); changes when a topic is recreated
	Partitions        int32
	ReplicationFactor int16             // of the partition with the fewest replicas
	Replicas          map[int32][]int32 // partition -> replica broker ids
	Configs           map[string]string // topic-level values of the keys Palaver manages
	ConfigSources     map[string]string // where each value comes from (e.g. DYNAMIC_TOPIC_CONFIG)
}

// TopicID spells a topic id as Kafka's own tools do (kafka-topics.sh
// --describe, the broker logs): URL-safe base64 without padding, so that
// one can be searched with the other.
func TopicID(id [16]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// ConfigDrift is one managed setting whose value differs from the spec.
type ConfigDrift struct {
	Key, Want, Have string
	// Remove is set when the spec leaves Key to the broker default but the
	// topic overrides it; Want is then empty and applying the drift deletes
	// the override.
	Remove bool
}

// dynamicTopicConfig is the source of a value set on the topic itself (as
// opposed to a broker or cluster default).
var dynamicTopicConfig = kmsg.ConfigSourceDynamicTopicConfig.String()

// managedKeys are the topic settings Palaver manages: every key TopicConfigs
// can return.
var managedKeys = slices.Sorted(maps.Keys(Spec{MinInSyncReplicas: 1, Retention: DefaultRetention, RetentionBytes: 1, MaxMessageBytes: 1}.TopicConfigs()))

// Drift compares a topic's configuration with what the spec asks for.
func Drift(s Spec, st TopicState) []ConfigDrift {
	want := s.TopicConfigs()
	var out []ConfigDrift
	for _, k := range managedKeys {
		have := st.Configs[k]
		w, ok := want[k]
		switch {
		case ok && have != w:
			out = append(out, ConfigDrift{Key: k, Want: w, Have: have})
		case !ok && st.ConfigSources[k] == dynamicTopicConfig:
			out = append(out, ConfigDrift{Key: k, Have: have, Remove: true})
		}
	}
	return out
}

// Provisioner creates and maintains room topics through the Kafka admin API.
// Every call is batched: one request for any number of topics.
type Provisioner struct {
	client *kgo.Client
	adm    *kadm.Client
}

// NewProvisioner uses client (see kafkabus.Config.AdminClient).
func NewProvisioner(client *kgo.Client) *Provisioner {
	return &Provisioner{client: client, adm: kadm.NewClient(client)}
}

// Brokers returns the number of brokers in the cluster, which bounds the
// replication factor.
func (p *Provisioner) Brokers(ctx context.Context) (int, error) {
	md, err := p.adm.BrokerMetadata(ctx)
	if err != nil {
		return 0, fmt.Errorf("room: broker metadata: %w", err)
	}
	return len(md.Brokers), nil
}

// Description is what Kafka says about the cluster and some topics.
type Description struct {
	// Brokers are the ids of the live brokers, sorted.
	Brokers []int32
	// Topics has an entry for every topic asked about; Exists is false for
	// a missing one and for one in Errs.
	Topics map[string]TopicState
	// Errs holds the topics Kafka answered with an error for (for example
	// TOPIC_AUTHORIZATION_FAILED), so one bad topic does not fail the rest.
	Errs map[string]error
}

// Observe describes topics: partitions, replicas, id and managed configs,
// in one metadata request and one describe-configs request. An error for
// any one topic fails the call; Describe reports them per topic.
func (p *Provisioner) Observe(ctx context.Context, topics ...string) (map[string]TopicState, error) {
	if len(topics) == 0 {
		return map[string]TopicState{}, nil
	}
	d, err := p.Describe(ctx, topics...)
	if err != nil {
		return nil, err
	}
	for _, t := range slices.Sorted(maps.Keys(d.Errs)) {
		return nil, d.Errs[t]
	}
	return d.Topics, nil
}

// Describe reads the live brokers and the given topics (any number, none
// included) in one metadata request and one describe-configs request for
// the managed keys only. A request that fails as a whole (Kafka unreachable)
// is the returned error; a topic Kafka refuses to describe is in Errs.
func (p *Provisioner) Describe(ctx context.Context, topics ...string) (Description, error) {
	d := Description{Topics: make(map[string]TopicState, len(topics)), Errs: map[string]error{}}
	// A direct metadata request: kadm's cached metadata (up to 5 s old)
	// would hide a topic that was just deleted and recreated. A non-nil
	// empty list asks for no topic (nil would ask for all of them).
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = make([]kmsg.MetadataRequestTopic, 0, len(topics))
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return d, fmt.Errorf("room: describe %d topics: %w", len(topics), err)
	}
	for _, b := range resp.Brokers {
		d.Brokers = append(d.Brokers, b.NodeID)
	}
	slices.Sort(d.Brokers)
	for _, t := range topics {
		d.Topics[t] = TopicState{Topic: t}
	}
	var existing []string
	for _, md := range resp.Topics {
		if md.Topic == nil {
			continue
		}
		t := *md.Topic
		err := kerr.ErrorForCode(md.ErrorCode)
		switch {
		case errors.Is(err, kerr.UnknownTopicOrPartition) || err == nil && len(md.Partitions) == 0:
			continue
		case err != nil:
			d.Errs[t] = fmt.Errorf("room: describe topic %q: %w", t, err)
			continue
		}
		st := TopicState{Topic: t, Exists: true, ID: TopicID(md.TopicID), Partitions: int32(len(md.Partitions)),
			Replicas: make(map[int32][]int32, len(md.Partitions)), ReplicationFactor: -1}
		for _, pd := range md.Partitions {
			st.Replicas[pd.Partition] = pd.Replicas
			if n := int16(len(pd.Replicas)); st.ReplicationFactor < 0 || n < st.ReplicationFactor {
				st.ReplicationFactor = n
			}
		}
		d.Topics[t] = st
		existing = append(existing, t)
	}
	if len(existing) == 0 {
		return d, nil
	}
	creq := kmsg.NewPtrDescribeConfigsRequest()
	for _, t := range existing {
		r := kmsg.NewDescribeConfigsRequestResource()
		r.ResourceType = kmsg.ConfigResourceTypeTopic
		r.ResourceName = t
		r.ConfigNames = managedKeys
		creq.Resources = append(creq.Resources, r)
	}
	cresp, err := creq.RequestWith(ctx, p.client)
	if err != nil {
		return d, fmt.Errorf("room: describe configs of %d topics: %w", len(existing), err)
	}
	for _, rc := range cresp.Resources {
		st, ok := d.Topics[rc.ResourceName]
		if !ok {
			continue
		}
		if err := kerr.ErrorForCode(rc.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				// Deleted (or not yet propagated) between the two requests.
				d.Topics[rc.ResourceName] = TopicState{Topic: rc.ResourceName}
				continue
			}
			if rc.ErrorMessage != nil {
				err = fmt.Errorf("%w: %s", err, *rc.ErrorMessage)
			}
			d.Errs[rc.ResourceName] = fmt.Errorf("room: describe configs of %q: %w", rc.ResourceName, err)
			d.Topics[rc.ResourceName] = TopicState{Topic: rc.ResourceName}
			continue
		}
		st.Configs = map[string]string{}
		st.ConfigSources = map[string]string{}
		for _, c := range rc.Configs {
			if !slices.Contains(managedKeys, c.Name) {
				continue // a broker that ignores ConfigNames sends every key
			}
			if c.Value != nil {
				st.Configs[c.Name] = *c.Value
			}
			st.ConfigSources[c.Name] = c.Source.String()
		}
		d.Topics[rc.ResourceName] = st
	}
	return d, nil
}

// Create creates the topics of specs in one request. It returns each
// topic's error (nil when created) keyed by topic, and the new topic ids,
// once every broker knows the created topics and their partitions have
// leaders, so that a producer can write to them at once. It waits for that
// for at most 30 seconds (or until ctx ends), then returns the created
// topics all the same.
func (p *Provisioner) Create(ctx context.Context, specs ...Spec) (ids map[string]string, errs map[string]error, err error) {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 30_000
	for _, s := range specs {
		t := kmsg.NewCreateTopicsRequestTopic()
		t.Topic = s.Topic
		t.NumPartitions = s.Partitions
		t.ReplicationFactor = s.ReplicationFactor
		for _, k := range slices.Sorted(maps.Keys(s.TopicConfigs())) {
			c := kmsg.NewCreateTopicsRequestTopicConfig()
			c.Name = k
			c.Value = kmsg.StringPtr(s.TopicConfigs()[k])
			t.Configs = append(t.Configs, c)
		}
		req.Topics = append(req.Topics, t)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return nil, nil, fmt.Errorf("room: create %d topics: %w", len(specs), err)
	}
	ids, errs = map[string]string{}, map[string]error{}
	for _, t := range resp.Topics {
		if e := kerr.ErrorForCode(t.ErrorCode); e != nil {
			if errors.Is(e, kerr.TopicAlreadyExists) {
				e = fmt.Errorf("%w: %q", ErrTopicExists, t.Topic)
			} else if t.ErrorMessage != nil {
				e = fmt.Errorf("%w: %s", e, *t.ErrorMessage)
			}
			errs[t.Topic] = e
			continue
		}
		errs[t.Topic] = nil
		ids[t.Topic] = TopicID(t.TopicID)
	}
	// Best effort: the topics exist either way, and failing the call would
	// make a retry find them already there and take them for someone else's.
	_ = p.awaitWritable(ctx, slices.Sorted(maps.Keys(ids)))
	return ids, errs, nil
}

// GrowPartitions raises a topic's partition count to n.
func (p *Provisioner) GrowPartitions(ctx context.Context, topic string, n int32) error {
	errs, err := p.SetPartitions(ctx, map[string]int32{topic: n})
	if err == nil {
		err = errs[topic]
	}
	return err
}

// SetPartitions raises the partition counts of topics (topic -> new count)
// in one request, and returns each topic's error (nil when done).
func (p *Provisioner) SetPartitions(ctx context.Context, counts map[string]int32) (map[string]error, error) {
	req := kmsg.NewPtrCreatePartitionsRequest()
	req.TimeoutMillis = 30_000
	for _, t := range slices.Sorted(maps.Keys(counts)) {
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic = t
		rt.Count = counts[t]
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return nil, fmt.Errorf("room: grow partitions of %d topics: %w", len(counts), err)
	}
	errs := make(map[string]error, len(counts))
	for _, t := range resp.Topics {
		errs[t.Topic] = topicErr(t.ErrorCode, t.ErrorMessage, "grow %q to %d partitions", t.Topic, counts[t.Topic])
	}
	return errs, nil
}

// ApplyConfigs sets the drifted keys on a topic with incremental
// alter-configs, leaving every other topic setting alone.
func (p *Provisioner) ApplyConfigs(ctx context.Context, topic string, drift []ConfigDrift) error {
	if len(drift) == 0 {
		return nil
	}
	errs, err := p.Configure(ctx, map[string][]ConfigDrift{topic: drift})
	if err == nil {
		err = errs[topic]
	}
	return err
}

// Configure applies drift (topic -> drifted keys) with one incremental
// alter-configs request: each key is set to Want, or its topic override
// deleted when Remove is set; no other setting changes. It returns each
// topic's error (nil when done).
func (p *Provisioner) Configure(ctx context.Context, drift map[string][]ConfigDrift) (map[string]error, error) {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	for _, t := range slices.Sorted(maps.Keys(drift)) {
		r := kmsg.NewIncrementalAlterConfigsRequestResource()
		r.ResourceType = kmsg.ConfigResourceTypeTopic
		r.ResourceName = t
		for _, d := range drift[t] {
			c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			c.Name = d.Key
			if d.Remove {
				c.Op = kmsg.IncrementalAlterConfigOpDelete
			} else {
				c.Op = kmsg.IncrementalAlterConfigOpSet
				c.Value = kmsg.StringPtr(d.Want)
			}
			r.Configs = append(r.Configs, c)
		}
		req.Resources = append(req.Resources, r)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return nil, fmt.Errorf("room: configure %d topics: %w", len(drift), err)
	}
	errs := make(map[string]error, len(drift))
	for _, r := range resp.Resources {
		errs[r.ResourceName] = topicErr(r.ErrorCode, r.ErrorMessage, "configure %q", r.ResourceName)
	}
	return errs, nil
}

// DeleteTopics deletes topics in one request.
func (p *Provisioner) DeleteTopics(ctx context.Context, topics ...string) error {
	errs, err := p.Delete(ctx, topics...)
	if err != nil {
		return err
	}
	var all error
	for _, t := range slices.Sorted(maps.Keys(errs)) {
		all = errors.Join(all, errs[t])
	}
	return all
}

// Delete deletes topics in one request and returns each topic's error; a
// topic that does not exist is not an error. Kafka deletes asynchronously:
// the topic may stay visible for a moment.
func (p *Provisioner) Delete(ctx context.Context, topics ...string) (map[string]error, error) {
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = 30_000
	for _, t := range topics {
		rt := kmsg.NewDeleteTopicsRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
		req.TopicNames = append(req.TopicNames, t)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return nil, fmt.Errorf("room: delete %d topics: %w", len(topics), err)
	}
	errs := make(map[string]error, len(topics))
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		if t.ErrorCode == kerr.UnknownTopicOrPartition.Code {
			errs[*t.Topic] = nil
			continue
		}
		errs[*t.Topic] = topicErr(t.ErrorCode, t.ErrorMessage, "delete %q", *t.Topic)
	}
	return errs, nil
}

// topicErr is nil for code 0, else the Kafka error with its message and
// what was being done.
func topicErr(code int16, msg *string, format string, args ...any) error {
	err := kerr.ErrorForCode(code)
	if err == nil {
		return nil
	}
	if msg != nil && *msg != "" {
		err = fmt.Errorf("%w: %s", err, *msg)
	}
	return fmt.Errorf("room: "+format+": %w", append(args, err)...)
}

// EnsureRegistry creates the compacted registry topic if it is missing, and
// returns once every broker can take writes to it.
func (p *Provisioner) EnsureRegistry(ctx context.Context, rf int16) error {
	configs := map[string]*string{
		"cleanup.policy":      kmsg.StringPtr("compact"),
		"min.insync.replicas": kmsg.StringPtr(strconv.Itoa(int(min(rf, 2)))),
	}
	res, err := p.adm.CreateTopic(ctx, 1, rf, configs, RegistryTopic)
	if err == nil {
		err = res.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("room: create registry topic %s: %w", RegistryTopic, err)
	}
	// Also when it already exists: another process may have created it a
	// moment ago.
	return p.awaitWritable(ctx, []string{RegistryTopic})
}

// Ensure makes every spec's topic exist with its partitions and configs,
// adopting topics that already exist. It is dev mode's whole provisioning;
// the operator adds adoption rules, drift policies and replication changes
// on top of the same calls.
func (p *Provisioner) Ensure(ctx context.Context, specs ...Spec) error {
	topics := make([]string, len(specs))
	for i, s := range specs {
		topics[i] = s.Topic
	}
	states, err := p.Observe(ctx, topics...)
	if err != nil {
		return err
	}
	var missing []Spec
	for _, s := range specs {
		if !states[s.Topic].Exists {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		_, errs, err := p.Create(ctx, missing...)
		if err != nil {
			return err
		}
		for t, e := range errs {
			if e != nil && !errors.Is(e, ErrTopicExists) {
				return fmt.Errorf("room: create topic %q: %w", t, e)
			}
		}
		if states, err = p.awaitVisible(ctx, topics); err != nil {
			return err
		}
	}
	for _, s := range specs {
		st := states[s.Topic]
		switch {
		case st.Partitions > s.Partitions:
			return fmt.Errorf("%w: topic %q has %d, room %q asks for %d", ErrPartitionDecrease, s.Topic, st.Partitions, s.Name, s.Partitions)
		case st.Partitions < s.Partitions:
			if err := p.GrowPartitions(ctx, s.Topic, s.Partitions); err != nil {
				return err
			}
		}
		if err := p.ApplyConfigs(ctx, s.Topic, Drift(s, st)); err != nil {
			return err
		}
	}
	return nil
}

// awaitVisible observes topics until every one exists: a real broker
// learns of a new topic from the controller a moment after CreateTopics
// answers.
func (p *Provisioner) awaitVisible(ctx context.Context, topics []string) (map[string]TopicState, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		states, err := p.Observe(ctx, topics...)
		if err != nil {
			return nil, err
		}
		var missing []string
		for _, t := range topics {
			if !states[t].Exists {
				missing = append(missing, t)
			}
		}
		if len(missing) == 0 {
			return states, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("room: created topics not visible yet: %v: %w", missing, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// awaitWritable waits until every live broker's metadata has each topic
// with a leader for every partition. CreateTopics answers once the
// controller has the topic; the brokers learn of it a moment later, and a
// producer asking one of them before then is told UNKNOWN_TOPIC_OR_PARTITION
// and may keep that answer in its metadata cache. Asking every broker, not
// just one, is what lets any client's next metadata refresh find the topic.
func (p *Provisioner) awaitWritable(ctx context.Context, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		pending, err := p.notWritable(ctx, req, topics)
		if err != nil {
			return err
		}
		if pending == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("room: created topics not writable yet: %s: %w", pending, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// notWritable asks every broker for the topics' metadata and describes the
// first one that lacks a topic or a partition leader ("" when none does).
func (p *Provisioner) notWritable(ctx context.Context, req *kmsg.MetadataRequest, topics []string) (string, error) {
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return "", fmt.Errorf("room: metadata of %d topics: %w", len(topics), err)
	}
	for _, b := range resp.Brokers {
		r, err := p.client.Broker(int(b.NodeID)).Request(ctx, req)
		if err != nil {
			return "", fmt.Errorf("room: metadata of %d topics from broker %d: %w", len(topics), b.NodeID, err)
		}
		seen := map[string]bool{}
		for _, md := range r.(*kmsg.MetadataResponse).Topics {
			if md.Topic == nil || md.ErrorCode != 0 || len(md.Partitions) == 0 {
				continue
			}
			seen[*md.Topic] = true
			for _, pd := range md.Partitions {
				if pd.ErrorCode != 0 || pd.Leader < 0 {
					return fmt.Sprintf("%s/%d has no leader on broker %d", *md.Topic, pd.Partition, b.NodeID), nil
				}
			}
		}
		for _, t := range topics {
			if !seen[t] {
				return fmt.Sprintf("%s unknown to broker %d", t, b.NodeID), nil
			}
		}
	}
	return "", nil
}
