package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/history"
	"palaver.dev/services/internal/historyapi"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/internal/shard"
	"palaver.dev/services/internal/testio"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// someRooms is the registry seen through a filter, so that the history
// replicas of a test ingest only its rooms, not every test's.
type someRooms struct {
	*room.Registry
	names map[string]bool
}

func (r someRooms) List() ([]room.Info, error) {
	all, err := r.Registry.List()
	return slices.DeleteFunc(all, func(in room.Info) bool { return !r.names[in.Name] }), err
}

// startHistory runs a history replica of shard of shards on an httptest
// server, and returns its URL and a function that stops it.
func startHistory(t *testing.T, e *kafkaEnv, rooms []room.Info, shardNo, shards int) (string, func()) {
	t.Helper()
	cfg := history.DefaultConfig()
	cfg.Dir, cfg.Shards, cfg.Shard = t.TempDir(), shards, shardNo
	log := slog.New(slog.NewTextHandler(testio.Log(t), &slog.HandlerOptions{Level: slog.LevelInfo})).With("shard", shardNo)
	names := map[string]bool{}
	for _, in := range rooms {
		names[in.Name] = true
	}
	svc, err := history.New(cfg, history.Deps{Cluster: e.cluster, Rooms: someRooms{e.rooms, names}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(svc.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		hs.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("history Run: %v", err)
		}
		_ = svc.Close()
	}
	t.Cleanup(stop)
	return hs.URL, stop
}

type pageJSON struct {
	Messages []protocol.MessageFrame `json:"messages"`
	Before   string                  `json:"before"`
	After    string                  `json:"after"`
}

func getPage(t *testing.T, gw *testServer, roomName, query, tok string) pageJSON {
	t.Helper()
	code, body := getJSON(t, gw, "/v1/rooms/"+roomName+"/messages?"+query, tok)
	var p pageJSON
	if err := json.Unmarshal(body, &p); err != nil || code != http.StatusOK {
		t.Fatalf("GET messages?%s: %d %s", query, code, body)
	}
	return p
}

// Two shards each serve their rooms; the gateway routes every room's
// queries to its shard, and falls back to Kafka when the shard is gone,
// with the same answers.
func TestHistoryRoutingAndFallback(t *testing.T) {
	e := sharedEnv(t)
	var rooms []room.Info
	owners := map[int]bool{}
	for len(rooms) < 6 && (len(rooms) < 2 || !owners[0] || !owners[1]) {
		in := e.newRoom(t, 1)
		rooms = append(rooms, in)
		owners[shard.Of(in.Name, 2)] = true
	}
	urls := make([]string, 2)
	stops := make([]func(), 2)
	for i := range urls {
		urls[i], stops[i] = startHistory(t, e, rooms, i, 2)
	}
	gw := startServer(t, e, func(c *Config) { c.HistoryURLs = urls[0] + "," + urls[1] })
	tok := token(t, "ada", nil, time.Hour)
	for _, in := range rooms {
		for i := range 3 {
			e.produceDirect(t, in, "u-1", 1, 10+i)
		}
	}
	fromHistory := func() float64 { return testutil.ToFloat64(gw.metrics.HistoryQueries.WithLabelValues(sourceHistory)) }

	// Every room is answered by history once ingested.
	for _, in := range rooms {
		deadline := time.Now().Add(time.Minute)
		for {
			before := fromHistory()
			p := getPage(t, gw, in.Name, "limit=10", tok)
			if fromHistory() > before && len(p.Messages) == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("room %s (shard %d) never served from history", in.Name, shard.Of(in.Name, 2))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	in := rooms[0]
	e.produceDirect(t, in, "u-2", 1, 7) // "xxxxxxx"
	seen := fmt.Sprintf("seen=%s", url.QueryEscape(cursorAt(t, e, in)))
	viaHistory := map[string]pageJSON{}
	queries := []string{"limit=2&" + seen, "limit=2&after=", "limit=3&around=" + url.QueryEscape(time.Now().Add(-time.Hour).Format(time.RFC3339))}
	served := fromHistory()
	for _, q := range queries {
		viaHistory[q] = getPage(t, gw, in.Name, q, tok)
	}
	if got := fromHistory(); got != served+float64(len(queries)) {
		t.Fatalf("%v of %d pages served from history", got-served, len(queries))
	}
	if got := viaHistory[queries[0]].Messages; len(got) != 2 || got[1].Text != "xxxxxxx" {
		t.Fatalf("read-your-writes through the gateway: %+v", got)
	}
	code, body := getJSON(t, gw, "/v1/rooms/"+in.Name+"/search?q=xxxxxxx&"+seen, tok)
	var res historyapi.SearchPage
	if err := json.Unmarshal(body, &res); err != nil || code != http.StatusOK || len(res.Results) != 1 {
		t.Fatalf("search: %d %s", code, body)
	}

	// Bad input through the gateway.
	huge := make([]byte, 10000)
	for i := range huge {
		huge[i] = 'A'
	}
	for _, q := range []string{"limit=-1", "limit=99999999999", "before=" + string(huge), "after=%00", "around=yesterday", "before=AQ&after=AQ"} {
		if code, body := getJSON(t, gw, "/v1/rooms/"+in.Name+"/messages?"+q, tok); code != http.StatusBadRequest {
			t.Errorf("GET messages?%s: %d %s, want 400", q, code, body)
		}
	}
	for _, q := range []string{"q=", "q=" + string(huge), "q=x&next=!!", "q=x&limit=0"} {
		if code, body := getJSON(t, gw, "/v1/rooms/"+in.Name+"/search?"+q, tok); code != http.StatusBadRequest {
			t.Errorf("GET search?%s: %d %s, want 400", q, code, body)
		}
	}
	for _, q := range []string{`q="`, "q=NEAR(a+b)", "q=*", "q=a:b", "q=" + url.QueryEscape(`") OR rowid>0 --`)} {
		code, body := getJSON(t, gw, "/v1/rooms/"+in.Name+"/search?"+q, tok)
		if code != http.StatusOK && code != http.StatusBadRequest {
			t.Errorf("hostile search %s: %d %s", q, code, body)
		}
	}
	if code, _ := getJSON(t, gw, "/v1/rooms/no-such-room/search?q=x", tok); code != http.StatusNotFound {
		t.Errorf("search of an unknown room: %d", code)
	}
	if code, _ := getJSON(t, gw, "/v1/rooms/"+in.Name+"/search?q=x", token(t, "eve", []string{"elsewhere"}, time.Hour)); code != http.StatusForbidden {
		t.Errorf("search of a forbidden room: %d", code)
	}
	if code, _ := getJSON(t, gw, "/v1/rooms/"+in.Name+"/search?q=x", "not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("search with a bad token: %d", code)
	}

	// The shard goes away: Kafka answers the same pages; search cannot.
	stops[shard.Of(in.Name, 2)]()
	fallbacks := testutil.ToFloat64(gw.metrics.HistoryQueries.WithLabelValues(sourceFallback))
	for _, q := range queries {
		if got := getPage(t, gw, in.Name, q, tok); !slices.Equal(pageIDs(got), pageIDs(viaHistory[q])) || got.Before != viaHistory[q].Before || got.After != viaHistory[q].After {
			t.Errorf("%s: Kafka answered %+v, history %+v", q, got, viaHistory[q])
		}
	}
	if got := testutil.ToFloat64(gw.metrics.HistoryQueries.WithLabelValues(sourceFallback)); got != fallbacks+float64(len(queries)) {
		t.Errorf("fallbacks counted %v, want %v", got, fallbacks+float64(len(queries)))
	}
	if code, body := getJSON(t, gw, "/v1/rooms/"+in.Name+"/search?q=xxxxxxx", tok); code != http.StatusServiceUnavailable {
		t.Errorf("search without its shard: %d %s", code, body)
	}
}

// pageIDs lists a page's messages with their cursors.
func pageIDs(p pageJSON) []string {
	out := make([]string, len(p.Messages))
	for i, m := range p.Messages {
		out[i] = fmt.Sprintf("%d/%d %s %s %s", m.Partition, m.Offset, m.ID, m.Time.Format(time.RFC3339Nano), m.Cursor)
	}
	return out
}

// cursorAt is the position at the end of a one-partition room.
func cursorAt(t *testing.T, e *kafkaEnv, in room.Info) string {
	t.Helper()
	var c cursor.Cursor
	c.Advance(0, e.endOffset(t, in.Topic, 0)-1)
	return c.String()
}

// TestKafkaPagesOfOneTime pages, from Kafka, rooms whose records share the
// broker's time (one write is one batch per partition, stamped once), with
// later copies among them: backward and forward with small limits, and
// around each time, every message comes once, in (time, partition, offset)
// order.
func TestKafkaPagesOfOneTime(t *testing.T) {
	e := sharedEnv(t)
	gw := startServer(t, e, nil)
	tok := token(t, "ada", nil, time.Hour)
	for _, in := range []room.Info{e.newRoom(t, 1), e.newRoom(t, 2)} {
		for batch := range 3 {
			msgs := make([]kafka.Message, 9)
			for i := range msgs {
				id := fmt.Sprintf("c-%d-%d", batch, i)
				if i == 4 {
					id = fmt.Sprintf("c-%d-0", batch) // a later copy
				}
				b, err := json.Marshal(map[string]any{"v": 1, "id": id, "room": in.Name, "sender_id": "u-1", "text": "x"})
				if err != nil {
					t.Fatal(err)
				}
				msgs[i] = kafka.Message{Topic: in.Topic, Key: fmt.Appendf(nil, "k-%d", i), Value: b}
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			for {
				err := e.writer.WriteMessages(ctx, msgs...)
				if err == nil {
					break
				}
				if !kafkabus.MetadataLag(err) || ctx.Err() != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond) // a new topic: the writer's metadata catches up within a second
			}
			cancel()
		}
		name := func(m protocol.MessageFrame) string { return fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID) }
		all := getPage(t, gw, in.Name, "limit=200", tok)
		var want []string
		var times []time.Time
		for _, m := range all.Messages {
			want = append(want, name(m))
			if at := m.Time.Time; len(times) == 0 || !times[len(times)-1].Equal(at) {
				times = append(times, at)
			}
		}
		if len(want) != 24 || len(times) >= len(want) {
			t.Fatalf("%s: %d messages at %d times: %q", in.Name, len(want), len(times), want)
		}
		if in.Partitions == 2 && !slices.ContainsFunc(want, func(w string) bool { return strings.HasPrefix(w, "1/") }) {
			t.Fatalf("%s: no message in partition 1: %q", in.Name, want)
		}
		sortedAll := slices.Clone(all.Messages)
		slices.SortStableFunc(sortedAll, func(a, b protocol.MessageFrame) int {
			return cmp.Or(a.Time.Compare(b.Time.Time), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
		})
		for i, m := range sortedAll {
			if name(m) != want[i] {
				t.Fatalf("%s: a page is not in (time, partition, offset) order: %q", in.Name, want)
			}
		}
		forward := func(from string, limit int) []string {
			var out []string
			for range 100 {
				p := getPage(t, gw, in.Name, fmt.Sprintf("limit=%d&after=%s", limit, from), tok)
				if len(p.Messages) == 0 {
					return out
				}
				for _, m := range p.Messages {
					out = append(out, name(m))
				}
				from = p.After
			}
			t.Fatal("paging never ends")
			return nil
		}
		backward := func(before string, limit int) []string {
			var pages [][]string
			for range 100 {
				p := getPage(t, gw, in.Name, fmt.Sprintf("limit=%d&before=%s", limit, before), tok)
				var names []string
				for _, m := range p.Messages {
					names = append(names, name(m))
				}
				pages = append([][]string{names}, pages...)
				if p.Before == "" {
					return slices.Concat(pages...)
				}
				before = p.Before
			}
			t.Fatal("paging never ends")
			return nil
		}
		for limit := 1; limit <= 3; limit++ {
			if got := backward("", limit); !slices.Equal(got, want) {
				t.Errorf("%s, limit %d: backward %q, want %q", in.Name, limit, got, want)
			}
			if got := forward("", limit); !slices.Equal(got, want) {
				t.Errorf("%s, limit %d: forward %q, want %q", in.Name, limit, got, want)
			}
			for _, at := range times {
				p := getPage(t, gw, in.Name, fmt.Sprintf("limit=%d&around=%s", 2*limit, url.QueryEscape(at.Format(time.RFC3339Nano))), tok)
				var got, before []string
				for _, m := range p.Messages {
					got = append(got, name(m))
				}
				if p.Before != "" {
					before = backward(p.Before, limit)
				}
				after := forward(p.After, limit)
				if whole := slices.Concat(before, got, after); !slices.Equal(whole, want) {
					t.Errorf("%s, limit %d, around %v: %q then the page %q then %q, want %q",
						in.Name, limit, at, before, got, after, want)
				}
			}
		}
	}
}

// TestKafkaPagesTimeBackward pages, from Kafka, a room whose times go
// backward within a partition (a broker's clock stepped back; here, a topic
// keeping the sender's clock): a page holds, per partition, every message
// from its start, so each message is listed once in every walk, each page
// in (time, partition, offset) order.
func TestKafkaPagesTimeBackward(t *testing.T) {
	e := sharedEnv(t)
	gw := startServer(t, e, nil)
	tok := token(t, "ada", nil, time.Hour)
	in := e.newRoom(t, 2)
	res, err := e.cluster.Admin().IncrementalAlterConfigs(t.Context(), &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: in.Topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: "message.timestamp.type", Value: "CreateTime", ConfigOperation: kafka.ConfigOperationSet}}}},
	})
	if err != nil || res.Resources[0].Error != nil {
		t.Fatalf("alter %s: %v %+v", in.Topic, err, res)
	}
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	ms := []int{0, 1, 2, 3, 5, 4, 10, 6, 11, 7, 12, 8, 3, 9}
	msgs := make([]kafka.Message, len(ms))
	for i, m := range ms {
		b, err := json.Marshal(map[string]any{"v": 1, "id": fmt.Sprintf("c-%d", i), "room": in.Name, "sender_id": "u-1", "text": "x"})
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = kafka.Message{Topic: in.Topic, Key: fmt.Appendf(nil, "k-%d", i%3), Value: b, Time: t0.Add(time.Duration(m) * time.Millisecond)}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		err := e.writer.WriteMessages(ctx, msgs...)
		if err == nil {
			break
		}
		if !kafkabus.MetadataLag(err) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // a new topic: the writer's metadata catches up within a second
	}
	name := func(m protocol.MessageFrame) string { return fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID) }
	inOrder := func(p pageJSON) {
		t.Helper()
		if !slices.IsSortedFunc(p.Messages, func(a, b protocol.MessageFrame) int {
			return cmp.Or(a.Time.Compare(b.Time.Time), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
		}) {
			t.Errorf("page not in order: %+v", p.Messages)
		}
	}
	once := func(what string, got []string) {
		t.Helper()
		if len(got) != len(ms) || len(slices.Compact(slices.Sorted(slices.Values(got)))) != len(ms) {
			t.Errorf("%s lists %q, want each of %d messages once", what, got, len(ms))
		}
	}
	for limit := 1; limit <= 3; limit++ {
		var pages [][]string
		before := ""
		for range 2*len(ms) + 1 {
			p := getPage(t, gw, in.Name, fmt.Sprintf("limit=%d&before=%s", limit, before), tok)
			inOrder(p)
			var names []string
			for _, m := range p.Messages {
				names = append(names, name(m))
			}
			pages = append([][]string{names}, pages...)
			if before = p.Before; before == "" {
				break
			}
		}
		once(fmt.Sprintf("backward, limit %d,", limit), slices.Concat(pages...))
		var got []string
		after := ""
		for range 2*len(ms) + 1 {
			p := getPage(t, gw, in.Name, fmt.Sprintf("limit=%d&after=%s", limit, after), tok)
			if len(p.Messages) == 0 {
				break
			}
			inOrder(p)
			for _, m := range p.Messages {
				got = append(got, name(m))
			}
			after = p.After
		}
		once(fmt.Sprintf("forward, limit %d,", limit), got)
	}
}
