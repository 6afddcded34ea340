package history

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"palaver.dev/services/internal/testio"
)

// BenchmarkStoreApply: the store alone, rows per second committed in
// batches of the replica's default size (16,000; PALAVER_BENCH_BATCH) over
// 100 rooms, search index on (no Kafka), messages as BenchmarkHistory
// writes them (50 senders, random client message ids), and the CPU time
// per row (the process's, all threads: the writer and SQLite's
// checkpoints), which the machine's other load does not change.
// PALAVER_BENCH_BULK=1: a rebuild's store, its indexes built at the end
// (FinishBuild, included in the figures).
func BenchmarkStoreApply(b *testing.B) {
	st, err := openStore(b.TempDir(), 0, envInt("PALAVER_BENCH_BULK", 0) == 1)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const rooms = 100
	batch := envInt("PALAVER_BENCH_BATCH", Config{}.withDefaults().BatchSize)
	tags := make([]int64, rooms)
	for i := range tags {
		if tags[i], err = st.AddRoom(b.Context(), fmt.Sprintf("r%d", i), fmt.Sprintf("t%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 1))
	next := make([]int64, rooms)
	t0 := time.Now()
	ops := make([]op, batch)
	b.ResetTimer()
	cpu0 := testio.ProcessCPU(b)
	for n := 0; n < b.N; n += batch {
		for i := range ops {
			k := r.IntN(rooms)
			sender := fmt.Sprintf("u-%d", r.IntN(50))
			m := stored(fmt.Sprintf("r%d", k), 0, next[k], t0.Add(time.Duration(n+i)*time.Millisecond), sender, benchText(r))
			m.ID, m.SenderName = benchID(r), "User "+sender
			ops[i] = op{Room: m.Room, Tag: tags[k], Offset: next[k], Msg: m}
			next[k]++
		}
		if _, _, err := st.Apply(b.Context(), ops); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := st.FinishBuild(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu1 := testio.ProcessCPU(b)
	for more := true; more; { // the merges the writer does while idle
		if more, err = st.MergeIndex(b.Context(), mergeStep); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((testio.ProcessCPU(b)-cpu1).Nanoseconds())/1e3/float64(b.N), "merge-cpu-µs/row")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/row")
}
