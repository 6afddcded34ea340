package roomhub

import (
	"context"
	"errors"
	"sync"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/message"
)

// Reasons the hub drops a subscription, passed to Sink.Dropped.
var (
	// ErrSlowConsumer: the subscriber's queue overflowed; it must reconnect
	// and resume from its cursor.
	ErrSlowConsumer = errors.New("roomhub: slow consumer")
	// ErrUnavailable: the messages a recovery needed could not be read from
	// Kafka; the subscriber may join again with its cursor.
	ErrUnavailable = errors.New("roomhub: room history unavailable")
	// ErrRoomGone: the room left the registry (deleted, or re-created on
	// another topic); see Hub.Sync.
	ErrRoomGone = errors.New("roomhub: room deleted")
	// ErrTopicReplaced: the room's topic was deleted and created again
	// under the same name, or the broker wiped; the subscriber may join
	// again with its cursor, which is then reset.
	ErrTopicReplaced = errors.New("roomhub: room's topic replaced")
)

// Delivery is one stored message on its way to subscribers. The hub makes
// one per message read by a room's tail and shares it between every
// subscriber whose position it continues, so its frame is encoded once.
type Delivery struct {
	Room string
	Msg  message.Stored
	// Cursor is the room position just after Msg for the receiver: every
	// partition's next offset. Zero on messages read back from Kafka for a
	// recovery until the subscriber's own position is applied.
	Cursor cursor.Cursor

	encode func(*Delivery) []byte
	once   sync.Once
	frame  []byte
}

// Frame returns the delivery encoded by the hub's Config.Encode, computed
// once on first use: by the room's tail for a live message, before any
// subscriber gets it; by whichever connection writes it first for a copy
// made for one subscriber.
func (d *Delivery) Frame() []byte {
	d.once.Do(func() { d.frame = d.encode(d) })
	return d.frame
}

// withCursor returns a delivery of the same message with another cursor.
func (d *Delivery) withCursor(c cursor.Cursor) *Delivery {
	return &Delivery{Room: d.Room, Msg: d.Msg, Cursor: c, encode: d.encode}
}

// Sink receives one subscriber's deliveries: a connection's outbound queue.
type Sink interface {
	// Push queues d without blocking. It returns false when the queue is
	// full: the hub then buffers the room's next messages for the
	// subscriber and hands them over with PushWait as the queue drains;
	// past Config.PendingLimit of them it drops the subscription with
	// ErrSlowConsumer. The hub calls Push with the room locked, so it must
	// be quick. The sink may hold what Push queued unwritten until the
	// next Flush, which the hub calls at the end of each burst.
	Push(d *Delivery) bool
	// Flush writes what Push held. The hub calls it, with the room
	// locked, once the messages a tail read at once are pushed: a quiet
	// room's message at once, a busy room's burst together (and, for a
	// room flushed less than 2×FlushHold ago, FlushHold later with what
	// came meanwhile), so that a connection gets it in one write rather
	// than one per message.
	Flush()
	// PushWait queues d, waiting for space; recoveries use it, so a
	// subscriber catching up is paced by its own socket.
	PushWait(ctx context.Context, d *Delivery) error
	// Dropped tells that the hub removed the subscription (ErrSlowConsumer,
	// ErrUnavailable, ErrRoomGone or ErrTopicReplaced). It may be called with the room locked: it must
	// not call back into the hub synchronously.
	Dropped(err error)
}

// dupKey finds a message in a room's dedup window by sender and client
// message id.
type dupKey struct {
	sender, id string
}

// ring holds a room's latest deliveries, oldest first.
type ring struct {
	buf  []*Delivery
	head int // index of the oldest
	n    int
}

func newRing(size int) ring {
	return ring{buf: make([]*Delivery, size)}
}

// push appends d and returns the evicted delivery, if the ring was full.
func (r *ring) push(d *Delivery) (evicted *Delivery) {
	size := len(r.buf)
	if r.n == size {
		evicted = r.buf[r.head]
		r.buf[r.head] = d
		r.head = (r.head + 1) % size
	} else {
		r.buf[(r.head+r.n)%size] = d
		r.n++
	}
	return evicted
}

// at returns the i-th oldest delivery.
func (r *ring) at(i int) *Delivery { return r.buf[(r.head+i)%len(r.buf)] }

// snapshot copies the deliveries from the i-th oldest on.
func (r *ring) snapshot(from int) []*Delivery {
	out := make([]*Delivery, 0, r.n-from)
	for i := from; i < r.n; i++ {
		out = append(out, r.at(i))
	}
	return out
}

// cursorMax raises every position of c to at least those of other.
func cursorMax(c *cursor.Cursor, other cursor.Cursor) {
	for _, p := range other.Partitions() {
		next, _ := other.Next(p)
		c.Advance(p, next-1)
	}
}

// cursorEqual reports whether a and b hold the same positions.
func cursorEqual(a, b cursor.Cursor) bool {
	ap, bp := a.Partitions(), b.Partitions()
	if len(ap) != len(bp) {
		return false
	}
	for i, p := range ap {
		if bp[i] != p {
			return false
		}
		x, _ := a.Next(p)
		y, _ := b.Next(p)
		if x != y {
			return false
		}
	}
	return true
}
