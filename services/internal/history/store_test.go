package history

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"palaver.dev/services/internal/message"
)

func stored(room string, p int, off int64, t time.Time, sender, text string) *message.Stored {
	return &message.Stored{
		Envelope:  message.Envelope{V: 1, ID: fmt.Sprintf("m-%d-%d", p, off), Room: room, SenderID: sender, Text: text},
		Partition: p, Offset: off, Time: t,
	}
}

func texts(rows []row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.text
	}
	return out
}

func TestStoreApplyPagesSearchTrim(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	tag, err := st.AddRoom(ctx, "lobby", "palaver.room.default.lobby")
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.AddRoom(ctx, "other", "palaver.room.default.other")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	var ops []op
	for i := range 10 {
		ops = append(ops, op{Room: "lobby", Tag: tag, Partition: 0, Offset: int64(i),
			Msg: stored("lobby", 0, int64(i), t0.Add(time.Duration(i)*time.Second), "u-1", fmt.Sprintf("hello number%d", i))})
	}
	ops = append(ops, op{Room: "lobby", Tag: tag, Partition: 0, Offset: 10}) // a bad record
	ops = append(ops, op{Room: "other", Tag: other, Partition: 0, Offset: 0, Msg: stored("other", 0, 0, t0, "u-2", "hello elsewhere")})
	next, _, err := st.Apply(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	if next[posKey{"lobby", 0}].next != 11 || next[posKey{"other", 0}].next != 1 {
		t.Fatalf("positions %v", next)
	}
	// A replay changes nothing.
	if _, _, err := st.Apply(ctx, ops[:3]); err != nil {
		t.Fatal(err)
	}
	rows, start, older, err := st.before(ctx, tag, 1, map[int]int64{0: 11}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(rows); !slices.Equal(got, []string{"hello number7", "hello number8", "hello number9"}) || start[0] != 7 || !older {
		t.Fatalf("before: %q start %v older %v", got, start, older)
	}
	rows, err = st.after(ctx, tag, 1, map[int]int64{0: 8}, 5)
	if err != nil || !slices.Equal(texts(rows), []string{"hello number8", "hello number9"}) {
		t.Fatalf("after: %q %v", texts(rows), err)
	}
	split, err := st.split(ctx, tag, 1, t0.Add(4500*time.Millisecond), map[int]int64{0: 11})
	if err != nil || split[0] != 5 {
		t.Fatalf("split: %v %v", split, err)
	}
	terms, err := parseQuery(`HELLO number3`)
	if err != nil {
		t.Fatal(err)
	}
	rows, more, err := st.search(ctx, tag, 1, terms, "", nil, 10)
	if err != nil || !slices.Equal(texts(rows), []string{"hello number3"}) || more {
		t.Fatalf("search: %q more %v err %v", texts(rows), more, err)
	}
	terms, _ = parseQuery(`hel*`)
	rows, more, err = st.search(ctx, tag, 1, terms, "", nil, 4)
	if err != nil || len(rows) != 4 || !more || rows[0].text != "hello number9" {
		t.Fatalf("prefix search: %q more %v err %v", texts(rows), more, err)
	}
	rows, _, err = st.search(ctx, tag, 1, terms, "", &searchKey{rows[3].ts, rows[3].rid}, 100)
	if err != nil || len(rows) != 6 {
		t.Fatalf("second search page: %q %v", texts(rows), err)
	}
	// Trim what retention removed: rows and index entries.
	_, res, err := st.Apply(ctx, []op{{Room: "lobby", Tag: tag, Partition: 0, Offset: 5, Trim: true}})
	if err != nil || res.Trimmed["lobby"] != 5 {
		t.Fatalf("trim: %v %v", res.Trimmed, err)
	}
	// A replay of what the trim removed, and of what is still stored (in
	// one batch, twice), leaves the view as it is.
	if _, _, err := st.Apply(ctx, append(ops[:10:10], ops[3:7]...)); err != nil {
		t.Fatal(err)
	}
	terms, _ = parseQuery(`hello`)
	rows, _, err = st.search(ctx, tag, 1, terms, "", nil, 100)
	if err != nil || len(rows) != 5 || rows[4].text != "hello number5" {
		t.Fatalf("search after trim: %q %v", texts(rows), err)
	}
	if rows, _, _, err := st.before(ctx, tag, 1, map[int]int64{0: 11}, 100); err != nil || len(rows) != 5 || rows[0].text != "hello number5" {
		t.Fatalf("page after trim: %q %v", texts(rows), err)
	}
	rooms, err := st.Rooms(ctx)
	if err != nil || rooms["lobby"].Next[0] != 11 {
		t.Fatalf("rooms: %+v %v", rooms, err)
	}
	if err := st.DropRoom(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	rows, _, err = st.search(ctx, other, 1, terms, "", nil, 100)
	if err != nil || len(rows) != 1 {
		t.Fatalf("other room after drop: %q %v", texts(rows), err)
	}
}

func TestHighlight(t *testing.T) {
	terms, err := parseQuery(`deploy* "fri"`)
	if err != nil {
		t.Fatal(err)
	}
	got := highlight("Deployed on Fri; friday? DEPLOY!", terms)
	want := []Segment{{Text: "Deployed", Mark: true}, {Text: " on "}, {Text: "Fri", Mark: true}, {Text: "; friday? "}, {Text: "DEPLOY", Mark: true}, {Text: "!"}}
	if !slices.Equal(got, want) {
		t.Fatalf("highlight = %+v", got)
	}
}

func TestParseQueryRefusesHostileInput(t *testing.T) {
	for _, q := range []string{"", "   ", `"*^:()`, string(make([]byte, 257)), "\xff\xfe",
		"a b c d e f g h i j k l m n o p q", "\u0301 \u0300*"} {
		if _, err := parseQuery(q); err == nil {
			t.Errorf("parseQuery(%q) accepted", q)
		}
	}
	terms, err := parseQuery(`NEAR(a b) OR "x" AND y:z -w ^v`)
	if err != nil {
		t.Fatal(err)
	}
	if got := matchExpr(terms); got != `"near" "a" "b" "or" "x" "and" "y" "z" "w" "v"` {
		t.Fatalf("matchExpr = %s", got)
	}
}

// A later copy (same sender and client id, a higher offset of the same
// partition, within the dedup window of the copy kept) is not stored, in
// the batch of its first copy or a later one; a replay and a copy past the
// window or in another partition are not copies.
func TestStoreLaterCopies(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	tag, err := st.AddRoom(ctx, "lobby", "palaver.room.default.lobby")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	msg := func(p int, off int64, at time.Time, sender, id string) op {
		m := stored("lobby", p, off, at, sender, "text "+id)
		m.ID = id
		return op{Room: "lobby", Tag: tag, Partition: p, Offset: off, Msg: m}
	}
	w := st.dedupWindow
	batch1 := []op{
		msg(0, 0, t0, "u-1", "a"),
		msg(0, 1, t0.Add(time.Second), "u-1", "a"), // copy, same batch
		msg(0, 2, t0, "u-2", "a"),                  // another sender
		msg(1, 0, t0, "u-1", "a"),                  // another partition
	}
	_, res, err := st.Apply(ctx, batch1)
	if err != nil || res.Copies["lobby"] != 1 {
		t.Fatalf("batch 1: copies %v, %v", res.Copies, err)
	}
	_, res, err = st.Apply(ctx, []op{
		msg(0, 3, t0.Add(w-time.Millisecond), "u-1", "a"),  // copy, later batch
		{Room: "lobby", Tag: tag, Partition: 0, Offset: 4}, // a bad record
		msg(0, 5, t0.Add(w), "u-1", "a"),                   // past the window: kept
		msg(0, 6, t0.Add(w+time.Second), "u-1", "a"),       // a copy of offset 5
	})
	if err != nil || res.Copies["lobby"] != 2 {
		t.Fatalf("batch 2: copies %v, %v", res.Copies, err)
	}
	// A replay of batch 1 keeps what it kept, and counts no copy again.
	if _, res, err := st.Apply(ctx, batch1); err != nil || res.Copies["lobby"] != 0 {
		t.Fatalf("replay: copies %v, %v", res.Copies, err)
	}
	rows, err := st.after(ctx, tag, 2, map[int]int64{}, 50)
	if err != nil {
		t.Fatal(err)
	}
	terms, err := parseQuery("text")
	if err != nil {
		t.Fatal(err)
	}
	found, _, err := st.search(ctx, tag, 2, terms, "", nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0/0", "0/2", "0/5", "1/0"}
	for what, rows := range map[string][]row{"rows": rows, "search": found} {
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprintf("%d/%d", r.partition, r.offset))
		}
		if !slices.Equal(sorted(got), want) {
			t.Fatalf("%s %q, want %q", what, got, want)
		}
	}
}

// The checkpointer copies the log into the database after a commit, long
// before the log reaches the size at which the writer would.
func TestStoreCheckpointsBesideTheWriter(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	db := filepath.Join(dir, "history.db")
	size := func() int64 {
		fi, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	tag, err := st.AddRoom(t.Context(), "lobby", "palaver.room.default.lobby")
	if err != nil {
		t.Fatal(err)
	}
	var ops []op
	for i := range 100 {
		ops = append(ops, op{Room: "lobby", Tag: tag, Offset: int64(i),
			Msg: stored("lobby", 0, int64(i), time.Now(), "u-1", fmt.Sprintf("hello number%d", i))})
	}
	if _, _, err := st.Apply(t.Context(), ops); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); size() <= before; {
		if time.Now().After(deadline) {
			t.Fatalf("the database file is still %d bytes: the log was not checkpointed", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openLobby opens a store in a new directory, closed with the test, with
// one room: lobby, whose tag it returns.
func openLobby(t *testing.T) (*Store, int64) {
	t.Helper()
	st, err := OpenStore(t.TempDir())
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

// indexSegments counts the segments of the search index.
func indexSegments(t *testing.T, st *Store) int {
	t.Helper()
	var n int
	if err := st.r.QueryRowContext(t.Context(), `SELECT count(DISTINCT segid) FROM messages_text_idx`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStoreMergeIndexBetweenBatches(t *testing.T) {
	st, tag := openLobby(t)
	ctx := t.Context()
	segments := func() int { return indexSegments(t, st) }
	// Batches of one row, as at a low rate: a segment each.
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	const total = 300
	for i := range total {
		o := op{Room: "lobby", Tag: tag, Offset: int64(i),
			Msg: stored("lobby", 0, int64(i), t0.Add(time.Duration(i)*time.Second), "u-1", fmt.Sprintf("common word%d", i%7))}
		if _, _, err := st.Apply(ctx, []op{o}); err != nil {
			t.Fatal(err)
		}
	}
	unmerged := segments()
	steps := 0
	for ; ; steps++ {
		more, err := st.MergeIndex(ctx, mergeStep)
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
		if steps > 10000 {
			t.Fatal("the index's merge work does not end")
		}
	}
	if steps == 0 {
		t.Fatalf("no merge work in an index of %d one-row segments", unmerged)
	}
	// Done: every level holds fewer segments than a merge needs (4).
	if merged := segments(); merged >= unmerged || merged > 12 {
		t.Fatalf("%d segments after %d merge steps, %d before", merged, steps, unmerged)
	}
	if more, err := st.MergeIndex(ctx, mergeStep); more || err != nil {
		t.Fatalf("a merged index merged again: %v %v", more, err)
	}
	// The rows, their index and the positions are as before.
	threes := (total + 7 - 1 - 3) / 7 // i%7 == 3 below total
	for q, want := range map[string]int{"common": total, "word3": threes, "word3 common": threes} {
		var n int
		if err := st.r.QueryRowContext(ctx, `SELECT count(*) FROM messages_text WHERE messages_text MATCH ?`, q).Scan(&n); err != nil || n != want {
			t.Fatalf("%q matches %d rows (%v), want %d", q, n, err, want)
		}
	}
	rooms, err := st.Rooms(ctx)
	if err != nil || rooms["lobby"].Next[0] != total {
		t.Fatalf("positions %v (%v)", rooms, err)
	}
}

// A commit does none of the search index's merge work, however much it
// writes: the writer merges between batches (MergeIndex). FTS5's own
// automerge would merge four segments or more once 64 leaf pages have been
// written, inside the commit that crossed the mark.
func TestStoreCommitsLeaveIndexMergesToTheWriter(t *testing.T) {
	st, tag := openLobby(t)
	ctx := t.Context()
	segments := func() int { return indexSegments(t, st) }
	leaves := func() int { // pages of the index, its structure record aside
		var n int
		if err := st.r.QueryRowContext(ctx, `SELECT count(*) FROM messages_text_data WHERE id > 10`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Fewer batches than a crisis merge needs (16), each of words no other
	// row has, so that each batch's segment spans several leaf pages.
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	const batches, rows = 15, 300
	for b := range batches {
		ops := make([]op, 0, rows)
		for i := range rows {
			off := int64(b*rows + i)
			text := ""
			for w := range 10 {
				text += fmt.Sprintf(" w%dx%d", off, w)
			}
			ops = append(ops, op{Room: "lobby", Tag: tag, Offset: off, Msg: stored("lobby", 0, off, t0, "u-1", text)})
		}
		if _, _, err := st.Apply(ctx, ops); err != nil {
			t.Fatal(err)
		}
		if got := segments(); got != b+1 {
			t.Fatalf("%d segments after %d batches: a commit merged the index", got, b+1)
		}
	}
	if n := leaves(); n < 64 {
		t.Fatalf("the batches wrote %d leaf pages: too few to prove anything (FTS5 merges every 64)", n)
	}
	if more, err := st.MergeIndex(ctx, mergeStep); !more || err != nil {
		t.Fatalf("no merge work between batches: %v %v", more, err)
	}
}

// A writer that never idles still keeps the log bounded: once its file
// reaches logMaxPages, RestartLog between batches empties it, waiting for
// a reader that still reads the log.
func TestStoreLogBoundedWithoutIdleMoments(t *testing.T) {
	st, tag := openLobby(t)
	ctx := t.Context()
	const maxPages = 128
	st.logMaxPages = maxPages
	st.logRestartPages = 1 << 40 // no restarts when idle
	// A reader in a transaction that started on the log: the bound waits
	// for it to end.
	reader, err := st.r.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if _, err := reader.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(ctx, []op{{Room: "lobby", Tag: tag, Offset: 0, Msg: stored("lobby", 0, 0, time.Now(), "u-1", "first")}}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := reader.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, func() { _, _ = reader.ExecContext(context.Background(), `ROLLBACK`) })
	restarts, longest := 0, int64(0)
	for i := int64(1); restarts < 3; i++ {
		if i > 100000 {
			t.Fatalf("the log reached its bound %d times in %d batches", restarts, i)
		}
		o := op{Room: "lobby", Tag: tag, Offset: i, Msg: stored("lobby", 0, i, time.Now(), "u-1", fmt.Sprintf("hello number%d", i))}
		if _, _, err := st.Apply(ctx, []op{o}); err != nil {
			t.Fatal(err)
		}
		longest = max(longest, st.logPages())
		if _, over := st.LogRestartDue(); over {
			if ok, err := st.RestartLog(ctx, true); !ok || err != nil {
				t.Fatalf("restart at the bound: %v %v", ok, err)
			}
			if p := st.logPages(); p != 0 {
				t.Fatalf("the log's file holds %d pages after a restart at the bound", p)
			}
			restarts++
		}
	}
	// A commit of one row writes a few pages: the log passes its bound by
	// at most one batch.
	if longest > maxPages+16 {
		t.Fatalf("the log's file reached %d pages, bound %d", longest, maxPages)
	}
}
