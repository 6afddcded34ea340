package roomhub

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// tail follows one partition of a room and hands its records to the room.
type tail struct {
	room      *Room
	partition int
	next      atomic.Int64 // offset of the next record to deliver

	// behindAt is the watchdog's memory: the next offset seen at the
	// previous check when the tail was behind the partition's end, or -1.
	// Only the watchdog goroutine touches it.
	behindAt int64

	mu   sync.Mutex
	kick context.CancelFunc // interrupts the current reader
}

// errKicked: the watchdog replaced the reader.
var errKicked = errors.New("roomhub: tail reader replaced")

func (t *tail) run() {
	r := t.room
	h := r.hub
	defer h.wg.Done()
	backoff := 100 * time.Millisecond
	for r.ctx.Err() == nil {
		rd, err := h.src.OpenTail(r.topic, t.partition, t.next.Load())
		if err == nil {
			err = t.follow(rd)
			go rd.Close() // a stalled reader may take its time to close
			if errors.Is(err, errKicked) {
				backoff = 100 * time.Millisecond
				continue
			}
		}
		if r.ctx.Err() != nil {
			return
		}
		h.log.Warn("roomhub: tail read failed; reopening", "room", r.name, "partition", t.partition, "next", t.next.Load(), "err", err, "in", backoff)
		if m := h.cfg.Metrics.TailRestarts; m != nil {
			m.Inc()
		}
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// follow reads until the reader fails, the room stops or the watchdog
// kicks the reader.
func (t *tail) follow(rd Reader) error {
	r := t.room
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	t.mu.Lock()
	t.kick = cancel
	t.mu.Unlock()
	ahead, _ := rd.(readAheader)
	defer r.flush()
	burst := 0
	for {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil && r.ctx.Err() == nil {
				return errKicked
			}
			return err
		}
		if m.Partition == t.partition && m.Offset >= t.next.Load() { // else a replaced reader's leftovers
			r.deliver(t, m.Offset, m.Time, m.Value)
		}
		// Connections write what the room delivered once the reader has
		// nothing more at hand (at once for a quiet room, a little later
		// for a busy one: see endBurst), or after maxBurst messages.
		switch burst++; {
		case burst >= maxBurst:
			r.flush()
			burst = 0
		case ahead == nil || ahead.ReadAhead() == 0:
			r.endBurst()
			burst = 0
		}
	}
}

// maxBurst bounds the messages a tail delivers before its room's
// connections write them.
const maxBurst = 64

// readAheader is a Reader that tells how many records it has read ahead
// of ReadMessage: records that a ReadMessage returns without waiting.
type readAheader interface {
	ReadAhead() int
}

// stalled records a watchdog observation of the partition's end and
// reports whether the tail is stuck: behind the end, at the same offset as
// at the previous check, when it was behind already.
func (t *tail) stalled(end int64) bool {
	next := t.next.Load()
	was := t.behindAt
	t.behindAt = -1
	if next >= end {
		return false
	}
	if was == next {
		return true
	}
	t.behindAt = next
	return false
}

// restart replaces the tail's reader with a new one at its next offset.
func (t *tail) restart() {
	t.mu.Lock()
	kick := t.kick
	t.mu.Unlock()
	if kick != nil {
		kick()
	}
	if m := t.room.hub.cfg.Metrics.TailRestarts; m != nil {
		m.Inc()
	}
}
