package roomhub

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// storeTwice appends messages m0 m1 m1 m2 m3 ... m(n-1) to partition 0: the
// second m1, at offset 2, is a later copy (a produce retried after a
// broker failover), and waits until the room's tail read them.
func (f *fixture) storeTwice(t *testing.T, n int) {
	t.Helper()
	f.src.append(f.info.Topic, 0, envelope(t, 0), envelope(t, 1), envelope(t, 1))
	for i := 2; i < n; i++ {
		f.src.append(f.info.Topic, 0, envelope(t, i))
	}
	f.caughtUp(t)
}

// withoutCopy lists offsets 0..end of partition 0 without 2, the later copy.
func withoutCopy(end int64) [][2]int64 {
	return append(span(0, 0, 2), span(0, 3, end)...)
}

// TestLaterCopiesAreNotDelivered: a second record of a sender's client
// message id is delivered to nobody, live or in a recovery from the ring,
// from Kafka, or of the latest N, and counted; the cursors pass over it.
func TestLaterCopiesAreNotDelivered(t *testing.T) {
	f := newFixture(t, 1, Config{RingSize: 3})
	f.metrics.Duplicates = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duplicates_total"}, []string{"room"})
	f.hub.cfg.Metrics = f.metrics
	live := newSink(64)
	f.join(t, live, JoinRequest{})
	f.storeTwice(t, 6) // offsets 0..6; the ring keeps 4..6
	got := live.expect(t, withoutCopy(7)...)
	live.quiet(t)
	if v := testutil.ToFloat64(f.metrics.Duplicates.WithLabelValues("lobby")); v != 1 {
		t.Errorf("duplicate records counted %v, want 1", v)
	}

	// From Kafka, the first copy read in the same recovery.
	s := newSink(64)
	f.join(t, s, JoinRequest{Resume: true})
	s.expect(t, withoutCopy(7)...)
	s.quiet(t)

	// From Kafka, the first copy before the cursor: known by the window.
	s = newSink(64)
	f.join(t, s, JoinRequest{Resume: true, Cursor: got[1].Cursor})
	s.expect(t, withoutCopy(7)[2:]...)
	s.quiet(t)

	// The latest N.
	s = newSink(64)
	f.join(t, s, JoinRequest{Last: 5})
	s.expect(t, withoutCopy(7)[1:]...)
	s.quiet(t)
}

// TestLaterCopyInTheRing: a resume served from the ring alone skips the
// later copy too, and its cursor moves past it.
func TestLaterCopyInTheRing(t *testing.T) {
	f := newFixture(t, 1, Config{})
	live := newSink(64)
	f.join(t, live, JoinRequest{})
	f.storeTwice(t, 4)
	got := live.expect(t, withoutCopy(5)...)
	s := newSink(64)
	f.join(t, s, JoinRequest{Resume: true, Cursor: got[1].Cursor})
	s.expect(t, withoutCopy(5)[2:]...)
	s.quiet(t)
}

// TestLaterCopyStoredBeforeTheRoomStarted: a room started after both
// copies were stored knows the first from its dedup window.
func TestLaterCopyStoredBeforeTheRoomStarted(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.storeTwice(t, 4)
	live := newSink(64)
	f.join(t, live, JoinRequest{Resume: true})
	f.src.append(f.info.Topic, 0, envelope(t, 1)) // a third copy, read live
	f.src.append(f.info.Topic, 0, envelope(t, 4))
	live.expect(t, append(withoutCopy(5), [2]int64{0, 6})...)
	live.quiet(t)
}

func TestDedupKeepsTheFirstCopy(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.storeTwice(t, 3)
	dd := f.hub.NewDedup()
	var kept []int64
	f.src.mu.Lock()
	log := f.src.logs[f.info.Topic][0]
	f.src.mu.Unlock()
	for _, rec := range log {
		d, err := DecodeRecord("lobby", rec)
		if err != nil {
			t.Fatal(err)
		}
		if !f.hub.Duplicate("lobby", dd, d.Msg) {
			kept = append(kept, d.Msg.Offset)
		}
	}
	if len(kept) != 3 || kept[0] != 0 || kept[1] != 1 || kept[2] != 3 {
		t.Fatalf("kept offsets %v, want [0 1 3]", kept)
	}
}
