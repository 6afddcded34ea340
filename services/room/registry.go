package room

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkabus"
)

var (
	// ErrNotFound is returned for a room that is not in the registry.
	ErrNotFound = errors.New("room: not found")
	// ErrNotLoaded is returned until the registry was read to its end at
	// start: until then a missing room may exist, so "not found" would lie.
	ErrNotLoaded = errors.New("room: registry not loaded yet")
)

// Info is a room's entry in the registry topic: what the services need to
// know about a room, so they never need the Kubernetes API.
type Info struct {
	V               int    `json:"v"`
	Name            string `json:"name"`
	Namespace       string `json:"namespace"`
	Topic           string `json:"topic"`
	Partitions      int32  `json:"partitions"`
	MaxMessageBytes int32  `json:"max_message_bytes,omitempty"`
	DisplayName     string `json:"display_name,omitempty"`
	Description     string `json:"description,omitempty"`
}

// Info returns the registry entry of a provisioned room.
func (s Spec) Info() Info {
	return Info{
		V: 1, Name: s.Name, Namespace: s.Namespace, Topic: s.Topic, Partitions: s.Partitions,
		MaxMessageBytes: s.MaxMessageBytes, DisplayName: s.DisplayName, Description: s.Description,
	}
}

// Publish writes room entries to the registry; a nil Info value is never
// written. Use Tombstone to remove a room. Both wait out a writer whose
// metadata predates the registry topic (kafkabus.Write).
func Publish(ctx context.Context, w *kafka.Writer, infos ...Info) error {
	msgs := make([]kafka.Message, 0, len(infos))
	for _, in := range infos {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("room: encode registry entry %q: %w", in.Name, err)
		}
		msgs = append(msgs, kafka.Message{Topic: RegistryTopic, Key: []byte(in.Name), Value: b})
	}
	if err := kafkabus.Write(ctx, w, msgs...); err != nil {
		return fmt.Errorf("room: publish %d registry entries: %w", len(infos), err)
	}
	return nil
}

// Tombstone removes rooms from the registry (a null value, which compaction
// eventually drops).
func Tombstone(ctx context.Context, w *kafka.Writer, names ...string) error {
	msgs := make([]kafka.Message, 0, len(names))
	for _, n := range names {
		msgs = append(msgs, kafka.Message{Topic: RegistryTopic, Key: []byte(n)})
	}
	if err := kafkabus.Write(ctx, w, msgs...); err != nil {
		return fmt.Errorf("room: tombstone %v: %w", names, err)
	}
	return nil
}

// Registry is a live, in-memory view of the registry topic. Run keeps it
// current; it is safe for concurrent use.
type Registry struct {
	cluster *kafkabus.Cluster
	log     *slog.Logger

	mu      sync.RWMutex
	rooms   map[string]Info
	ready   chan struct{} // closed once the topic was read to its end at start
	changed chan struct{} // closed and replaced on every change
}

// NewRegistry returns a registry that reads from cluster when Run.
func NewRegistry(cluster *kafkabus.Cluster, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{cluster: cluster, log: log, rooms: map[string]Info{}, ready: make(chan struct{}), changed: make(chan struct{})}
}

// Get returns a room's entry; ErrNotLoaded until the registry is Ready.
func (r *Registry) Get(name string) (Info, error) {
	if err := r.loaded(); err != nil {
		return Info{}, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	in, ok := r.rooms[name]
	if !ok {
		return Info{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return in, nil
}

// List returns every room, sorted by name; ErrNotLoaded until Ready.
func (r *Registry) List() ([]Info, error) {
	if err := r.loaded(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := slices.Collect(maps.Values(r.rooms))
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Changed returns a channel closed at the next change of the registry.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.changed
}

// Ready returns a channel closed once the registry has caught up with the
// topic as it was when Run started.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

// CheckReady is a readiness check: a service that does not yet know the
// rooms would wrongly answer "no such room".
func (r *Registry) CheckReady(context.Context) error { return r.loaded() }

func (r *Registry) loaded() error {
	select {
	case <-r.ready:
		return nil
	default:
		return ErrNotLoaded
	}
}

// Run reads the registry topic from the beginning and follows it until ctx
// is done. A missing registry topic is retried, not fatal: the operator or
// dev mode creates it.
func (r *Registry) Run(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		err := r.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("room registry: reading failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (r *Registry) follow(ctx context.Context) error {
	end, err := r.endOffset(ctx)
	if err != nil {
		return err
	}
	if end == 0 {
		r.markReady()
	}
	rd, err := r.cluster.PartitionReader(RegistryTopic, 0, kafka.FirstOffset)
	if err != nil {
		return err
	}
	defer rd.Close()
	for {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", RegistryTopic, err)
		}
		r.apply(m)
		if m.Offset+1 >= end {
			r.markReady()
		}
	}
}

func (r *Registry) endOffset(ctx context.Context) (int64, error) {
	res, err := r.cluster.Admin().ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{RegistryTopic: {kafka.LastOffsetOf(0)}},
	})
	if err != nil {
		return 0, fmt.Errorf("end offset of %s: %w", RegistryTopic, err)
	}
	parts := res.Topics[RegistryTopic]
	switch {
	case len(parts) == 0:
		return 0, fmt.Errorf("end offset of %s: no partition 0 in the answer", RegistryTopic)
	case parts[0].Error != nil:
		return 0, fmt.Errorf("end offset of %s: %w", RegistryTopic, parts[0].Error)
	}
	return parts[0].LastOffset, nil
}

func (r *Registry) apply(m kafka.Message) {
	name := string(m.Key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Value == nil {
		delete(r.rooms, name)
	} else {
		var in Info
		if err := json.Unmarshal(m.Value, &in); err != nil || in.Name != name || in.Topic == "" {
			r.log.Warn("room registry: skipping a bad entry", "key", name, "offset", m.Offset, "err", err)
			return
		}
		r.rooms[name] = in
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Registry) markReady() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.ready:
	default:
		close(r.ready)
	}
}
