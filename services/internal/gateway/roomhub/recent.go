package roomhub

import (
	"context"
	"fmt"
	"time"

	"palaver.dev/services/internal/message"
)

// recent indexes a room's messages of the dedup window by sender and client
// message id, so a retried send is recognised whichever gateway stored the
// first one, and after a restart. A room fills it from Kafka before it
// serves anyone (backfill), then from its tail. Guarded by the room's lock.
type recent struct {
	window time.Duration
	max    int
	index  map[dupKey]message.Stored
	order  []dupKey // insertion order, oldest at head
	head   int
}

func newRecent(window time.Duration, max int) *recent {
	return &recent{window: window, max: max, index: map[dupKey]message.Stored{}}
}

// add records a stored message, forgetting what left the window or the bound.
func (rc *recent) add(m message.Stored, now time.Time) {
	k := dupKey{m.SenderID, m.ID}
	if _, dup := rc.index[k]; dup {
		return // the first stored copy is the answer
	}
	rc.index[k] = message.Stored{
		Envelope:  message.Envelope{ID: m.ID, Room: m.Room, SenderID: m.SenderID},
		Partition: m.Partition, Offset: m.Offset, Time: m.Time,
	}
	rc.order = append(rc.order, k)
	rc.trim(now)
}

func (rc *recent) trim(now time.Time) {
	for rc.head < len(rc.order) {
		k := rc.order[rc.head]
		m, ok := rc.index[k]
		if ok && len(rc.order)-rc.head <= rc.max && now.Sub(m.Time) < rc.window {
			break
		}
		delete(rc.index, k)
		rc.order[rc.head] = dupKey{}
		rc.head++
	}
	if rc.head > 1024 && rc.head > len(rc.order)/2 {
		rc.order = append(rc.order[:0:0], rc.order[rc.head:]...)
		rc.head = 0
	}
}

// find returns the stored message of sender's client id, if within the window.
func (rc *recent) find(sender, id string, now time.Time) (message.Stored, bool) {
	m, ok := rc.index[dupKey{sender, id}]
	if !ok || now.Sub(m.Time) >= rc.window {
		return message.Stored{}, false
	}
	return m, true
}

// duplicate reports whether m is a later copy of a message of the window:
// a record with the same sender and client message id at a lower offset of
// the same partition. Records are keyed by sender, so every copy of a send
// lands in the sender's partition, and every reader keeps the same one, the
// first; copies in two partitions (a send retried across a growth of the
// room's topic) are both kept.
func (rc *recent) duplicate(m message.Stored, now time.Time) bool {
	first, ok := rc.find(m.SenderID, m.ID, now)
	return ok && first.Partition == m.Partition && first.Offset < m.Offset
}

// Dedup recognises the later copies of messages among records read back
// from Kafka in offset order, outside a room's tail (a recovery, a page of
// history): the window is measured in record time, so it spans the
// records read, however old.
type Dedup struct {
	seen *recent
}

// NewDedup returns a Dedup of the given window and bound (Config's
// DedupWindow and DedupEntries).
func NewDedup(window time.Duration, max int) *Dedup {
	return &Dedup{seen: newRecent(window, max)}
}

// Duplicate reports whether m is a later copy of a message passed before,
// and remembers m otherwise.
func (dd *Dedup) Duplicate(m message.Stored) bool {
	if dd.seen.duplicate(m, m.Time) {
		return true
	}
	dd.seen.add(m, m.Time)
	return false
}

// backfill reads the room's records of the dedup window (at most the
// index's bound per partition) up to ends, the offsets its tails start at.
func (r *Room) backfill(ctx context.Context, ends map[int]int64, firsts map[int]int64) error {
	h := r.hub
	ps := make([]int, 0, len(ends))
	for p := range ends {
		ps = append(ps, p)
	}
	now := time.Now()
	since, err := h.src.OffsetsSince(ctx, r.topic, ps, now.Add(-h.cfg.DedupWindow))
	if err != nil {
		return fmt.Errorf("roomhub: offsets of the dedup window: %w", err)
	}
	for _, p := range ps {
		from := max(since[p], firsts[p], ends[p]-int64(h.cfg.DedupEntries))
		err := h.src.ReadRange(ctx, r.topic, p, from, ends[p], func(rec Record) error {
			d, err := DecodeRecord(r.name, rec)
			if err != nil {
				return nil // counted when delivered, if ever; not a send to remember
			}
			r.recent.add(d.Msg, now)
			return nil
		})
		if err != nil {
			return fmt.Errorf("roomhub: read the dedup window: %w", err)
		}
	}
	return nil
}
