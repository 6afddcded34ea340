package topics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// Registry writes room entries and tombstones to the compacted registry
// topic (room.RegistryTopic), creating it on first use. One writer serves
// every reconcile: kafka-go batches concurrent writes into one produce
// request, acks=all.
type Registry struct {
	prov    *room.Provisioner
	view    *View
	writer  *kafka.Writer
	rf      int16
	timeout time.Duration
	metrics *Metrics

	mu      sync.Mutex
	ensured bool
}

// NewRegistry writes through cluster's writer; the registry topic, when
// missing, is created with replication factor rf (capped by the number of
// brokers).
func NewRegistry(cluster *kafkabus.Cluster, prov *room.Provisioner, view *View, rf int16, opts Options) *Registry {
	o := opts.withDefaults()
	return &Registry{prov: prov, view: view, writer: cluster.Writer(), rf: rf, timeout: o.Timeout, metrics: o.Metrics}
}

// Close flushes and closes the writer.
func (r *Registry) Close() error { return r.writer.Close() }

// Publish writes a room's entry.
func (r *Registry) Publish(ctx context.Context, in room.Info) error {
	err := r.write(ctx, func(ctx context.Context) error { return room.Publish(ctx, r.writer, in) })
	r.metrics.registryWrite("entry", err)
	return err
}

// Tombstone removes a room's entry.
func (r *Registry) Tombstone(ctx context.Context, name string) error {
	err := r.write(ctx, func(ctx context.Context) error { return room.Tombstone(ctx, r.writer, name) })
	r.metrics.registryWrite("tombstone", err)
	return err
}

func (r *Registry) write(ctx context.Context, write func(context.Context) error) error {
	// Fail fast, like the view, rather than wait out a timeout per room.
	if err := r.view.Reachable(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.ensure(ctx); err != nil {
		return err
	}
	// A registry topic created a moment ago may not be in the writer's
	// metadata yet (it refreshes every second).
	for {
		err := write(ctx)
		if !errors.Is(err, kafka.UnknownTopicOrPartition) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ensure creates the registry topic once per process.
func (r *Registry) ensure(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ensured {
		return nil
	}
	rf := r.rf
	if n := len(r.view.Brokers()); n > 0 && int(rf) > n {
		rf = int16(n)
	}
	if err := r.prov.EnsureRegistry(ctx, rf); err != nil {
		return fmt.Errorf("topics: registry topic: %w", err)
	}
	r.ensured = true
	return nil
}
