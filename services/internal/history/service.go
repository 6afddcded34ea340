// Package history is Palaver's history service: a materialized view of the
// room topics in an embedded store, serving scroll-back, jump-to-date and
// full-text search. Kafka stays the source of truth: the store holds, in
// the same transactions as the rows, the next offset to consume in every
// partition, so a crash at any instant neither loses nor duplicates a
// message, and an empty store rebuilds from the topics. Rooms are spread
// over shards (package shard); a replica consumes only its shard's rooms.
// docs/history.md has the operating notes.
package history

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/shard"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// Rooms is the room registry the service follows; *room.Registry is one.
type Rooms interface {
	List() ([]room.Info, error)
	Ready() <-chan struct{}
	Changed() <-chan struct{}
}

// Deps are the parts a Service is built from.
type Deps struct {
	Cluster *kafkabus.Cluster
	Rooms   Rooms
	Metrics *Metrics     // nil: unregistered metrics
	Logger  *slog.Logger // nil: discard
}

// Service is one history replica: it ingests its shard's rooms into its
// store and answers queries on them.
type Service struct {
	cfg     Config
	stores  []*Store // a room's rows are in stores[storeOf(room)]
	cluster *kafkabus.Cluster
	rooms   Rooms
	m       *Metrics
	log     *slog.Logger
	ops     []chan op // per store, to its writer

	mu        sync.Mutex
	served    map[string]*servedRoom
	stored    map[string]storedRoom // rooms in the store, served or not
	committed map[posKey]int64
	end       map[posKey]int64 // partition ends seen in fetches
	progress  chan struct{}    // closed and replaced at every commit
	synced    bool             // the registry was read and the shard's rooms started
	caughtUp  bool             // ready once; the rebuild is over
	ready     chan struct{}    // closed when caughtUp is set
	runCtx    context.Context  // done when Run returns, for the end of a rebuild
	finishing []bool           // per store, the end of its rebuild is queued to its writer
}

// servedRoom is a room of this shard being consumed.
type servedRoom struct {
	info   room.Info
	tag    int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
	parts  int // partitions consumed
	ctx    context.Context
}

// New opens the store in cfg.Dir. Close the service after Run returns.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.withDefaults()
	if deps.Cluster == nil || deps.Rooms == nil {
		return nil, errors.New("history: New needs a Kafka cluster and the room registry")
	}
	if cfg.Shard < 0 || cfg.Shard >= cfg.Shards {
		return nil, fmt.Errorf("%w: shard %d is not in [0, %d)", ErrConfig, cfg.Shard, cfg.Shards)
	}
	if err := removeStoresFrom(cfg.Dir, cfg.Stores); err != nil {
		return nil, err
	}
	stores := make([]*Store, cfg.Stores)
	ops := make([]chan op, cfg.Stores)
	for i := range stores {
		st, err := openStore(cfg.Dir, i, !cfg.rowByRow)
		if err != nil {
			for _, st := range stores[:i] {
				_ = st.Close()
			}
			return nil, err
		}
		stores[i], ops[i] = st, make(chan op, cfg.BatchSize)
	}
	m := deps.Metrics
	if m == nil {
		m = NewMetrics(nil)
	}
	for i := range stores {
		for _, at := range logRestartsAt {
			m.LogRestarts.WithLabelValues(strconv.Itoa(i), at)
		}
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		cfg: cfg, stores: stores, cluster: deps.Cluster, rooms: deps.Rooms, m: m, log: log,
		ops: ops, finishing: make([]bool, len(stores)), served: map[string]*servedRoom{}, committed: map[posKey]int64{},
		end: map[posKey]int64{}, progress: make(chan struct{}), ready: make(chan struct{}),
	}, nil
}

// Close closes the stores.
func (s *Service) Close() error {
	var errs []error
	for _, st := range s.stores {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// storeOf is the store holding a room's rows.
func (s *Service) storeOf(name string) int { return storeIndex(name, len(s.stores)) }

// storeIndex is the store, of n, holding a room's rows: a stable function
// of the room's name and the store count, independent of its shard
// (shard.Of is another function of the name).
func storeIndex(name string, n int) int {
	return int(crc32.ChecksumIEEE([]byte(name)) % uint32(n))
}

// size is the bytes the stores take on disk.
func (s *Service) size() int64 {
	var n int64
	for _, st := range s.stores {
		n += st.Size()
	}
	return n
}

// Run ingests until ctx is done, then stops the consumers and the writers;
// records fetched but not committed are fetched again at the next start.
func (s *Service) Run(ctx context.Context) error {
	stored := map[string]storedRoom{}
	for i, st := range s.stores {
		rooms, err := st.Rooms(ctx)
		if err != nil {
			return err
		}
		for name, r := range rooms {
			if s.storeOf(name) == i {
				stored[name] = r
				continue
			}
			// The store count changed: the room is rebuilt in its store.
			if err := st.DropRoom(ctx, name); err != nil {
				return err
			}
		}
	}
	// The end of a rebuild waits for a writer: not beyond Run.
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	s.mu.Lock()
	s.runCtx = runCtx
	s.stored = stored
	for name, r := range stored {
		for p, n := range r.Next {
			s.committed[posKey{name, p}] = n
		}
	}
	s.mu.Unlock()

	writerCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWriter()
	var writers sync.WaitGroup
	failed := make(chan error, len(s.stores))
	for i := range s.stores {
		writers.Add(1)
		go func() {
			defer writers.Done()
			if err := s.write(writerCtx, i); err != nil {
				failed <- err
			}
		}()
	}

	err := s.follow(ctx, failed)
	s.mu.Lock()
	rooms := make([]*servedRoom, 0, len(s.served))
	for _, r := range s.served {
		r.cancel()
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	for _, r := range rooms {
		r.wg.Wait()
	}
	stopWriter()
	writers.Wait()
	close(failed)
	for werr := range failed {
		if err == nil {
			err = werr
		}
	}
	return err
}

// follow keeps the consumed rooms in line with the registry, until ctx is
// done or a writer fails.
func (s *Service) follow(ctx context.Context, writerDone <-chan error) error {
	select {
	case <-s.rooms.Ready():
	case <-ctx.Done():
		return nil
	case err := <-writerDone:
		return err
	}
	refresh := time.NewTicker(s.cfg.RefreshInterval)
	defer refresh.Stop()
	progress := time.NewTicker(s.cfg.ProgressLog)
	defer progress.Stop()
	var last progressMark
	for {
		changed := s.rooms.Changed()
		if err := s.sync(ctx, false); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("history: following the room registry failed; retrying", "err", err)
		}
		s.m.StoreBytes.Set(float64(s.size()))
		select {
		case <-ctx.Done():
			return nil
		case err := <-writerDone:
			return err
		case <-changed:
		case <-refresh.C:
			if err := s.sync(ctx, true); err != nil && ctx.Err() == nil {
				s.log.Warn("history: checking for deleted topics failed", "err", err)
			}
		case <-progress.C:
			last = s.logProgress(last)
		}
	}
}

// sync starts consuming the shard's new rooms and partitions and stops
// those that left it. Rooms stored but no longer served are dropped when
// they moved to another shard, or when their topic is gone (the room was
// deleted with its topic); checkTopics looks for the latter.
func (s *Service) sync(ctx context.Context, checkTopics bool) error {
	infos, err := s.rooms.List()
	if err != nil {
		return err
	}
	registered := map[string]room.Info{}
	mine := map[string]room.Info{}
	for _, in := range infos {
		registered[in.Name] = in
		if shard.Of(in.Name, s.cfg.Shards) == s.cfg.Shard {
			mine[in.Name] = in
		}
	}
	s.mu.Lock()
	var stop []*servedRoom
	for name, r := range s.served {
		if in, ok := mine[name]; !ok || in.Topic != r.info.Topic {
			stop = append(stop, r)
			delete(s.served, name)
		}
	}
	s.mu.Unlock()
	for _, r := range stop {
		r.cancel()
		r.wg.Wait()
		s.forgetLag(r)
		s.log.Info("history: room no longer served", "room", r.info.Name)
	}

	// Rooms stored but not served: moved away, or deleted.
	s.mu.Lock()
	var unserved []string
	for name := range s.stored {
		if _, ok := mine[name]; !ok {
			unserved = append(unserved, name)
		}
	}
	s.mu.Unlock()
	for _, name := range unserved {
		_, exists := registered[name]
		drop := exists // it belongs to another shard now
		if !exists && checkTopics {
			gone, err := s.topicGone(ctx, s.storedTopic(name))
			if err != nil {
				return err
			}
			drop = gone
		}
		if drop {
			if err := s.control(ctx, s.storeOf(name), func(st *Store) error { return st.DropRoom(ctx, name) }); err != nil {
				return err
			}
			s.mu.Lock()
			delete(s.stored, name)
			for k := range s.committed {
				if k.room == name {
					delete(s.committed, k)
				}
			}
			s.mu.Unlock()
			s.log.Info("history: dropped a room's rows", "room", name, "moved", exists)
		}
	}

	for name, in := range mine {
		if err := s.serve(ctx, in); err != nil {
			return fmt.Errorf("serve room %q: %w", name, err)
		}
	}
	s.mu.Lock()
	s.synced = true
	s.m.Rooms.Set(float64(len(s.served)))
	s.noteCaughtUpLocked()
	s.mu.Unlock()
	return nil
}

// serve starts consuming a room, or its new partitions.
func (s *Service) serve(ctx context.Context, in room.Info) error {
	s.mu.Lock()
	r := s.served[in.Name]
	s.mu.Unlock()
	if r == nil {
		var tag int64
		err := s.control(ctx, s.storeOf(in.Name), func(st *Store) error {
			var err error
			tag, err = st.AddRoom(ctx, in.Name, in.Topic)
			return err
		})
		if err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r = &servedRoom{info: in, tag: tag, cancel: cancel, ctx: rctx}
		s.mu.Lock()
		if old, ok := s.stored[in.Name]; !ok || old.Topic != in.Topic {
			for k := range s.committed {
				if k.room == in.Name {
					delete(s.committed, k)
				}
			}
		}
		s.stored[in.Name] = storedRoom{Topic: in.Topic, Tag: tag}
		s.served[in.Name] = r
		s.mu.Unlock()
		s.log.Info("history: serving room", "room", in.Name, "topic", in.Topic, "partitions", in.Partitions)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.info = in
	for p := r.parts; p < int(in.Partitions); p++ {
		next := s.committed[posKey{in.Name, p}]
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			s.consume(r.ctx, in.Name, in.Topic, r.tag, p, next)
		}()
	}
	r.parts = max(r.parts, int(in.Partitions))
	return nil
}

func (s *Service) storedTopic(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored[name].Topic
}

// topicGone asks the cluster whether topic still exists.
func (s *Service) topicGone(ctx context.Context, topic string) (bool, error) {
	res, err := s.cluster.Admin().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return false, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	for _, t := range res.Topics {
		if t.Name == topic {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return true, nil
			}
			return false, t.Error
		}
	}
	return true, nil
}

func (s *Service) forgetLag(r *servedRoom) {
	for p := range r.parts {
		s.m.Lag.DeleteLabelValues(r.info.Name, strconv.Itoa(p))
	}
	s.mu.Lock()
	for p := range r.parts {
		delete(s.end, posKey{r.info.Name, p})
	}
	s.mu.Unlock()
}

// CheckReady is the readiness check: the registry was read, the shard's
// rooms are consumed, and no partition is more than ReadyLag records
// behind the end its last fetch saw.
func (s *Service) CheckReady(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return errors.New("history: the room registry is not read yet")
	}
	behind, unknown := s.behindLocked()
	if unknown > 0 {
		return fmt.Errorf("history: %d partitions not fetched yet", unknown)
	}
	if behind > 0 {
		return fmt.Errorf("history: rebuilding, %d partitions more than %d records behind", behind, s.cfg.ReadyLag)
	}
	s.noteCaughtUpLocked()
	if !s.caughtUp {
		return errors.New("history: rebuilding, building the indexes")
	}
	return nil
}

// Ready returns a channel closed once the replica first caught up: the
// end of the rebuild.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// noteCaughtUpLocked ends the rebuild once every partition is caught up.
func (s *Service) noteCaughtUpLocked() {
	if s.caughtUp || !s.synced {
		return
	}
	if behind, unknown := s.behindLocked(); behind > 0 || unknown > 0 {
		return
	}
	building := false
	for i, st := range s.stores {
		if st.Building() {
			building = true
			if !s.finishing[i] && s.runCtx != nil {
				s.finishing[i] = true
				go s.finishBuild(s.runCtx, i)
			}
		}
	}
	if building {
		return
	}
	s.caughtUp = true
	s.m.Remaining.Set(0)
	close(s.ready)
	s.log.Info("history: caught up")
}

// behindLocked counts the partitions further behind than ReadyLag, and
// those whose end is not known yet.
func (s *Service) behindLocked() (behind, unknown int) {
	for name, r := range s.served {
		for p := range r.parts {
			k := posKey{name, p}
			end, ok := s.end[k]
			if !ok {
				unknown++
				continue
			}
			if end-s.committed[k] > int64(s.cfg.ReadyLag) {
				behind++
			}
		}
	}
	return behind, unknown
}

// finishBuild has store i's writer end its rebuild from empty, once every
// partition is caught up: the indexes are built in bulk
// (Store.FinishBuild); the replica is ready once every store's are.
func (s *Service) finishBuild(ctx context.Context, i int) {
	began := time.Now()
	var res built
	err := s.control(ctx, i, func(st *Store) error {
		var err error
		res, err = st.FinishBuild(ctx)
		return err
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finishing[i] = false
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("history: building the indexes failed; trying again at the next commit", "err", err)
		}
		return
	}
	var removed int64
	for name, r := range s.stored {
		if s.storeOf(name) != i {
			continue
		}
		s.m.Ingested.WithLabelValues(name).Add(float64(res.Rows[r.Tag]))
		if n := res.Copies[r.Tag]; n > 0 {
			s.m.Duplicates.WithLabelValues(name).Add(float64(n))
			removed += n
		}
	}
	s.log.Info("history: rebuilt: indexes built", "store", i, "seconds", time.Since(began).Seconds(), "later_copies", removed)
	close(s.progress) // queries waiting for the rebuild look again
	s.progress = make(chan struct{})
	s.noteCaughtUpLocked()
}

type progressMark struct {
	at     time.Time
	stored int64
}

// logProgress logs the rebuild's progress until the replica first caught
// up, and sets the rebuild metric.
func (s *Service) logProgress(last progressMark) progressMark {
	s.mu.Lock()
	var remaining, stored int64
	for k, end := range s.end {
		remaining += max(0, end-s.committed[k])
	}
	for _, n := range s.committed {
		stored += n
	}
	done := s.caughtUp
	s.mu.Unlock()
	now := progressMark{at: time.Now(), stored: stored}
	if done || s.CheckReady(context.Background()) == nil {
		return now
	}
	s.m.Remaining.Set(float64(remaining))
	attrs := []any{"remaining_records", remaining}
	if !last.at.IsZero() {
		attrs = append(attrs, "records_per_second", int64(float64(stored-last.stored)/now.at.Sub(last.at).Seconds()))
	}
	s.log.Info("history: rebuilding", attrs...)
	return now
}
