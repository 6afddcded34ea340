package simulate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// Scratch is a set of rooms made for one run and removed after it, so
// that a simulation or a benchmark never floods the rooms people chat in.
type Scratch struct {
	Names   []string
	cluster *kafkabus.Cluster
	prov    *room.Provisioner
	topics  []string
}

// NewScratch provisions n rooms named <prefix>-<random>-<i> on the
// cluster the way the operator provisions ChatRooms (topic, then registry
// entry), with replication factor 3 where the cluster has 3 brokers and
// an hour of retention.
func NewScratch(ctx context.Context, cfg kafkabus.Config, prefix string, n int) (*Scratch, error) {
	cluster, err := kafkabus.New(cfg)
	if err != nil {
		return nil, err
	}
	admin, err := cluster.AdminClient()
	if err != nil {
		return nil, err
	}
	s := &Scratch{cluster: cluster, prov: room.NewProvisioner(admin)}
	brokers, err := s.prov.Brokers(ctx)
	if err != nil {
		return nil, fmt.Errorf("scratch rooms: %w", err)
	}
	rf := int16(min(3, max(1, brokers)))
	// A broker no operator or dev mode ran on yet has no registry.
	if err := s.prov.EnsureRegistry(ctx, rf); err != nil {
		return nil, fmt.Errorf("scratch rooms: %w", err)
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	specs := make([]room.Spec, n)
	infos := make([]room.Info, n)
	for i := range n {
		specs[i] = room.Spec{
			Name: fmt.Sprintf("%s-%s-%d", prefix, run, i+1), Partitions: 1, Retention: time.Hour,
			DisplayName: fmt.Sprintf("%s %d", prefix, i+1),
			Description: "Scratch room of palaver " + prefix + "; removed when the run ends.",
		}.WithDefaults(rf)
		infos[i] = specs[i].Info()
		s.Names, s.topics = append(s.Names, specs[i].Name), append(s.topics, specs[i].Topic)
	}
	// Many rooms are created in batches, as an operator reconciling many
	// ChatRooms would.
	for i := 0; i < n; i += 100 {
		if err := s.prov.Ensure(ctx, specs[i:min(n, i+100)]...); err != nil {
			return s, fmt.Errorf("scratch rooms: %w", err)
		}
	}
	if err := room.Publish(ctx, cluster.Writer(), infos...); err != nil {
		return s, fmt.Errorf("scratch rooms: %w", err)
	}
	return s, nil
}

// Remove takes the rooms out of the registry and deletes their topics.
func (s *Scratch) Remove(ctx context.Context) error {
	if s == nil || len(s.Names) == 0 {
		return nil
	}
	defer s.cluster.Close()
	if err := room.Tombstone(ctx, s.cluster.Writer(), s.Names...); err != nil {
		return fmt.Errorf("remove scratch rooms: %w", err)
	}
	if err := s.prov.DeleteTopics(ctx, s.topics...); err != nil {
		return fmt.Errorf("remove scratch rooms: %w", err)
	}
	return nil
}
