package roomhub

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// countSink counts what it is handed, as a connection that writes at
// each flush would: flushes are its writes (and writer goroutines).
type countSink struct {
	pushed, flushes atomic.Int64
	held            bool
}

func (s *countSink) Push(*Delivery) bool { s.pushed.Add(1); s.held = true; return true }

func (s *countSink) Flush() {
	if s.held {
		s.held = false
		s.flushes.Add(1)
	}
}

func (s *countSink) PushWait(context.Context, *Delivery) error { s.pushed.Add(1); return nil }
func (s *countSink) Dropped(error)                             {}

// BenchmarkFanOutBurst: a room of 1,000 subscribers receives bursts of
// messages fetched together (b.N messages in all, 64 a fetch); the tail
// pushes each to every subscriber and flushes once a burst. Reports the
// hub's time per delivery and the flushes (connection writes) per
// delivery:
//
//	go test -run '^$' -bench FanOutBurst -benchtime 20000x ./internal/gateway/roomhub/
func BenchmarkFanOutBurst(b *testing.B) {
	const members, burst = 1000, 64
	f := newFixture(b, 1, Config{RingSize: 4096})
	sinks := joinCountSinks(b, f, members)
	values := make([][]byte, b.N) // distinct ids: the room skips later copies
	for i := range values {
		values[i] = envelope(b, i)
	}
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += burst {
		n := min(burst, b.N-sent)
		f.src.append(f.info.Topic, 0, values[sent:sent+n]...)
		for deadline := time.Now().Add(30 * time.Second); sinks[members-1].pushed.Load() < int64(sent+n); {
			if time.Now().After(deadline) {
				b.Fatal("burst not delivered within 30 s")
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	b.StopTimer()
	deliveries := float64(b.N) * members
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(flushesOf(sinks))/deliveries, "flushes/delivery")
}

// joinCountSinks joins n countSinks to the fixture's room.
func joinCountSinks(b *testing.B, f *fixture, n int) []*countSink {
	sinks := make([]*countSink, n)
	for i := range sinks {
		sinks[i] = &countSink{}
		sub, err := f.hub.Join(b.Context(), f.info, sinks[i], JoinRequest{})
		if err != nil {
			b.Fatal(err)
		}
		sub.Start()
	}
	return sinks
}

func flushesOf(sinks []*countSink) int64 {
	var n int64
	for _, s := range sinks {
		n += s.flushes.Load()
	}
	return n
}

// BenchmarkFanOutPaced: a room of 100 subscribers receives b.N messages
// one at a time, a millisecond apart (1,000 a second, scenario A of
// `palaver bench`), each fetched alone. Reports the flushes (connection
// writes) per delivery, with 1 ms, with the default FlushHold (2 ms) and without:
//
//	go test -run '^$' -bench FanOutPaced -benchtime 2000x ./internal/gateway/roomhub/
func BenchmarkFanOutPaced(b *testing.B) {
	for _, c := range []struct {
		name string
		hold time.Duration
	}{{"hold=1ms", time.Millisecond}, {"hold=2ms", DefaultFlushHold}, {"hold=off", -1}} {
		b.Run(c.name, func(b *testing.B) {
			const members = 100
			f := newFixture(b, 1, Config{RingSize: 4096, FlushHold: c.hold})
			sinks := joinCountSinks(b, f, members)
			values := make([][]byte, b.N)
			for i := range values {
				values[i] = envelope(b, i)
			}
			before := flushesOf(sinks)
			b.ResetTimer()
			next := time.Now()
			for i := range b.N {
				time.Sleep(time.Until(next))
				f.src.append(f.info.Topic, 0, values[i])
				next = next.Add(time.Millisecond)
			}
			for deadline := time.Now().Add(30 * time.Second); sinks[members-1].pushed.Load() < int64(b.N); time.Sleep(100 * time.Microsecond) {
				if time.Now().After(deadline) {
					b.Fatal("messages not delivered within 30 s")
				}
			}
			time.Sleep(2 * DefaultFlushHold) // the last held flush
			b.StopTimer()
			b.ReportMetric(float64(flushesOf(sinks)-before)/float64(b.N*members), "flushes/delivery")
		})
	}
}
