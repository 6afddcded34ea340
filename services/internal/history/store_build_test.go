package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// A store rebuilt from empty, its indexes built once its rows are in,
// holds what a store kept up to date row by row holds: the same rows
// (later copies left out by the same rule), the same search results, the
// same positions; and a rebuild interrupted by a restart goes on where it
// stopped.
func TestStoreRebuildInBulk(t *testing.T) {
	ctx := t.Context()
	rowByRow, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer rowByRow.Close()
	dir := t.TempDir()
	bulk, err := openStore(dir, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bulk.Building() {
		t.Fatal("a new store opened for a rebuild is not rebuilding")
	}
	rooms := []string{"lobby", "ops", "random"}
	tags := map[string]int64{}
	for _, st := range []*Store{rowByRow, bulk} {
		for _, name := range rooms {
			tag, err := st.AddRoom(ctx, name, "palaver.room.default."+name)
			if err != nil {
				t.Fatal(err)
			}
			tags[name] = tag
		}
	}

	// Batches of records over 3 rooms of 2 partitions: messages, later
	// copies (a client message id sent again within the dedup window or
	// after it), bad records, trims, and replays of earlier batches.
	r := rand.New(rand.NewPCG(7, 7))
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	next := map[posKey]int64{}
	var batches [][]op
	for b := range 40 {
		var batch []op
		for range 50 {
			name, p := rooms[r.IntN(len(rooms))], r.IntN(2)
			k := posKey{name, p}
			o := op{Room: name, Tag: tags[name], Partition: p, Offset: next[k]}
			next[k]++
			if r.IntN(20) > 0 { // else a bad record
				at := t0.Add(time.Duration(b*50+len(batch)) * 10 * time.Second)
				sender := fmt.Sprintf("u-%d", r.IntN(3))
				o.Msg = stored(name, p, o.Offset, at, sender, benchText(r))
				o.Msg.ID = fmt.Sprintf("c-%d", r.IntN(150)) // ids come back, some within the window
			}
			batch = append(batch, o)
		}
		if b%9 == 8 { // retention removed the first records of a partition
			k := posKey{rooms[b%3], b % 2}
			batch = append(batch, op{Room: k.room, Tag: tags[k.room], Partition: k.partition, Offset: next[k] / 3, Trim: true})
		}
		batches = append(batches, batch)
		if b%7 == 6 {
			batches = append(batches, batches[b-3])
		}
	}
	copies := map[string]int64{}
	for i, batch := range batches {
		_, res, err := rowByRow.Apply(ctx, slices.Clone(batch))
		if err != nil {
			t.Fatal(err)
		}
		for name, n := range res.Copies {
			copies[name] += n
		}
		if _, res, err := bulk.Apply(ctx, slices.Clone(batch)); err != nil || len(res.Copies) > 0 {
			t.Fatalf("rebuilding: copies %v (%v), want none before the indexes are built", res.Copies, err)
		}
		if i == len(batches)/2 { // a restart mid-rebuild: it goes on rebuilding
			if err := bulk.Close(); err != nil {
				t.Fatal(err)
			}
			if bulk, err = openStore(dir, 0, false); err != nil {
				t.Fatal(err)
			}
			if !bulk.Building() {
				t.Fatal("a store reopened in the middle of its rebuild is not rebuilding")
			}
		}
	}
	if copies["lobby"]+copies["ops"]+copies["random"] == 0 {
		t.Fatal("no later copies in the records: the test proves nothing")
	}
	done, err := bulk.FinishBuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bulk.Building() {
		t.Fatal("still rebuilding after FinishBuild")
	}
	for _, name := range rooms {
		if done.Copies[tags[name]] != copies[name] {
			t.Fatalf("room %s: %d later copies removed, the row-by-row store left out %d", name, done.Copies[tags[name]], copies[name])
		}
	}
	defer func() { _ = bulk.Close() }()

	for _, name := range rooms {
		tag := tags[name]
		var got [2][]row
		for i, st := range []*Store{rowByRow, bulk} {
			if got[i], err = st.after(ctx, tag, 2, map[int]int64{}, 10000); err != nil {
				t.Fatal(err)
			}
		}
		if len(got[0]) == 0 || !slices.Equal(got[0], got[1]) || done.Rows[tag] != int64(len(got[1])) {
			t.Fatalf("room %s: %d rows rebuilt, %d row by row, or they differ", name, len(got[1]), len(got[0]))
		}
		for _, q := range []string{"word001", "word1*", "word00* word1*"} {
			terms, err := parseQuery(q)
			if err != nil {
				t.Fatal(err)
			}
			for _, sender := range []string{"", "u-1"} {
				var found [2][]row
				for i, st := range []*Store{rowByRow, bulk} {
					if found[i], _, err = st.search(ctx, tag, 2, terms, sender, nil, 10000); err != nil {
						t.Fatal(err)
					}
				}
				if len(found[0]) == 0 || !slices.Equal(found[0], found[1]) {
					t.Fatalf("room %s, search %q from %q: %d found in the rebuilt store, %d row by row, or they differ",
						name, q, sender, len(found[1]), len(found[0]))
				}
			}
		}
		for _, at := range []time.Duration{0, time.Hour, 2 * time.Hour} {
			var split [2]map[int]int64
			for i, st := range []*Store{rowByRow, bulk} {
				if split[i], err = st.split(ctx, tag, 2, t0.Add(at), map[int]int64{0: -1, 1: -1}); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(split[0]) != fmt.Sprint(split[1]) {
				t.Fatalf("room %s, around %v: %v rebuilt, %v row by row", name, at, split[1], split[0])
			}
		}
	}
	var pos [2]map[string]storedRoom
	for i, st := range []*Store{rowByRow, bulk} {
		if pos[i], err = st.Rooms(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(pos[0]) != fmt.Sprint(pos[1]) {
		t.Fatalf("positions: %v rebuilt, %v row by row", pos[1], pos[0])
	}

	// Built, it is a store like any other: later records are checked for
	// copies as they come, and a reopening does not rebuild.
	o := batches[0][0]
	for _, b := range batches {
		for _, x := range b {
			if x.Msg != nil && x.Room == "lobby" && x.Partition == 0 {
				o = x
			}
		}
	}
	again := o
	again.Offset = next[posKey{"lobby", 0}]
	again.Msg = stored("lobby", 0, again.Offset, o.Msg.Time.Add(time.Second), o.Msg.SenderID, "a later copy")
	again.Msg.ID = o.Msg.ID
	if _, res, err := bulk.Apply(ctx, []op{again}); err != nil || res.Copies["lobby"] != 1 {
		t.Fatalf("a later copy after the rebuild: copies %v (%v)", res.Copies, err)
	}
	if err := bulk.Close(); err != nil {
		t.Fatal(err)
	}
	if bulk, err = openStore(dir, 0, true); err != nil {
		t.Fatal(err)
	}
	if bulk.Building() {
		t.Fatal("a built store reopened is rebuilding")
	}
}

// While a store is rebuilt its rooms are not answered, however far ingest
// has come: their rows have neither search index nor later copies removed
// yet. Once the indexes are built they are.
func TestQueriesWaitForTheRebuild(t *testing.T) {
	ctx := t.Context()
	st, tag := lobbyStore(t, true)
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	if _, _, err := st.Apply(ctx, []op{{Room: "lobby", Tag: tag, Msg: stored("lobby", 0, 0, t0, "u-1", "hello")}}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{MaxWait: 50 * time.Millisecond}.withDefaults()
	s := &Service{cfg: cfg, stores: []*Store{st}, m: NewMetrics(nil),
		served:    map[string]*servedRoom{"lobby": {tag: tag, parts: 1}},
		committed: map[posKey]int64{{"lobby", 0}: 1}, end: map[posKey]int64{{"lobby", 0}: 1},
		progress: make(chan struct{}), finishing: []bool{false}}
	if _, err := s.Messages(ctx, "lobby", PageRequest{Limit: 10}); !errors.Is(err, ErrBehind) {
		t.Fatalf("a page while rebuilding: %v, want %v", err, ErrBehind)
	}
	if _, err := s.Search(ctx, "lobby", SearchRequest{Query: "hello", Limit: 10}); !errors.Is(err, ErrBehind) {
		t.Fatalf("a search while rebuilding: %v, want %v", err, ErrBehind)
	}
	if _, err := st.FinishBuild(ctx); err != nil {
		t.Fatal(err)
	}
	page, err := s.Messages(ctx, "lobby", PageRequest{Limit: 10})
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("a page once rebuilt: %+v, %v", page, err)
	}
	found, err := s.Search(ctx, "lobby", SearchRequest{Query: "hello", Limit: 10})
	if err != nil || len(found.Results) != 1 {
		t.Fatalf("a search once rebuilt: %+v, %v", found, err)
	}
}

// A rebuild's index build is one transaction, all of whose pages go to the
// write-ahead log: when that takes the log past its bound, the writer
// empties it right after the build. And with FTS5's automerge off, the
// writer's idle steps merge the built index with the segments the live
// batches add after it.
func TestWriterAfterTheIndexBuild(t *testing.T) {
	ctx := t.Context()
	st, tag := lobbyStore(t, true)
	const maxPages = 64
	st.logMaxPages, st.logRestartPages = maxPages, 1<<40 // the bound alone
	s := startWriter(t, st, Config{BatchSize: 500}, 2)
	committed := func() int64 { return s.committedAt("lobby", 0) }
	r := rand.New(rand.NewPCG(3, 3))
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	send := func(off int64) {
		s.ops[0] <- op{Room: "lobby", Tag: tag, Offset: off,
			Msg: stored("lobby", 0, off, t0.Add(time.Duration(off)*time.Second), fmt.Sprintf("u-%d", off%5), benchText(r))}
	}
	const rows = 10000
	for off := range int64(rows) {
		send(off)
	}
	waitFor(t, "the rebuild's rows stored", func() bool { return committed() == rows })
	bound := func() float64 { return testutil.ToFloat64(s.m.LogRestarts.WithLabelValues("0", "bound")) }
	before := bound()
	var built int64
	if err := s.control(ctx, 0, func(st *Store) error {
		_, err := st.FinishBuild(ctx)
		built = st.logPages()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if built < maxPages {
		t.Fatalf("the index build wrote %d pages of log, under the bound %d: the test proves nothing", built, maxPages)
	}
	waitFor(t, "the log emptied after the build", func() bool { return bound() > before && st.logPages() == 0 })

	// Live batches of one row, a segment each, fewer than FTS5's crisis
	// merge needs.
	segments := indexSegments(t, st)
	const live = 10
	for off := int64(rows); off < rows+live; off++ {
		send(off)
		waitFor(t, "a live row stored", func() bool { return committed() == off+1 })
	}
	waitFor(t, "the index merged", func() bool { return indexSegments(t, st) < segments+live })
}

// A batch holds at most maxBatchBytes of messages, whatever BatchSize
// allows: eight queued messages of 5 MiB are committed four at most at a
// time.
func TestWriterBatchBoundedInBytes(t *testing.T) {
	st, tag := lobbyStore(t, false)
	s := newWriterService(st, Config{BatchSize: 500}, 1)
	const n, size = 8, 5 << 20
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for off := range int64(n) { // all queued before the writer starts
		m := stored("lobby", 0, off, t0, "u-1", "hello")
		m.SenderName = strings.Repeat("x", size)
		s.ops[0] <- op{Room: "lobby", Tag: tag, Offset: off, Msg: m}
	}
	runWriter(t, s)
	waitFor(t, "every message stored", func() bool { return s.committedAt("lobby", 0) == n })
	var h dto.Metric
	if err := s.m.CommitSize.Write(&h); err != nil {
		t.Fatal(err)
	}
	commits, rows := h.GetHistogram().GetSampleCount(), h.GetHistogram().GetSampleSum()
	if rows != n || commits < 2 { // four at most a batch (three make 15 MiB)
		t.Fatalf("%v rows in %d commits: a batch held more than %d bytes", rows, commits, maxBatchBytes)
	}
}

// lobbyStore opens a store (bulk: as for a rebuild) in a temporary
// directory, closed at the test's end, with the room lobby added.
func lobbyStore(t *testing.T, bulk bool) (*Store, int64) {
	t.Helper()
	st, err := openStore(t.TempDir(), 0, bulk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	tag, err := st.AddRoom(t.Context(), "lobby", "palaver.room.default.lobby")
	if err != nil {
		t.Fatal(err)
	}
	return st, tag
}

// newWriterService is a Service over st alone whose writer queue holds
// batches batches of cfg.BatchSize ops; runWriter runs its writer.
func newWriterService(st *Store, cfg Config, batches int) *Service {
	cfg = cfg.withDefaults()
	return &Service{cfg: cfg, stores: []*Store{st}, ops: []chan op{make(chan op, batches*cfg.BatchSize)},
		m: NewMetrics(nil), log: slog.New(slog.DiscardHandler), finishing: []bool{false},
		served: map[string]*servedRoom{}, committed: map[posKey]int64{}, end: map[posKey]int64{},
		progress: make(chan struct{}), ready: make(chan struct{})}
}

// runWriter runs s's writer of store 0 until the test ends, failing it if
// the writer fails.
func runWriter(t *testing.T, s *Service) {
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.write(ctx, 0) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// startWriter is newWriterService with its writer running.
func startWriter(t *testing.T, st *Store, cfg Config, batches int) *Service {
	s := newWriterService(st, cfg, batches)
	runWriter(t, s)
	return s
}

// committedAt is the position committed for a room's partition.
func (s *Service) committedAt(room string, p int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed[posKey{room, p}]
}
