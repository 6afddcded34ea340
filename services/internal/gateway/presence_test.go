package gateway

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"palaver.dev/services/internal/presence"
)

// testPresenceHub is a presence hub without Kafka: its rooms' changes are
// fed to changed by hand, and its members are connections without a
// socket whose queued frames stay in their queues.
func testPresenceHub() *presenceHub {
	cfg := DefaultPresenceConfig()
	cfg.GatewayID = "gw-test"
	return &presenceHub{cfg: cfg.withDefaults(), m: newPresenceMetrics(nil), view: presence.NewView(nil, "", nil),
		rooms: map[string]*presRoom{}, conns: map[*conn]*presConn{}}
}

// members adds n socketless connections to a room's local members.
func (h *presenceHub) testMembers(room string, n int) []*conn {
	srv := &Server{cfg: Config{QueueSize: 1 << 20}}
	r := h.rooms[room]
	if r == nil {
		r = &presRoom{name: room, members: map[*conn]bool{}}
		h.rooms[room] = r
	}
	cs := make([]*conn, n)
	for i := range cs {
		cs[i] = &conn{s: srv, writing: true} // no writer: frames stay queued
		r.members[cs[i]] = false
	}
	return cs
}

func queuedOps(c *conn) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ops []string
	for _, it := range c.q {
		op, _, _ := strings.Cut(strings.TrimPrefix(string(it.frame), `{"op":"`), `"`)
		ops = append(ops, op)
	}
	return ops
}

// presenceUsers are users in id order, for rooms' published presence.
var presenceUsers = func() []presence.User {
	us := make([]presence.User, 4100)
	for i := range us {
		id := fmt.Sprintf("u-%06d", i)
		us[i] = presence.User{ID: id, Name: id}
	}
	return us
}()

// roomOf is a room's published presence with users u-<from> to u-<to-1>.
func roomOf(name string, from, to int) *presence.Room {
	return &presence.Room{Name: name, Users: presenceUsers[from:to], Count: to - from}
}

// churn feeds a room of size users a join and a leave every 10 ms for d,
// then waits for the frames they cause.
func (h *presenceHub) churn(room string, size int, d time.Duration) {
	prev := roomOf(room, 0, size)
	for i := range int(d / (10 * time.Millisecond)) {
		next := roomOf(room, i+1, size+i+1)
		h.changed(prev, next)
		prev = next
		time.Sleep(10 * time.Millisecond)
	}
	synctest.Wait()
}

// TestPresenceRoomFrameRate: a room whose local members would get more
// than RoomFrameRate presence frames a second together gets them further
// apart: each frame is a socket write per member, and that is what
// presence costs a gateway in a big room.
func TestPresenceRoomFrameRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := testPresenceHub()
		const local = 6000 // at 3,000 frames a second: one frame every 2 s
		members := h.testMembers("big", local)
		h.churn("big", 2000, 20*time.Second)
		want := 20*time.Second/(local*time.Second/3000) + 1
		for _, c := range members[:10] {
			ops := queuedOps(c)
			if len(ops) > int(want) || len(ops) < int(want)-2 {
				t.Fatalf("a member of a room of %d local members got %d frames in 20 s; want %d (one every %v)", local, len(ops), want, local*time.Second/3000)
			}
			for _, op := range ops {
				if op != "presence_diff" {
					t.Fatalf("frame %q; want presence_diff", op)
				}
			}
		}
		// A small room keeps its 4 frames a second.
		small := h.testMembers("small", 3)
		h.churn("small", 10, 2*time.Second)
		if n := len(queuedOps(small[0])); n < 8 || n > 9 {
			t.Fatalf("a member of a small room got %d frames in 2 s; want 8 or 9 (4 a second)", n)
		}
	})
}

// TestPresenceOwedSnapshotOnly: a member whose queue was full when a frame
// went out gets a snapshot at the next frame time; the others, told
// already, get nothing more when nothing changed since.
func TestPresenceOwedSnapshotOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := testPresenceHub()
		cs := h.testMembers("r", 3)
		full := cs[0]
		full.mu.Lock()
		full.queued = full.s.cfg.QueueSize
		full.mu.Unlock()
		h.changed(roomOf("r", 0, 3), roomOf("r", 0, 4))
		synctest.Wait()
		full.mu.Lock()
		full.queued = 0
		full.mu.Unlock()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if ops := queuedOps(full); len(ops) != 1 || ops[0] != "presence" {
			t.Fatalf("the member that missed the frame got %v; want one snapshot", ops)
		}
		for _, c := range cs[1:] {
			if ops := queuedOps(c); len(ops) != 1 || ops[0] != "presence_diff" {
				t.Fatalf("a member told of the change got %v; want the one diff", ops)
			}
		}
	})
}
