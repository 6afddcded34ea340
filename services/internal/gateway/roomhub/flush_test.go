package roomhub

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestQuietRoomFlushesAtOnceBusyRoomHolds, on a fake clock: a message of
// a quiet room reaches the sinks with no time passing; one that follows a
// flush by less than 2×FlushHold waits FlushHold, with every message that
// arrives meanwhile, and all reach the sinks in one flush, in order, once.
func TestQuietRoomFlushesAtOnceBusyRoomHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hold = time.Millisecond
		f := newFixture(t, 1, Config{FlushHold: hold})
		a, b := newSink(512), newSink(512)
		f.join(t, a, JoinRequest{})
		f.join(t, b, JoinRequest{})
		synctest.Wait()
		base := map[*sink]int64{a: a.flushes.Load(), b: b.flushes.Load()} // a join's own flush
		// send appends n messages all at once: one fetch.
		send := func(n int) {
			values := make([][]byte, n)
			for i := range values {
				values[i] = envelope(t, f.n[0])
				f.n[0]++
			}
			f.src.append(f.info.Topic, 0, values...)
		}
		// want checks what each sink got by now, with no time passing.
		want := func(what string, from, to int64, flushes int64) {
			t.Helper()
			synctest.Wait()
			for _, s := range []*sink{a, b} {
				if len(s.ch) != int(to-from) {
					t.Fatalf("%s: %d deliveries written, want %d", what, len(s.ch), to-from)
				}
				if to > from {
					s.expect(t, span(0, from, to)...)
				}
				if got := s.flushes.Load() - base[s]; got != flushes {
					t.Fatalf("%s: %d flushes, want %d", what, got, flushes)
				}
			}
		}

		send(1)
		want("a quiet room's message", 0, 1, 1)

		time.Sleep(2*hold - time.Microsecond) // the room is still busy
		send(1)
		want("a busy room's message, at once", 1, 1, 1)
		time.Sleep(hold / 2)
		send(2) // joins the held flush
		want("a busy room's messages, half the hold later", 1, 1, 1)
		time.Sleep(hold/2 - time.Nanosecond)
		want("a busy room's messages, just before the hold ends", 1, 1, 1)
		time.Sleep(time.Nanosecond)
		want("a busy room's messages, the hold over", 1, 4, 2)

		// A burst of maxBurst is flushed at once, busy or not; the rest of
		// a busy room's burst is held.
		send(maxBurst + 3)
		want("a full burst", 4, 4+maxBurst, 3)
		time.Sleep(hold)
		want("the rest of the burst", 4+maxBurst, 7+maxBurst, 4)

		time.Sleep(2 * hold) // quiet again
		send(1)
		want("a message 2×FlushHold after the last flush", 7+maxBurst, 8+maxBurst, 5)
	})
}

// TestFlushHoldOff: with a negative FlushHold every message is flushed as
// soon as the reader has no more at hand.
func TestFlushHoldOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 1, Config{FlushHold: -1})
		a := newSink(16)
		f.join(t, a, JoinRequest{})
		synctest.Wait()
		base := a.flushes.Load() // the join's own flush
		for i := range 3 {
			f.src.append(f.info.Topic, 0, envelope(t, f.n[0]))
			f.n[0]++
			synctest.Wait()
			a.expect(t, span(0, int64(i), int64(i+1))...)
		}
		if got := a.flushes.Load() - base; got != 3 {
			t.Fatalf("%d flushes, want 3", got)
		}
	})
}

// encodedSink records whether each live delivery came already encoded.
type encodedSink struct {
	*sink
	raw atomic.Int64 // deliveries pushed before their frame was made
}

func (s *encodedSink) Push(d *Delivery) bool {
	if d.frame == nil {
		s.raw.Add(1)
	}
	return s.sink.Push(d)
}

// TestLiveDeliveryEncodedByTheTail: the tail encodes a live message before
// a connection gets it, so that no writer grows its stack encoding it.
func TestLiveDeliveryEncodedByTheTail(t *testing.T) {
	f := newFixture(t, 1, Config{})
	s := &encodedSink{sink: newSink(16)}
	f.join(t, s, JoinRequest{})
	f.produce(t, 0, 3)
	s.expect(t, span(0, 0, 3)...)
	if n := s.raw.Load(); n != 0 {
		t.Fatalf("%d live deliveries pushed unencoded", n)
	}
}
