package room

import (
	"context"
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
	ID                string // hex topic id; changes when a topic is recreated
	Partitions        int32
	ReplicationFactor int16             // of the partition with the fewest replicas
	Replicas          map[int32][]int32 // partition -> replica broker ids
	Configs           map[string]string // topic-level values of the keys Palaver manages
	ConfigSources     map[string]string // where each value comes from (e.g. DYNAMIC_TOPIC_CONFIG)
}

// ConfigDrift is one managed setting whose value differs from the spec.
type ConfigDrift struct {
	Key, Want, Have string
}

// Drift compares a topic's configuration with what the spec asks for.
func Drift(s Spec, st TopicState) []ConfigDrift {
	want := s.TopicConfigs()
	var out []ConfigDrift
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if have := st.Configs[k]; have != want[k] {
			out = append(out, ConfigDrift{Key: k, Want: want[k], Have: have})
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

// Observe describes topics: partitions, replicas, id and managed configs,
// in one metadata request and one describe-configs request.
func (p *Provisioner) Observe(ctx context.Context, topics ...string) (map[string]TopicState, error) {
	out := make(map[string]TopicState, len(topics))
	if len(topics) == 0 {
		return out, nil
	}
	// A direct metadata request: kadm's cached metadata (up to 5 s old)
	// would hide a topic that was just deleted and recreated.
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return nil, fmt.Errorf("room: describe %d topics: %w", len(topics), err)
	}
	for _, t := range topics {
		out[t] = TopicState{Topic: t}
	}
	var existing []string
	for _, d := range resp.Topics {
		if d.Topic == nil {
			continue
		}
		t := *d.Topic
		err := kerr.ErrorForCode(d.ErrorCode)
		switch {
		case errors.Is(err, kerr.UnknownTopicOrPartition) || err == nil && len(d.Partitions) == 0:
			continue
		case err != nil:
			return nil, fmt.Errorf("room: describe topic %q: %w", t, err)
		}
		st := TopicState{Topic: t, Exists: true, ID: kadm.TopicID(d.TopicID).String(), Partitions: int32(len(d.Partitions)),
			Replicas: make(map[int32][]int32, len(d.Partitions)), ReplicationFactor: -1}
		for _, pd := range d.Partitions {
			st.Replicas[pd.Partition] = pd.Replicas
			if n := int16(len(pd.Replicas)); st.ReplicationFactor < 0 || n < st.ReplicationFactor {
				st.ReplicationFactor = n
			}
		}
		out[t] = st
		existing = append(existing, t)
	}
	if len(existing) == 0 {
		return out, nil
	}
	configs, err := p.adm.DescribeTopicConfigs(ctx, existing...)
	if err != nil {
		return nil, fmt.Errorf("room: describe configs of %d topics: %w", len(existing), err)
	}
	managed := Spec{MinInSyncReplicas: 1, Retention: DefaultRetention, RetentionBytes: 1, MaxMessageBytes: 1}.TopicConfigs()
	for _, rc := range configs {
		if errors.Is(rc.Err, kerr.UnknownTopicOrPartition) {
			// Deleted (or not yet propagated) between the two requests.
			out[rc.Name] = TopicState{Topic: rc.Name}
			continue
		}
		if rc.Err != nil {
			return nil, fmt.Errorf("room: describe configs of %q: %w", rc.Name, rc.Err)
		}
		st := out[rc.Name]
		st.Configs = map[string]string{}
		st.ConfigSources = map[string]string{}
		for _, c := range rc.Configs {
			if _, ok := managed[c.Key]; ok {
				st.Configs[c.Key] = c.MaybeValue()
				st.ConfigSources[c.Key] = c.Source.String()
			}
		}
		out[rc.Name] = st
	}
	return out, nil
}

// Create creates the topics of specs in one request. It returns each
// topic's error (nil when created) keyed by topic, and the new topic ids.
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
		ids[t.Topic] = kadm.TopicID(t.TopicID).String()
	}
	return ids, errs, nil
}

// GrowPartitions raises a topic's partition count to n.
func (p *Provisioner) GrowPartitions(ctx context.Context, topic string, n int32) error {
	res, err := p.adm.UpdatePartitions(ctx, int(n), topic)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		return fmt.Errorf("room: grow %q to %d partitions: %w", topic, n, err)
	}
	return nil
}

// ApplyConfigs sets the drifted keys on a topic with incremental
// alter-configs, leaving every other topic setting alone.
func (p *Provisioner) ApplyConfigs(ctx context.Context, topic string, drift []ConfigDrift) error {
	if len(drift) == 0 {
		return nil
	}
	alter := make([]kadm.AlterConfig, 0, len(drift))
	for _, d := range drift {
		alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: d.Key, Value: kmsg.StringPtr(d.Want)})
	}
	res, err := p.adm.AlterTopicConfigs(ctx, alter, topic)
	if err == nil {
		for _, r := range res {
			if r.Err != nil {
				err = fmt.Errorf("%w: %s", r.Err, r.ErrMessage)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("room: configure %q: %w", topic, err)
	}
	return nil
}

// DeleteTopics deletes topics in one request.
func (p *Provisioner) DeleteTopics(ctx context.Context, topics ...string) error {
	res, err := p.adm.DeleteTopics(ctx, topics...)
	if err == nil {
		for _, r := range res {
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
				err = errors.Join(err, fmt.Errorf("%q: %w", r.Topic, r.Err))
			}
		}
	}
	if err != nil {
		return fmt.Errorf("room: delete topics: %w", err)
	}
	return nil
}

// EnsureRegistry creates the compacted registry topic if it is missing.
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
	return nil
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
