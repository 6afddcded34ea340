package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// Rooms is the room registry; *room.Registry is one.
type Rooms interface {
	Get(name string) (room.Info, error)
	Ready() <-chan struct{}
	Changed() <-chan struct{}
}

// Service is one presence replica: a member of the consumer group over the
// events topic, owning some of its partitions.
type Service struct {
	cfg     Config
	cluster *kafkabus.Cluster
	rooms   Rooms
	m       *Metrics
	log     *slog.Logger
	writer  *kafka.Writer
	now     func() time.Time

	mu      sync.Mutex
	owned   map[int]bool
	unknown map[string]time.Time // rooms recently found missing from the registry
	ready   chan struct{}        // closed once the topics exist and the group was joined
}

// New builds a replica. It dials nothing until Run.
func New(cfg Config, cluster *kafkabus.Cluster, rooms Rooms, m *Metrics, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cluster == nil || rooms == nil {
		return nil, errors.New("presence: New needs a Kafka cluster and the room registry")
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := cluster.Writer()
	w.Balancer = ExplicitBalancer{} // a room's state goes to its events partition's number
	w.BatchBytes = MaxStateBytes + 64<<10
	w.Compression = kafka.Snappy
	return &Service{cfg: cfg.withDefaults(), cluster: cluster, rooms: rooms, m: m, log: log, writer: w, now: time.Now,
		owned: map[int]bool{}, unknown: map[string]time.Time{}, ready: make(chan struct{})}, nil
}

// CheckReady is a readiness check: ready once the topics exist and the
// replica joined its group.
func (s *Service) CheckReady(context.Context) error {
	select {
	case <-s.ready:
		return nil
	default:
		return errors.New("presence: not in the consumer group yet")
	}
}

// Owned returns the partitions this replica owns now.
func (s *Service) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.owned))
	for p := range s.owned {
		out = append(out, p)
	}
	return out
}

// Run creates the topics if missing, joins the consumer group and serves
// the partitions it is given until ctx is done; on shutdown each partition
// publishes what is pending and its checkpoint, then the replica leaves
// the group so the others take over at once.
func (s *Service) Run(ctx context.Context) error {
	defer s.writer.Close()
	select {
	case <-s.rooms.Ready():
	case <-ctx.Done():
		return nil
	}
	if err := s.ensureTopics(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	kc := s.cluster.Config()
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                     s.cfg.Group,
		Brokers:                kc.Brokers,
		Dialer:                 s.cluster.Dialer(),
		Topics:                 []string{s.cfg.EventsTopic},
		HeartbeatInterval:      max(s.cfg.SessionTimeout/10, 100*time.Millisecond),
		SessionTimeout:         s.cfg.SessionTimeout,
		RebalanceTimeout:       s.cfg.SessionTimeout,
		JoinGroupBackoff:       time.Second,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 30 * time.Second,
		StartOffset:            kafka.FirstOffset,
	})
	if err != nil {
		return fmt.Errorf("presence: consumer group: %w", err)
	}
	defer group.Close()
	for {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("presence: joining the consumer group failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		s.markReady()
		assigned := gen.Assignments[s.cfg.EventsTopic]
		s.log.Info("presence: partitions assigned", "generation", gen.ID, "partitions", len(assigned))
		for _, a := range assigned {
			p := a.ID
			gen.Start(func(gctx context.Context) {
				s.setOwned(p, true)
				defer s.setOwned(p, false)
				if err := s.runPartition(gctx, gen, p); err != nil && gctx.Err() == nil {
					s.log.Warn("presence: partition stopped; rejoining", "partition", p, "err", err)
				}
			})
		}
	}
}

func (s *Service) ensureTopics(ctx context.Context) error {
	admin, err := s.cluster.AdminClient()
	if err != nil {
		return err
	}
	defer admin.Close()
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := EnsureTopics(cctx, admin, s.cfg)
		cancel()
		if err == nil || errors.Is(err, ErrPartitionMismatch) || ctx.Err() != nil {
			return err
		}
		s.log.Warn("presence: creating the topics failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

func (s *Service) markReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
}

func (s *Service) setOwned(p int, owned bool) {
	s.mu.Lock()
	if owned {
		s.owned[p] = true
	} else {
		delete(s.owned, p)
	}
	n := len(s.owned)
	s.mu.Unlock()
	s.m.Partitions.Set(float64(n))
}

// knownRoom reports whether a room is in the registry. A room missing from
// it is waited for a moment once, since a gateway's registry may be a few
// milliseconds ahead of this replica's; after that it is dropped at once
// for a minute.
func (s *Service) knownRoom(ctx context.Context, name string) bool {
	if _, err := s.rooms.Get(name); err == nil {
		return true
	}
	s.mu.Lock()
	since, seen := s.unknown[name]
	if !seen || s.now().Sub(since) > time.Minute {
		if len(s.unknown) >= 1000 {
			clear(s.unknown)
		}
		s.unknown[name] = s.now()
	}
	s.mu.Unlock()
	if seen && s.now().Sub(since) <= time.Minute {
		return false
	}
	deadline := time.NewTimer(500 * time.Millisecond)
	defer deadline.Stop()
	for {
		changed := s.rooms.Changed()
		if _, err := s.rooms.Get(name); err == nil {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// ExplicitBalancer sends every record to the partition its Partition field
// names: the presence service writes each room's state to the partition
// number of its events, and gateways write heartbeats to every partition.
type ExplicitBalancer struct{}

// Balance implements kafka.Balancer.
func (ExplicitBalancer) Balance(msg kafka.Message, partitions ...int) int {
	for _, p := range partitions {
		if p == msg.Partition {
			return p
		}
	}
	return partitions[0]
}

// EventBalancer places events as their readers expect: records with a key
// (a room) by the key's murmur2 hash, like Java clients; records without
// one (heartbeats, shutdowns) in the partition their Partition field names.
type EventBalancer struct{ hash kafka.Murmur2Balancer }

// Balance implements kafka.Balancer.
func (b *EventBalancer) Balance(msg kafka.Message, partitions ...int) int {
	if msg.Key == nil {
		return ExplicitBalancer{}.Balance(msg, partitions...)
	}
	return b.hash.Balance(msg, partitions...)
}
