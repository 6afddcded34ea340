package history

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/shard"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestIngestPageSearchAroundReadYourWrites(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	in := e.newRoom(t, pre, 2)
	e.produce(t, in, 0, 300, 3, func(i int) string {
		if i%10 == 0 {
			return fmt.Sprintf("deploy number %d finished", i)
		}
		return fmt.Sprintf("chatter %d", i)
	})
	s := startService(t, e, t.TempDir(), pre, nil)
	waitCaughtUp(t, s.Service, in, e.ends(t, in))
	want := e.topicMessages(t, in)
	if len(want) != 300 {
		t.Fatalf("the topic holds %d messages, want 300", len(want))
	}

	// Backward paging returns every message once, in time order.
	back := allBackward(t, s.Service, in.Name, 7)
	if !slices.Equal(sorted(back), sorted(want)) {
		t.Fatalf("backward paging: %d messages, want the topic's %d", len(back), len(want))
	}
	// Forward paging from the start returns the same sequence.
	var fwd []string
	var after cursor.Cursor
	for {
		page, err := s.Messages(t.Context(), in.Name, PageRequest{After: after, HasAfter: true, Limit: 11})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			fwd = append(fwd, fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID))
		}
		if len(page.Messages) == 0 {
			break
		}
		var err2 error
		if after, err2 = cursor.Parse(page.After); err2 != nil {
			t.Fatal(err2)
		}
	}
	if !slices.Equal(fwd, back) {
		t.Fatalf("forward paging differs from backward paging:\n%v\n%v", fwd[:10], back[:10])
	}
	// A message's cursor resumes right after it.
	page, err := s.Messages(t.Context(), in.Name, PageRequest{Limit: 5})
	if err != nil || len(page.Messages) != 5 {
		t.Fatalf("latest page: %d messages, %v", len(page.Messages), err)
	}
	mid, err := cursor.Parse(page.Messages[1].Cursor)
	if err != nil {
		t.Fatal(err)
	}
	next, err := s.Messages(t.Context(), in.Name, PageRequest{After: mid, HasAfter: true, Limit: 3})
	if err != nil || len(next.Messages) != 3 || next.Messages[0].ID != page.Messages[2].ID {
		t.Fatalf("after a message's cursor: %+v %v", next.Messages, err)
	}

	// Search: newest first, marked, by sender, paged.
	res, err := s.Search(t.Context(), in.Name, SearchRequest{Query: "DEPLOY finished", Limit: 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 20 || res.Next == "" {
		t.Fatalf("search: %d results, next %q", len(res.Results), res.Next)
	}
	for i, m := range res.Results {
		if !strings.HasPrefix(m.Text, "deploy number") {
			t.Fatalf("result %q does not match", m.Text)
		}
		if i > 0 && m.Time.After(res.Results[i-1].Time) {
			t.Fatalf("results not newest first")
		}
		if !slices.Contains(m.Highlight, Segment{Text: "deploy", Mark: true}) {
			t.Fatalf("no marked term in %+v", m.Highlight)
		}
	}
	rest, err := s.Search(t.Context(), in.Name, SearchRequest{Query: "deploy", Next: res.Next, Limit: 200})
	if err != nil || len(rest.Results) != 10 || rest.Next != "" {
		t.Fatalf("second search page: %d results, next %q, %v", len(rest.Results), rest.Next, err)
	}
	bySender, err := s.Search(t.Context(), in.Name, SearchRequest{Query: "deploy", Sender: "u-0", Limit: 200})
	if err != nil || len(bySender.Results) != 10 {
		t.Fatalf("search by sender: %d results, %v", len(bySender.Results), err)
	}
	for _, m := range bySender.Results {
		if m.Sender.ID != "u-0" {
			t.Fatalf("sender filter let %q through", m.Sender.ID)
		}
	}

	// Jump to a date: the messages around the 150th message's time.
	all, err := s.Messages(t.Context(), in.Name, PageRequest{Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	pivot := all.Messages[150]
	around, err := s.Messages(t.Context(), in.Name, PageRequest{Around: pivot.Time, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(around.Messages) != 10 || around.Before == "" || around.After == "" {
		t.Fatalf("around: %d messages, before %q after %q", len(around.Messages), around.Before, around.After)
	}
	for i, m := range around.Messages {
		if before := i < 5; before != m.Time.Before(pivot.Time) {
			t.Fatalf("around %v: message %d at %v on the wrong side", pivot.Time, i, m.Time)
		}
	}

	// Read-your-writes: a position just written is waited for.
	e.produce(t, in, 300, 1, 1, func(int) string { return "just sent" })
	seen := e.ends(t, in)
	latest, err := s.Messages(t.Context(), in.Name, PageRequest{Seen: seen, Limit: 1})
	if err != nil || len(latest.Messages) != 1 || latest.Messages[0].Text != "just sent" {
		t.Fatalf("read-your-writes: %+v, %v", latest.Messages, err)
	}
	// A position ingest never reaches: behind, after the bounded wait.
	var ahead cursor.Cursor
	ahead.Advance(0, 1<<40)
	if _, err := s.Messages(t.Context(), in.Name, PageRequest{Seen: ahead, Limit: 1}); !errors.Is(err, ErrBehind) {
		t.Fatalf("a position past the end: %v, want ErrBehind", err)
	}
	if _, err := s.Messages(t.Context(), "no-such-room", PageRequest{Limit: 1}); !errors.Is(err, ErrNotServed) {
		t.Fatalf("unknown room: %v, want ErrNotServed", err)
	}
	for _, c := range []prometheus.Collector{s.m.Ingested, s.m.Lag, s.m.QueryLatency, s.m.CommitLatency} {
		if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
			t.Errorf("metrics lint: %v %v", problems, err)
		}
	}
	if got := testutil.ToFloat64(s.m.Ingested.WithLabelValues(in.Name)); got != 301 {
		t.Fatalf("ingested_messages_total = %v, want 301", got)
	}
}

// The rebuild, a room added while running, retention and malformed records.
func TestRebuildFollowRetentionBadRecords(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	in := e.newRoom(t, pre, 1)
	e.produce(t, in, 0, 500, 4, func(i int) string { return fmt.Sprintf("message %d", i) })
	// Records of another Kafka client, between valid ones.
	e.write(t,
		kafka.Message{Topic: in.Topic, Value: []byte("not json")},
		kafka.Message{Topic: in.Topic, Value: []byte(`{"v":1,"id":"x","room":"elsewhere","sender_id":"u","text":"t"}`)},
		kafka.Message{Topic: in.Topic, Value: []byte("\xff\xfe")},
		kafka.Message{Topic: in.Topic, Value: []byte(`{"v":9,"id":"x","room":"` + in.Name + `","sender_id":"u","text":"t"}`)},
		kafka.Message{Topic: in.Topic},
		kafka.Message{Topic: in.Topic, Value: []byte(`{"v":1,"id":"x","room":"` + in.Name + `","sender_id":"u"}`)},
	)
	e.produce(t, in, 500, 10, 4, func(i int) string { return fmt.Sprintf("message %d", i) })

	dir := t.TempDir()
	s := startService(t, e, dir, pre, nil)
	waitCaughtUp(t, s.Service, in, e.ends(t, in))
	first := allBackward(t, s.Service, in.Name, 50)
	if want := e.topicMessages(t, in); !slices.Equal(sorted(first), sorted(want)) || len(first) != 510 {
		t.Fatalf("ingested %d messages, the topic holds %d valid ones", len(first), len(want))
	}
	for reason, want := range map[string]float64{reasonMalformed: 1, reasonWrongRoom: 1, reasonInvalidUTF8: 1, reasonVersion: 1, reasonEmpty: 1, reasonMissing: 1} {
		if got := testutil.ToFloat64(s.m.Skipped.WithLabelValues(reason)); got != want {
			t.Errorf("skipped_records_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if err := s.CheckReady(t.Context()); err != nil {
		t.Fatalf("not ready after catching up: %v", err)
	}

	// A new room is ingested without a restart.
	in2 := e.newRoom(t, pre, 1)
	e.produce(t, in2, 0, 20, 1, func(i int) string { return fmt.Sprintf("new room %d", i) })
	waitCaughtUp(t, s.Service, in2, e.ends(t, in2))
	if got := allBackward(t, s.Service, in2.Name, 50); len(got) != 20 {
		t.Fatalf("new room: %d messages, want 20", len(got))
	}

	// An empty volume rebuilds to the same content.
	s2 := startService(t, e, t.TempDir(), pre, nil)
	waitCaughtUp(t, s2.Service, in, e.ends(t, in))
	if again := allBackward(t, s2.Service, in.Name, 50); !slices.Equal(again, first) {
		t.Fatalf("the rebuild differs: %d messages, first %d", len(again), len(first))
	}
	s2.stop()

	// Records deleted from the topic leave the view, search index included.
	offs := make(kadm.Offsets)
	offs.AddOffset(in.Topic, 0, 200, -1)
	resp, err := e.admin.DeleteRecords(t.Context(), offs)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted records to leave the view", func() bool {
		got := allBackward(t, s.Service, in.Name, 100)
		return len(got) > 0 && strings.HasPrefix(got[0], "0/200 ")
	})
	res, err := s.Search(t.Context(), in.Name, SearchRequest{Query: "message", Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	for len(res.Next) > 0 {
		more, err := s.Search(t.Context(), in.Name, SearchRequest{Query: "message", Limit: 200, Next: res.Next})
		if err != nil {
			t.Fatal(err)
		}
		res.Results, res.Next = append(res.Results, more.Results...), more.Next
	}
	for _, m := range res.Results {
		if m.Offset < 200 {
			t.Fatalf("search still finds deleted offset %d", m.Offset)
		}
	}
	if len(res.Results) != 310 { // 200 to 499, then 10 after the malformed records
		t.Fatalf("search after deletion: %d results, want 310", len(res.Results))
	}
	// A restart resumes: no message twice, none lost.
	s.stop()
	e.produce(t, in, 510, 5, 1, func(i int) string { return fmt.Sprintf("message %d", i) })
	s3 := startService(t, e, dir, pre, nil)
	waitCaughtUp(t, s3.Service, in, e.ends(t, in))
	if got, want := allBackward(t, s3.Service, in.Name, 50), e.topicMessages(t, in); !slices.Equal(sorted(got), sorted(want)) {
		t.Fatalf("after a restart: %d messages, the topic holds %d", len(got), len(want))
	}
}

func TestShardsServeOnlyTheirRooms(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	var infos []room.Info
	for range 6 {
		infos = append(infos, e.newRoom(t, pre, 1))
	}
	shards := []*runningService{
		startService(t, e, t.TempDir(), pre, func(c *Config) { c.Shards, c.Shard = 2, 0 }),
		startService(t, e, t.TempDir(), pre, func(c *Config) { c.Shards, c.Shard = 2, 1 }),
	}
	owners := map[int]int{}
	for _, in := range infos {
		e.produce(t, in, 0, 3, 1, func(i int) string { return "hi" })
		owner := shard.Of(in.Name, 2)
		owners[owner]++
		waitCaughtUp(t, shards[owner].Service, in, e.ends(t, in))
		if _, err := shards[1-owner].Messages(t.Context(), in.Name, PageRequest{Limit: 1}); !errors.Is(err, ErrNotServed) {
			t.Fatalf("shard %d answered for %s, which is shard %d's: %v", 1-owner, in.Name, owner, err)
		}
	}
	if owners[0] == 0 || owners[1] == 0 {
		t.Logf("all %d rooms landed on one shard: %v", len(infos), owners)
	}
}

const childEnv = "PALAVER_HISTORY_TEST_CHILD"

// runChild is a history process for the crash test: the service over the
// rooms of a prefix, until killed.
func runChild() int {
	bootstrap, dir, pre := os.Getenv("PALAVER_KAFKA_BOOTSTRAP"), os.Getenv(childEnv), os.Getenv("PALAVER_HISTORY_TEST_PREFIX")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cluster, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "history-child"})
	if err != nil {
		log.Error("cluster", "err", err)
		return 2
	}
	rooms := room.NewRegistry(cluster, log)
	go rooms.Run(context.Background())
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.BatchSize = 500
	s, err := New(cfg, Deps{Cluster: cluster, Rooms: prefixRooms{rooms, pre}, Logger: log})
	if err != nil {
		log.Error("new", "err", err)
		return 2
	}
	if err := s.Run(context.Background()); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}

func startChild(t *testing.T, bootstrap, dir, pre string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, "PALAVER_KAFKA_BOOTSTRAP="+bootstrap, "PALAVER_HISTORY_TEST_PREFIX="+pre)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// A history process killed with SIGKILL while it writes, then restarted,
// stores every message of the topic once.
func TestSIGKILLMidBatchLosesAndDuplicatesNothing(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	in := e.newRoom(t, pre, 2)
	const total = 12000
	e.produce(t, in, 0, total, 7, func(i int) string { return fmt.Sprintf("crash test message %d", i) })
	dir := t.TempDir()
	file := storeFile(storeIndex(in.Name, DefaultConfig().Stores)) // the room's store
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, file)+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(q string) int {
		var n int
		if err := db.QueryRow(q).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	child := startChild(t, e.bootstrap, dir, pre)
	waitFor(t, "the child to store some messages", func() bool { return count(`SELECT count(*) FROM messages`) > 1000 })
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	stored := count(`SELECT count(*) FROM messages`)
	t.Logf("killed the child with %d of %d messages stored", stored, total)
	if stored >= total {
		t.Fatalf("the child stored everything before the kill; the test proves nothing")
	}
	startChild(t, e.bootstrap, dir, pre)
	// A rebuild builds the indexes once every record is stored.
	waitFor(t, "the restarted child to store and index everything", func() bool {
		return count(`SELECT count(*) FROM messages`) >= total &&
			count(`SELECT count(*) FROM sqlite_schema WHERE name = 'messages_time'`) == 1
	})

	// Compare with an independent read of the topic, through a fresh
	// service on the same store (it resumes; nothing left to ingest).
	want := e.topicMessages(t, in)
	rows, err := db.Query(`SELECT rid, id FROM messages`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var rid int64
		var id string
		if err := rows.Scan(&rid, &id); err != nil {
			t.Fatal(err)
		}
		p, off := splitRowID(rid)
		got = append(got, fmt.Sprintf("%d/%d %s", p, off, id))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Fatalf("after the crash: %d rows, the topic holds %d messages", len(got), len(want))
	}
	if n := count(`SELECT count(*) FROM messages_text WHERE messages_text MATCH 'crash'`); n != total {
		t.Fatalf("the search index holds %d entries, want %d", n, total)
	}
	if n := count(`SELECT sum(next) FROM positions`); n != total {
		t.Fatalf("committed positions add up to %d, want %d", n, total)
	}
}

// The replica follows the registry: partitions added to a room are
// consumed, and a room deleted with its topic stops being served and leaves
// the store.
func TestFollowsNewPartitionsAndDeletedRooms(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	in := e.newRoom(t, pre, 1)
	e.produce(t, in, 0, 10, 1, func(i int) string { return fmt.Sprintf("before growing %d", i) })
	s := startService(t, e, t.TempDir(), pre, nil)
	waitCaughtUp(t, s.Service, in, e.ends(t, in))

	if err := e.prov.GrowPartitions(t.Context(), in.Topic, 3); err != nil {
		t.Fatal(err)
	}
	in.Partitions = 3
	if err := room.Publish(t.Context(), e.writer, in); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the registry to show 3 partitions", func() bool {
		got, err := e.rooms.Get(in.Name)
		return err == nil && got.Partitions == 3
	})
	e.produce(t, in, 10, 30, 10, func(i int) string { return fmt.Sprintf("after growing %d", i) })
	end := e.ends(t, in)
	if len(end.Partitions()) != 3 {
		t.Fatalf("ends %v", end.Partitions())
	}
	waitCaughtUp(t, s.Service, in, end)
	if got, want := allBackward(t, s.Service, in.Name, 8), e.topicMessages(t, in); !slices.Equal(sorted(got), sorted(want)) || len(got) != 40 {
		t.Fatalf("after growing: %d messages, the topic holds %d", len(got), len(want))
	}

	// Deleted: out of the registry, then its topic.
	if err := room.Tombstone(t.Context(), e.writer, in.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the room to stop being served", func() bool {
		_, err := s.Messages(t.Context(), in.Name, PageRequest{Limit: 1})
		return errors.Is(err, ErrNotServed)
	})
	if err := e.prov.DeleteTopics(t.Context(), in.Topic); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted room's rows to leave the store", func() bool {
		rooms, err := s.stores[s.storeOf(in.Name)].Rooms(t.Context())
		_, stored := rooms[in.Name]
		return err == nil && !stored
	})
	for _, st := range s.stores {
		var n int
		if err := st.r.QueryRow(`SELECT count(*) FROM messages`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d rows left (%v)", n, err)
		}
	}
}

// A later copy of a message (a send retried after a broker failover: same
// sender and client message id, a higher offset of the same partition) is
// not stored, whether it comes in the batch of its first copy or after it,
// and a rebuild keeps the same rows.
func TestLaterCopiesAreStoredOnce(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	in := e.newRoom(t, pre, 1)
	msg := func(id, sender, text string, at time.Time) kafka.Message {
		b, err := message.Encode(&message.Envelope{V: 1, ID: id, Room: in.Name, SenderID: sender, SenderName: "User " + sender, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return kafka.Message{Topic: in.Topic, Key: []byte(sender), Value: b, Time: at}
	}
	now := time.Now() // room topics keep the broker's time: for the writer only
	// One write, so the first copy and its later copy are in one batch.
	e.write(t,
		msg("c-a", "u-1", "apricot", now),           // 0
		msg("c-b", "u-2", "banana", now),            // 1
		msg("c-a", "u-1", "apricot", now),           // 2: a later copy
		msg("c-a", "u-2", "apricot elsewhere", now), // 3: another sender's id
	)
	dir := t.TempDir()
	s := startService(t, e, dir, pre, nil)
	waitCaughtUp(t, s.Service, in, e.ends(t, in))
	// After the first copy is committed.
	e.write(t,
		msg("c-a", "u-1", "apricot", now.Add(time.Second)), // 4: a later copy
		msg("c-c", "u-1", "cherry", now),                   // 5
	)
	end := e.ends(t, in)
	waitCaughtUp(t, s.Service, in, end)
	want := []string{"0/0 c-a", "0/1 c-b", "0/3 c-a", "0/5 c-c"}
	check := func(s *runningService) {
		t.Helper()
		if got := allBackward(t, s.Service, in.Name, 2); !slices.Equal(got, want) {
			t.Fatalf("pages hold %q, want %q", got, want)
		}
		res, err := s.Search(t.Context(), in.Name, SearchRequest{Query: "apricot", Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, m := range res.Results {
			found = append(found, fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID))
		}
		if !slices.Equal(sorted(found), []string{"0/0 c-a", "0/3 c-a"}) {
			t.Fatalf("search finds %q", found)
		}
		if got := testutil.ToFloat64(s.m.Duplicates.WithLabelValues(in.Name)); got != 2 {
			t.Fatalf("duplicate_records_total = %v, want 2", got)
		}
		if got := testutil.ToFloat64(s.m.Ingested.WithLabelValues(in.Name)); got != 4 {
			t.Fatalf("ingested_messages_total = %v, want 4", got)
		}
	}
	check(s)
	// An empty volume rebuilds to the same rows.
	s2 := startService(t, e, t.TempDir(), pre, nil)
	waitCaughtUp(t, s2.Service, in, end)
	check(s2)
}

// TestPagesOfOneTimeThroughCursors pages rooms whose records share the
// broker's time (one write is one batch per partition, stamped once), with
// later copies among them, through the service's cursors: backward and
// forward with small limits, and around each time, every message comes
// once, in (time, partition, offset) order.
func TestPagesOfOneTimeThroughCursors(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	rooms := []room.Info{e.newRoom(t, pre, 1), e.newRoom(t, pre, 2)}
	for _, in := range rooms {
		for batch := range 3 {
			var msgs []kafka.Message
			for i := range 9 {
				id := fmt.Sprintf("c-%d-%d", batch, i)
				if i == 4 {
					id = fmt.Sprintf("c-%d-0", batch) // a later copy
				}
				b, err := message.Encode(&message.Envelope{V: 1, ID: id, Room: in.Name, SenderID: "u-1", Text: "x"})
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, kafka.Message{Topic: in.Topic, Key: []byte(fmt.Sprintf("k-%d", i)), Value: b})
			}
			e.write(t, msgs...)
		}
	}
	s := startService(t, e, t.TempDir(), pre, nil)
	for _, in := range rooms {
		waitCaughtUp(t, s.Service, in, e.ends(t, in))
		all, err := s.Messages(t.Context(), in.Name, PageRequest{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		var times []time.Time
		for _, m := range all.Messages {
			want = append(want, fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID))
			if len(times) == 0 || !times[len(times)-1].Equal(m.Time) {
				times = append(times, m.Time)
			}
		}
		if len(want) != 24 || len(times) >= len(want) {
			t.Fatalf("%s: %d messages at %d times: %q", in.Name, len(want), len(times), want)
		}
		if in.Partitions == 2 && !slices.ContainsFunc(want, func(w string) bool { return strings.HasPrefix(w, "1/") }) {
			t.Fatalf("%s: no message in partition 1: %q", in.Name, want)
		}
		slices.SortStableFunc(all.Messages, func(a, b Message) int {
			return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
		})
		for i, m := range all.Messages {
			if got := fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID); got != want[i] {
				t.Fatalf("%s: a page is not in (time, partition, offset) order: %q", in.Name, want)
			}
		}
		forward := func(from cursor.Cursor, limit int) []string {
			var out []string
			for range 100 {
				page, err := s.Messages(t.Context(), in.Name, PageRequest{After: from, HasAfter: true, Limit: limit})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Messages) == 0 {
					return out
				}
				for _, m := range page.Messages {
					out = append(out, fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID))
				}
				if from, err = cursor.Parse(page.After); err != nil {
					t.Fatal(err)
				}
			}
			t.Fatal("paging never ends")
			return nil
		}
		backward := func(before cursor.Cursor, limit int) []string {
			var pages [][]string
			for range 100 {
				page, err := s.Messages(t.Context(), in.Name, PageRequest{Before: before, Limit: limit})
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, m := range page.Messages {
					ids = append(ids, fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID))
				}
				pages = append([][]string{ids}, pages...)
				if page.Before == "" {
					return slices.Concat(pages...)
				}
				if before, err = cursor.Parse(page.Before); err != nil {
					t.Fatal(err)
				}
			}
			t.Fatal("paging never ends")
			return nil
		}
		for limit := 1; limit <= 3; limit++ {
			if got := backward(cursor.Cursor{}, limit); !slices.Equal(got, want) {
				t.Errorf("%s, limit %d: backward %q, want %q", in.Name, limit, got, want)
			}
			if got := forward(cursor.Cursor{}, limit); !slices.Equal(got, want) {
				t.Errorf("%s, limit %d: forward %q, want %q", in.Name, limit, got, want)
			}
			for _, at := range times {
				page, err := s.Messages(t.Context(), in.Name, PageRequest{Around: at, Limit: 2 * limit})
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, m := range page.Messages {
					got = append(got, fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID))
				}
				var before, after []string
				if page.Before != "" {
					c, err := cursor.Parse(page.Before)
					if err != nil {
						t.Fatal(err)
					}
					before = backward(c, limit)
				}
				c, err := cursor.Parse(page.After)
				if err != nil {
					t.Fatal(err)
				}
				after = forward(c, limit)
				if whole := slices.Concat(before, got, after); !slices.Equal(whole, want) {
					t.Errorf("%s, limit %d, around %v: %q then the page %q then %q, want %q",
						in.Name, limit, at, before, got, after, want)
				}
			}
		}
	}
}

// When the store count changes, every room is still served whole: a room
// whose store changed is dropped from the old one and rebuilt in its own,
// and the files of stores beyond the count are removed.
func TestStoreCountChanges(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	var rooms []room.Info
	for range 6 {
		in := e.newRoom(t, pre, 1)
		e.produce(t, in, 0, 30, 2, func(i int) string { return fmt.Sprintf("message %d", i) })
		rooms = append(rooms, in)
	}
	dir := t.TempDir()
	moved, prev := 0, 0
	for _, n := range []int{3, 2, 1} {
		s := startService(t, e, dir, pre, func(c *Config) { c.Stores = n })
		for _, in := range rooms {
			waitCaughtUp(t, s.Service, in, e.ends(t, in))
			if got, want := allBackward(t, s.Service, in.Name, 50), e.topicMessages(t, in); !slices.Equal(sorted(got), sorted(want)) {
				t.Fatalf("%d stores, room %s: %d messages, the topic holds %d", n, in.Name, len(got), len(want))
			}
			if prev > 0 && storeIndex(in.Name, n) != storeIndex(in.Name, prev) {
				moved++
			}
		}
		s.stop()
		for i := range 4 {
			_, err := os.Stat(filepath.Join(dir, storeFile(i)))
			if exists := err == nil; exists != (i < n) {
				t.Fatalf("%d stores: the file of store %d exists: %v", n, i, exists)
			}
			if i >= n {
				continue
			}
			st, err := openStore(dir, i, false)
			if err != nil {
				t.Fatal(err)
			}
			held, err := st.Rooms(t.Context())
			_ = st.Close()
			if err != nil {
				t.Fatal(err)
			}
			for name := range held {
				if storeIndex(name, n) != i {
					t.Fatalf("%d stores: store %d still holds room %s of store %d", n, i, name, storeIndex(name, n))
				}
			}
		}
		prev = n
	}
	if moved == 0 {
		t.Fatal("no room changed stores: the test proves nothing")
	}
}

// Each store file's writer starts its write-ahead log again from its
// beginning once it is idle after the checkpointer copied a long log. A
// passive checkpoint alone copies the log but leaves it as long as it was:
// it starts again only when a transaction begins after a checkpoint copied
// all of it.
func TestWriterRestartsTheLogWhenIdle(t *testing.T) {
	e := sharedEnv(t)
	pre := prefix(t)
	const stores, total, restartPages = 2, 3000, 64
	// Rooms until each store file holds one.
	var rooms []room.Info
	for held := map[int]bool{}; len(held) < stores; {
		in := e.newRoom(t, pre, 1)
		held[storeIndex(in.Name, stores)] = true
		rooms = append(rooms, in)
	}
	for _, in := range rooms {
		e.produce(t, in, 0, total/len(rooms), 7, func(i int) string { return fmt.Sprintf("log test message %d", i) })
	}
	s := startService(t, e, t.TempDir(), pre, func(c *Config) { c.BatchSize = 50; c.Stores = stores },
		func(st *Store) { st.logRestartPages = restartPages })
	waitFor(t, "every message stored", func() bool { return s.storedTotal() >= int64(total/len(rooms)*len(rooms)) })
	for i := range stores {
		store := strconv.Itoa(i)
		waitFor(t, "the log of store "+store+" restarted", func() bool {
			return testutil.ToFloat64(s.m.LogRestarts.WithLabelValues(store, "idle")) > 0
		})
		if n := testutil.ToFloat64(s.m.LogRestarts.WithLabelValues(store, "bound")); n != 0 {
			t.Fatalf("the log of store %d reached its bound %v times", i, n)
		}
	}
}
