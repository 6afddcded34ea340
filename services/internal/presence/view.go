package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkabus"
)

// User is an online user as readers of the state topic see one.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Room is a room's presence as published: who is online (sorted by id),
// and who of them is typing.
type Room struct {
	Name   string
	Count  int
	Users  []User   // sorted by id
	Typing []string // user ids, sorted
	Time   time.Time
}

// viewState is the part of a State record a View decodes.
type viewState struct {
	V      int       `json:"v"`
	Room   string    `json:"room"`
	Time   time.Time `json:"time"`
	Count  int       `json:"count"`
	Users  []User    `json:"users"`
	Typing []string  `json:"typing"`
}

// View follows every partition of the state topic and keeps the latest
// presence of every room: what a gateway pushes to its members and
// answers queries with. It is safe for concurrent use.
type View struct {
	cluster *kafkabus.Cluster
	topic   string
	log     *slog.Logger
	// OnChange, when set before Run, is called with each room's previous
	// and new presence (prev nil for a room first seen), from the
	// goroutine reading the room's partition: calls for one room never
	// overlap.
	OnChange func(prev, next *Room)

	mu    sync.RWMutex
	rooms map[string]*Room
	ready chan struct{}
}

// NewView returns a view of topic (StateTopic when empty).
func NewView(cluster *kafkabus.Cluster, topic string, log *slog.Logger) *View {
	if topic == "" {
		topic = StateTopic
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &View{cluster: cluster, topic: topic, log: log, rooms: map[string]*Room{}, ready: make(chan struct{})}
}

// Get returns a room's presence; nil when nobody was ever reported there.
func (v *View) Get(name string) *Room {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.rooms[name]
}

// Count returns the users online in a room.
func (v *View) Count(name string) int {
	if r := v.Get(name); r != nil {
		return r.Count
	}
	return 0
}

// Ready is closed once the topic was read to its end at start.
func (v *View) Ready() <-chan struct{} { return v.ready }

// Run reads the topic until ctx is done. A missing topic is waited for:
// the presence service creates it.
func (v *View) Run(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		err := v.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		v.log.Warn("presence view: reading the state failed; retrying", "topic", v.topic, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (v *View) follow(ctx context.Context) error {
	md, err := v.cluster.Admin().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{v.topic}})
	if err != nil {
		return err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) == 0 {
		if len(md.Topics) == 1 && md.Topics[0].Error != nil {
			return fmt.Errorf("topic %s: %w", v.topic, md.Topics[0].Error)
		}
		return fmt.Errorf("topic %s not found", v.topic)
	}
	parts := md.Topics[0].Partitions
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.LastOffsetOf(p.ID)
	}
	res, err := v.cluster.Admin().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{v.topic: reqs}})
	if err != nil {
		return err
	}
	ends := map[int]int64{}
	for _, po := range res.Topics[v.topic] {
		if po.Error != nil {
			return po.Error
		}
		ends[po.Partition] = po.LastOffset
	}
	var (
		wg      sync.WaitGroup
		loaded  sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, p := range parts {
		wg.Add(1)
		loaded.Add(1)
		go func() {
			defer wg.Done()
			err := v.readPartition(fctx, p.ID, ends[p.ID], loaded.Done)
			errOnce.Do(func() { first = err; cancel() })
		}()
	}
	go func() {
		loaded.Wait()
		if fctx.Err() == nil {
			v.markReady()
		}
	}()
	wg.Wait()
	return first
}

func (v *View) readPartition(ctx context.Context, p int, end int64, loaded func()) error {
	var once sync.Once
	defer once.Do(loaded)
	if end == 0 {
		once.Do(loaded)
	}
	rd, err := partitionReader(v.cluster, v.topic, p, kafka.FirstOffset)
	if err != nil {
		return err
	}
	defer rd.Close()
	for {
		msg, err := rd.ReadMessage(ctx)
		if err != nil {
			return fmt.Errorf("read %s/%d: %w", v.topic, p, err)
		}
		if !IsCheckpointKey(msg.Key) {
			v.apply(msg)
		}
		if msg.Offset+1 >= end {
			once.Do(loaded)
		}
	}
}

func (v *View) apply(msg kafka.Message) {
	name := string(msg.Key)
	var next *Room
	if msg.Value != nil {
		var st viewState
		if err := json.Unmarshal(msg.Value, &st); err != nil || st.V != StateVersion || st.Room != name {
			v.log.Warn("presence view: skipping a bad state record", "key", name, "offset", msg.Offset, "err", err)
			return
		}
		next = &Room{Name: name, Count: st.Count, Users: st.Users, Typing: st.Typing, Time: st.Time}
	}
	v.mu.Lock()
	prev := v.rooms[name]
	if next == nil {
		delete(v.rooms, name)
	} else {
		v.rooms[name] = next
	}
	v.mu.Unlock()
	if v.OnChange != nil {
		if next == nil {
			next = &Room{Name: name}
		}
		v.OnChange(prev, next)
	}
}

// fetchWait is the MaxWait of presence's readers: with kafka-go's margin
// rule (kafkabus.WithMaxWait) the broker holds an idle fetch for 500 ms
// and the reader waits a second more before it drops the connection, so a
// pause of the broker or of this process shorter than that delays the
// next presence change by the pause alone, not by a reconnection too.
const fetchWait = 1500 * time.Millisecond

// partitionReader reads one partition of a presence topic.
func partitionReader(cluster *kafkabus.Cluster, topic string, p int, offset int64) (*kafka.Reader, error) {
	return cluster.PartitionReader(topic, p, offset, kafkabus.WithMaxWait(fetchWait))
}

func (v *View) markReady() {
	v.mu.Lock()
	defer v.mu.Unlock()
	select {
	case <-v.ready:
	default:
		close(v.ready)
	}
}
