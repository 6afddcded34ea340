package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"palaver.dev/services/internal/cursor"
)

func TestTwoGatewaysChat(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw1, gw2 := startServer(t, e, nil), startServer(t, e, nil)

	ada := connect(t, gw1, token(t, "ada", nil, time.Hour))
	grace := connect(t, gw2, token(t, "grace", nil, time.Hour))
	ada.join(info.Name, nil)
	grace.join(info.Name, nil)

	ack := ada.send(info.Name, "a-1", "hello from gateway 1")
	if ack.Duplicate || ack.Room != info.Name || ack.ID != "a-1" || ack.Time.IsZero() {
		t.Fatalf("ack %+v", ack)
	}
	for _, c := range []*client{ada, grace} {
		m := c.messages(1)[0]
		if m.ID != "a-1" || m.Text != "hello from gateway 1" || m.Sender.ID != "ada" || m.Sender.Name != "Ada" ||
			m.Partition != ack.Partition || m.Offset != ack.Offset || !m.Time.Equal(ack.Time) {
			t.Fatalf("message %+v does not match its ack %+v", m, ack)
		}
		cur, err := cursor.Parse(m.Cursor)
		if next, _ := cur.Next(0); err != nil || next != ack.Offset+1 {
			t.Fatalf("message cursor %q (%v) is not the position just after it", m.Cursor, err)
		}
	}
	ack = grace.send(info.Name, "g-1", "and back from gateway 2")
	if m := ada.messages(1)[0]; m.ID != "g-1" || m.Offset != ack.Offset {
		t.Fatalf("ada got %+v", m)
	}
	if m := grace.messages(1)[0]; m.ID != "g-1" {
		t.Fatalf("grace got %+v", m)
	}
	if v := testutil.ToFloat64(gw1.metrics.MessagesReceived.WithLabelValues(info.Name)); v != 1 {
		t.Errorf("gateway 1 received %v messages, want 1", v)
	}
	if v := testutil.ToFloat64(gw2.metrics.MessagesDelivered.WithLabelValues(info.Name)); v != 2 {
		t.Errorf("gateway 2 delivered %v messages, want 2", v)
	}
	if gw1.hub.Rooms() != 1 {
		t.Errorf("gateway 1 tails %d rooms", gw1.hub.Rooms())
	}
}

// TestRejoinWithCursor: a client that reconnects with its cursor gets
// exactly the messages it missed, from the ring when they are in it and
// from Kafka when the gap is older than the ring.
func TestRejoinWithCursor(t *testing.T) {
	e := sharedEnv(t)
	for _, tt := range []struct {
		name     string
		ringSize int
		missed   int
		source   string
	}{
		{"ring", 1024, 5, "ring"},
		{"kafka", 4, 12, "kafka"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			info := e.newRoom(t, 1)
			gw := startServer(t, e, func(c *Config) { c.RingSize = tt.ringSize })
			other := startServer(t, e, nil) // the others chat through another replica
			tok := token(t, "ada", nil, time.Hour)

			ada := connect(t, gw, tok)
			ada.join(info.Name, nil)
			bob := connect(t, other, token(t, "bob", nil, time.Hour))
			bob.join(info.Name, nil)
			bob.send(info.Name, "b-0", "before the disconnect")
			seen := ada.messages(1)[0]
			if err := ada.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}

			var want []string
			for i := range tt.missed {
				id := fmt.Sprintf("b-%d", i+1)
				bob.send(info.Name, id, "while ada was away")
				want = append(want, id)
			}
			bob.messages(tt.missed + 1)
			// A member who stayed on ada's gateway keeps the room's tail
			// running, so the missed messages pass through its ring.
			carol := connect(t, gw, token(t, "carol", nil, time.Hour))
			carol.join(info.Name, map[string]any{"cursor": seen.Cursor})
			carol.messages(tt.missed)

			ada = connect(t, gw, tok)
			j := ada.join(info.Name, map[string]any{"cursor": seen.Cursor})
			if !j.Recovering || j.Cursor != seen.Cursor {
				t.Fatalf("joined %+v, want recovering from %s", j, seen.Cursor)
			}
			got := ada.messages(tt.missed)
			for i, m := range got {
				if m.ID != want[i] {
					t.Fatalf("recovered message %d is %q, want %q (all: %v)", i, m.ID, want[i], ids(got))
				}
			}
			ada.quiet()
			// Then live, with no seam.
			bob.send(info.Name, "b-live", "after the rejoin")
			if m := ada.messages(1)[0]; m.ID != "b-live" {
				t.Fatalf("first live message %q", m.ID)
			}
			if v := testutil.ToFloat64(gw.metrics.Recoveries.WithLabelValues(tt.source)); v < 1 {
				t.Errorf("recoveries from %s = %v", tt.source, v)
			}
		})
	}
}

func ids(fs []frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}
