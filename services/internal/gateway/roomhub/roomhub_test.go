package roomhub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/room"
)

// fakeSource is an in-memory topic log whose readers can be made to stall.
type fakeSource struct {
	mu      sync.Mutex
	logs    map[string]map[int][]Record
	first   map[int]int64 // first retained offset per partition
	changed chan struct{}
	stall   int // this many readers opened from now on never return a record
	opened  []int64
	failOff error
	ids     map[string][16]byte // topic ids; a topic not listed has the zero id
	base    time.Time           // time of offset 0; each offset a millisecond later
}

func newFakeSource() *fakeSource {
	return &fakeSource{logs: map[string]map[int][]Record{}, first: map[int]int64{}, changed: make(chan struct{}),
		ids: map[string][16]byte{}, base: time.Now().Add(-time.Minute).Truncate(time.Millisecond)}
}

func (f *fakeSource) append(topic string, p int, values ...[]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.logs[topic] == nil {
		f.logs[topic] = map[int][]Record{}
	}
	for _, v := range values {
		log := f.logs[topic][p]
		f.logs[topic][p] = append(log, Record{Partition: p, Offset: int64(len(log)), Time: f.base.Add(time.Duration(len(log)) * time.Millisecond), Value: v})
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeSource) OpenTail(topic string, p int, offset int64) (Reader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, offset)
	stalled := f.stall > 0
	if stalled {
		f.stall--
	}
	return &fakeReader{src: f, topic: topic, p: p, next: offset, stalled: stalled}, nil
}

func (f *fakeSource) Offsets(_ context.Context, req map[string][]int) (map[string]map[int]Bounds, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOff != nil {
		return nil, f.failOff
	}
	out := map[string]map[int]Bounds{}
	for topic, ps := range req {
		out[topic] = map[int]Bounds{}
		for _, p := range ps {
			out[topic][p] = Bounds{First: f.first[p], End: int64(len(f.logs[topic][p]))}
		}
	}
	return out, nil
}

func (f *fakeSource) ReadRange(ctx context.Context, topic string, p int, from, to int64, fn func(Record) error) error {
	f.mu.Lock()
	log := slices.Clone(f.logs[topic][p])
	f.mu.Unlock()
	for _, rec := range log {
		if rec.Offset >= from && rec.Offset < to {
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

func (f *fakeSource) TopicIDs(_ context.Context, topics ...string) (map[string][16]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOff != nil {
		return nil, f.failOff
	}
	out := map[string][16]byte{}
	for _, t := range topics {
		out[t] = f.ids[t]
	}
	return out, nil
}

func (f *fakeSource) OffsetsSince(_ context.Context, topic string, ps []int, t time.Time) (map[int]int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int]int64{}
	for _, p := range ps {
		log := f.logs[topic][p]
		out[p] = int64(len(log))
		for _, rec := range log {
			if !rec.Time.Before(t) {
				out[p] = rec.Offset
				break
			}
		}
	}
	return out, nil
}

type fakeReader struct {
	src     *fakeSource
	topic   string
	p       int
	next    int64
	stalled bool
}

func (r *fakeReader) ReadMessage(ctx context.Context) (kafka.Message, error) {
	for {
		r.src.mu.Lock()
		log := r.src.logs[r.topic][r.p]
		changed := r.src.changed
		r.src.mu.Unlock()
		if !r.stalled && r.next < int64(len(log)) {
			rec := log[r.next]
			r.next++
			return kafka.Message{Topic: r.topic, Partition: r.p, Offset: rec.Offset, Time: rec.Time, Value: rec.Value}, nil
		}
		select {
		case <-ctx.Done():
			return kafka.Message{}, ctx.Err()
		case <-changed:
		}
	}
}

func (r *fakeReader) Close() error { return nil }

// ReadAhead tells how many records ReadMessage returns without waiting.
func (r *fakeReader) ReadAhead() int {
	r.src.mu.Lock()
	defer r.src.mu.Unlock()
	if r.stalled {
		return 0
	}
	return len(r.src.logs[r.topic][r.p]) - int(r.next)
}

// sink collects deliveries in a bounded channel, like a connection queue:
// what Push queues is held, and reaches the channel with the next Flush
// (or before a PushWait's), as a connection writes it.
type sink struct {
	ch      chan *Delivery
	dropped chan error
	flushes atomic.Int64

	mu   sync.Mutex
	held []*Delivery
}

func newSink(capacity int) *sink {
	return &sink{ch: make(chan *Delivery, capacity), dropped: make(chan error, 1)}
}

func (s *sink) Push(d *Delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ch)+len(s.held) >= cap(s.ch) {
		return false
	}
	s.held = append(s.held, d)
	return true
}

func (s *sink) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes.Add(1) // counted before its deliveries can be seen
	s.flushLocked()
}

// flushLocked moves the held deliveries to the channel, which Push kept
// room for.
func (s *sink) flushLocked() {
	for _, d := range s.held {
		s.ch <- d
	}
	s.held = nil
}

func (s *sink) PushWait(ctx context.Context, d *Delivery) error {
	s.mu.Lock()
	s.flushLocked()
	s.mu.Unlock()
	select {
	case s.ch <- d:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *sink) Dropped(err error) { s.dropped <- err }

// next waits for a delivery.
func (s *sink) next(t *testing.T) *Delivery {
	t.Helper()
	select {
	case d := <-s.ch:
		return d
	case err := <-s.dropped:
		t.Fatalf("subscription dropped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10 s")
	}
	return nil
}

// expect reads n deliveries and checks their partition/offset pairs.
func (s *sink) expect(t *testing.T, want ...[2]int64) []*Delivery {
	t.Helper()
	var got []*Delivery
	for _, w := range want {
		d := s.next(t)
		got = append(got, d)
		if int64(d.Msg.Partition) != w[0] || d.Msg.Offset != w[1] {
			t.Fatalf("delivery %d = %d/%d, want %d/%d", len(got), d.Msg.Partition, d.Msg.Offset, w[0], w[1])
		}
		if next, ok := d.Cursor.Next(d.Msg.Partition); !ok || next != d.Msg.Offset+1 {
			t.Fatalf("delivery %d/%d carries cursor %v, want the position just after it", d.Msg.Partition, d.Msg.Offset, d.Cursor)
		}
	}
	return got
}

// quiet checks that nothing more is delivered right now.
func (s *sink) quiet(t *testing.T) {
	t.Helper()
	select {
	case d := <-s.ch:
		t.Fatalf("unexpected delivery %d/%d", d.Msg.Partition, d.Msg.Offset)
	case <-time.After(50 * time.Millisecond):
	}
}

func envelope(t testing.TB, i int) []byte {
	t.Helper()
	b, err := message.Encode(&message.Envelope{V: 1, ID: fmt.Sprintf("m%d", i), Room: "lobby", SenderID: "u1", Text: fmt.Sprintf("text %d", i)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func span(p int, from, to int64) [][2]int64 {
	var out [][2]int64
	for o := from; o < to; o++ {
		out = append(out, [2]int64{int64(p), o})
	}
	return out
}

type fixture struct {
	src     *fakeSource
	hub     *Hub
	info    room.Info
	n       map[int]int
	metrics Metrics
}

func newFixture(t testing.TB, partitions int, cfg Config) *fixture {
	t.Helper()
	f := &fixture{src: newFakeSource(), info: room.Info{V: 1, Name: "lobby", Topic: "palaver.room.default.lobby", Partitions: int32(partitions)}, n: map[int]int{}}
	f.metrics = Metrics{
		Recoveries:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recoveries_total"}, []string{"source"}),
		TailRestarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "tail_restarts_total"}),
		Undecodable:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "undecodable_total"}, []string{"room"}),
		Rooms:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "rooms"}),
	}
	cfg.Metrics = f.metrics
	cfg.Encode = func(d *Delivery) []byte { return fmt.Appendf(nil, "%d/%d %s", d.Msg.Partition, d.Msg.Offset, d.Cursor) }
	f.hub = New(f.src, cfg)
	t.Cleanup(f.hub.Close)
	return f
}

// produce appends n valid messages to partition p and waits until the
// room's tail (if any) has read them.
func (f *fixture) produce(t *testing.T, p, n int) {
	t.Helper()
	for range n {
		f.src.append(f.info.Topic, p, envelope(t, f.n[p]))
		f.n[p]++
	}
	f.caughtUp(t)
}

// caughtUp waits until every tail has read its partition to the end.
func (f *fixture) caughtUp(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.hub.mu.Lock()
		r := f.hub.rooms[f.info.Name]
		f.hub.mu.Unlock()
		if r == nil {
			return
		}
		behind := false
		for _, tl := range r.tailsOf() {
			f.src.mu.Lock()
			end := int64(len(f.src.logs[f.info.Topic][tl.partition]))
			f.src.mu.Unlock()
			if tl.next.Load() < end {
				behind = true
			}
		}
		if !behind {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("tail did not catch up within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// following waits until the room's first tail follows its reader, so the
// watchdog can replace it.
func (f *fixture) following(t *testing.T) {
	t.Helper()
	f.hub.mu.Lock()
	tl := f.hub.rooms[f.info.Name].tails[0]
	f.hub.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		tl.mu.Lock()
		following := tl.kick != nil
		tl.mu.Unlock()
		if following {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("tail never started reading")
		}
	}
}

func (f *fixture) join(t *testing.T, s Sink, req JoinRequest) *Subscription {
	t.Helper()
	sub, err := f.hub.Join(t.Context(), f.info, s, req)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	sub.Start()
	return sub
}

func TestLiveFanOutSharesOneDelivery(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.produce(t, 0, 3) // history before the join is not delivered
	a, b := newSink(16), newSink(16)
	subA := f.join(t, a, JoinRequest{})
	f.join(t, b, JoinRequest{})
	if next, _ := subA.Cursor().Next(0); next != 3 {
		t.Fatalf("live join starts at %v, want offset 3", subA.Cursor())
	}
	f.produce(t, 0, 5)
	da := a.expect(t, span(0, 3, 8)...)
	db := b.expect(t, span(0, 3, 8)...)
	for i := range da {
		if da[i] != db[i] {
			t.Fatal("live deliveries are not shared between subscribers: each frame would be encoded per connection")
		}
	}
	if f.hub.Rooms() != 1 {
		t.Fatalf("%d rooms tailed, want one tail for the room", f.hub.Rooms())
	}
}

// TestBurstIsFlushedTogether: the messages a tail's reader has at hand
// reach a sink between two flushes (one write per connection for a busy
// room's burst, at most maxBurst messages a flush), and a lone message is
// flushed at once.
func TestBurstIsFlushedTogether(t *testing.T) {
	f := newFixture(t, 1, Config{})
	a, b := newSink(512), newSink(512)
	f.join(t, a, JoinRequest{})
	f.join(t, b, JoinRequest{})
	for _, c := range []struct{ n, flushes int }{{1, 1}, {10, 1}, {maxBurst, 1}, {3*maxBurst + 1, 4}, {1, 1}} {
		before := []int64{a.flushes.Load(), b.flushes.Load()}
		values := make([][]byte, c.n)
		for i := range values {
			values[i] = envelope(t, f.n[0])
			f.n[0]++
		}
		f.src.append(f.info.Topic, 0, values...) // all at once: one fetch
		for i, s := range []*sink{a, b} {
			s.expect(t, span(0, int64(f.n[0]-c.n), int64(f.n[0]))...)
			if got := s.flushes.Load() - before[i]; got != int64(c.flushes) {
				t.Errorf("a burst of %d: %d flushes, want %d", c.n, got, c.flushes)
			}
		}
		a.quiet(t)
	}
}

func TestResumeFromRing(t *testing.T) {
	f := newFixture(t, 1, Config{})
	a := newSink(64)
	sub := f.join(t, a, JoinRequest{})
	f.produce(t, 0, 4)
	got := a.expect(t, span(0, 0, 4)...)
	resumeAt := got[1].Cursor // the client saw offsets 0 and 1
	sub.Leave()
	f.produce(t, 0, 3)

	b := newSink(64)
	sub = f.join(t, b, JoinRequest{Resume: true, Cursor: resumeAt})
	if !sub.Recovering() {
		t.Error("a join with a cursor is not recovering")
	}
	b.expect(t, span(0, 2, 7)...)
	f.produce(t, 0, 2)
	b.expect(t, span(0, 7, 9)...)
	b.quiet(t)
	if v := testutil.ToFloat64(f.metrics.Recoveries.WithLabelValues("ring")); v != 1 {
		t.Errorf("ring recoveries = %v, want 1", v)
	}
}

func TestResumeBeyondRingReadsKafka(t *testing.T) {
	f := newFixture(t, 1, Config{RingSize: 4})
	a := newSink(64)
	f.join(t, a, JoinRequest{})
	f.produce(t, 0, 2)
	got := a.expect(t, span(0, 0, 2)...)
	f.produce(t, 0, 10) // offsets 2..11; the ring keeps 8..11

	b := newSink(4) // smaller than the gap: the recovery is paced by the sink
	f.join(t, b, JoinRequest{Resume: true, Cursor: got[1].Cursor})
	b.expect(t, span(0, 2, 12)...)
	f.produce(t, 0, 1)
	b.expect(t, span(0, 12, 13)...)
	b.quiet(t)
	if v := testutil.ToFloat64(f.metrics.Recoveries.WithLabelValues("kafka")); v != 1 {
		t.Errorf("kafka recoveries = %v, want 1", v)
	}
}

func TestResumeOlderThanRetentionStartsAtFirstOffset(t *testing.T) {
	f := newFixture(t, 1, Config{RingSize: 2})
	f.join(t, newSink(64), JoinRequest{})
	f.produce(t, 0, 6)
	f.src.mu.Lock()
	f.src.first[0] = 3 // offsets 0..2 deleted by retention
	f.src.mu.Unlock()
	var c cursor.Cursor
	c.Advance(0, 0)
	b := newSink(64)
	sub := f.join(t, b, JoinRequest{Resume: true, Cursor: c})
	if next, _ := sub.Cursor().Next(0); next != 3 {
		t.Errorf("joined cursor %v, want offset 3 (the oldest retained)", sub.Cursor())
	}
	b.expect(t, span(0, 3, 6)...)
}

func TestResumeFromAheadCursorSkipsCoveredMessages(t *testing.T) {
	// A cursor from another replica whose tail is ahead of this one: within
	// the partition, but past what this room's tail has read.
	f := newFixture(t, 1, Config{})
	f.src.stall = 1 // this gateway's tail lags: its first reader returns nothing
	early := newSink(64)
	f.join(t, early, JoinRequest{})
	for i := range 5 {
		f.src.append(f.info.Topic, 0, envelope(t, i))
	}
	var c cursor.Cursor
	c.Advance(0, 2) // the client has seen offsets 0..2 already
	b := newSink(64)
	sub := f.join(t, b, JoinRequest{Resume: true, Cursor: c})
	if sub.Reset() {
		t.Fatal("a cursor within the partition was reset")
	}
	f.following(t)
	f.hub.checkTails(t.Context())
	f.hub.checkTails(t.Context()) // stalled: the tail gets a new reader
	b.expect(t, span(0, 3, 5)...)
	b.quiet(t)
}

// TestCursorPastTheEndIsReset: a cursor whose position lies past its
// partition's end (a wiped broker, a topic created again, with a cursor
// made before epochs) is reset to the oldest message instead of hiding
// every message until the topic reaches it.
func TestCursorPastTheEndIsReset(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.src.first[0] = 1
	f.produce(t, 0, 3)
	var c cursor.Cursor
	c.Advance(0, 2102) // next 2103; the partition ends at 3
	b := newSink(64)
	sub := f.join(t, b, JoinRequest{Resume: true, Cursor: c})
	if !sub.Reset() || !sub.Recovering() {
		t.Fatalf("reset %v recovering %v, want both", sub.Reset(), sub.Recovering())
	}
	if next, _ := sub.Cursor().Next(0); next != 1 {
		t.Fatalf("joined cursor at %d, want 1 (the oldest retained)", next)
	}
	b.expect(t, span(0, 1, 3)...)
	f.produce(t, 0, 2)
	b.expect(t, span(0, 3, 5)...) // and live messages keep coming
}

// TestCursorEpochs: a cursor carries the epoch of the topic it points
// into; another room's is refused, another incarnation of the room's topic
// is reset, and the room's own resumes.
func TestCursorEpochs(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.src.ids[f.info.Topic] = [16]byte{1}
	s := newSink(64)
	f.join(t, s, JoinRequest{})
	f.produce(t, 0, 4)
	got := s.expect(t, span(0, 0, 4)...)
	own := got[1].Cursor // after offset 1
	if own.Epoch() != cursor.NewEpoch("lobby", [16]byte{1}) {
		t.Fatalf("delivery cursor epoch %+v", own.Epoch())
	}

	b := newSink(64)
	sub := f.join(t, b, JoinRequest{Resume: true, Cursor: own})
	if sub.Reset() || sub.Cursor().Epoch() != own.Epoch() {
		t.Fatalf("own cursor: reset %v, epoch %+v", sub.Reset(), sub.Cursor().Epoch())
	}
	b.expect(t, span(0, 2, 4)...)

	other := own.Clone()
	other.SetEpoch(cursor.NewEpoch("random", [16]byte{1}))
	if _, err := f.hub.Join(t.Context(), f.info, newSink(1), JoinRequest{Resume: true, Cursor: other}); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("another room's cursor: %v, want ErrBadCursor", err)
	}
	var seven cursor.Cursor
	seven.Advance(7, 0)
	if _, err := f.hub.Join(t.Context(), f.info, newSink(1), JoinRequest{Resume: true, Cursor: seven}); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("a cursor of partition 7 in a room of 1: %v, want ErrBadCursor", err)
	}

	old := own.Clone()
	old.SetEpoch(cursor.NewEpoch("lobby", [16]byte{9})) // the topic before it was created again
	c := newSink(64)
	sub = f.join(t, c, JoinRequest{Resume: true, Cursor: old})
	if !sub.Reset() {
		t.Fatal("a cursor of another incarnation of the topic was not reset")
	}
	c.expect(t, span(0, 0, 4)...)
}

// TestTopicReplacedUnderTheRoom: the watchdog sees the topic's id changed
// (deleted and created again under the same name, and already longer than
// what the tail had read), and drops the members with ErrTopicReplaced;
// their next join tails the new topic, and their old cursors are reset.
func TestTopicReplacedUnderTheRoom(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.src.ids[f.info.Topic] = [16]byte{1}
	s := newSink(64)
	f.join(t, s, JoinRequest{})
	f.produce(t, 0, 3)
	got := s.expect(t, span(0, 0, 3)...)

	f.src.mu.Lock()
	f.src.logs[f.info.Topic] = map[int][]Record{}
	f.src.ids[f.info.Topic] = [16]byte{2}
	f.src.mu.Unlock()
	f.n = map[int]int{}
	for i := range 5 {
		f.src.append(f.info.Topic, 0, envelope(t, i))
		f.n[0]++
	}
	f.hub.checkTails(t.Context())
	select {
	case err := <-s.dropped:
		if !errors.Is(err, ErrTopicReplaced) {
			t.Fatalf("dropped with %v, want ErrTopicReplaced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("members of a room whose topic was replaced were not told")
	}
	f.produce(t, 0, 1)
	again := newSink(64)
	sub := f.join(t, again, JoinRequest{Resume: true, Cursor: got[2].Cursor})
	if !sub.Reset() {
		t.Fatal("the old topic's cursor was not reset")
	}
	again.expect(t, span(0, 0, 6)...)
}

func TestLastN(t *testing.T) {
	f := newFixture(t, 1, Config{RingSize: 4})
	f.join(t, newSink(64), JoinRequest{})
	f.produce(t, 0, 10)
	for _, tt := range []struct {
		last int
		from int64
	}{{3, 7}, {4, 6}, {8, 2}, {50, 0}} {
		t.Run(fmt.Sprint(tt.last), func(t *testing.T) {
			s := newSink(64)
			sub := f.join(t, s, JoinRequest{Last: tt.last})
			s.expect(t, span(0, tt.from, 10)...)
			s.quiet(t)
			sub.Leave()
		})
	}
}

func TestSlowConsumerIsDroppedOthersKeepAll(t *testing.T) {
	f := newFixture(t, 1, Config{PendingLimit: 4})
	slow, fast := newSink(2), newSink(64)
	f.join(t, slow, JoinRequest{})
	f.join(t, fast, JoinRequest{})
	f.produce(t, 0, 20)
	fast.expect(t, span(0, 0, 20)...)
	select {
	case err := <-slow.dropped:
		if !errors.Is(err, ErrSlowConsumer) {
			t.Fatalf("dropped with %v, want ErrSlowConsumer", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slow subscriber not dropped")
	}
}

// TestBurstOverTheQueueIsBuffered: a subscriber whose queue a burst
// overflows, but that keeps reading, gets the whole burst in order and
// stays live.
func TestBurstOverTheQueueIsBuffered(t *testing.T) {
	f := newFixture(t, 1, Config{PendingLimit: 50})
	small := newSink(2)
	f.join(t, small, JoinRequest{})
	f.produce(t, 0, 40) // 2 fit the queue, the rest wait behind it
	small.expect(t, span(0, 0, 40)...)
	f.produce(t, 0, 3)
	small.expect(t, span(0, 40, 43)...)
	small.quiet(t)
}

func TestPendingOverflowDuringRecoveryIsSlowConsumer(t *testing.T) {
	f := newFixture(t, 1, Config{RingSize: 8, PendingLimit: 2})
	f.join(t, newSink(64), JoinRequest{})
	f.produce(t, 0, 8)
	// The sink takes nothing during the recovery, so live messages pile up.
	b := &sink{ch: make(chan *Delivery), dropped: make(chan error, 1)}
	var c cursor.Cursor
	c.Advance(0, -1)
	f.join(t, b, JoinRequest{Resume: true, Cursor: c})
	f.produce(t, 0, 5)
	select {
	case err := <-b.dropped:
		if !errors.Is(err, ErrSlowConsumer) {
			t.Fatalf("dropped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a subscriber overflowing its recovery buffer was not dropped")
	}
}

func TestUndecodableRecordsAreSkipped(t *testing.T) {
	f := newFixture(t, 1, Config{})
	s := newSink(16)
	f.join(t, s, JoinRequest{})
	f.produce(t, 0, 1)
	other, err := message.Encode(&message.Envelope{V: 1, ID: "x", Room: "random", SenderID: "u1", Text: "misplaced"})
	if err != nil {
		t.Fatal(err)
	}
	f.src.append(f.info.Topic, 0, []byte("not json"), []byte{0xff, 0xfe}, other)
	f.n[0] += 3
	f.caughtUp(t)
	f.produce(t, 0, 1)
	s.expect(t, [2]int64{0, 0}, [2]int64{0, 4})
	if v := testutil.ToFloat64(f.metrics.Undecodable.WithLabelValues("lobby")); v != 3 {
		t.Errorf("undecodable = %v, want 3 (another room's envelope is refused too)", v)
	}
}

func TestMultiPartitionResumeIsPerPartition(t *testing.T) {
	f := newFixture(t, 2, Config{RingSize: 3})
	a := newSink(64)
	sub := f.join(t, a, JoinRequest{})
	f.produce(t, 0, 2)
	f.produce(t, 1, 2)
	got := map[int][]int64{}
	var last cursor.Cursor
	for range 4 {
		d := a.next(t)
		got[d.Msg.Partition] = append(got[d.Msg.Partition], d.Msg.Offset)
		last = d.Cursor
	}
	if !slices.Equal(got[0], []int64{0, 1}) || !slices.Equal(got[1], []int64{0, 1}) {
		t.Fatalf("per-partition order broken: %v", got)
	}
	if n0, _ := last.Next(0); n0 != 2 {
		t.Fatalf("cursor %v after all four messages, want 2 in partition 0", last)
	}
	sub.Leave()
	f.produce(t, 0, 3)
	f.produce(t, 1, 1)

	b := newSink(64)
	f.join(t, b, JoinRequest{Resume: true, Cursor: last})
	got = map[int][]int64{}
	var final cursor.Cursor
	for range 4 {
		d := b.next(t)
		got[d.Msg.Partition] = append(got[d.Msg.Partition], d.Msg.Offset)
		final = d.Cursor
	}
	if !slices.Equal(got[0], []int64{2, 3, 4}) || !slices.Equal(got[1], []int64{2}) {
		t.Fatalf("resumed deliveries %v, want partition 0: 2..4 and partition 1: 2", got)
	}
	if n0, _ := final.Next(0); n0 != 5 {
		t.Errorf("final cursor %v", final)
	}
	if n1, _ := final.Next(1); n1 != 3 {
		t.Errorf("final cursor %v", final)
	}
	b.quiet(t)
}

func TestWatchdogReplacesStalledTail(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.src.stall = 1 // the first reader will never return a record; its replacement will
	s := newSink(64)
	f.join(t, s, JoinRequest{})
	for i := range 3 {
		f.src.append(f.info.Topic, 0, envelope(t, i))
	}
	f.following(t)

	ctx := t.Context()
	f.hub.checkTails(ctx) // behind, first sighting: no verdict yet
	if v := testutil.ToFloat64(f.metrics.TailRestarts); v != 0 {
		t.Fatalf("restarted after one check: %v", v)
	}
	f.hub.checkTails(ctx) // still at the same offset: stalled
	if v := testutil.ToFloat64(f.metrics.TailRestarts); v != 1 {
		t.Fatalf("tail restarts = %v, want 1", v)
	}
	s.expect(t, span(0, 0, 3)...)
	f.src.mu.Lock()
	opened := slices.Clone(f.src.opened)
	f.src.mu.Unlock()
	if !slices.Equal(opened, []int64{0, 0}) {
		t.Fatalf("readers opened at %v, want the replacement at the stalled tail's next offset 0", opened)
	}

	// A healthy tail that keeps up is left alone.
	f.hub.checkTails(ctx)
	f.hub.checkTails(ctx)
	if v := testutil.ToFloat64(f.metrics.TailRestarts); v != 1 {
		t.Fatalf("a healthy tail was restarted: %v", v)
	}
}

func TestStalledVerdict(t *testing.T) {
	tl := &tail{behindAt: -1}
	steps := []struct {
		next, end int64
		want      bool
	}{
		{5, 5, false},  // caught up
		{5, 7, false},  // behind: first sighting
		{6, 8, false},  // behind but moving
		{6, 9, true},   // behind and stuck since the last check
		{6, 9, false},  // just replaced: a fresh start
		{6, 9, true},   // still stuck
		{9, 9, false},  // caught up
		{9, 10, false}, // behind again: first sighting
	}
	for i, s := range steps {
		tl.next.Store(s.next)
		if got := tl.stalled(s.end); got != s.want {
			t.Fatalf("step %d (next %d, end %d): stalled = %v, want %v", i, s.next, s.end, got, s.want)
		}
	}
}

func TestRoomStopsAfterLinger(t *testing.T) {
	f := newFixture(t, 1, Config{Linger: 10 * time.Millisecond})
	sub := f.join(t, newSink(4), JoinRequest{})
	sub.Leave()
	sub.Leave() // idempotent
	deadline := time.Now().Add(10 * time.Second)
	for f.hub.Rooms() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the room's tail outlived its members")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Joining again starts a new tail.
	s := newSink(4)
	f.join(t, s, JoinRequest{})
	f.produce(t, 0, 1)
	s.expect(t, [2]int64{0, 0})
}

func TestJoinFailsWhenKafkaCannotBeRead(t *testing.T) {
	f := newFixture(t, 1, Config{})
	f.src.failOff = errors.New("broker down")
	_, err := f.hub.Join(t.Context(), f.info, newSink(1), JoinRequest{})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Join = %v, want ErrUnavailable", err)
	}
	f.src.mu.Lock()
	f.src.failOff = nil
	f.src.mu.Unlock()
	if _, err := f.hub.Join(t.Context(), f.info, newSink(1), JoinRequest{}); err != nil {
		t.Fatalf("Join after recovery = %v: a failed start must not stick", err)
	}
}

func TestRecentFindsStoredMessage(t *testing.T) {
	f := newFixture(t, 1, Config{})
	s := newSink(4)
	f.join(t, s, JoinRequest{})
	f.produce(t, 0, 2)
	s.expect(t, span(0, 0, 2)...)
	m, ok := f.hub.Recent("lobby", "u1", "m1")
	if !ok || m.Offset != 1 {
		t.Fatalf("Recent = %+v, %v", m, ok)
	}
	if _, ok := f.hub.Recent("lobby", "u2", "m1"); ok {
		t.Fatal("Recent matched another sender's id")
	}
}

// TestRecentReadsTheWindowBackAtStart: a room started on a gateway (after
// a restart, or on one that was not tailing it) knows the messages stored
// within the dedup window before it started, and not older ones.
func TestRecentReadsTheWindowBackAtStart(t *testing.T) {
	f := newFixture(t, 1, Config{DedupWindow: 30 * time.Second})
	f.src.base = time.Now().Add(-time.Minute)
	f.src.append(f.info.Topic, 0, envelope(t, 0)) // a minute ago: out of the window
	f.src.base = time.Now().Add(-time.Second)
	f.src.append(f.info.Topic, 0, envelope(t, 1), envelope(t, 2))
	release, err := f.hub.Hold(t.Context(), f.info)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if m, ok := f.hub.Recent("lobby", "u1", "m2"); !ok || m.Offset != 2 {
		t.Fatalf("Recent(m2) = %+v, %v, want offset 2", m, ok)
	}
	if _, ok := f.hub.Recent("lobby", "u1", "m0"); ok {
		t.Fatal("Recent knows a message older than the window")
	}
}

// TestSyncFollowsTheRegistry: partitions added to a room's topic are
// tailed at the registry's change, without a new join; a room deleted from
// the registry, or re-created on another topic, drops its subscribers with
// ErrRoomGone and is no longer tailed.
func TestSyncFollowsTheRegistry(t *testing.T) {
	f := newFixture(t, 1, Config{})
	s := newSink(64)
	f.join(t, s, JoinRequest{})
	f.produce(t, 0, 2)
	s.expect(t, span(0, 0, 2)...)

	grown := f.info
	grown.Partitions = 2
	f.hub.Sync(t.Context(), func(string) (room.Info, bool) { return grown, true })
	f.produce(t, 1, 3)
	got := s.expect(t, span(1, 0, 3)...)
	if next, ok := got[2].Cursor.Next(1); !ok || next != 3 {
		t.Fatalf("cursor after the new partition's messages: %s", got[2].Cursor)
	}
	f.hub.Sync(t.Context(), func(string) (room.Info, bool) { return grown, true }) // no change: nothing happens
	s.quiet(t)

	moved := grown
	moved.Topic = "palaver.room.default.lobby-2"
	f.hub.Sync(t.Context(), func(string) (room.Info, bool) { return moved, true })
	select {
	case err := <-s.dropped:
		if !errors.Is(err, ErrRoomGone) {
			t.Fatalf("dropped with %v, want ErrRoomGone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the subscriber of a room re-created on another topic was not dropped")
	}
	if n := f.hub.Rooms(); n != 0 {
		t.Fatalf("%d rooms still tailed", n)
	}

	again := newSink(64)
	f.join(t, again, JoinRequest{})
	f.hub.Sync(t.Context(), func(string) (room.Info, bool) { return room.Info{}, false })
	select {
	case err := <-again.dropped:
		if !errors.Is(err, ErrRoomGone) {
			t.Fatalf("dropped with %v, want ErrRoomGone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the subscriber of a deleted room was not dropped")
	}
	if n := f.hub.Rooms(); n != 0 {
		t.Fatalf("%d rooms still tailed after the deletion", n)
	}
}
