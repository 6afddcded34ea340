package presence

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

type step struct {
	e    Event
	at   time.Duration
	drop string
}

func ev(typ, gw, room, conn, user string) Event {
	return Event{V: EventVersion, Type: typ, Gateway: gw, Room: room, Conn: conn, User: user, Name: "N" + user}
}

func run(t *testing.T, m *machine, steps []step) {
	t.Helper()
	for i, s := range steps {
		off := m.applied + 1
		if got := m.apply(s.e, off, t0.Add(s.at)); got != s.drop {
			t.Fatalf("step %d (%s %s/%s): dropped %q, want %q", i, s.e.Type, s.e.Gateway, s.e.Conn, got, s.drop)
		}
	}
}

func users(m *machine, room string) []string {
	r := m.rooms[room]
	if r == nil {
		return nil
	}
	var out []string
	for id := range r.users {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func TestMachineTabsAndGateways(t *testing.T) {
	m := newMachine(DefaultTiming())
	run(t, m, []step{
		{e: ev(TypeJoin, "gw-a", "lobby", "1", "ada")},
		{e: ev(TypeJoin, "gw-a", "lobby", "2", "ada")}, // second tab
		{e: ev(TypeJoin, "gw-b", "lobby", "1", "ada")}, // third tab, another gateway
		{e: ev(TypeJoin, "gw-b", "lobby", "2", "bob")},
		{e: ev(TypeJoin, "gw-a", "lobby", "1", "ada"), drop: DropAlreadyIn}, // a producer retry
	})
	if got := users(m, "lobby"); !slices.Equal(got, []string{"ada", "bob"}) {
		t.Fatalf("users %v", got)
	}
	m.rooms["lobby"].dirty = false
	run(t, m, []step{{e: ev(TypeLeave, "gw-a", "lobby", "1", "ada")}})
	if got := users(m, "lobby"); !slices.Equal(got, []string{"ada", "bob"}) || !m.rooms["lobby"].dirty {
		// Dirty all the same: the published state holds the connections.
		t.Fatalf("leaving one tab of three: %v dirty=%v", got, m.rooms["lobby"].dirty)
	}
	run(t, m, []step{
		{e: ev(TypeLeave, "gw-a", "lobby", "2", "ada")},
		{e: ev(TypeLeave, "gw-a", "lobby", "2", "ada"), drop: DropAlreadyIn},
		{e: ev(TypeLeave, "gw-b", "lobby", "1", "ada")},
	})
	if got := users(m, "lobby"); !slices.Equal(got, []string{"bob"}) || !m.rooms["lobby"].dirty {
		t.Fatalf("users %v dirty=%v", got, m.rooms["lobby"].dirty)
	}
	st := m.snapshot(m.rooms["lobby"], t0)
	if st.Count != 1 || st.Conns != 1 || st.Users[0].ID != "bob" || !slices.Equal(st.Users[0].Conns, []string{"gw-b/2"}) {
		t.Fatalf("snapshot %+v", st)
	}
}

// The old connection's leave arrives after the new one's join, from
// another gateway: the user stays online throughout.
func TestMachineReconnectRace(t *testing.T) {
	m := newMachine(DefaultTiming())
	run(t, m, []step{
		{e: ev(TypeJoin, "gw-a", "lobby", "7", "ada")},
		{e: ev(TypeJoin, "gw-b", "lobby", "3", "ada"), at: time.Second},
	})
	run(t, m, []step{{e: ev(TypeLeave, "gw-a", "lobby", "7", "ada"), at: 2 * time.Second}})
	if got := users(m, "lobby"); !slices.Equal(got, []string{"ada"}) {
		t.Fatalf("users %v", got)
	}
}

func TestMachineExpiry(t *testing.T) {
	tm := DefaultTiming()
	m := newMachine(tm)
	run(t, m, []step{
		{e: ev(TypeJoin, "gw-a", "lobby", "1", "ada")},
		{e: ev(TypeJoin, "gw-a", "random", "1", "ada")},
		{e: ev(TypeJoin, "gw-b", "lobby", "1", "bob")},
		{e: Event{V: 1, Type: TypeHeartbeat, Gateway: "gw-b"}, at: 10 * time.Second},
	})
	// gw-a was last heard from at t0: not expired before the timeout.
	if g, c := m.expire(t0.Add(tm.GatewayTimeout)); g != 0 || c != 0 {
		t.Fatalf("expired %d gateways, %d connections at the timeout", g, c)
	}
	if g, c := m.expire(t0.Add(tm.GatewayTimeout + time.Millisecond)); g != 1 || c != 2 {
		t.Fatalf("expired %d gateways, %d connections; want 1, 2", g, c)
	}
	if got := users(m, "lobby"); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("lobby %v", got)
	}
	if got := users(m, "random"); len(got) != 0 {
		t.Fatalf("random %v", got)
	}
	// A clean shutdown removes at once.
	run(t, m, []step{{e: Event{V: 1, Type: TypeShutdown, Gateway: "gw-b"}, at: 11 * time.Second}})
	if got := users(m, "lobby"); len(got) != 0 {
		t.Fatalf("lobby after shutdown %v", got)
	}
}

func TestMachineTyping(t *testing.T) {
	tm := DefaultTiming()
	m := newMachine(tm)
	run(t, m, []step{
		{e: ev(TypeTyping, "gw-a", "lobby", "1", "ada"), drop: DropNotPresent},
		{e: ev(TypeJoin, "gw-a", "lobby", "1", "ada")},
		{e: ev(TypeTyping, "gw-a", "lobby", "1", "ada"), at: time.Second},
		{e: ev(TypeTyping, "gw-a", "lobby", "1", "ada"), at: time.Second + 10*time.Millisecond, drop: DropTypingFlood},
		{e: ev(TypeTyping, "gw-a", "lobby", "1", "ada"), at: 3 * time.Second},
	})
	if st := m.snapshot(m.rooms["lobby"], t0); !slices.Equal(st.Typing, []string{"ada"}) {
		t.Fatalf("typing %v", st.Typing)
	}
	m.rooms["lobby"].dirty = false
	m.expire(t0.Add(3*time.Second + tm.TypingTTL))
	if st := m.snapshot(m.rooms["lobby"], t0); len(st.Typing) != 1 || m.rooms["lobby"].dirty {
		t.Fatalf("typing ended early: %v", st.Typing)
	}
	m.expire(t0.Add(3*time.Second + tm.TypingTTL + time.Millisecond))
	if st := m.snapshot(m.rooms["lobby"], t0); len(st.Typing) != 0 || !m.rooms["lobby"].dirty {
		t.Fatalf("typing did not expire: %v", st.Typing)
	}
	// The typist going away ends it too.
	run(t, m, []step{{e: ev(TypeTyping, "gw-a", "lobby", "1", "ada"), at: 20 * time.Second}})
	run(t, m, []step{{e: ev(TypeLeave, "gw-a", "lobby", "1", "ada"), at: 21 * time.Second}})
	if st := m.snapshot(m.rooms["lobby"], t0); len(st.Typing) != 0 || st.Count != 0 {
		t.Fatalf("after leave: %+v", st)
	}
}

// A replica that takes over restores the published states and the
// checkpoint, then replays from the checkpoint: events a room state
// already includes are skipped, the others applied.
func TestMachineRestore(t *testing.T) {
	tm := DefaultTiming()
	a := newMachine(tm)
	run(t, a, []step{
		{e: ev(TypeJoin, "gw-a", "lobby", "1", "ada")},   // 0
		{e: ev(TypeJoin, "gw-a", "random", "2", "bob")},  // 1
		{e: ev(TypeJoin, "gw-b", "lobby", "3", "cy")},    // 2
		{e: ev(TypeLeave, "gw-a", "random", "2", "bob")}, // 3
	})
	// Publish lobby only; random stays dirty and holds the checkpoint at 0.
	lobby := a.snapshot(a.rooms["lobby"], t0)
	a.published([]*roomState{a.rooms["lobby"]}, t0)
	cp := a.checkpointAfter(0, nil)
	if cp.Offset != 0 {
		t.Fatalf("checkpoint at %d, want 0 (random's first unpublished event is 1)", cp.Offset)
	}
	b := newMachine(tm)
	b.restore([]State{lobby}, &cp)
	for off := cp.Offset + 1; off <= 3; off++ {
		steps := []Event{
			ev(TypeJoin, "gw-a", "lobby", "1", "ada"), ev(TypeJoin, "gw-a", "random", "2", "bob"),
			ev(TypeJoin, "gw-b", "lobby", "3", "cy"), ev(TypeLeave, "gw-a", "random", "2", "bob"),
		}
		b.apply(steps[off], off, t0)
	}
	if got := users(b, "lobby"); !slices.Equal(got, []string{"ada", "cy"}) {
		t.Fatalf("lobby %v", got)
	}
	if got := users(b, "random"); len(got) != 0 {
		t.Fatalf("random %v", got)
	}
	if b.rooms["lobby"].conns["gw-b/3"] != "cy" || len(b.rooms["lobby"].conns) != 2 {
		t.Fatalf("lobby conns %v", b.rooms["lobby"].conns)
	}
}
