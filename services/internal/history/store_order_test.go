package history

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

// pos names a row as "partition/offset".
func pos(r row) string { return fmt.Sprintf("%d/%d", r.partition, r.offset) }

func positions(rows []row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = pos(r)
	}
	return out
}

// TestStorePagesSameTime pages a room whose rows share timestamps (as every
// record of one produce batch does under LogAppendTime) and ids (later
// copies, not stored) backward and forward with small limits, from the
// newest, from the oldest and from around a time: every walk lists each
// stored row once, in (time, partition, offset) order.
func TestStorePagesSameTime(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for _, parts := range []int{1, 2, 3} {
		room := fmt.Sprintf("same-%d", parts)
		tag, err := st.AddRoom(ctx, room, "palaver.room.default."+room)
		if err != nil {
			t.Fatal(err)
		}
		// Batches of records per partition: all of a batch share one
		// time; batches of different partitions share times too.
		var ops []op
		next := map[int]int64{}
		for p := range parts {
			var off int64
			for batch := range 4 {
				for i := range 3 + p + batch%2 {
					m := stored(room, p, off, t0.Add(time.Duration(batch)*time.Millisecond), "u-1", fmt.Sprintf("b%d i%d", batch, i))
					if i == 2 && batch == 1 { // a later copy of the batch's first message
						m.ID = fmt.Sprintf("m-%d-%d", p, off-2)
					}
					ops = append(ops, op{Room: room, Tag: tag, Partition: p, Offset: off, Msg: m})
					off++
				}
			}
			next[p] = off
		}
		if _, _, err := st.Apply(ctx, ops); err != nil {
			t.Fatal(err)
		}
		rs, err := st.r.QueryContext(ctx, `SELECT `+rowColumns+` FROM messages WHERE tag = ? ORDER BY ts, rid`, tag)
		if err != nil {
			t.Fatal(err)
		}
		all, err := scanRows(rs)
		if err != nil {
			t.Fatal(err)
		}
		want := positions(all)
		if len(want) >= len(ops) {
			t.Fatalf("%d partitions: later copies stored: %v", parts, want)
		}
		for limit := 1; limit <= 4; limit++ {
			// Backward from the newest.
			var got []string
			bound := next
			for range len(all) + 1 {
				rows, start, older, err := st.before(ctx, tag, parts, bound, limit)
				if err != nil {
					t.Fatal(err)
				}
				got = append(positions(rows), got...)
				if !older {
					break
				}
				bound = start
			}
			if !slices.Equal(got, want) {
				t.Errorf("%d partitions, limit %d: backward %q, want %q", parts, limit, got, want)
			}
			// Forward from the start.
			got = nil
			from := map[int]int64{}
			for range len(all) + 1 {
				rows, err := st.after(ctx, tag, parts, from, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) == 0 {
					break
				}
				got = append(got, positions(rows)...)
				for _, r := range rows {
					from[r.partition] = r.offset + 1
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("%d partitions, limit %d: forward %q, want %q", parts, limit, got, want)
			}
			// Around each batch's time: the rows before it, then from it on.
			for batch := range 5 {
				at := t0.Add(time.Duration(batch) * time.Millisecond)
				split, err := st.split(ctx, tag, parts, at, next)
				if err != nil {
					t.Fatal(err)
				}
				var older, newer []string
				bound := split
				for range len(all) + 1 {
					rows, start, more, err := st.before(ctx, tag, parts, bound, limit)
					if err != nil {
						t.Fatal(err)
					}
					older = append(positions(rows), older...)
					if !more {
						break
					}
					bound = start
				}
				from := maps.Clone(split)
				for range len(all) + 1 {
					rows, err := st.after(ctx, tag, parts, from, limit)
					if err != nil {
						t.Fatal(err)
					}
					if len(rows) == 0 {
						break
					}
					newer = append(newer, positions(rows)...)
					for _, r := range rows {
						from[r.partition] = r.offset + 1
					}
				}
				cut := 0
				for cut < len(all) && all[cut].ts < at.UnixMilli() {
					cut++
				}
				if !slices.Equal(older, want[:cut]) || !slices.Equal(newer, want[cut:]) {
					t.Errorf("%d partitions, limit %d, around batch %d: %q then %q, want %q then %q",
						parts, limit, batch, older, newer, want[:cut], want[cut:])
				}
			}
		}
	}
}

// TestStorePagesTimeBackward pages partitions whose times go backward at
// times (a broker's clock stepped back, or a leader with a slower clock;
// the sender's clock on a broker that keeps it): the report that listed
// 0/4 twice. Cursors hold an offset per partition, so a page is, in each
// partition, every row from its start on: each row is listed once in every
// walk, each page in (time, partition, offset) order.
func TestStorePagesTimeBackward(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	// ms offsets from t0 per partition, by offset.
	for name, times := range map[string][][]int{
		"report": {{0, 1, 2, 3, 5, 4}},
		"gap":    {{0, 10, 1, 11, 2, 12, 3}},
		"two":    {{0, 5, 5, 1, 7, 7, 2}, {3, 3, 0, 9, 4, 4, 8}},
	} {
		tag, err := st.AddRoom(ctx, name, "palaver.room.default."+name)
		if err != nil {
			t.Fatal(err)
		}
		var ops []op
		next := map[int]int64{}
		total := 0
		for p, ts := range times {
			for off, ms := range ts {
				ops = append(ops, op{Room: name, Tag: tag, Partition: p, Offset: int64(off),
					Msg: stored(name, p, int64(off), t0.Add(time.Duration(ms)*time.Millisecond), "u-1", "x")})
			}
			next[p] = int64(len(ts))
			total += len(ts)
		}
		if _, _, err := st.Apply(ctx, ops); err != nil {
			t.Fatal(err)
		}
		once := func(what string, got []string) {
			t.Helper()
			if len(got) != total || len(slices.Compact(slices.Sorted(slices.Values(got)))) != total {
				t.Errorf("%s: %s lists %q, want each of %d rows once", name, what, got, total)
			}
		}
		inOrder := func(what string, rows []row) {
			t.Helper()
			if !slices.IsSortedFunc(rows, byTime) {
				t.Errorf("%s: %s page %q not in order", name, what, positions(rows))
			}
		}
		for limit := 1; limit <= 3; limit++ {
			var got []string
			bound := next
			for range 2*total + 1 {
				rows, start, older, err := st.before(ctx, tag, len(times), bound, limit)
				if err != nil {
					t.Fatal(err)
				}
				inOrder("backward", rows)
				got = append(positions(rows), got...)
				if !older {
					break
				}
				bound = start
			}
			once(fmt.Sprintf("backward, limit %d,", limit), got)
			got = nil
			from := map[int]int64{}
			for range 2*total + 1 {
				rows, err := st.after(ctx, tag, len(times), from, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) == 0 {
					break
				}
				inOrder("forward", rows)
				got = append(got, positions(rows)...)
				for _, r := range rows {
					from[r.partition] = max(from[r.partition], r.offset+1)
				}
			}
			once(fmt.Sprintf("forward, limit %d,", limit), got)
		}
	}
}
