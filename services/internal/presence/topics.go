package presence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic settings the service creates its topics with (docs/presence.md).
const (
	// EventsRetention bounds how far back a replica can replay: it replays
	// from its partition's last checkpoint, seconds old.
	EventsRetention = 24 * time.Hour
	// MaxStateBytes bounds a room's state record (about 80 bytes a user:
	// rooms of up to about 100,000 users).
	MaxStateBytes = 8 << 20
)

// TopicConfigs returns the configuration of the events and state topics
// for a replication factor.
func TopicConfigs(rf int) (events, state map[string]string) {
	isr := strconv.Itoa(min(rf, 2))
	events = map[string]string{
		"cleanup.policy":      "delete",
		"retention.ms":        strconv.FormatInt(EventsRetention.Milliseconds(), 10),
		"segment.ms":          strconv.FormatInt(time.Hour.Milliseconds(), 10),
		"min.insync.replicas": isr,
	}
	state = map[string]string{
		"cleanup.policy":            "compact",
		"min.insync.replicas":       isr,
		"max.message.bytes":         strconv.Itoa(MaxStateBytes),
		"segment.ms":                strconv.FormatInt(time.Hour.Milliseconds(), 10),
		"min.cleanable.dirty.ratio": "0.1",
	}
	return events, state
}

// ErrPartitionMismatch is returned when the events and state topics exist
// with different partition counts: a room's events and state must share a
// partition number.
var ErrPartitionMismatch = errors.New("presence: the events and state topics have different partition counts")

// EnsureTopics creates the events and state topics if they are missing
// (the presence service owns them) and returns their partition count.
func EnsureTopics(ctx context.Context, client *kgo.Client, cfg Config) (int, error) {
	cfg = cfg.withDefaults()
	adm := kadm.NewClient(client)
	events, state := TopicConfigs(cfg.ReplicationFactor)
	for _, t := range []struct {
		name    string
		configs map[string]string
	}{{cfg.EventsTopic, events}, {cfg.StateTopic, state}} {
		cs := make(map[string]*string, len(t.configs))
		for k, v := range t.configs {
			cs[k] = &v
		}
		res, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), cs, t.name)
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("presence: create topic %s: %w", t.name, err)
		}
	}
	// A new topic reaches every broker's metadata a moment after creation.
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		n, err := partitions(ctx, adm, cfg.EventsTopic, cfg.StateTopic)
		if err == nil {
			return n, nil
		}
		if errors.Is(err, ErrPartitionMismatch) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("presence: topics not visible: %w (%w)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

func partitions(ctx context.Context, adm *kadm.Client, events, state string) (int, error) {
	td, err := adm.ListTopics(ctx, events, state)
	if err != nil {
		return 0, err
	}
	counts := make([]int, 0, 2)
	for _, t := range []string{events, state} {
		d, ok := td[t]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return 0, fmt.Errorf("presence: topic %s not visible yet", t)
		}
		for _, p := range d.Partitions {
			if p.Leader < 0 {
				return 0, fmt.Errorf("presence: topic %s partition %d has no leader yet", t, p.Partition)
			}
		}
		counts = append(counts, len(d.Partitions))
	}
	if counts[0] != counts[1] {
		return 0, fmt.Errorf("%w: %s has %d, %s has %d", ErrPartitionMismatch, events, counts[0], state, counts[1])
	}
	return counts[0], nil
}
