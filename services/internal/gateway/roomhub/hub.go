// Package roomhub fans a room's messages out to the gateway's local
// members: one tail per room with local members (a partition reader per
// partition), a ring of the room's latest messages for reconnect recovery,
// the room's messages of the dedup window (read back from Kafka when the
// room starts) for recognising retried sends, and bounded, never-blocking
// delivery to each subscriber's queue. Cursors carry the epoch of the
// room's topic; a cursor of another incarnation of it is reset.
//
// A subscriber joins live, from a cursor or with the latest N messages. The
// hub registers it and snapshots the ring under the room's lock, so nothing
// falls between the snapshot and the live stream; live messages are buffered
// (bounded) while the subscriber catches up from Kafka and the ring. It knows
// nothing of WebSockets: subscribers are Sinks.
package roomhub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/room"
)

// Defaults of Config.
const (
	DefaultRingSize    = 1024
	DefaultLinger      = 10 * time.Second
	DefaultStallCheck  = 10 * time.Second
	DefaultReadTimeout = 30 * time.Second
	DefaultDedupWindow = 10 * time.Minute
	DefaultFlushHold   = 2 * time.Millisecond
	// DefaultDedupEntries bounds the messages a room remembers for
	// deduplication.
	DefaultDedupEntries = 100_000
	// MaxLast bounds JoinRequest.Last.
	MaxLast = 500
)

// Errors of Join; test them with errors.Is.
var (
	// ErrClosed is returned by Join once the hub stopped.
	ErrClosed = errors.New("roomhub: closed")
	// ErrBadCursor: the resume cursor cannot be a position in this room (it
	// is another room's, or names a partition the room does not have).
	ErrBadCursor = errors.New("roomhub: cursor does not belong to the room")
)

// Config tunes a Hub. Zero fields take the defaults.
type Config struct {
	RingSize int // latest messages kept per room (1024)
	// PendingLimit bounds the live messages buffered for a subscriber that
	// is catching up (a recovery, or a burst bigger than its queue);
	// overflowing it drops the subscriber as a slow consumer. Default:
	// RingSize.
	PendingLimit int
	Linger       time.Duration // a room's tail outlives its last local member by this (10 s)
	StallCheck   time.Duration // period of the stalled-tail watchdog (10 s)
	ReadTimeout  time.Duration // bound on offset lookups when a room starts or a subscriber recovers (30 s)
	// DedupWindow and DedupEntries bound what a room remembers of its
	// messages for Recent: the messages stored within the window (10 min),
	// at most DedupEntries of them (100,000). A room reads its window back
	// from Kafka when it starts.
	DedupWindow  time.Duration
	DedupEntries int
	// FlushHold is how long a busy room holds its connections' writes for
	// more messages (1 ms; negative: never). A room is busy when its
	// previous flush is less than twice FlushHold old: a room at a few
	// hundred messages a second or more. A quiet room's message is written
	// at once.
	FlushHold time.Duration

	// Encode makes the frame of a delivery; required.
	Encode func(*Delivery) []byte

	Metrics Metrics
	Logger  *slog.Logger
}

// Metrics are the hub's instruments; nil ones are not recorded.
type Metrics struct {
	Recoveries   *prometheus.CounterVec // label source: ring or kafka
	TailRestarts prometheus.Counter
	Undecodable  *prometheus.CounterVec // label room
	// Duplicates counts the later copies of messages the room's tail
	// skipped: a second record of a sender's client message id within the
	// dedup window.
	Duplicates *prometheus.CounterVec // label room
	Rooms      prometheus.Gauge       // rooms tailed
}

func (c Config) withDefaults() Config {
	if c.RingSize <= 0 {
		c.RingSize = DefaultRingSize
	}
	if c.PendingLimit <= 0 {
		c.PendingLimit = c.RingSize
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
	}
	if c.StallCheck <= 0 {
		c.StallCheck = DefaultStallCheck
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.DedupEntries <= 0 {
		c.DedupEntries = DefaultDedupEntries
	}
	if c.FlushHold == 0 {
		c.FlushHold = DefaultFlushHold
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Hub holds the rooms that have local members.
type Hub struct {
	src Source
	cfg Config
	log *slog.Logger

	ctx    context.Context // parent of every room; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // room openers, tails and recoveries

	mu     sync.Mutex
	rooms  map[string]*Room
	closed bool
}

// New returns a hub reading from src. Call Run for the stall watchdog and
// Close (or end Run) to stop every tail.
func New(src Source, cfg Config) *Hub {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{src: src, cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel, rooms: map[string]*Room{}}
}

// Run checks the tails for stalls every StallCheck until ctx is done, then
// closes the hub.
func (h *Hub) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.StallCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.Close()
			return nil
		case <-t.C:
			h.checkTails(ctx)
		}
	}
}

// Close stops every tail and recovery and waits for them.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.rooms = map[string]*Room{}
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	h.gauge()
}

// Rooms returns the number of rooms tailed.
func (h *Hub) Rooms() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms)
}

func (h *Hub) gauge() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gaugeLocked()
}

func (h *Hub) gaugeLocked() {
	if h.cfg.Metrics.Rooms != nil {
		h.cfg.Metrics.Rooms.Set(float64(len(h.rooms)))
	}
}

// Sync brings the rooms tailed in line with the room registry; lookup
// returns a room's current entry, or false once it is deleted. The
// subscribers of a deleted room, or of one re-created on another topic,
// are dropped with ErrRoomGone; a room whose topic grew gets tails for its
// new partitions now, not at its next join. Call it at every change of
// the registry.
func (h *Hub) Sync(ctx context.Context, lookup func(name string) (room.Info, bool)) {
	h.mu.Lock()
	rooms := slices.Collect(maps.Values(h.rooms))
	h.mu.Unlock()
	for _, r := range rooms {
		select {
		case <-r.ready:
		default:
			continue // still opening: its joins read the registry afresh
		}
		if r.err != nil {
			continue
		}
		info, ok := lookup(r.name)
		if !ok || info.Topic != r.topic {
			r.gone()
			continue
		}
		if err := r.grow(ctx, int(info.Partitions)); err != nil {
			h.log.Warn("roomhub: cannot tail the room's new partitions; its next join retries", "room", r.name, "err", err)
		}
	}
}

// Recent finds a message by sender and client message id among the room's
// messages of the dedup window, for deduplicating sends stored through any
// replica or before a restart. It knows a room only while the room is
// tailed (a member joined it, or Hold holds it): every message stored from
// DedupWindow before the room started on.
func (h *Hub) Recent(roomName, senderID, id string) (message.Stored, bool) {
	h.mu.Lock()
	r := h.rooms[roomName]
	h.mu.Unlock()
	if r == nil {
		return message.Stored{}, false
	}
	select {
	case <-r.ready:
	default:
		return message.Stored{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recent == nil {
		return message.Stored{}, false
	}
	return r.recent.find(senderID, id, time.Now())
}

// Hold starts tailing a room, if it is not tailed yet, without a member,
// and waits until it started (so Recent knows its dedup window). Call
// release when done; the room then lingers like one its last member left.
// Errors: context errors, ErrClosed, or ErrUnavailable.
func (h *Hub) Hold(ctx context.Context, info room.Info) (release func(), err error) {
	r, err := h.started(ctx, info)
	if err != nil {
		return nil, err
	}
	return sync.OnceFunc(r.release), nil
}

// started returns the room with one more reference held, once it started.
func (h *Hub) started(ctx context.Context, info room.Info) (*Room, error) {
	r, err := h.acquire(info)
	if err != nil {
		return nil, err
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		r.release()
		return nil, ctx.Err()
	}
	if r.err != nil {
		r.release()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, r.err)
	}
	return r, nil
}

// JoinRequest says where a subscriber's delivery starts.
type JoinRequest struct {
	// Resume: deliver every message after Cursor first. A partition the
	// cursor does not name is read from its first retained offset.
	Resume bool
	Cursor cursor.Cursor
	// Last: deliver the latest Last messages first (at most MaxLast).
	Last int
}

// Join subscribes sink to a room. Nothing is delivered until the
// subscription's Start, so the caller can answer the join first. Errors:
// context errors, ErrClosed, ErrBadCursor, or ErrUnavailable wrapping why
// Kafka could not be read.
func (h *Hub) Join(ctx context.Context, info room.Info, sink Sink, req JoinRequest) (*Subscription, error) {
	if req.Last < 0 || req.Last > MaxLast {
		return nil, fmt.Errorf("roomhub: last %d outside 0..%d", req.Last, MaxLast)
	}
	r, err := h.started(ctx, info)
	if err != nil {
		return nil, err
	}
	if err := r.grow(ctx, int(info.Partitions)); err != nil {
		r.release()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s, err := r.subscribe(ctx, sink, req)
	if err != nil {
		r.release()
		return nil, err
	}
	return s, nil
}

// acquire returns the room, starting it if it is not tailed yet, with one
// more reference held.
func (h *Hub) acquire(info room.Info) (*Room, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	r := h.rooms[info.Name]
	if r == nil {
		r = newRoom(h, info)
		h.rooms[info.Name] = r
		h.wg.Add(1)
		go r.open(int(info.Partitions))
		h.gaugeLocked()
	}
	r.mu.Lock()
	r.refs++
	if r.linger != nil {
		r.linger.Stop()
		r.linger = nil
	}
	r.mu.Unlock()
	return r, nil
}

// Room is a tailed room: its partitions' tails, ring and subscribers.
type Room struct {
	hub    *Hub
	name   string
	topic  string
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{} // closed once the tails started, or err is set
	err    error
	epoch  cursor.Epoch // of the topic tailed; set before ready

	mu        sync.Mutex
	refs      int // subscriptions and joins in progress
	closed    bool
	linger    *time.Timer
	subs      map[*Subscription]struct{}
	pos       cursor.Cursor // next offset of every partition, in delivery order
	ringStart cursor.Cursor // position before the ring's oldest message
	ring      ring
	recent    *recent // the dedup window; set before ready
	tails     []*tail
	held      bool        // a subscriber's sink holds pushes not flushed yet
	flushedAt time.Time   // when the sinks were last flushed
	holding   bool        // a held flush is due: hold will fire
	hold      *time.Timer // flushes a busy room's held pushes; made on first use
}

func newRoom(h *Hub, info room.Info) *Room {
	ctx, cancel := context.WithCancel(h.ctx)
	return &Room{
		hub: h, name: info.Name, topic: info.Topic, ctx: ctx, cancel: cancel,
		ready: make(chan struct{}), subs: map[*Subscription]struct{}{}, ring: newRing(h.cfg.RingSize),
	}
}

// open learns the topic's id, reads the dedup window back, and starts a
// tail per partition at the partition's end.
func (r *Room) open(partitions int) {
	h := r.hub
	defer h.wg.Done()
	defer close(r.ready)
	ctx, cancel := context.WithTimeout(r.ctx, h.cfg.ReadTimeout)
	defer cancel()
	if m := h.cfg.Metrics.Undecodable; m != nil {
		m.WithLabelValues(r.name) // the series exists before its first event
	}
	if m := h.cfg.Metrics.Duplicates; m != nil {
		m.WithLabelValues(r.name)
	}
	ps := make([]int, partitions)
	for p := range ps {
		ps[p] = p
	}
	var bounds map[string]map[int]Bounds
	id, err := topicID(ctx, h.src, r.topic)
	if err == nil {
		bounds, err = offsets(ctx, h.src, map[string][]int{r.topic: ps})
	}
	if err == nil {
		r.epoch = cursor.NewEpoch(r.name, id)
		r.recent = newRecent(h.cfg.DedupWindow, h.cfg.DedupEntries)
		ends, firsts := map[int]int64{}, map[int]int64{}
		for _, p := range ps {
			ends[p], firsts[p] = bounds[r.topic][p].End, bounds[r.topic][p].First
		}
		// A busy room's window is many records: the read gets more time
		// than an offset lookup.
		bctx, bcancel := context.WithTimeout(r.ctx, 4*h.cfg.ReadTimeout)
		err = r.backfill(bctx, ends, firsts)
		bcancel()
	}
	if err != nil {
		r.err = err
		h.log.Warn("roomhub: cannot start the room's tail", "room", r.name, "err", err)
		h.mu.Lock()
		if h.rooms[r.name] == r {
			delete(h.rooms, r.name)
		}
		h.mu.Unlock()
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		r.cancel()
		h.gauge()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pos.SetEpoch(r.epoch)
	for _, p := range ps {
		r.startTailLocked(p, bounds[r.topic][p].End)
	}
	r.ringStart = r.pos.Clone()
	h.log.Debug("roomhub: room tailed", "room", r.name, "topic", r.topic, "partitions", partitions)
}

// startTailLocked starts following partition p from offset.
func (r *Room) startTailLocked(p int, offset int64) {
	r.pos.Advance(p, offset-1)
	t := &tail{room: r, partition: p, behindAt: -1}
	t.next.Store(offset)
	r.tails = append(r.tails, t)
	r.hub.wg.Add(1)
	go t.run()
}

// grow starts tails for partitions added to the room's topic since it was
// tailed; their messages are all newer than any cursor, so they are read
// from their first offset.
func (r *Room) grow(ctx context.Context, partitions int) error {
	r.mu.Lock()
	have := len(r.tails)
	r.mu.Unlock()
	if partitions <= have {
		return nil
	}
	var ps []int
	for p := have; p < partitions; p++ {
		ps = append(ps, p)
	}
	ctx, cancel := context.WithTimeout(ctx, r.hub.cfg.ReadTimeout)
	defer cancel()
	bounds, err := offsets(ctx, r.hub.src, map[string][]int{r.topic: ps})
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	start := r.ringStart.Clone()
	for _, p := range ps {
		if p != len(r.tails) {
			continue // another join grew it meanwhile
		}
		first := bounds[r.topic][p].First
		r.startTailLocked(p, first)
		start.Advance(p, first-1)
	}
	r.ringStart = start
	return nil
}

// release drops a reference; the last one schedules the room's end.
func (r *Room) release() {
	h := r.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refs--
	if r.refs == 0 && !r.closed {
		r.linger = time.AfterFunc(h.cfg.Linger, r.expire)
	}
}

// gone stops a room that left the registry and drops its subscribers.
func (r *Room) gone() {
	r.end(ErrRoomGone)
	r.hub.log.Info("roomhub: room left the registry; its members were told", "room", r.name)
}

// replaced stops a room whose topic was deleted and created again under
// the same name (or whose broker was wiped): its tails point into a log
// that is no more. Its subscribers are dropped with ErrTopicReplaced; their
// next join starts the room afresh, and their cursors are reset.
func (r *Room) replaced() {
	r.end(ErrTopicReplaced)
	r.hub.log.Warn("roomhub: the room's topic was replaced; its members were told to join again", "room", r.name, "topic", r.topic)
}

// end stops the room and drops its subscribers with err.
func (r *Room) end(err error) {
	h := r.hub
	h.mu.Lock()
	r.mu.Lock()
	if h.rooms[r.name] == r {
		delete(h.rooms, r.name)
	}
	r.closed = true
	if r.linger != nil {
		r.linger.Stop()
		r.linger = nil
	}
	subs := slices.Collect(maps.Keys(r.subs))
	for _, s := range subs {
		r.removeLocked(s)
	}
	r.mu.Unlock()
	h.mu.Unlock()
	r.cancel()
	for _, s := range subs {
		s.dropped(err)
	}
	h.gauge()
}

// expire stops a room nobody rejoined during the linger.
func (r *Room) expire() {
	h := r.hub
	h.mu.Lock()
	r.mu.Lock()
	stop := r.refs == 0 && !r.closed
	if stop {
		r.closed = true
		if h.rooms[r.name] == r {
			delete(h.rooms, r.name)
		}
	}
	r.mu.Unlock()
	h.mu.Unlock()
	if stop {
		r.cancel()
		h.gauge()
		h.log.Debug("roomhub: room untailed", "room", r.name)
	}
}

// deliver hands a record read by a tail to the ring and the subscribers.
func (r *Room) deliver(t *tail, offset int64, at time.Time, value []byte) {
	env, derr := message.DecodeRoom(value, r.name)
	r.mu.Lock()
	r.pos.Advance(t.partition, offset)
	t.next.Store(offset + 1)
	if derr != nil {
		r.mu.Unlock()
		r.undecodable(t.partition, offset, derr)
		return
	}
	msg := message.Stored{Envelope: env, Partition: t.partition, Offset: offset, Time: at}
	now := time.Now()
	if r.recent.duplicate(msg, now) {
		// A later copy (a produce retried after a broker failover, or a
		// send retried through a gateway that had not read the first):
		// members saw the first. The room's position moved past it, so
		// the next delivery's cursor covers it.
		r.mu.Unlock()
		r.duplicate(msg)
		return
	}
	d := &Delivery{
		Room:   r.name,
		Msg:    msg,
		Cursor: r.pos.Clone(),
		encode: r.hub.cfg.Encode,
	}
	if ev := r.ring.push(d); ev != nil {
		r.ringStart = ev.Cursor
	}
	r.recent.add(d.Msg, now)
	if len(r.subs) > 0 {
		// Encoded here, on the tail's goroutine, rather than by the first
		// connection's writer: a writer is often new, and encoding would
		// grow its small stack.
		d.Frame()
	}
	var dropped []*Subscription
	for s := range r.subs {
		if !s.offer(d) {
			dropped = append(dropped, s)
		}
	}
	for _, s := range dropped {
		r.removeLocked(s)
	}
	r.mu.Unlock()
	for _, s := range dropped {
		s.dropped(ErrSlowConsumer)
	}
}

func (r *Room) duplicate(m message.Stored) {
	if c := r.hub.cfg.Metrics.Duplicates; c != nil {
		c.WithLabelValues(r.name).Inc()
	}
	r.hub.log.Debug("roomhub: skipping a later copy of a message", "room", r.name, "partition", m.Partition,
		"offset", m.Offset, "sender", m.SenderID, "id", m.ID)
}

// Duplicate reports whether m, read back from Kafka outside the room's
// tail, is a later copy of a message: by dd, the dedup of the records read
// before it in the same read (it remembers m otherwise), or by the room's
// dedup window if the room is tailed.
func (h *Hub) Duplicate(roomName string, dd *Dedup, m message.Stored) bool {
	h.mu.Lock()
	r := h.rooms[roomName]
	h.mu.Unlock()
	if r == nil {
		return dd.Duplicate(m)
	}
	select {
	case <-r.ready:
		return r.duplicateOf(dd, m)
	default:
		return dd.Duplicate(m)
	}
}

// duplicateInWindow reports whether m is a later copy of a message of the
// room's dedup window.
func (r *Room) duplicateInWindow(m message.Stored) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recent != nil && r.recent.duplicate(m, time.Now())
}

// NewDedup returns a Dedup with the hub's window and bound.
func (h *Hub) NewDedup() *Dedup { return NewDedup(h.cfg.DedupWindow, h.cfg.DedupEntries) }

func (r *Room) undecodable(p int, offset int64, err error) {
	if m := r.hub.cfg.Metrics.Undecodable; m != nil {
		m.WithLabelValues(r.name).Inc()
	}
	r.hub.log.Warn("roomhub: skipping an undecodable record", "room", r.name, "partition", p, "offset", offset, "err", err)
}

func (r *Room) removeLocked(s *Subscription) {
	delete(r.subs, s)
	s.state = stateGone
	s.pending = nil
	if s.held {
		s.held = false
		s.sink.Flush()
	}
}

// flush hands the deliveries the room's sinks hold to their writers at
// once: a tail calls it after maxBurst messages and when it stops.
func (r *Room) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushLocked(time.Now())
}

// endBurst is a tail's flush once its reader has no more records read
// ahead: at once for a quiet room; a busy room's (flushed less than
// 2×FlushHold ago) waits FlushHold for more messages, so that each
// connection writes several in one system call. Pushes go on while a
// flush is held and land behind the held ones: order is the queues'.
func (r *Room) endBurst() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held || r.holding {
		return
	}
	hold := r.hub.cfg.FlushHold
	now := time.Now()
	if hold <= 0 || now.Sub(r.flushedAt) >= 2*hold {
		r.flushLocked(now)
		return
	}
	r.holding = true
	if r.hold == nil {
		r.hold = time.AfterFunc(hold, r.flush)
	} else {
		r.hold.Reset(hold)
	}
}

func (r *Room) flushLocked(now time.Time) {
	r.holding = false // a hold timer that fires now finds nothing held
	if !r.held {
		return
	}
	r.held = false
	r.flushedAt = now
	for s := range r.subs {
		if s.held {
			s.held = false
			s.sink.Flush()
		}
	}
}

// subscribe registers a subscription (buffering) and plans its recovery,
// atomically with the ring snapshot.
func (r *Room) subscribe(ctx context.Context, sink Sink, req JoinRequest) (*Subscription, error) {
	h := r.hub
	var reset bool
	if req.Resume {
		var err error
		if reset, err = r.checkCursor(ctx, req.Cursor); err != nil {
			return nil, err
		}
		if reset {
			req.Cursor = cursor.Cursor{} // every partition from its oldest message
		}
	}
	sctx, cancel := context.WithCancel(r.ctx)
	s := &Subscription{room: r, sink: sink, ctx: sctx, cancel: cancel, resume: req.Resume, reset: reset}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		return nil, ErrRoomGone
	}
	np := len(r.tails)
	switch {
	case req.Resume:
		for p := range np {
			next, ok := req.Cursor.Next(p)
			start, _ := r.ringStart.Next(p)
			switch {
			case !ok:
				s.gaps = append(s.gaps, gap{partition: p, from: -1, to: start})
			case next < start:
				s.gaps = append(s.gaps, gap{partition: p, from: next, to: start})
				s.cur.Advance(p, next-1)
			default:
				s.cur.Advance(p, next-1)
			}
		}
		s.ring = r.ring.snapshot(0)
	case req.Last > 0:
		n := r.ring.n
		if n >= req.Last {
			from := n - req.Last
			s.cur = r.ringStart.Clone()
			if from > 0 {
				s.cur = r.ring.at(from - 1).Cursor.Clone()
			}
			s.ring = r.ring.snapshot(from)
		} else {
			s.cur = r.ringStart.Clone()
			s.ring = r.ring.snapshot(0)
			s.lastN = req.Last - n
			for p := range np {
				start, _ := r.ringStart.Next(p)
				// Twice as many, so later copies among them (skipped) do
				// not shorten the answer.
				s.gaps = append(s.gaps, gap{partition: p, from: start - 2*int64(s.lastN), to: start})
			}
		}
	default:
		s.cur = r.pos.Clone()
	}
	r.subs[s] = struct{}{}
	r.mu.Unlock()

	if len(s.gaps) > 0 {
		if err := s.resolveGaps(ctx); err != nil {
			r.mu.Lock()
			r.removeLocked(s)
			r.mu.Unlock()
			cancel()
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	start := s.cur.Clone()
	start.SetEpoch(r.epoch)
	s.start = start.String()
	if req.Resume {
		source := "ring"
		if len(s.gaps) > 0 {
			source = "kafka"
		}
		if m := h.cfg.Metrics.Recoveries; m != nil {
			m.WithLabelValues(source).Inc()
		}
	}
	return s, nil
}

// checkCursor decides how a resume cursor applies to the room. It is an
// error wrapping ErrBadCursor when the cursor cannot be a position in this
// room: another room's, or naming a partition the room does not have. It
// is a reset when the cursor's positions are not in the room's topic as it
// is now: the cursor's epoch names another incarnation of the topic (it was
// deleted and created again, or the broker wiped), or, for a cursor without
// epoch (made before epochs) or of this epoch, a position lies past its
// partition's end, where nothing was ever stored. Resuming from such a
// position would wait for offsets the topic will reach only much later,
// hiding every message until then.
func (r *Room) checkCursor(ctx context.Context, c cursor.Cursor) (reset bool, err error) {
	if e := c.Epoch(); !e.IsZero() {
		if e.Room != r.epoch.Room {
			return false, fmt.Errorf("%w: it is another room's", ErrBadCursor)
		}
		if e != r.epoch {
			return r.checkEpoch(ctx)
		}
	}
	r.mu.Lock()
	np := len(r.tails)
	pos := r.pos.Clone()
	r.mu.Unlock()
	var ahead []int
	for _, p := range c.Partitions() {
		if p >= np {
			return false, fmt.Errorf("%w: it names partition %d and the room has %d", ErrBadCursor, p, np)
		}
		next, _ := c.Next(p)
		if have, _ := pos.Next(p); next > have {
			ahead = append(ahead, p) // past the tail: past the end, or the tail lags
		}
	}
	if len(ahead) == 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.hub.cfg.ReadTimeout)
	defer cancel()
	bounds, err := offsets(ctx, r.hub.src, map[string][]int{r.topic: ahead})
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, p := range ahead {
		if next, _ := c.Next(p); next > bounds[r.topic][p].End {
			return true, nil
		}
	}
	return false, nil
}

// checkEpoch handles a cursor of another incarnation of the room's topic:
// a reset if the room tails the topic as it is now; if the topic changed
// under the room instead (the cursor is newer than the room), the room is
// replaced and the join answered ErrUnavailable, to be retried.
func (r *Room) checkEpoch(ctx context.Context) (reset bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.hub.cfg.ReadTimeout)
	defer cancel()
	id, err := topicID(ctx, r.hub.src, r.topic)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if id != r.epoch.Topic {
		r.replaced()
		return false, fmt.Errorf("%w: the room's topic was replaced; join again", ErrUnavailable)
	}
	return true, nil
}

// tailsOf returns the room's tails if it is running.
func (r *Room) tailsOf() []*tail {
	select {
	case <-r.ready:
	default:
		return nil
	}
	if r.err != nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	return slices.Clone(r.tails)
}

// checkTails is the stall watchdog. One Metadata request for the tailed
// topics' ids: a room whose topic was deleted and created again under the
// same name (or whose broker was wiped) has a new id, and is ended with
// ErrTopicReplaced so its members join again (and are reset); a topic
// missing for now is skipped. Then one ListOffsets for every other tailed
// partition: a tail that is behind its partition's end and made no
// progress since the previous check is replaced at its next offset.
func (h *Hub) checkTails(ctx context.Context) {
	h.mu.Lock()
	rooms := slices.Collect(maps.Values(h.rooms))
	h.mu.Unlock()
	tailsOf := map[*Room][]*tail{}
	var topics []string
	for _, r := range rooms {
		if ts := r.tailsOf(); len(ts) > 0 {
			tailsOf[r] = ts
			topics = append(topics, r.topic)
		}
	}
	if len(topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ReadTimeout)
	defer cancel()
	ids, err := h.src.TopicIDs(ctx, topics...)
	if err != nil {
		h.log.Warn("roomhub: watchdog cannot read the topics' ids", "err", err)
		return
	}
	req := map[string][]int{}
	var tails []*tail
	nexts := map[*tail]int64{} // before the request: a tail reads on meanwhile
	for r, ts := range tailsOf {
		id, ok := ids[r.topic]
		if !ok {
			continue // deleted; the registry or its creation again will tell
		}
		if id != r.epoch.Topic {
			r.replaced()
			continue
		}
		for _, t := range ts {
			req[r.topic] = append(req[r.topic], t.partition)
			tails = append(tails, t)
			nexts[t] = t.next.Load()
		}
	}
	if len(tails) == 0 {
		return
	}
	ends, err := h.src.Offsets(ctx, req)
	if err != nil {
		h.log.Warn("roomhub: watchdog cannot list offsets", "err", err)
		return
	}
	for _, t := range tails {
		b, ok := ends[t.room.topic][t.partition]
		switch {
		case !ok:
		case nexts[t] > b.End:
			// The same topic, shorter than what the tail read: its log was
			// truncated (an unclean leader election).
			h.log.Warn("roomhub: tail past its partition's end", "room", t.room.name, "partition", t.partition,
				"next", nexts[t], "end", b.End)
		case t.stalled(b.End):
			h.log.Warn("roomhub: tail stalled; replacing its reader", "room", t.room.name, "partition", t.partition,
				"next", t.next.Load(), "end", b.End)
			t.restart()
		}
	}
}

// offsets asks src for offsets, retrying for a few seconds on errors that
// pass: a topic created a moment ago has no leader known everywhere yet.
func offsets(ctx context.Context, src Source, req map[string][]int) (map[string]map[int]Bounds, error) {
	var b map[string]map[int]Bounds
	err := retry(ctx, func() error {
		var err error
		b, err = src.Offsets(ctx, req)
		return err
	})
	return b, err
}

// retry calls fn until it succeeds, fails with an error that does not
// pass, or five seconds went by.
func retry(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(5 * time.Second)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := fn()
		var ke kafka.Error
		passes := errors.As(err, &ke) && ke.Temporary() || kerr.IsRetriable(err)
		if err == nil || !passes || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// topicID asks src for a topic's id, retrying like offsets.
func topicID(ctx context.Context, src Source, topic string) ([16]byte, error) {
	var id [16]byte
	err := retry(ctx, func() error {
		ids, err := src.TopicIDs(ctx, topic)
		if err != nil {
			return err
		}
		var ok bool
		if id, ok = ids[topic]; !ok {
			return fmt.Errorf("roomhub: metadata of %s: %w", topic, kerr.UnknownTopicOrPartition)
		}
		return nil
	})
	return id, err
}

// gap is a range of one partition to read from Kafka before the ring;
// from -1 means the partition's first retained offset.
type gap struct {
	partition int
	from, to  int64
}

// SortByTime orders messages from several partitions as readers of a room
// do: record timestamp, then partition, then offset.
func SortByTime(ds []*Delivery) {
	slices.SortStableFunc(ds, func(a, b *Delivery) int {
		return cmp.Or(a.Msg.Time.Compare(b.Msg.Time), cmp.Compare(a.Msg.Partition, b.Msg.Partition), cmp.Compare(a.Msg.Offset, b.Msg.Offset))
	})
}

// A page's position is an offset per partition, so a page read backward
// holds, in each partition, every message read from its start on (forward:
// up to its end). Where times do not go backward within a partition (the
// broker's clock, as room topics keep it) the newest (oldest) limit
// messages by time are such a page; where they do (a broker's clock
// stepped back), a message read and left out ends the partition's part of
// the page, so no message is listed twice or skipped, and the page holds
// at least one message.

// PageBackward sorts ds (the newest messages read from each partition) by
// time and returns the page of up to limit of them read backward, oldest
// first, and the messages left out.
func PageBackward(ds []*Delivery, limit int) (page, left []*Delivery) {
	SortByTime(ds)
	if len(ds) <= limit {
		return ds, nil
	}
	newestLeft := map[int]int64{}
	for _, d := range ds[:len(ds)-limit] {
		if o, ok := newestLeft[d.Msg.Partition]; !ok || d.Msg.Offset > o {
			newestLeft[d.Msg.Partition] = d.Msg.Offset
		}
	}
	keep := func(d *Delivery) bool {
		o, ok := newestLeft[d.Msg.Partition]
		return !ok || d.Msg.Offset > o
	}
	window := func(i int) bool { return i >= len(ds)-limit }
	if !slices.ContainsFunc(ds[len(ds)-limit:], keep) {
		// The newest message of each partition: the newest of them.
		newest := map[int]int64{}
		for _, d := range ds {
			newest[d.Msg.Partition] = max(newest[d.Msg.Partition], d.Msg.Offset)
		}
		for i := len(ds) - 1; i >= 0; i-- {
			if d := ds[i]; d.Msg.Offset == newest[d.Msg.Partition] {
				keep, window = func(e *Delivery) bool { return e == d }, func(int) bool { return true }
				break
			}
		}
	}
	for i, d := range ds {
		if window(i) && keep(d) {
			page = append(page, d)
		} else {
			left = append(left, d)
		}
	}
	return page, left
}

// PageForward sorts ds (the oldest messages read from each partition) by
// time and returns the page of up to limit of them read forward, oldest
// first, and the messages left out.
func PageForward(ds []*Delivery, limit int) (page, left []*Delivery) {
	SortByTime(ds)
	if len(ds) <= limit {
		return ds, nil
	}
	oldestLeft := map[int]int64{}
	for _, d := range ds[limit:] {
		if o, ok := oldestLeft[d.Msg.Partition]; !ok || d.Msg.Offset < o {
			oldestLeft[d.Msg.Partition] = d.Msg.Offset
		}
	}
	keep := func(d *Delivery) bool {
		o, ok := oldestLeft[d.Msg.Partition]
		return !ok || d.Msg.Offset < o
	}
	window := func(i int) bool { return i < limit }
	if !slices.ContainsFunc(ds[:limit], keep) {
		// The oldest message of each partition: the oldest of them.
		oldest := map[int]int64{}
		for _, d := range ds {
			if o, ok := oldest[d.Msg.Partition]; !ok || d.Msg.Offset < o {
				oldest[d.Msg.Partition] = d.Msg.Offset
			}
		}
		for _, d := range ds {
			if d.Msg.Offset == oldest[d.Msg.Partition] {
				keep, window = func(e *Delivery) bool { return e == d }, func(int) bool { return true }
				break
			}
		}
	}
	for i, d := range ds {
		if window(i) && keep(d) {
			page = append(page, d)
		} else {
			left = append(left, d)
		}
	}
	return page, left
}
