package drills

import (
	"context"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/loadgen"
	"palaver.dev/services/internal/protocol"
)

// A broker killed with SIGKILL while people chat, then restarted: rooms
// on RF 3 with min.insync.replicas 2 keep taking messages on the two
// brokers left (sends in flight during the leader election are answered
// unavailable and retried with their ids), no acknowledged message is
// lost, and every member reads each message once, in order. Kafka may
// hold a second copy of a message (a produce the writer retried after the
// broker stored it but died before answering); the count is logged, and
// the gateway shows the first copy alone.
func TestBrokerKilledUnderLoad(t *testing.T) {
	e := setup(t)
	rooms, topics := e.newRooms(t, 3)
	gw := e.startGateway(t)
	gw.knows(t, rooms)
	c := newCrowd(t, 6, rooms, func(int) []string { return []string{gw.url} })
	c.talk(200*time.Millisecond, 100) // 30 messages a second
	c.acks(30, time.Minute, "before the kill")

	victim := e.leader(t, topics[0])
	t.Logf("killing node %d, leader of %s", victim, topics[0])
	if err := e.kafka.KillNode(victim); err != nil {
		t.Fatal(err)
	}
	c.acks(60, 2*time.Minute, "with a broker down")
	if err := e.kafka.StartNode(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	c.acks(30, 2*time.Minute, "after the restart")

	v := c.settle(2*time.Minute, 0)
	check(t, v)
	t.Logf("errors answered on the way (retried): %v", v.Errors)
	t.Logf("later copies stored by Kafka, shown to nobody: %d", e.storedCopies(t, topics))
}

// A gateway killed with SIGKILL while people chat through two: its people
// reconnect to the other with their cursors, receive every message they
// missed once, and their unacknowledged sends, retried with the same ids,
// are stored once.
func TestGatewayKilledUnderLoad(t *testing.T) {
	e := setup(t)
	rooms, topics := e.newRooms(t, 3)
	gws := []*gateway{e.startGateway(t), e.startGateway(t)}
	for _, g := range gws {
		g.knows(t, rooms)
	}
	c := newCrowd(t, 6, rooms, func(i int) []string {
		return []string{gws[i%2].url, gws[(i+1)%2].url}
	})
	c.talk(200*time.Millisecond, 100)
	c.acks(60, time.Minute, "before the kill")

	before := c.l.Disconnects.Load()
	gws[0].kill()
	c.acks(90, 2*time.Minute, "after the kill")
	if lost := c.l.Disconnects.Load() - before; lost < 3 {
		t.Errorf("%d connections lost when the gateway of 3 people died", lost)
	}
	for _, p := range c.people {
		if !p.Connected() {
			t.Errorf("%v did not reconnect", p)
		}
	}
	check(t, c.settle(2*time.Minute, 0))
	// A send retried through the other gateway before its tail read the
	// first copy is stored twice.
	t.Logf("later copies stored by Kafka, shown to nobody: %d", e.storedCopies(t, topics))
}

// A client that stops reading and a client that floods, in a room with
// others chatting: the others read everything, on time and connected;
// the stalled one is closed with 4408 once it is further behind than its
// queue and the room's buffer, and resumes with its cursor without a gap;
// the flooder is answered rate_limited, then closed with 4429, and only
// its acknowledged sends are stored.
func TestSlowConsumerAndFlooder(t *testing.T) {
	e := setup(t)
	rooms, _ := e.newRooms(t, 1)
	gw := e.startGateway(t, "--sends-per-second=20", "--send-burst=20",
		"--queue-size=16", "--ring-size=64", "--socket-send-buffer=8192")
	gw.knows(t, rooms)
	room := rooms[0]
	c := newCrowd(t, 4, rooms, func(int) []string { return []string{gw.url} })

	// The stalled one joins and then reads nothing.
	tok, _ := token("slow")
	slow, err := loadgen.Dial(t.Context(), gw.url, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Abort()
	if err := slow.Join("j", room, ""); err != nil {
		t.Fatal(err)
	}
	f, err := slow.Read()
	if err != nil || f.Op != protocol.OpJoined {
		t.Fatalf("slow join: %+v %v", f, err)
	}
	joinedAt := f.Cursor

	c.talk(100*time.Millisecond, 1000) // 40 messages a second of 1 KB

	// The flooder sends as fast as it can write.
	tok, _ = token("flood")
	flood, err := loadgen.Dial(t.Context(), gw.url, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Abort()
	if err := flood.Join("j", room, ""); err != nil {
		t.Fatal(err)
	}
	if f, err := flood.Read(); err != nil || f.Op != protocol.OpJoined {
		t.Fatalf("flooder's join: %+v %v", f, err)
	}
	floodEnd := make(chan error, 1)
	var floodAcks, floodLimited int
	go func() {
		for {
			f, err := flood.Read()
			if err != nil {
				floodEnd <- err
				return
			}
			switch {
			case f.Op == protocol.OpAck:
				floodAcks++
				c.l.Ack(f.Room, f.ID, loadgen.Position{Partition: f.Partition, Offset: f.Offset})
			case f.Op == protocol.OpError && f.Code == protocol.CodeRateLimited:
				floodLimited++
			}
		}
	}()
	for range 2000 {
		if err := flood.Send(room, c.l.NewID("flood"), "flood"); err != nil {
			break
		}
	}
	select {
	case err := <-floodEnd:
		if chatclient.CloseCode(err) != protocol.CloseRateLimited {
			t.Errorf("the flooder's connection ended with %v, want 4429", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the flooder was never closed")
	}
	if floodAcks == 0 || floodLimited == 0 {
		t.Errorf("the flooder had %d sends acknowledged and %d answered rate_limited; want some of each", floodAcks, floodLimited)
	}
	t.Logf("flooder: %d acknowledged, %d rate_limited, then 4429", floodAcks, floodLimited)

	// Enough for the stalled one to overflow its socket, queue and buffer.
	c.acks(400, 2*time.Minute, "while one member stalls")
	c.quiet()

	// Now it reads: what was in its socket, then the close.
	in := c.l.NewInbox("slow")
	cursor := joinedAt
	var end error
	for {
		f, err := slow.Read()
		if err != nil {
			end = err
			break
		}
		if f.Op == protocol.OpMessage {
			in.Deliver(&f)
			cursor = f.Cursor
		}
	}
	if chatclient.CloseCode(end) != protocol.CloseSlowConsumer {
		t.Fatalf("the stalled member's connection ended with %v, want 4408", end)
	}
	t.Logf("stalled member: read %d messages, then %v; resuming", len(in.Got(room)), end)

	// It resumes from its cursor and reads the rest, once.
	tok, _ = token("slow")
	again, err := loadgen.Dial(t.Context(), gw.url, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Abort()
	if err := again.Join("j", room, cursor); err != nil {
		t.Fatal(err)
	}
	want := len(c.l.Acked(room))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	stop := context.AfterFunc(ctx, again.Abort)
	defer stop()
	for len(in.Got(room)) < want {
		f, err := again.Read()
		if err != nil {
			t.Fatalf("resuming: %d of %d messages read: %v", len(in.Got(room)), want, err)
		}
		if f.Op == protocol.OpMessage {
			in.Deliver(&f)
		}
	}

	v := c.settle(2*time.Minute, int64(want))
	check(t, v)
	if len(v.Closes) > 0 {
		t.Errorf("members chatting at their pace lost their connections: %v", v.Closes)
	}
	if v.Errors[protocol.CodeRateLimited] > 0 {
		t.Errorf("members chatting at their pace were rate limited: %v", v.Errors)
	}
	// The stalled member (checked by Verify with the others) has every
	// acknowledged message, the flooder's included.
	for id := range c.l.Acked(room) {
		if _, ok := in.Got(room)[id]; !ok {
			t.Fatalf("the resumed member never read %s", id)
		}
	}
}
