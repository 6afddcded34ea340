package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/room"
)

// TestCursorPastTheEndIsReset: a cursor for partition 0 past the
// partition's end (a broker wiped, or the topic created again, while the
// client kept its cursor) is answered joined with reset, delivers the
// room from its oldest message, and then every later message, instead of
// waiting silently for an offset the topic will reach much later.
func TestCursorPastTheEndIsReset(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	ada := connect(t, gw, token(t, "ada", nil, time.Hour))
	ada.join(info.Name, nil)
	for i := range 3 {
		ada.send(info.Name, fmt.Sprint("m", i), "before")
	}
	ada.messages(3)

	stored := []string{"m0", "m1", "m2"}
	for _, next := range []int64{2103, 1 << 62} {
		var c cursor.Cursor // made before epochs: positions only
		c.Advance(0, next-1)
		bob := connect(t, gw, token(t, "bob", nil, time.Hour))
		j := bob.join(info.Name, map[string]any{"cursor": c.String()})
		if !j.Recovering || !j.Reset {
			t.Fatalf("cursor at %d: joined %+v, want recovering and reset", next, j)
		}
		start, err := cursor.Parse(j.Cursor)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := start.Next(0); n != 0 || start.Epoch().IsZero() {
			t.Fatalf("joined cursor %s: next %d, epoch %+v; want the oldest message and the topic's epoch", j.Cursor, n, start.Epoch())
		}
		if got := ids(bob.messages(len(stored))); !slices.Equal(got, stored) {
			t.Fatalf("after the reset: %v, want %v", got, stored)
		}
		id := fmt.Sprint("live-", next)
		ada.send(info.Name, id, "after")
		if got := ids(bob.messages(1)); got[0] != id {
			t.Fatalf("live message after the reset: %v", got)
		}
		stored = append(stored, id)
	}
}

// TestWrongCursorsAreBadRequests: a cursor naming a partition the room
// does not have, or another room's cursor, is refused with bad_request;
// neither replays the room.
func TestWrongCursorsAreBadRequests(t *testing.T) {
	e := sharedEnv(t)
	info, other := e.newRoom(t, 1), e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	ada := connect(t, gw, token(t, "ada", nil, time.Hour))
	ada.join(other.Name, nil)
	ada.send(other.Name, "o1", "in the other room")
	otherCursor := ada.messages(1)[0].Cursor

	var seven cursor.Cursor
	seven.Advance(7, 0)
	for name, cur := range map[string]string{"partition 7": seven.String(), "another room's": otherCursor} {
		c := connect(t, gw, token(t, "bob", nil, time.Hour))
		c.write(map[string]any{"op": "join", "ref": "j", "room": info.Name, "cursor": cur})
		c.expectError(protocol.CodeBadRequest, "j")
		c.quiet()
		_ = name
	}
	// Scroll-back says what is wrong with the cursor, in the client's
	// words (no package prefix), whichever parameter carries it.
	for _, param := range []string{"before", "after", "seen"} {
		for name, cur := range map[string]string{"partition 7": seven.String(), "another room's": otherCursor} {
			code, body := getJSON(t, gw, "/v1/rooms/"+info.Name+"/messages?"+param+"="+cur, token(t, "bob", nil, time.Hour))
			var e protocol.HTTPError
			if err := json.Unmarshal(body, &e); err != nil || code != http.StatusBadRequest || e.Code != protocol.CodeBadRequest {
				t.Fatalf("scroll-back with %s cursor as %s: %d %s", name, param, code, body)
			}
			if strings.Contains(e.Message, "roomhub") || !strings.Contains(e.Message, name) || !strings.HasSuffix(e.Message, "start again without it") {
				t.Errorf("scroll-back with %s cursor as %s: message %q", name, param, e.Message)
			}
		}
	}
}

// TestCursorOfARecreatedTopic: the room's topic is deleted and created
// again under the same name while a member is joined. The member is told
// (error unavailable naming the room); its cursor, of the old topic, is
// then reset, and it receives what the new topic holds and every later
// message. A gateway that never tailed the old topic resets it too.
func TestCursorOfARecreatedTopic(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, func(c *Config) { c.StallCheck = 200 * time.Millisecond })
	ada := connect(t, gw, token(t, "ada", nil, time.Hour))
	ada.join(info.Name, nil)
	for i := range 5 {
		ada.send(info.Name, fmt.Sprint("old", i), "old topic")
	}
	old := ada.messages(5)[4].Cursor

	recreate(t, e, info)
	f := ada.expectError(protocol.CodeUnavailable, "")
	if f.Room != info.Name {
		t.Fatalf("error %+v, want the room named", f)
	}
	e.produceDirect(t, info, "bob", 2, 10)

	stored := 2
	for _, g := range []*testServer{gw, startServer(t, e, nil)} {
		c := connect(t, g, token(t, "ada", nil, time.Hour))
		j := c.join(info.Name, map[string]any{"cursor": old})
		if !j.Reset {
			t.Fatalf("joined %+v with the old topic's cursor, want reset", j)
		}
		c.messages(stored) // the new topic from its start
		c.send(info.Name, fmt.Sprint("new-", g.url), "new topic")
		if got := ids(c.messages(1)); got[0] != fmt.Sprint("new-", g.url) {
			t.Fatalf("live after the reset: %v", got)
		}
		stored++
	}
}

// recreate deletes a room's topic and creates it again under the same
// name, as an operator deleting and re-applying a ChatRoom might.
func recreate(t *testing.T, e *kafkaEnv, info room.Info) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	spec := room.Spec{Name: info.Name, Partitions: info.Partitions, Retention: time.Hour}.WithDefaults(1)
	if spec.Topic != info.Topic {
		t.Fatalf("spec topic %q, room topic %q", spec.Topic, info.Topic)
	}
	before, err := e.prov.Observe(ctx, info.Topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.prov.DeleteTopics(ctx, info.Topic); err != nil {
		t.Fatal(err)
	}
	for {
		// Kafka deletes asynchronously: Ensure may still find the old
		// topic, so done is a topic with another id.
		err := e.prov.Ensure(ctx, spec)
		if err == nil {
			st, oerr := e.prov.Observe(ctx, info.Topic)
			if oerr == nil && st[info.Topic].Exists && st[info.Topic].ID != before[info.Topic].ID {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("create the topic again: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // deletion is asynchronous
	}
}

// TestRetryAfterRestartIsDeduplicated: a send acknowledged by a gateway
// that then stopped, retried with the same id through a gateway started
// afterwards (over the WebSocket and over HTTP, on a gateway that was not
// tailing the room), is answered with the first position and stored once.
func TestRetryAfterRestartIsDeduplicated(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	tok := token(t, "ada", nil, time.Hour)
	first := startServer(t, e, nil)
	c := connect(t, first, tok)
	c.join(info.Name, nil)
	ack := c.send(info.Name, "x", "only once")
	http0 := mustPost(t, first, info.Name, tok, `{"id":"y","text":"only once too"}`)
	first.stop()
	before := e.endOffset(t, info.Topic, 0)

	again := startServer(t, e, nil)
	c = connect(t, again, tok)
	c.join(info.Name, nil)
	dup := c.send(info.Name, "x", "only once")
	if !dup.Duplicate || dup.Offset != ack.Offset || !dup.Time.Equal(ack.Time.Time) {
		t.Fatalf("retry after the restart: %+v, first ack %+v", dup, ack)
	}

	fresh := startServer(t, e, nil) // never tailed the room
	for _, id := range []string{"x", "y"} {
		got := mustPost(t, fresh, info.Name, tok, `{"id":"`+id+`","text":"only once"}`)
		want := ack.Offset
		if id == "y" {
			want = http0.Offset
		}
		if !got.Duplicate || got.Offset != want {
			t.Fatalf("POST retry of %s through a gateway that was not tailing the room: %+v", id, got)
		}
	}
	if after := e.endOffset(t, info.Topic, 0); after != before {
		t.Fatalf("retries stored %d more records", after-before)
	}
	if v := testutil.ToFloat64(fresh.metrics.DedupHits); v != 2 {
		t.Errorf("dedup hits = %v, want 2", v)
	}
}

func mustPost(t *testing.T, s *testServer, room, tok, body string) protocol.AckFrame {
	t.Helper()
	code, b := postJSON(t, s, room, tok, body)
	var ack protocol.AckFrame
	if err := json.Unmarshal(b, &ack); err != nil || code != http.StatusCreated {
		t.Fatalf("POST %s: %d %s (%v)", body, code, b, err)
	}
	return ack
}
