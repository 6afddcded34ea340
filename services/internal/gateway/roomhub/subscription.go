package roomhub

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/message"
)

type subState int

const (
	statePending subState = iota // buffering live messages until caught up
	stateLive                    // live messages go straight to the sink
	stateGone
)

// Subscription is one subscriber's membership of a room.
type Subscription struct {
	room   *Room
	sink   Sink
	ctx    context.Context // ends with Leave, a drop or the room
	cancel context.CancelFunc
	resume bool
	reset  bool   // the resume cursor did not apply: delivery starts at the oldest message
	start  string // where delivery starts, for the join's answer: encoded, far smaller than a cursor's map

	// Recovery plan, set at subscribe and then owned by the catch-up.
	gaps  []gap
	lastN int // gaps are a "latest N" read: keep the newest lastN of them
	ring  []*Delivery

	// Guarded by room.mu, except that the catch-up owns cur and synced
	// while state is statePending.
	state   subState
	pending []*Delivery
	cur     cursor.Cursor // what this subscriber was delivered, while not synced
	synced  bool          // cur equals the room's position: share deliveries as they are
	held    bool          // the sink holds pushes not flushed yet
}

// Room returns the room's name.
func (s *Subscription) Room() string { return s.room.name }

// Cursor returns the position delivery starts from.
func (s *Subscription) Cursor() cursor.Cursor {
	c, err := cursor.Parse(s.start)
	if err != nil {
		panic(fmt.Sprintf("roomhub: a subscription's start cursor does not parse: %v", err)) // String's output always does
	}
	return c
}

// Recovering reports whether the join resumes from a cursor, so missed
// messages come before live ones.
func (s *Subscription) Recovering() bool { return s.resume }

// Reset reports whether the join's cursor was not a position in the room's
// topic as it is now (another incarnation of the topic, or past a
// partition's end): delivery then starts at the room's oldest message, and
// the subscriber must drop what it holds of the room.
func (s *Subscription) Reset() bool { return s.reset }

// Start begins delivery: the recovery, if any, then live messages. Call it
// once, after queueing the join's answer.
func (s *Subscription) Start() {
	r := s.room
	if len(s.gaps) == 0 && len(s.ring) == 0 {
		r.mu.Lock()
		if s.state != statePending {
			r.mu.Unlock()
			return
		}
		ok := true
		for _, d := range s.pending {
			if v := s.view(d); v != nil && !s.sink.Push(v) {
				ok = false
				break
			}
		}
		s.pending = nil
		s.sink.Flush()
		if ok {
			s.state = stateLive
		} else {
			r.removeLocked(s)
		}
		r.mu.Unlock()
		if !ok {
			s.dropped(ErrSlowConsumer)
		}
		return
	}
	r.hub.wg.Add(1)
	go s.catchUp()
}

// Leave ends the subscription. It is safe to call more than once, and after
// the hub dropped the subscription.
func (s *Subscription) Leave() {
	r := s.room
	r.mu.Lock()
	gone := s.state == stateGone
	if !gone {
		r.removeLocked(s)
	}
	r.mu.Unlock()
	if !gone {
		s.cancel()
		r.release()
	}
}

// dropped ends a subscription the hub removed (already out of the room).
func (s *Subscription) dropped(err error) {
	s.cancel()
	s.sink.Dropped(err)
	s.room.release()
}

// offer hands a live delivery to the subscription; false means its queue
// overflowed. Called with the room locked.
func (s *Subscription) offer(d *Delivery) bool {
	switch s.state {
	case statePending:
		if len(s.pending) >= s.room.hub.cfg.PendingLimit {
			return false
		}
		s.pending = append(s.pending, d)
	case stateLive:
		v := s.view(d)
		if v == nil {
			return true
		}
		if s.sink.Push(v) {
			s.held = true
			s.room.held = true
			return true
		}
		// The queue is full: a burst (a broker that stalled and then let
		// a second of messages through) or a slow reader. Buffer behind the
		// queue and let the subscriber's socket pace the rest; only one
		// that falls PendingLimit further behind is a slow consumer.
		s.state = statePending
		s.pending = append(s.pending, d)
		s.room.hub.wg.Add(1)
		go s.catchUp()
	}
	return true
}

// view returns d as this subscriber must see it: nil when its cursor
// already covers the message, d itself once the subscriber's position is
// the room's, otherwise a copy carrying the subscriber's own cursor.
func (s *Subscription) view(d *Delivery) *Delivery {
	if s.synced {
		return d
	}
	p, off := d.Msg.Partition, d.Msg.Offset
	if s.cur.Covers(p, off) {
		return nil
	}
	s.cur.Advance(p, off)
	if !d.Cursor.IsZero() {
		cursorMax(&s.cur, d.Cursor)
		if cursorEqual(s.cur, d.Cursor) {
			s.synced = true
			s.cur = cursor.Cursor{}
			return d
		}
	}
	c := s.cur.Clone()
	c.SetEpoch(s.room.epoch)
	return d.withCursor(c)
}

// resolveGaps turns the planned gaps into exact ranges: it learns each
// partition's first retained offset (a cursor older than retention resumes
// at the oldest message left) and checks that Kafka answers before the join
// is acknowledged.
func (s *Subscription) resolveGaps(ctx context.Context) error {
	r := s.room
	ctx, cancel := context.WithTimeout(ctx, r.hub.cfg.ReadTimeout)
	defer cancel()
	ps := make([]int, len(s.gaps))
	for i, g := range s.gaps {
		ps[i] = g.partition
	}
	bounds, err := offsets(ctx, r.hub.src, map[string][]int{r.topic: ps})
	if err != nil {
		return err
	}
	gaps := s.gaps[:0]
	for _, g := range s.gaps {
		first := bounds[r.topic][g.partition].First
		if g.from < first {
			g.from = first
		}
		if s.lastN == 0 {
			s.cur.Advance(g.partition, g.from-1)
		}
		if g.from < g.to {
			gaps = append(gaps, g)
		}
	}
	s.gaps = gaps
	if s.lastN > 0 {
		s.cur = s.startOfGaps()
	}
	return nil
}

// startOfGaps is the position before the gaps: their start where there is
// one, the ring's start elsewhere.
func (s *Subscription) startOfGaps() cursor.Cursor {
	var c cursor.Cursor
	r := s.room
	r.mu.Lock()
	start := r.ringStart
	np := len(r.tails)
	r.mu.Unlock()
	for p := range np {
		next, _ := start.Next(p)
		for _, g := range s.gaps {
			if g.partition == p {
				next = g.from
			}
		}
		c.Advance(p, next-1)
	}
	return c
}

// errRead marks a Kafka read failure during a recovery.
var errRead = errors.New("roomhub: recovery read")

// catchUp delivers the recovery (Kafka gaps, then the ring snapshot), then
// the live messages buffered meanwhile, then switches to live delivery. It
// also runs, with no recovery left, for a live subscriber whose queue
// overflowed.
func (s *Subscription) catchUp() {
	r := s.room
	defer r.hub.wg.Done()
	err := s.replay()
	if err == nil {
		err = s.drainPending()
	}
	if err == nil || s.ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	gone := s.state == stateGone
	if !gone {
		r.removeLocked(s)
	}
	r.mu.Unlock()
	if gone {
		return
	}
	if errors.Is(err, errRead) {
		r.hub.log.Warn("roomhub: recovery failed", "room", r.name, "err", err)
		s.dropped(ErrUnavailable)
		return
	}
	// The sink refused (its connection is closing): end quietly.
	s.cancel()
	r.release()
}

func (s *Subscription) push(d *Delivery) error {
	if v := s.view(d); v != nil {
		return s.sink.PushWait(s.ctx, v)
	}
	return nil
}

func (s *Subscription) replay() error {
	r := s.room
	if s.lastN > 0 {
		ds, err := s.readLatest()
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := s.push(d); err != nil {
				return err
			}
		}
	} else {
		dd := r.hub.NewDedup()
		for _, g := range s.gaps {
			err := r.hub.src.ReadRange(s.ctx, r.topic, g.partition, g.from, g.to, func(rec Record) error {
				d := r.decode(rec)
				if d != nil && r.duplicateOf(dd, d.Msg) {
					// Skipped: the position still moves past it.
					s.cur.Advance(d.Msg.Partition, d.Msg.Offset)
					return nil
				}
				if d != nil {
					if err := s.push(d); err != nil {
						return fmt.Errorf("%w: %w", errSink, err)
					}
				}
				return nil
			})
			if err != nil {
				if s.ctx.Err() == nil && !errors.Is(err, errSink) {
					return fmt.Errorf("%w: %w", errRead, err)
				}
				return err
			}
		}
	}
	for _, d := range s.ring {
		if err := s.push(d); err != nil {
			return err
		}
	}
	// Done: a later catch-up (behind a full queue) only drains pending.
	s.gaps, s.lastN, s.ring = nil, 0, nil
	return nil
}

// errSink marks a sink refusal inside ReadRange's callback.
var errSink = errors.New("roomhub: sink refused")

// readLatest reads the gaps of a "latest N" join and keeps the newest lastN
// records across partitions, in delivery order.
func (s *Subscription) readLatest() ([]*Delivery, error) {
	r := s.room
	var ds []*Delivery
	dd := r.hub.NewDedup()
	for _, g := range s.gaps {
		err := r.hub.src.ReadRange(s.ctx, r.topic, g.partition, g.from, g.to, func(rec Record) error {
			if d := r.decode(rec); d != nil && !r.duplicateOf(dd, d.Msg) {
				ds = append(ds, d)
			}
			return nil
		})
		if err != nil {
			if s.ctx.Err() == nil {
				return nil, fmt.Errorf("%w: %w", errRead, err)
			}
			return nil, err
		}
	}
	SortByTime(ds)
	if len(ds) > s.lastN {
		ds = slices.Clone(ds[len(ds)-s.lastN:])
	}
	// Start each partition at its first message kept.
	first := map[int]int64{}
	for _, d := range ds {
		if _, ok := first[d.Msg.Partition]; !ok {
			first[d.Msg.Partition] = d.Msg.Offset
		}
	}
	var c cursor.Cursor
	for _, p := range s.cur.Partitions() {
		next, _ := s.cur.Next(p)
		for _, g := range s.gaps {
			if g.partition == p {
				next = g.to
			}
		}
		if f, ok := first[p]; ok {
			next = f
		}
		c.Advance(p, next-1)
	}
	s.cur = c
	return ds, nil
}

// duplicateOf reports whether m, read back for a recovery, is a later copy
// of a message: of one read before it in the same recovery (dd), or of one
// in the room's dedup window.
func (r *Room) duplicateOf(dd *Dedup, m message.Stored) bool {
	return dd.Duplicate(m) || r.duplicateInWindow(m)
}

// decode turns a record read back from Kafka into a delivery, or nil when
// it is not a valid envelope.
func (r *Room) decode(rec Record) *Delivery {
	d, err := DecodeRecord(r.name, rec)
	if err != nil {
		r.undecodable(rec.Partition, rec.Offset, err)
		return nil
	}
	d.encode = r.hub.cfg.Encode
	return d
}

// DecodeRecord turns a record of a room's topic into a delivery without a
// cursor; the error is message.DecodeRoom's (an envelope of another room is
// refused).
func DecodeRecord(roomName string, rec Record) (*Delivery, error) {
	env, err := message.DecodeRoom(rec.Value, roomName)
	if err != nil {
		return nil, err
	}
	return &Delivery{
		Room: roomName,
		Msg:  message.Stored{Envelope: env, Partition: rec.Partition, Offset: rec.Offset, Time: rec.Time},
	}, nil
}

// drainPending moves the live messages buffered during the recovery to the
// sink until none are left, then switches to live delivery.
func (s *Subscription) drainPending() error {
	r := s.room
	for {
		r.mu.Lock()
		if s.state != statePending {
			r.mu.Unlock()
			return nil
		}
		items := s.pending
		s.pending = nil
		if len(items) == 0 {
			s.state = stateLive
			r.mu.Unlock()
			return nil
		}
		r.mu.Unlock()
		for _, d := range items {
			if err := s.push(d); err != nil {
				return err
			}
		}
	}
}
