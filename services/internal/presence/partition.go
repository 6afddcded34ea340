package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// readBatch bounds how many events are applied between two looks at what
// is due for publication.
const readBatch = 1024

// runPartition serves one partition of the events topic until ctx ends:
// it rebuilds the partition's rooms from the state topic, replays the
// events after the last checkpoint, then follows the events, publishing
// room states and checkpoints and expiring silent gateways.
func (s *Service) runPartition(ctx context.Context, gen *kafka.Generation, p int) error {
	began := s.now()
	states, cp, err := s.readState(ctx, p)
	if err != nil {
		return err
	}
	m := newMachine(s.cfg.Timing)
	m.restore(states, cp)
	first, end, err := s.bounds(ctx, s.cfg.EventsTopic, p)
	if err != nil {
		return err
	}
	start := first
	if cp != nil {
		start = max(first, cp.Offset+1)
	}
	s.m.Takeovers.Inc()
	s.log.Info("presence: partition taken over", "partition", p, "rooms", len(states), "checkpoint", start-1,
		"replay", max(end-start, 0), "took", s.now().Sub(began))
	rd, err := partitionReader(s.cluster, s.cfg.EventsTopic, p, start)
	if err != nil {
		return err
	}
	defer rd.Close()

	msgs := make(chan kafka.Message, readBatch)
	readErr := make(chan error, 1)
	rctx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go func() {
		for {
			msg, err := rd.ReadMessage(rctx)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case msgs <- msg:
			case <-rctx.Done():
				readErr <- rctx.Err()
				return
			}
		}
	}()

	pt := &partitionRun{s: s, p: p, m: m, caughtUp: start >= end, restored: start >= end, lastCP: s.now()}
	defer pt.release()
	if gen != nil {
		pt.commits = make(chan int64, 1)
		defer close(pt.commits)
		go func() {
			for off := range pt.commits {
				_ = gen.CommitOffsets(map[string]map[int]int64{s.cfg.EventsTopic: {p: off}})
			}
		}()
	}
	restored := make([]*roomState, 0, len(m.rooms))
	for _, r := range m.rooms {
		restored = append(restored, r)
	}
	pt.gauges(restored)
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Hand over cleanly: whatever is pending, then the checkpoint.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return pt.publish(fctx, true)
		case err := <-readErr:
			return fmt.Errorf("read %s/%d: %w", s.cfg.EventsTopic, p, err)
		case msg := <-msgs:
			pt.apply(ctx, msg)
			for i := 1; i < readBatch; i++ {
				select {
				case msg := <-msgs:
					pt.apply(ctx, msg)
					continue
				default:
				}
				break
			}
			if err := pt.publish(ctx, false); err != nil {
				return err
			}
		case <-tick.C:
			if pt.caughtUp {
				gws, conns := m.expire(s.now())
				if gws > 0 {
					s.m.GatewaysLost.Add(float64(gws))
					s.m.Expiries.Add(float64(conns))
					s.log.Info("presence: gateways expired", "partition", p, "gateways", gws, "connections", conns)
				}
			}
			if err := pt.publish(ctx, false); err != nil {
				return err
			}
		}
	}
}

// partitionRun is the state of one partition being served.
type partitionRun struct {
	s        *Service
	p        int
	m        *machine
	caughtUp bool // the events read reach the partition's end
	restored bool // caught up at least once since the takeover: publish
	lastCP   time.Time
	cpOffset int64
	rooms    map[string]bool // rooms with gauges set
	commits  chan int64      // offsets for the group's committer
	failures int
}

func (pt *partitionRun) apply(ctx context.Context, msg kafka.Message) {
	s := pt.s
	pt.caughtUp = msg.Offset+1 >= msg.HighWaterMark
	if pt.caughtUp {
		pt.restored = true
	}
	e, err := DecodeEvent(msg.Value)
	if err != nil {
		s.m.Events.WithLabelValues("invalid").Inc()
		reason := DropMalformed
		switch {
		case errors.Is(err, ErrUnknownType):
			reason = DropUnknownType
		case errors.Is(err, ErrVersion):
			reason = DropVersion
		}
		s.m.Dropped.WithLabelValues(reason).Inc()
		s.log.Debug("presence: dropping a bad event", "partition", pt.p, "offset", msg.Offset, "err", err)
		pt.m.applied = max(pt.m.applied, msg.Offset)
		return
	}
	s.m.Events.WithLabelValues(e.Type).Inc()
	if e.Room != "" && !s.knownRoom(ctx, e.Room) {
		s.m.Dropped.WithLabelValues(DropUnknownRoom).Inc()
		pt.m.applied = max(pt.m.applied, msg.Offset)
		return
	}
	if reason := pt.m.apply(e, msg.Offset, msg.Time); reason != "" {
		s.m.Dropped.WithLabelValues(reason).Inc()
	}
}

// publish stores the states of the rooms due (all dirty rooms when all)
// and, at most once per checkpoint interval, the partition's checkpoint,
// in one write. Nothing is published while a takeover replays.
func (pt *partitionRun) publish(ctx context.Context, all bool) error {
	if !pt.restored {
		return nil
	}
	s, now := pt.s, pt.s.now()
	interval := func(users int) time.Duration {
		switch {
		case all:
			return 0
		case users >= s.cfg.LargeRoom:
			return s.cfg.LargeRoomInterval
		default:
			return s.cfg.PublishInterval
		}
	}
	due := pt.m.due(now, interval)
	msgs := make([]kafka.Message, 0, len(due)+1)
	for _, r := range due {
		st := pt.m.snapshot(r, now)
		msgs = append(msgs, kafka.Message{Topic: s.cfg.StateTopic, Partition: pt.p, Key: []byte(r.name), Value: mustJSON(st), Time: now})
	}
	var cp *Checkpoint
	if all || now.Sub(pt.lastCP) >= s.cfg.CheckpointInterval {
		c := pt.m.checkpointAfter(pt.p, due)
		if c.Offset > pt.cpOffset || len(msgs) > 0 || all {
			cp = &c
			msgs = append(msgs, kafka.Message{Topic: s.cfg.StateTopic, Partition: pt.p, Key: []byte(CheckpointKey(pt.p)), Value: mustJSON(c), Time: now})
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := s.writer.WriteMessages(ctx, msgs...); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		pt.failures++
		s.log.Warn("presence: publishing states failed; retrying", "partition", pt.p, "rooms", len(due), "err", err)
		if pt.failures >= 10 {
			return fmt.Errorf("publish states: %w", err)
		}
		return nil
	}
	pt.failures = 0
	s.log.Debug("presence: states published", "partition", pt.p, "rooms", len(due), "checkpoint", cp != nil)
	stored := s.now()
	for _, r := range due {
		s.m.PublishLatency.Observe(stored.Sub(r.dirtySince).Seconds())
	}
	s.m.Publications.Add(float64(len(due)))
	pt.m.published(due, now)
	pt.gauges(due)
	if cp != nil {
		pt.lastCP, pt.cpOffset = now, cp.Offset
		if pt.commits != nil && cp.Offset >= 0 {
			// The group's committed offset is for monitoring (lag); a
			// replica resumes from the checkpoint, not from it. Committed
			// off the events' path: a slow coordinator delays no one.
			select {
			case pt.commits <- cp.Offset + 1:
			default: // the previous commit is still going: the next one covers this
			}
		}
	}
	return nil
}

func (pt *partitionRun) gauges(rs []*roomState) {
	if pt.rooms == nil {
		pt.rooms = map[string]bool{}
	}
	for _, r := range rs {
		users, conns := pt.m.counts(r.name)
		pt.s.m.OnlineUsers.WithLabelValues(r.name).Set(float64(users))
		pt.s.m.Connections.WithLabelValues(r.name).Set(float64(conns))
		pt.rooms[r.name] = true
	}
}

// release forgets the gauges of the partition's rooms: their new owner
// sets them.
func (pt *partitionRun) release() {
	for name := range pt.rooms {
		pt.s.m.OnlineUsers.DeleteLabelValues(name)
		pt.s.m.Connections.DeleteLabelValues(name)
	}
}

// readState reads partition p of the state topic to its end: the latest
// state of each room and the checkpoint.
func (s *Service) readState(ctx context.Context, p int) ([]State, *Checkpoint, error) {
	first, end, err := s.bounds(ctx, s.cfg.StateTopic, p)
	if err != nil || end <= first {
		return nil, nil, err
	}
	rd, err := partitionReader(s.cluster, s.cfg.StateTopic, p, first)
	if err != nil {
		return nil, nil, err
	}
	defer rd.Close()
	rooms := map[string]State{}
	var cp *Checkpoint
	for {
		msg, err := rd.ReadMessage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s/%d: %w", s.cfg.StateTopic, p, err)
		}
		switch {
		case msg.Value == nil:
			delete(rooms, string(msg.Key))
		case IsCheckpointKey(msg.Key):
			var c Checkpoint
			if err := json.Unmarshal(msg.Value, &c); err != nil || c.Partition != p {
				s.log.Warn("presence: skipping a bad checkpoint", "partition", p, "offset", msg.Offset, "err", err)
				break
			}
			cp = &c
		default:
			st, err := DecodeState(msg.Value)
			if err != nil || st.Room != string(msg.Key) {
				s.log.Warn("presence: skipping a bad state record", "partition", p, "offset", msg.Offset, "err", err)
				break
			}
			rooms[st.Room] = st
		}
		if msg.Offset+1 >= end {
			break
		}
	}
	out := make([]State, 0, len(rooms))
	for _, st := range rooms {
		out = append(out, st)
	}
	return out, cp, nil
}

// bounds returns the first and end offsets of a partition.
func (s *Service) bounds(ctx context.Context, topic string, p int) (first, end int64, err error) {
	res, err := s.cluster.Admin().ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p)}},
	})
	if err != nil {
		return 0, 0, fmt.Errorf("offsets of %s/%d: %w", topic, p, err)
	}
	for _, po := range res.Topics[topic] {
		if po.Partition != p {
			continue
		}
		if po.Error != nil {
			return 0, 0, fmt.Errorf("offsets of %s/%d: %w", topic, p, po.Error)
		}
		return po.FirstOffset, po.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("offsets of %s/%d: no answer for the partition", topic, p)
}
