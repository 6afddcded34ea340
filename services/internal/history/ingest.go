package history

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/message"
)

// fetchWait is how long an idle partition's fetch is held by the broker.
const fetchWait = 500 * time.Millisecond

// consume reads one partition of a room from next on, handing every record
// to the writer in offset order: valid envelopes as rows, others as
// position moves (counted by reason), and what the topic no longer holds
// as trims. It returns when ctx is done.
func (s *Service) consume(ctx context.Context, name, topic string, tag int64, p int, next int64) {
	k := posKey{name, p}
	ops := s.ops[s.storeOf(name)]
	client := s.cluster.Admin()
	backoff := 100 * time.Millisecond
	trimmed := int64(0) // log start offset applied so far
	lag := s.m.Lag.WithLabelValues(name, strconv.Itoa(p))
	s.m.Duplicates.WithLabelValues(name) // reported from 0
	send := func(o op) bool {
		o.Room, o.Tag, o.Partition = name, tag, p
		select {
		case ops <- o:
			return true
		case <-ctx.Done():
			return false
		}
	}
	retry := func(err error) bool {
		if ctx.Err() != nil {
			return false
		}
		s.log.Warn("history: fetch failed; retrying", "room", name, "partition", p, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		return true
	}
	for ctx.Err() == nil {
		res, err := client.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: p, Offset: next,
			MinBytes: 1, MaxBytes: int64(s.cfg.FetchBytes), MaxWait: fetchWait,
		})
		if err == nil {
			err = res.Error
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			first, end, berr := s.bounds(ctx, topic, p)
			if berr != nil {
				if !retry(berr) {
					return
				}
				continue
			}
			switch {
			case next < first: // retention or DeleteRecords went past us
				if !send(op{Offset: first, Trim: true}) {
					return
				}
				next, trimmed = first, first
			case next > end: // the topic is shorter than what we stored: re-created
				s.log.Warn("history: a partition ends before the stored position; the topic was re-created, reading it again",
					"room", name, "partition", p, "stored", next, "end", end)
				s.m.Skipped.WithLabelValues(reasonOffset).Inc()
				if !send(op{Offset: first, Trim: true, Reset: true}) {
					return
				}
				next, trimmed = first, first
			default: // in range after all: the answer raced a change of leader
				if !retry(err) {
					return
				}
			}
			continue
		}
		if err != nil {
			if !retry(err) {
				return
			}
			continue
		}
		backoff = 100 * time.Millisecond
		if res.LogStartOffset > trimmed {
			if !send(op{Offset: res.LogStartOffset, Trim: true}) {
				return
			}
			trimmed = res.LogStartOffset
			next = max(next, trimmed)
		}
		for {
			rec, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if !retry(fmt.Errorf("read %s/%d at %d: %w", topic, p, next, err)) {
					return
				}
				break
			}
			if rec.Offset < next {
				continue // batches may start before the offset asked for
			}
			o := op{Offset: rec.Offset}
			value, err := readValue(rec.Value)
			if err == nil {
				o.Msg, err = decode(name, value, rec, p)
			}
			if err != nil {
				s.m.Skipped.WithLabelValues(skipReason(err)).Inc()
			}
			if rec.Offset > maxOffset {
				o.Msg = nil
				s.m.Skipped.WithLabelValues(reasonOffset).Inc()
			}
			if !send(o) {
				return
			}
			next = rec.Offset + 1
		}
		s.mu.Lock()
		s.end[k] = res.HighWatermark
		behind := res.HighWatermark - s.committed[k]
		s.noteCaughtUpLocked()
		s.mu.Unlock()
		lag.Set(float64(max(0, behind)))
	}
}

// bounds returns a partition's first retained offset and its end.
func (s *Service) bounds(ctx context.Context, topic string, p int) (first, end int64, err error) {
	res, err := s.cluster.Admin().ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p)}},
	})
	if err != nil {
		return 0, 0, fmt.Errorf("offsets of %s/%d: %w", topic, p, err)
	}
	for _, po := range res.Topics[topic] {
		if po.Partition == p {
			if po.Error != nil {
				return 0, 0, fmt.Errorf("offsets of %s/%d: %w", topic, p, po.Error)
			}
			return po.FirstOffset, po.LastOffset, nil
		}
	}
	return 0, 0, fmt.Errorf("offsets of %s/%d: missing from the answer", topic, p)
}

var errEmpty = errors.New("history: record without a value")

// readValue copies a record value, which is only valid until the next
// record.
func readValue(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, errEmpty
	}
	if b.Len() > message.MaxEncodedBytes {
		return nil, message.ErrTooLarge
	}
	out := make([]byte, b.Len())
	_, err := io.ReadFull(b, out)
	return out, err
}

var errWrongRoom = errors.New("history: envelope of another room")

func decode(room string, value []byte, rec *kafka.Record, p int) (*message.Stored, error) {
	env, err := decodeEnvelope(value)
	if err != nil {
		return nil, err
	}
	if env.Room != room {
		return nil, errWrongRoom
	}
	return &message.Stored{Envelope: env, Partition: p, Offset: rec.Offset, Time: rec.Time}, nil
}

func skipReason(err error) string {
	switch {
	case errors.Is(err, errEmpty):
		return reasonEmpty
	case errors.Is(err, message.ErrTooLarge):
		return reasonTooLarge
	case errors.Is(err, message.ErrInvalidUTF8):
		return reasonInvalidUTF8
	case errors.Is(err, message.ErrUnsupportedVersion):
		return reasonVersion
	case errors.Is(err, message.ErrMissingField):
		return reasonMissing
	case errors.Is(err, errWrongRoom), errors.Is(err, message.ErrInvalidRoom):
		return reasonWrongRoom
	default:
		return reasonMalformed
	}
}

// control runs fn on store i in its writer, after every op queued before
// it: room changes are ordered with the rows of the room.
func (s *Service) control(ctx context.Context, i int, fn func(*Store) error) error {
	done := make(chan error, 1)
	select {
	case s.ops[i] <- op{control: fn, done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// write is store i's single writer: it takes the ops queued for it by the
// consumers and commits them in batches: what arrives within BatchLinger of
// a batch's first op, up to BatchSize. A transaction costs far more than a
// row, so under load the batches fill, and a lone message waits
// BatchLinger. While no op waits, it restarts the write-ahead log when the
// checkpointer asks (Store.RestartLog) and merges the search index in small
// steps (MergeIndex): the commits do neither. It returns when ctx is done
// (the batch being filled is committed, what is still queued is fetched
// again after a restart), or when a commit fails: then the process must
// stop, and its restart reads again from the committed positions.
func (s *Service) write(ctx context.Context, i int) error {
	st, ops := s.stores[i], s.ops[i]
	batch := make([]op, 0, s.cfg.BatchSize)
	var size int    // bytes of the batch's messages
	merging := true // the search index may have merge work left
	for {
		var o op
		select {
		case o = <-ops:
		case <-ctx.Done():
			// What is still queued is not committed, so a restart
			// fetches it again: nothing to drain.
			return nil
		default: // nothing waits: the writer's own work, a step at a time
			if due, over := st.LogRestartDue(); due {
				// Busy or failed: the checkpointer asks again after its
				// next copy.
				s.restartLog(ctx, i, over)
			}
			if merging {
				more, err := st.MergeIndex(ctx, mergeStep)
				if err != nil && ctx.Err() == nil {
					// The index is as before the step: a later one merges it.
					s.log.Warn("history: merging the search index failed", "err", err)
				}
				merging = more && err == nil
				continue
			}
			select {
			case o = <-ops:
			case <-st.restartSignal():
				continue
			case <-ctx.Done():
				return nil
			}
		}
		if err := s.handle(st, &batch, &size, o); err != nil {
			return err
		}
		linger := time.NewTimer(s.cfg.BatchLinger)
	fill:
		for len(batch) < s.cfg.BatchSize && size < maxBatchBytes {
			select {
			case o = <-ops:
				if err := s.handle(st, &batch, &size, o); err != nil {
					linger.Stop()
					return err
				}
			case <-linger.C:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		linger.Stop()
		if err := s.flush(st, batch); err != nil {
			return err
		}
		batch, size = batch[:0], 0
		merging = true
		// A writer that never idles restarts the log at its bound.
		if _, over := st.LogRestartDue(); over {
			s.restartLog(ctx, i, true)
		}
	}
}

// restartLog restarts store i's write-ahead log (Store.RestartLog),
// counting it; at the log's bound it waits for readers.
func (s *Service) restartLog(ctx context.Context, i int, bound bool) {
	ok, err := s.stores[i].RestartLog(ctx, bound)
	at := "idle"
	if bound {
		at = "bound"
	}
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("history: restarting the write-ahead log failed", "store", i, "err", err)
	case ok:
		s.m.LogRestarts.WithLabelValues(strconv.Itoa(i), at).Inc()
	}
}

// maxBatchBytes bounds a batch's messages (their text, ids and sender)
// whatever their size: a batch of BatchSize records of the largest
// messages would otherwise hold hundreds of MiB.
const maxBatchBytes = 16 << 20

// handle adds o to the batch, adding its message's bytes to size, or for a
// control op commits the batch and runs it.
func (s *Service) handle(st *Store, batch *[]op, size *int, o op) error {
	if o.control == nil {
		*batch = append(*batch, o)
		if m := o.Msg; m != nil {
			*size += len(m.Text) + len(m.ID) + len(m.SenderID) + len(m.SenderName)
		}
		return nil
	}
	if err := s.flush(st, *batch); err != nil {
		o.done <- err
		return err
	}
	*batch, *size = (*batch)[:0], 0
	o.done <- o.control(st)
	return nil
}

func (s *Service) flush(st *Store, batch []op) error {
	if len(batch) == 0 {
		return nil
	}
	began := time.Now()
	next, res, err := st.Apply(context.Background(), batch)
	if err != nil {
		s.log.Error("history: commit failed", "records", len(batch), "err", err)
		return err
	}
	s.m.CommitLatency.Observe(time.Since(began).Seconds())
	s.m.CommitSize.Observe(float64(len(batch)))
	perRoom := map[string]int{}
	for i := range batch {
		if batch[i].Msg != nil {
			perRoom[batch[i].Room]++
		}
	}
	for name, n := range res.Copies {
		perRoom[name] -= int(n)
		s.m.Duplicates.WithLabelValues(name).Add(float64(n))
	}
	if !st.Building() { // else counted once the rebuild's indexes are built
		for name, n := range perRoom {
			s.m.Ingested.WithLabelValues(name).Add(float64(n))
		}
	}
	for name, n := range res.Trimmed {
		s.m.Trimmed.WithLabelValues(name).Add(float64(n))
		s.log.Info("history: removed messages their topic no longer holds", "room", name, "messages", n)
	}
	s.mu.Lock()
	for k, pos := range next {
		if pos.reset || pos.next > s.committed[k] {
			s.committed[k] = pos.next
		}
	}
	close(s.progress)
	s.progress = make(chan struct{})
	s.noteCaughtUpLocked()
	s.mu.Unlock()
	return nil
}
