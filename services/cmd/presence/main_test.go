package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/presence"
)

// Users join through several tabs and several gateways: a user is online
// once, leaving one tab changes nothing, leaving the last one is seen by
// the others; the HTTP API agrees.
func TestJoinLeaveTabsGateways(t *testing.T) {
	e := newEnv(t)
	e.presence("presence-1")
	gwA, gwB := e.gateway("gw-a"), e.gateway("gw-b")

	bob := dial(t, gwB, "bob", e.room)
	bob.online("bob")
	ada1 := dial(t, gwA, "ada", e.room)
	ada2 := dial(t, gwA, "ada", e.room)
	ada3 := dial(t, gwB, "ada", e.room)
	bob.online("ada", "bob")
	ada3.online("ada", "bob")

	var page struct {
		Count int  `json:"count"`
		Users []pu `json:"users"`
		Next  string
	}
	getJSON(t, gwA, "carol", "/v1/rooms/"+e.room+"/presence?limit=1", &page)
	if page.Count != 2 || len(page.Users) != 1 || page.Users[0].ID != "ada" || page.Next != "ada" {
		t.Fatalf("first page %+v", page)
	}
	page.Next = "" // absent on the last page
	getJSON(t, gwA, "carol", "/v1/rooms/"+e.room+"/presence?limit=1&after=ada", &page)
	if len(page.Users) != 1 || page.Users[0].ID != "bob" || page.Next != "" {
		t.Fatalf("second page %+v", page)
	}
	var list struct {
		Rooms []struct {
			Name   string `json:"name"`
			Online *int   `json:"online"`
		} `json:"rooms"`
	}
	getJSON(t, gwB, "carol", "/v1/rooms", &list)
	found := false
	for _, r := range list.Rooms {
		if r.Name == e.room {
			found = true
			if r.Online == nil || *r.Online != 2 {
				t.Fatalf("room list: %s online %v, want 2", r.Name, r.Online)
			}
		}
	}
	if !found {
		t.Fatalf("room %s not in the list", e.room)
	}

	ada1.close()
	ada2.close()
	// Ada's third tab keeps her online: Bob is never told she left.
	if bob.within(2*time.Second, func() bool { _, ok := bob.users["ada"]; return !ok }) || bob.leftCount("ada") != 0 {
		t.Fatal("closing two of three tabs showed Ada offline")
	}
	ada3.close()
	bob.online("bob")
	if n := bob.leftCount("ada"); n != 1 {
		t.Fatalf("Bob was told %d times that Ada left, want once", n)
	}
}

// A gateway killed with SIGKILL sends no leaves: its users are expired
// when its heartbeats have been missing for the gateway timeout, not
// before.
func TestGatewayKilledExpiresWithinTimeout(t *testing.T) {
	e := newEnv(t)
	e.presence("presence-1")
	gwA, gwB := e.gateway("gw-a"), e.gateway("gw-b")
	bob := dial(t, gwB, "bob", e.room)
	dial(t, gwA, "ada", e.room)
	bob.online("ada", "bob")

	killed := time.Now()
	gwA.kill(t)
	// The last heartbeat may be one period older than the kill.
	notBefore := gatewayTimeout - heartbeat - 100*time.Millisecond
	if bob.within(time.Until(killed.Add(notBefore)), func() bool { _, ok := bob.users["ada"]; return !ok }) {
		t.Fatalf("Ada expired %v after the kill, before the timeout (%v)", time.Since(killed), gatewayTimeout)
	}
	bob.online("bob")
	took := time.Since(killed)
	t.Logf("Ada expired %v after her gateway was killed (timeout %v)", took, gatewayTimeout)
	// Expiry runs every 100 ms and publishes at once; allow for a loaded
	// machine.
	if took > gatewayTimeout+2*time.Second {
		t.Fatalf("Ada expired %v after the kill; the timeout is %v", took, gatewayTimeout)
	}
}

// A presence replica killed with SIGKILL: another replica of the group
// takes its partitions over, rebuilds the rooms from the state topic, and
// carries on; nobody is shown offline.
func TestReplicaTakeover(t *testing.T) {
	e := newEnv(t)
	p1 := e.presence("presence-1")
	gw := e.gateway("gw-a")
	bob := dial(t, gw, "bob", e.room)
	dial(t, gw, "ada", e.room)
	bob.online("ada", "bob")
	waitMetric(t, p1, "palaver_presence_online_users", `room="`+e.room+`"`, func(v float64) bool { return v == 2 })

	p2 := e.presence("presence-2")
	// The group rebalances over both; the room's partition lands on one.
	var owner, other *proc
	deadline := time.Now().Add(60 * time.Second)
	for owner == nil {
		if time.Now().After(deadline) {
			t.Fatal("no replica reports the room after the rebalance")
		}
		for _, p := range [][2]*proc{{p1, p2}, {p2, p1}} {
			if metric(t, p[0], "palaver_presence_partitions", "") > 0 && metric(t, p[1], "palaver_presence_partitions", "") > 0 &&
				metric(t, p[0], "palaver_presence_online_users", `room="`+e.room+`"`) == 2 {
				owner, other = p[0], p[1]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A replica taking over publishes nothing until a change: make one
	// after the takeover to see it serve the room.
	takeovers := metric(t, other, "palaver_presence_takeovers_total", "")
	t.Logf("%s owns the room; killing it", owner.name)
	owner.kill(t)
	waitMetric(t, other, "palaver_presence_takeovers_total", "", func(v float64) bool { return v > takeovers })
	carol := dial(t, gw, "carol", e.room)
	bob.online("ada", "bob", "carol")
	carol.online("ada", "bob", "carol")
	if n := bob.leftCount("ada"); n != 0 {
		t.Fatal("the takeover showed Ada offline")
	}
	waitMetric(t, other, "palaver_presence_online_users", `room="`+e.room+`"`, func(v float64) bool { return v == 3 })
}

// The reconnect race: Ada's connection moves to another gateway, and the
// old connection's leave reaches presence after the new one's join. She
// is never shown offline. Then the old gateway dies: its expiry takes
// nothing of hers either.
func TestReconnectRace(t *testing.T) {
	e := newEnv(t)
	e.presence("presence-1")
	gwA, gwB := e.gateway("gw-a"), e.gateway("gw-b")
	bob := dial(t, gwB, "bob", e.room)
	old := dial(t, gwA, "ada", e.room)
	bob.online("ada", "bob")

	dial(t, gwB, "ada", e.room)
	e.waitConns(2 + 1) // the new join is stored before the old leave is sent
	old.close()
	e.waitConns(1 + 1)
	dial(t, gwA, "ada", e.room) // and once more through the gateway about to die
	e.waitConns(3)
	gwA.kill(t)
	e.waitConns(2) // gw-a expired
	if n := bob.leftCount("ada"); n != 0 {
		t.Fatalf("Ada was shown offline %d times while connected", n)
	}
	bob.online("ada", "bob")
}

// waitConns reads the state topic until the room's latest state counts n
// connections.
func (e *env) waitConns(n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	rd, err := e.cluster.PartitionReader(e.state, e.partition(), kafka.FirstOffset)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rd.Close()
	last := -1
	for {
		msg, err := rd.ReadMessage(ctx)
		if err != nil {
			e.t.Fatalf("no state of %d connections (last %d): %v", n, last, err)
		}
		if string(msg.Key) == e.room {
			st, err := presence.DecodeState(msg.Value)
			if err != nil {
				e.t.Fatal(err)
			}
			last = st.Conns
		}
		// The latest state, not an earlier one that happened to match.
		if last == n && msg.Offset+1 >= msg.HighWaterMark {
			return
		}
	}
}

// partition is the events (and state) partition of the test's room.
func (e *env) partition() int {
	return (&presence.EventBalancer{}).Balance(kafka.Message{Key: []byte(e.room)}, 0, 1, 2)
}

// Typing reaches the other members, is coalesced, and expires on its own.
func TestTyping(t *testing.T) {
	e := newEnv(t)
	e.presence("presence-1")
	gw := e.gateway("gw-a")
	ada := dial(t, gw, "ada", e.room)
	bob := dial(t, gw, "bob", e.room)
	ada.online("ada", "bob")
	started := time.Now() // the typing indicator lasts its TTL from the first event, sent after this
	for i := range 20 {
		bob.send(map[string]any{"op": "typing", "ref": fmt.Sprintf("t%d", i), "room": e.room})
	}
	ada.await("Bob typing", func() bool { return len(ada.typing) == 1 && ada.typing[0] == "bob" })
	bob.await("20 typed answers", func() bool {
		n := 0
		for _, f := range bob.seen {
			if f.Op == "typed" {
				n++
			}
		}
		return n == 20
	})
	if relayed := metric(t, gw, "palaver_gateway_typing_total", `result="relayed"`); relayed != 1 {
		t.Fatalf("%g typing events relayed for a burst of 20, want 1", relayed)
	}
	ada.await("Bob's typing to expire", func() bool { return len(ada.typing) == 0 })
	if took := time.Since(started); took < typingTTL {
		t.Fatalf("typing expired after %v, before its %v", took, typingTTL)
	}
	// Typing in a room not joined is refused.
	bob.send(map[string]any{"op": "typing", "ref": "nj", "room": "elsewhere"})
	bob.await("not_joined", func() bool {
		for _, f := range bob.seen {
			if f.Ref == "nj" && f.Op == "error" && f.Code == "not_joined" {
				return true
			}
		}
		return false
	})
	// Typing that outlives the typist: it goes with him.
	bob.send(map[string]any{"op": "typing", "ref": "again", "room": e.room})
	ada.await("Bob typing again", func() bool { return len(ada.typing) == 1 })
	bob.close()
	ada.online("ada")
	ada.await("no typist", func() bool { return len(ada.typing) == 0 })
}

// Bad events are counted and dropped; the replica carries on.
func TestBadEventsCountedAndDropped(t *testing.T) {
	e := newEnv(t)
	p := e.presence("presence-1")
	gw := e.gateway("gw-a")
	ada := dial(t, gw, "ada", e.room)
	ada.online("ada")

	ev := func(typ, room, conn, user string) []byte {
		return presence.Event{V: 1, Type: typ, Gateway: "gw-x", Room: room, Conn: conn, User: user, Name: user}.Encode()
	}
	flood := make([][]byte, 0, 50)
	flood = append(flood, ev(presence.TypeJoin, e.room, "1", "mallory"))
	for range 50 {
		flood = append(flood, ev(presence.TypeTyping, e.room, "1", "mallory"))
	}
	bad := [][]byte{
		[]byte(`not json`),
		[]byte(`{"v":1,"type":"party","gateway":"gw-x"}`),
		[]byte(`{"v":2,"type":"join","gateway":"gw-x"}`),
		[]byte(`{"v":1,"type":"join","gateway":"bad/id","room":"x","conn":"1","user":"u"}`),
		[]byte("\xff\xfe"),
		ev(presence.TypeJoin, "no-such-room-"+strings.ToLower(t.Name()), "2", "eve"),
		ev(presence.TypeLeave, e.room, "99", "nobody"),
	}
	e.writeEvents(append(bad, flood...)...)
	ada.online("ada", "mallory")
	waitMetric(t, p, "palaver_presence_events_dropped_total", `reason="malformed"`, func(v float64) bool { return v >= 3 })
	waitMetric(t, p, "palaver_presence_events_dropped_total", `reason="unknown_type"`, func(v float64) bool { return v >= 1 })
	waitMetric(t, p, "palaver_presence_events_dropped_total", `reason="version"`, func(v float64) bool { return v >= 1 })
	waitMetric(t, p, "palaver_presence_events_dropped_total", `reason="unknown_room"`, func(v float64) bool { return v >= 1 })
	waitMetric(t, p, "palaver_presence_events_dropped_total", `reason="duplicate"`, func(v float64) bool { return v >= 1 })
	waitMetric(t, p, "palaver_presence_events_dropped_total", `reason="typing_flood"`, func(v float64) bool { return v >= 45 })
	// Still serving, and mallory's fake gateway expires, for it never
	// sends a heartbeat.
	bob := dial(t, gw, "bob", e.room)
	ada.online("ada", "bob")
	bob.online("ada", "bob")
}

// A gateway that shuts down cleanly says so: its users leave at once, not
// at the heartbeat timeout.
func TestGatewayShutdownSaysSo(t *testing.T) {
	e := newEnv(t)
	e.presence("presence-1")
	gwA, gwB := e.gateway("gw-a"), e.gateway("gw-b")
	bob := dial(t, gwB, "bob", e.room)
	dial(t, gwA, "ada", e.room)
	dial(t, gwA, "carol", e.room)
	bob.online("ada", "bob", "carol")
	stopped := time.Now()
	gwA.signal(syscall.SIGTERM)
	bob.online("bob")
	took := time.Since(stopped)
	t.Logf("Ada and Carol left %v after their gateway was told to stop", took)
	if took >= gatewayTimeout-heartbeat {
		t.Fatalf("they left %v after the shutdown: by expiry (timeout %v), not by the shutdown event", took, gatewayTimeout)
	}
	<-gwA.done
	if n := bob.leftCount("ada"); n != 1 {
		t.Fatalf("Ada left %d times", n)
	}
}
