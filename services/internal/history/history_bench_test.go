package history

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/testio"
	"palaver.dev/services/room"
)

// benchWords is the vocabulary of the benchmark's messages: searches pick
// from it, so a search matches about 1 message in 20 of a room.
var benchWords = func() []string {
	w := make([]string, 200)
	for i := range w {
		w[i] = fmt.Sprintf("word%03d", i)
	}
	return w
}()

func benchText(r *rand.Rand) string {
	b := make([]byte, 0, 80)
	for i := range 10 {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, benchWords[r.IntN(len(benchWords))]...)
	}
	return string(b)
}

// benchID is a client message id as the clients make them (chatcli's
// newID): "c-" and 24 random hexadecimal digits.
func benchID(r *rand.Rand) string {
	return fmt.Sprintf("c-%016x%08x", r.Uint64(), r.Uint32())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// fill writes n messages spread evenly over the rooms, as fast as the
// writer goes.
func (e *kafkaEnv) fill(b *testing.B, rooms []room.Info, n int, seed uint64) time.Duration {
	b.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	began := time.Now()
	const chunk = 20000
	for done := 0; done < n; {
		msgs := make([]kafka.Message, 0, min(chunk, n-done))
		for range cap(msgs) {
			in := rooms[done%len(rooms)]
			sender := fmt.Sprintf("u-%d", r.IntN(50))
			v, err := message.Encode(&message.Envelope{V: 1, ID: benchID(r), Room: in.Name,
				SenderID: sender, SenderName: "User " + sender, Text: benchText(r)})
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, kafka.Message{Topic: in.Topic, Key: []byte(sender), Value: v})
			done++
		}
		e.write(b, msgs...)
	}
	return time.Since(began)
}

func (s *Service) storedTotal() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, c := range s.committed {
		n += c
	}
	return n
}

// pct returns the p-th percentile of d (sorting it).
func pct(d []time.Duration, p int) time.Duration {
	slices.Sort(d)
	return d[len(d)*p/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkHistory measures a replica on 1,000,000 messages over 100 rooms
// (PALAVER_BENCH_MESSAGES, PALAVER_BENCH_ROOMS; PALAVER_BENCH_BATCH sets
// the replica's BatchSize, PALAVER_BENCH_BULK=0 rebuilds with the indexes
// kept row by row): the rebuild from the topics on an empty store, until
// every message is stored and the replica ready; sustained ingest of 200,000 more written while
// it runs; the p99 of 50-message pages and of searches; and the time from
// Kafka's ack of a message to its visibility in history, at 1,000 messages
// a second; and a backlog of 200,000 more written while the replica is
// stopped, stored by it started again. The figures are custom metrics;
// ns/op means nothing.
func BenchmarkHistory(b *testing.B) {
	total := envInt("PALAVER_BENCH_MESSAGES", 1_000_000)
	nRooms := envInt("PALAVER_BENCH_ROOMS", 100)
	more := total / 5
	e := sharedEnv(b)
	pre := fmt.Sprintf("b%d", time.Now().UnixNano()%1e8)
	rooms := make([]room.Info, nRooms)
	for i := range rooms {
		rooms[i] = e.newRoom(b, pre, 1)
	}
	took := e.fill(b, rooms, total, 1)
	b.Logf("wrote %d messages over %d rooms in %v", total, nRooms, took.Round(time.Millisecond))

	for i := 0; i < b.N; i++ {
		// Rebuild: everything is in Kafka, the store is empty.
		began, cpu0 := time.Now(), testio.ProcessCPU(b)
		dir := b.TempDir()
		s := startService(b, e, dir, pre, func(c *Config) {
			c.BatchSize = envInt("PALAVER_BENCH_BATCH", c.BatchSize)
			c.rowByRow = envInt("PALAVER_BENCH_BULK", 1) == 0
			c.Stores = envInt("PALAVER_BENCH_STORES", c.Stores)
		})
		for s.storedTotal() < int64(total) {
			time.Sleep(10 * time.Millisecond)
		}
		stored := time.Since(began)
		<-s.Ready() // the indexes built
		rebuild := time.Since(began)
		b.Logf("rebuild: every message stored after %v, ready after %v", stored.Round(time.Millisecond), rebuild.Round(time.Millisecond))
		b.ReportMetric(float64(total)/rebuild.Seconds(), "rebuild-msgs/s")
		b.ReportMetric(float64((testio.ProcessCPU(b)-cpu0).Nanoseconds())/1e3/float64(total), "rebuild-cpu-µs/msg")

		// Sustained ingest: more messages written while the replica runs.
		began, cpu0 = time.Now(), testio.ProcessCPU(b)
		done := make(chan time.Duration)
		go func() { done <- e.fill(b, rooms, more, 2) }()
		for s.storedTotal() < int64(total+more) {
			time.Sleep(10 * time.Millisecond)
		}
		ingest := time.Since(began)
		b.ReportMetric(float64(more)/ingest.Seconds(), "ingest-msgs/s")
		b.ReportMetric(float64((testio.ProcessCPU(b)-cpu0).Nanoseconds())/1e3/float64(more), "ingest-cpu-µs/msg")
		b.ReportMetric(float64(more)/(<-done).Seconds(), "produce-msgs/s")

		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		b.ReportMetric(float64(m.HeapInuse)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(s.size())/(1<<20), "store-MiB")

		// Pages: the latest page, or the page before a random position.
		r := rand.New(rand.NewPCG(3, 3))
		const queries = 2000
		var page, search []time.Duration
		perRoom := (total + more) / nRooms
		for range queries {
			in := rooms[r.IntN(nRooms)]
			req := PageRequest{Limit: 50}
			if r.IntN(2) == 0 {
				req.Before.Advance(0, int64(r.IntN(perRoom)))
			}
			t0 := time.Now()
			if _, err := s.Messages(b.Context(), in.Name, req); err != nil {
				b.Fatal(err)
			}
			page = append(page, time.Since(t0))
		}
		for range queries {
			in := rooms[r.IntN(nRooms)]
			q := benchWords[r.IntN(len(benchWords))]
			if r.IntN(2) == 0 {
				q += " " + benchWords[r.IntN(len(benchWords))]
			}
			t0 := time.Now()
			if _, err := s.Search(b.Context(), in.Name, SearchRequest{Query: q, Limit: 20}); err != nil {
				b.Fatal(err)
			}
			search = append(search, time.Since(t0))
		}
		b.ReportMetric(ms(pct(page, 50)), "page-p50-ms")
		b.ReportMetric(ms(pct(page, 99)), "page-p99-ms")
		b.ReportMetric(ms(pct(search, 50)), "search-p50-ms")
		b.ReportMetric(ms(pct(search, 99)), "search-p99-ms")

		visible := ackToVisible(b, e, s.Service, rooms, 1000, 10*time.Second)
		b.ReportMetric(ms(pct(visible, 50)), "ack-to-visible-p50-ms")
		b.ReportMetric(ms(pct(visible, 99)), "ack-to-visible-p99-ms")

		// Backlog: more messages written while the replica is stopped,
		// then stored by it started again on its store: its own ingest,
		// row by row, with no writer beside it in the process.
		s.stop()
		base := s.storedTotal()
		e.fill(b, rooms, more, 4)
		began, cpu0 = time.Now(), testio.ProcessCPU(b)
		s = startService(b, e, dir, pre, func(c *Config) {
			c.BatchSize = envInt("PALAVER_BENCH_BATCH", c.BatchSize)
			c.Stores = envInt("PALAVER_BENCH_STORES", c.Stores)
		})
		for s.storedTotal() < base+int64(more) {
			time.Sleep(10 * time.Millisecond)
		}
		backlog := time.Since(began)
		b.ReportMetric(float64(more)/backlog.Seconds(), "backlog-msgs/s")
		b.ReportMetric(float64((testio.ProcessCPU(b)-cpu0).Nanoseconds())/1e3/float64(more), "backlog-cpu-µs/msg")
		s.stop()
	}
	b.ReportMetric(0, "ns/op")
}

// ackToVisible writes rate messages a second for d, round-robin over the
// rooms, and times each from Kafka's ack to history's commit of it.
func ackToVisible(b *testing.B, e *kafkaEnv, s *Service, rooms []room.Info, rate int, d time.Duration) []time.Duration {
	b.Helper()
	type key struct {
		room string
		off  int64
	}
	var mu sync.Mutex
	acked := map[key]time.Time{}
	var out []time.Duration
	w := e.cluster.Writer()
	w.Async = true
	w.Completion = func(msgs []kafka.Message, err error) {
		now := time.Now()
		if err != nil {
			b.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			acked[key{string(m.Key), m.Offset}] = now
		}
	}
	defer w.Close()

	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { // history's side: every commit, what became visible
		defer close(watched)
		poll := time.NewTicker(5 * time.Millisecond) // an ack may come after the commit
		defer poll.Stop()
		for {
			s.mu.Lock()
			progress := s.progress
			s.mu.Unlock()
			select {
			case <-progress:
			case <-poll.C:
			case <-stop:
				return
			}
			now := time.Now()
			mu.Lock()
			for k, at := range acked {
				v, _, err := s.view(k.room)
				if err == nil && v.committed[0] > k.off {
					out = append(out, max(0, now.Sub(at)))
					delete(acked, k)
				}
			}
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	n := int(d.Seconds() * float64(rate))
	r := rand.New(rand.NewPCG(4, 4))
	for i := range n {
		<-tick.C
		in := rooms[i%len(rooms)]
		v, _ := message.Encode(&message.Envelope{V: 1, ID: fmt.Sprintf("v-%d", i), Room: in.Name, SenderID: "u-1", Text: benchText(r)})
		// The key names the room, so the ack can be matched.
		if err := w.WriteMessages(b.Context(), kafka.Message{Topic: in.Topic, Key: []byte(in.Name), Value: v}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		left := n - len(out)
		mu.Unlock()
		if left == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	<-watched
	if len(out) != n {
		b.Fatalf("%d of %d messages became visible", len(out), n)
	}
	return out
}
