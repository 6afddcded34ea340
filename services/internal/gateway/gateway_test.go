package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/loadgen"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
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
			m.Partition != ack.Partition || m.Offset != ack.Offset || !m.Time.Equal(ack.Time.Time) {
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
	// The counter moves after the socket write returns, which can be a
	// moment after the client read the frame.
	waitFor(t, "gateway 2 to count 2 delivered messages", func() bool {
		return testutil.ToFloat64(gw2.metrics.MessagesDelivered.WithLabelValues(info.Name)) == 2
	})
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
			// The room outlives ada's disconnect only because carol stays:
			// a room nobody holds stops after the linger and starts again
			// at the topic's end, with an empty ring. The shortest linger
			// makes sure nothing else keeps it.
			gw := startServer(t, e, func(c *Config) { c.RingSize = tt.ringSize; c.TailLinger = time.Millisecond })
			other := startServer(t, e, nil) // the others chat through another replica
			tok := token(t, "ada", nil, time.Hour)

			ada := connect(t, gw, tok)
			ada.join(info.Name, nil)
			carol := connect(t, gw, token(t, "carol", nil, time.Hour))
			carol.join(info.Name, nil)
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
			// carol, who stayed on ada's gateway, kept the room's tail
			// running: the missed messages passed through its ring.
			carol.messages(tt.missed + 1)

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

// TestBadInput: malformed and unauthorized input gets the documented error
// or close, and nothing of it reaches Kafka.
func TestBadInput(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	other := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	before := e.endOffset(t, info.Topic, 0)
	good := token(t, "ada", nil, time.Hour)

	type step func(t *testing.T, c *client)
	errorCase := func(frame string, code, ref string) step {
		return func(t *testing.T, c *client) {
			c.hello(good)
			c.join(info.Name, nil)
			c.write([]byte(frame))
			c.expectError(code, ref)
			// The connection survives one bad frame.
			c.write(map[string]any{"op": "ping", "ref": "alive"})
			c.expect("pong", "alive")
		}
	}
	send := func(id, text string) string {
		b, _ := json.Marshal(map[string]any{"op": "send", "ref": "s", "room": info.Name, "id": id, "text": text})
		return string(b)
	}
	tests := []struct {
		name string
		run  step
	}{
		{"malformed JSON", errorCase(`{"op":"send",`, protocol.CodeBadFrame, "")},
		{"not an object", errorCase(`[1,2,3]`, protocol.CodeBadFrame, "")},
		{"wrong field type", errorCase(`{"op":"send","ref":"w","room":"x","id":"a","text":7}`, protocol.CodeBadFrame, "w")},
		{"unknown op", errorCase(`{"op":"shout","ref":"u"}`, protocol.CodeUnknownOp, "u")},
		{"invalid UTF-8", errorCase("{\"op\":\"send\",\"ref\":\"s\",\"room\":\""+info.Name+"\",\"id\":\"x\",\"text\":\"\xc3\x28\"}", protocol.CodeInvalidUTF8, "s")},
		{"text too large", errorCase(send("big", strings.Repeat("é", 2049)), protocol.CodeTooLarge, "s")},
		{"empty text", errorCase(send("e", ""), protocol.CodeBadRequest, "s")},
		{"id too long", errorCase(send(strings.Repeat("i", 65), "hi"), protocol.CodeBadRequest, "s")},
		{"missing id", errorCase(send("", "hi"), protocol.CodeBadRequest, "s")},
		{"bad room name", errorCase(`{"op":"join","ref":"j","room":"Lobby!"}`, protocol.CodeBadRequest, "j")},
		{"unknown room", errorCase(`{"op":"join","ref":"j","room":"no-such-room"}`, protocol.CodeNotFound, "j")},
		{"malformed cursor", errorCase(`{"op":"join","ref":"j","room":"`+other.Name+`","cursor":"!!"}`, protocol.CodeBadRequest, "j")},
		{"last over 500", errorCase(`{"op":"join","ref":"j","room":"`+other.Name+`","last":501}`, protocol.CodeBadRequest, "j")},
		{"send before join", errorCase(`{"op":"send","ref":"n","room":"`+other.Name+`","id":"a","text":"hi"}`, protocol.CodeNotJoined, "n")},
		{"leave before join", errorCase(`{"op":"leave","ref":"l","room":"`+other.Name+`"}`, protocol.CodeNotJoined, "l")},
		{"frame over max_frame_bytes", func(t *testing.T, c *client) {
			c.hello(good)
			c.write([]byte(send("huge", strings.Repeat("x", 17<<10))))
			c.expectClose(websocket.StatusMessageTooBig)
		}},
		{"binary frame", func(t *testing.T, c *client) {
			c.hello(good)
			if err := c.ws.Write(t.Context(), websocket.MessageBinary, []byte(`{"op":"ping"}`)); err != nil {
				t.Fatal(err)
			}
			c.expectClose(protocol.CloseBadFrame)
		}},
		{"first frame not hello", func(t *testing.T, c *client) {
			c.write(map[string]any{"op": "join", "ref": "j", "room": info.Name})
			c.expectError(protocol.CodeBadRequest, "j")
			c.expectClose(protocol.CloseBadFrame)
		}},
		{"garbage before hello", func(t *testing.T, c *client) {
			c.write([]byte("hello?"))
			c.expectError(protocol.CodeBadFrame, "")
			c.expectClose(protocol.CloseBadFrame)
		}},
		{"too many bad frames", func(t *testing.T, c *client) {
			c.hello(good)
			for range maxBadFrames {
				c.write([]byte(`{"op":"nope"}`))
			}
			for range maxBadFrames {
				c.expectError(protocol.CodeUnknownOp, "")
			}
			c.expectClose(protocol.CloseBadFrame)
		}},
		{"no common version", func(t *testing.T, c *client) {
			c.write(map[string]any{"op": "hello", "ref": "h", "versions": []int{2, 3}, "token": good})
			f := c.expectError(protocol.CodeUnsupportedVersion, "h")
			if !slices.Equal(f.Supported, []int{1}) {
				t.Errorf("supported = %v", f.Supported)
			}
			c.expectClose(protocol.CloseBadFrame)
		}},
		{"no token", func(t *testing.T, c *client) {
			c.write(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}})
			c.expectError(protocol.CodeUnauthorized, "h")
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"badly signed token", func(t *testing.T, c *client) {
			c.write(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": good[:len(good)-4] + "AAAA"})
			c.expectError(protocol.CodeUnauthorized, "h")
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"expired token", func(t *testing.T, c *client) {
			c.write(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": token(t, "ada", nil, -time.Hour)})
			c.expectError(protocol.CodeUnauthorized, "h")
			c.expectClose(protocol.CloseUnauthorized)
		}},
		{"token without the room", func(t *testing.T, c *client) {
			c.hello(token(t, "ada", []string{other.Name}, time.Hour))
			c.write(map[string]any{"op": "join", "ref": "j", "room": info.Name})
			c.expectError(protocol.CodeForbidden, "j")
			// forbidden comes before not_found: a token learns nothing of
			// rooms it may not join.
			c.write(map[string]any{"op": "join", "ref": "k", "room": "no-such-room"})
			c.expectError(protocol.CodeForbidden, "k")
			c.join(other.Name, nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, dial(t, gw, dialOpts{}))
		})
	}
	if after := e.endOffset(t, info.Topic, 0); after != before {
		t.Fatalf("bad input reached Kafka: end offset %d -> %d", before, after)
	}
	if v := testutil.ToFloat64(gw.metrics.RejectedFrames.WithLabelValues(protocol.CodeBadFrame)); v < 4 {
		t.Errorf("rejected bad frames = %v", v)
	}
}

func TestHelloTimeoutAndTokenExpiry(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, func(c *Config) { c.HelloTimeout = 200 * time.Millisecond })

	silent := dial(t, gw, dialOpts{})
	silent.expectClose(protocol.CloseUnauthorized)

	// A token from the Authorization header; it expires while connected.
	hdr := http.Header{"Authorization": {"Bearer " + token(t, "ada", nil, 1500*time.Millisecond)}}
	c := dial(t, gw, dialOpts{header: hdr})
	c.write(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}})
	if w := c.expect("welcome", "h"); w.User.ID != "ada" || w.Limits.SendsPerSecond != 10 || w.Limits.SendBurst != 20 ||
		w.Limits.MaxTextBytes != 4096 || w.Limits.MaxFrameBytes != 16384 || w.Version != 1 {
		t.Fatalf("welcome %+v", w)
	}
	c.join(info.Name, nil)
	c.expectError(protocol.CodeUnauthorized, "")
	c.expectClose(protocol.CloseUnauthorized)
	waitFor(t, "2 unauthorized disconnects counted", func() bool {
		return testutil.ToFloat64(gw.metrics.Disconnects.WithLabelValues(reasonUnauthorized)) == 2
	})
}

// TestFloodIsRateLimitedThenClosed: over the rate, sends get rate_limited
// and are not stored; a client that keeps flooding is closed with 4429.
func TestFloodIsRateLimitedThenClosed(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	before := e.endOffset(t, info.Topic, 0)
	c := connect(t, gw, token(t, "ada", nil, time.Hour))
	c.join(info.Name, nil)
	const n = 200
	for i := range n {
		b, _ := json.Marshal(map[string]any{"op": "send", "ref": fmt.Sprint(i), "room": info.Name, "id": fmt.Sprintf("f-%d", i), "text": "flood"})
		if err := c.ws.Write(t.Context(), websocket.MessageText, b); err != nil {
			break // closed before the last sends: the close is read below
		}
	}
	acks, limited := 0, 0
	for {
		f, err := c.read()
		if err != nil {
			if websocket.CloseStatus(err) != protocol.CloseRateLimited {
				t.Fatalf("connection ended with %v, want 4429", err)
			}
			break
		}
		switch {
		case f.Op == "ack":
			acks++
		case f.Op == "error" && f.Code == protocol.CodeRateLimited:
			limited++
		case f.Op == "message":
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
	if limited == 0 || acks < 20 || acks > 40 {
		t.Fatalf("%d acks and %d rate_limited errors for %d sends: want the burst of 20 (plus refill) stored", acks, limited, n)
	}
	// Every ack is a stored message and nothing else was stored.
	if after := e.endOffset(t, info.Topic, 0); after-before != int64(acks) {
		t.Fatalf("%d messages stored, %d acked", after-before, acks)
	}
}

// TestSlowConsumerIsCut: a client that stops reading is closed with 4408
// while the others keep receiving every message: when its queue overflows,
// or when its socket takes nothing for the write timeout.
func TestSlowConsumerIsCut(t *testing.T) {
	e := sharedEnv(t)
	for _, tt := range []struct {
		name   string
		adjust func(*Config)
	}{
		// Over its queue, a subscriber has RingSize more messages buffered
		// for it before it is cut.
		{"queue overflow", func(c *Config) { c.QueueSize, c.RingSize, c.SocketSendBuffer = 32, 64, 16<<10 }},
		{"write timeout", func(c *Config) {
			c.QueueSize = 100_000
			c.SocketSendBuffer = 16 << 10
			c.WriteTimeout = 300 * time.Millisecond
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			info := e.newRoom(t, 1)
			gw := startServer(t, e, tt.adjust)
			stalled := dial(t, gw, dialOpts{rcvBuffer: 4096, noReader: true})
			stalled.write(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": token(t, "ada", nil, time.Hour)})
			stalled.write(map[string]any{"op": "join", "ref": "j", "room": info.Name})
			fast := connect(t, gw, token(t, "bob", nil, time.Hour))
			fast.join(info.Name, nil)
			// The stalled client's frames stay unread: wait for its join
			// in the metrics.
			waitFor(t, "the stalled client's join", func() bool { return testutil.ToFloat64(gw.metrics.Joins) == 2 })

			// ~600 KB, far more than the queue and the sockets hold, in
			// chunks the fast client reads as they come (a burst over its
			// queue would cut it too: that is what the queue bounds).
			const n, chunk = 600, 15
			var got []frame
			for len(got) < n {
				e.produceDirect(t, info, "carol", chunk, 1000)
				got = append(got, fast.messages(chunk)...)
			}
			for i := 1; i < n; i++ {
				if got[i].Offset != got[i-1].Offset+1 {
					t.Fatalf("the fast client missed a message: offsets %d then %d", got[i-1].Offset, got[i].Offset)
				}
			}
			waitFor(t, "the slow consumer's disconnect", func() bool {
				return testutil.ToFloat64(gw.metrics.Disconnects.WithLabelValues(reasonSlowConsumer)) == 1
			})
			// Reading again, the stalled client finds what fitted in its
			// socket, then the close.
			stalled.startReading()
			stalled.expectClose(protocol.CloseSlowConsumer)
		})
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDedup: a send retried with the same id, in sequence or concurrently,
// on the same gateway, over HTTP or through another replica, is stored
// once; the retries' acks say duplicate with the first position.
func TestDedup(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw1, gw2 := startServer(t, e, nil), startServer(t, e, nil)
	tok := token(t, "ada", nil, time.Hour)
	before := e.endOffset(t, info.Topic, 0)

	c := connect(t, gw1, tok)
	c.join(info.Name, nil)
	// A member on another replica: its tail's ring sees the messages.
	other := connect(t, gw2, tok)
	other.join(info.Name, nil)
	first := c.send(info.Name, "same", "once")
	again := c.send(info.Name, "same", "once")
	if first.Duplicate || !again.Duplicate || again.Offset != first.Offset || again.Partition != first.Partition || !again.Time.Equal(first.Time.Time) {
		t.Fatalf("first %+v, retry %+v", first, again)
	}

	// Concurrent: both frames are in before either is acknowledged.
	for i := range 2 {
		c.write(map[string]any{"op": "send", "ref": fmt.Sprint("c", i), "room": info.Name, "id": "concurrent", "text": "twice at once"})
	}
	var acks []frame
	for len(acks) < 2 {
		if f := c.next(); f.Op == "ack" {
			acks = append(acks, f)
		}
	}
	if acks[0].Offset != acks[1].Offset || acks[0].Duplicate == acks[1].Duplicate {
		t.Fatalf("concurrent acks %+v and %+v: want one position, one duplicate", acks[0], acks[1])
	}

	// Over HTTP, same user, same id.
	code, body := postJSON(t, gw1, info.Name, tok, `{"id":"same","text":"once"}`)
	var ack protocol.AckFrame
	if err := json.Unmarshal(body, &ack); err != nil || code != http.StatusCreated || !ack.Duplicate || ack.Offset != first.Offset {
		t.Fatalf("POST retry: %d %s", code, body)
	}

	// Through another replica: its ring has the message.
	other.messages(2)
	if dup := other.send(info.Name, "same", "once"); !dup.Duplicate || dup.Offset != first.Offset {
		t.Fatalf("retry through another gateway: %+v", dup)
	}
	if after := e.endOffset(t, info.Topic, 0); after-before != 2 {
		t.Fatalf("%d messages stored, want 2", after-before)
	}
	hits := testutil.ToFloat64(gw1.metrics.DedupHits) + testutil.ToFloat64(gw2.metrics.DedupHits)
	if hits != 4 {
		t.Errorf("dedup hits = %v, want 4", hits)
	}
}

func postJSON(t *testing.T, s *testServer, room, tok, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/v1/rooms/"+room+"/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return do(t, req)
}

func getJSON(t *testing.T, s *testServer, path, tok string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b.Bytes()
}

// TestGracefulShutdown: at shutdown a send in flight is acknowledged, not
// lost, and every client gets 1001 going away.
func TestGracefulShutdown(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	// Hold sends in the producer's batch long enough to shut down under them.
	if err := gw.prod.kp.Close(); err != nil {
		t.Fatal(err)
	}
	gw.prod.kp = e.cluster.Producer(kafkabus.ProducerConfig{Linger: 300 * time.Millisecond})
	before := e.endOffset(t, info.Topic, 0)

	c := connect(t, gw, token(t, "ada", nil, time.Hour))
	c.join(info.Name, nil)
	idle := connect(t, gw, token(t, "bob", nil, time.Hour))
	c.write(map[string]any{"op": "send", "ref": "s", "room": info.Name, "id": "last-words", "text": "sent as the gateway stops"})
	waitFor(t, "the send to be in flight", func() bool { return gw.prod.dedup.len() == 1 })
	gw.stop()

	ack := c.expect("ack", "s")
	if ack.Duplicate || ack.ID != "last-words" {
		t.Fatalf("ack %+v", ack)
	}
	c.expectClose(protocol.CloseGoingAway)
	idle.expectClose(protocol.CloseGoingAway)
	if err := <-gw.done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	gw.done <- nil // for the cleanup
	if after := e.endOffset(t, info.Topic, 0); after != before+1 || ack.Offset != before {
		t.Fatalf("stored %d message(s) (ack at %d), want the one acknowledged", after-before, ack.Offset)
	}
	if v := testutil.ToFloat64(gw.metrics.Disconnects.WithLabelValues(reasonGoingAway)); v != 2 {
		t.Errorf("going_away disconnects = %v, want 2", v)
	}
	// New connections are refused while draining.
	resp, err := http.Get(gw.url + "/v1/ws")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("upgrade after shutdown: %d", resp.StatusCode)
		}
	}
}

func TestHTTPAPI(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	hidden := e.newRoom(t, 1)
	gw := startServer(t, e, func(c *Config) { c.Limits.SendsPerSecond, c.Limits.SendBurst = 1000, 1000 })
	bot := token(t, "ci", []string{info.Name}, time.Hour)

	// GET /v1/rooms lists only what the token allows.
	code, body := getJSON(t, gw, "/v1/rooms", bot)
	var list struct {
		Rooms []roomJSON `json:"rooms"`
	}
	if err := json.Unmarshal(body, &list); err != nil || code != http.StatusOK || len(list.Rooms) != 1 || list.Rooms[0].Name != info.Name {
		t.Fatalf("GET /v1/rooms: %d %s", code, body)
	}
	if code, _ := getJSON(t, gw, "/v1/rooms", "nonsense"); code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/rooms with a bad token: %d", code)
	}

	// POST stores 70 messages; errors use the documented statuses.
	for i := range 70 {
		code, body := postJSON(t, gw, info.Name, bot, fmt.Sprintf(`{"id":"m%d","text":"build %d passed"}`, i, i))
		var ack protocol.AckFrame
		if err := json.Unmarshal(body, &ack); err != nil || code != http.StatusCreated || ack.Op != "ack" || ack.Offset != int64(i) || ack.Duplicate {
			t.Fatalf("POST %d: %d %s", i, code, body)
		}
	}
	for _, tt := range []struct {
		name, room, tok, body string
		status                int
		code                  string
	}{
		{"no token", info.Name, "", `{"id":"x","text":"y"}`, 401, protocol.CodeUnauthorized},
		{"expired token", info.Name, token(t, "ci", nil, -time.Hour), `{"id":"x","text":"y"}`, 401, protocol.CodeUnauthorized},
		{"room not allowed", hidden.Name, bot, `{"id":"x","text":"y"}`, 403, protocol.CodeForbidden},
		{"no such room", "nowhere", token(t, "ci", nil, time.Hour), `{"id":"x","text":"y"}`, 404, protocol.CodeNotFound},
		{"body too large", info.Name, bot, `{"id":"x","text":"` + strings.Repeat("y", 40<<10) + `"}`, 413, protocol.CodeTooLarge},
		{"text too large", info.Name, bot, `{"id":"x","text":"` + strings.Repeat("y", 4097) + `"}`, 413, protocol.CodeTooLarge},
		{"not JSON", info.Name, bot, `id=x`, 400, protocol.CodeBadFrame},
		{"empty text", info.Name, bot, `{"id":"x","text":""}`, 400, protocol.CodeBadRequest},
		{"invalid UTF-8", info.Name, bot, "{\"id\":\"x\",\"text\":\"\xff\"}", 400, protocol.CodeInvalidUTF8},
	} {
		code, body := postJSON(t, gw, tt.room, tt.tok, tt.body)
		var ae protocol.HTTPError
		if err := json.Unmarshal(body, &ae); err != nil || code != tt.status || ae.Code != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, code, body, tt.status, tt.code)
		}
	}
	// Bots are rate-limited per user like connections.
	strict := startServer(t, e, func(c *Config) { c.Limits.SendsPerSecond, c.Limits.SendBurst = 0.001, 1 })
	anyRoom := token(t, "ci", nil, time.Hour)
	if code, _ := postJSON(t, strict, hidden.Name, anyRoom, `{"id":"s0","text":"first"}`); code != http.StatusCreated {
		t.Fatalf("first POST on a strict gateway: %d", code)
	}
	if code, body := postJSON(t, strict, hidden.Name, anyRoom, `{"id":"s1","text":"too fast"}`); code != http.StatusTooManyRequests {
		t.Fatalf("POST over the rate: %d %s", code, body)
	}
	if end := e.endOffset(t, info.Topic, 0); end != 70 {
		t.Fatalf("end offset %d after 70 stored messages and rejected ones", end)
	}

	// Scroll-back, newest last, page by page to the first message.
	var ids []string
	path := "/v1/rooms/" + info.Name + "/messages?limit=30"
	for pages := 0; ; pages++ {
		code, body := getJSON(t, gw, path, bot)
		var page struct {
			Messages []protocol.MessageFrame `json:"messages"`
			Before   string                  `json:"before"`
		}
		if err := json.Unmarshal(body, &page); err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		var pageIDs []string
		for i, m := range page.Messages {
			pageIDs = append(pageIDs, m.ID)
			cur, err := cursor.Parse(m.Cursor)
			if next, _ := cur.Next(0); err != nil || next != m.Offset+1 || m.Op != "message" || m.Sender.ID != "ci" {
				t.Fatalf("page message %d: %+v", i, m)
			}
		}
		ids = append(pageIDs, ids...)
		if page.Before == "" {
			if pages != 2 {
				t.Fatalf("%d pages of 30 for 70 messages", pages+1)
			}
			break
		}
		path = "/v1/rooms/" + info.Name + "/messages?limit=30&before=" + page.Before
	}
	if len(ids) != 70 || ids[0] != "m0" || ids[69] != "m69" {
		t.Fatalf("scroll-back read %d messages: %v", len(ids), ids)
	}
	for _, q := range []string{"limit=0", "limit=201", "before=!!"} {
		if code, _ := getJSON(t, gw, "/v1/rooms/"+info.Name+"/messages?"+q, bot); code != http.StatusBadRequest {
			t.Errorf("GET messages?%s: %d, want 400", q, code)
		}
	}
	if code, _ := getJSON(t, gw, "/v1/rooms/"+hidden.Name+"/messages", bot); code != http.StatusForbidden {
		t.Errorf("GET messages of a room not allowed: %d", code)
	}
}

// TestRegistryNotLoadedYet: a gateway that has not read the room registry
// to its end (just started) answers unavailable, which clients retry, never
// not_found, which would tell them a room they know was deleted.
func TestRegistryNotLoadedYet(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	loading := *e
	loading.rooms = room.NewRegistry(e.cluster, nil) // not run yet
	gw := startServer(t, &loading, nil)
	tok := token(t, "ada", nil, time.Hour)

	c := dial(t, gw, dialOpts{})
	c.hello(tok)
	ref := c.ref()
	c.write(map[string]any{"op": "join", "ref": ref, "room": info.Name})
	c.expectError(protocol.CodeUnavailable, ref)
	if code, body := getJSON(t, gw, "/v1/rooms", tok); code != http.StatusServiceUnavailable {
		t.Errorf("GET /v1/rooms while loading: %d %s", code, body)
	}
	if code, body := postJSON(t, gw, info.Name, tok, `{"id":"x","text":"early"}`); code != http.StatusServiceUnavailable {
		t.Errorf("POST while loading: %d %s", code, body)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- loading.rooms.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-loading.rooms.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("the registry did not load")
	}
	c.join(info.Name, nil)
	if ack := c.send(info.Name, "m1", "now"); ack.Op != "ack" {
		t.Fatalf("send after loading: %+v", ack)
	}
	if end := e.endOffset(t, info.Topic, 0); end != 1 {
		t.Fatalf("end offset %d: the early POST must not be stored", end)
	}
}

func TestOriginCheck(t *testing.T) {
	e := sharedEnv(t)
	gw := startServer(t, e, func(c *Config) { c.AllowedOrigins = []string{"chat.example.com"} })
	for _, tt := range []struct {
		origin string
		ok     bool
	}{
		{"", true}, // not a browser
		{gw.url, true},
		{"https://chat.example.com", true},
		{"https://evil.example.com", false},
	} {
		hdr := http.Header{}
		if tt.origin != "" {
			hdr.Set("Origin", tt.origin)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(gw.url, "http")+"/v1/ws", &websocket.DialOptions{HTTPHeader: hdr})
		cancel()
		if tt.ok != (err == nil) {
			t.Errorf("origin %q: err %v, want ok=%v", tt.origin, err, tt.ok)
		}
		if err == nil {
			ws.CloseNow()
		} else if resp != nil && resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q refused with %d, want 403", tt.origin, resp.StatusCode)
		}
	}
	if _, err := New(Config{AllowedOrigins: []string{"*"}}, Deps{}); !errors.Is(err, ErrConfig) {
		t.Errorf("New with origin * outside dev mode = %v, want ErrConfig", err)
	}
}

func TestMultiPartitionRoom(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 3)
	gw := startServer(t, e, nil)
	var clients []*client
	for _, u := range []string{"ada", "bob", "cy"} {
		c := connect(t, gw, token(t, u, nil, time.Hour))
		c.join(info.Name, nil)
		clients = append(clients, c)
	}
	for i, c := range clients {
		for j := range 3 {
			c.send(info.Name, fmt.Sprintf("%d-%d", i, j), "hi")
		}
	}
	watcher := clients[0]
	got := watcher.messages(9)
	last := map[int]int64{}
	for _, m := range got {
		if prev, ok := last[m.Partition]; ok && m.Offset <= prev {
			t.Fatalf("partition %d out of order: %d after %d", m.Partition, m.Offset, prev)
		}
		last[m.Partition] = m.Offset
	}
	// Resume from the cursor after the fourth message: exactly the last five.
	mid := got[3]
	c := connect(t, gw, token(t, "dee", nil, time.Hour))
	c.join(info.Name, map[string]any{"cursor": mid.Cursor})
	resumed := c.messages(5)
	want := map[string]bool{}
	for _, m := range got[4:] {
		want[m.ID] = true
	}
	for _, m := range resumed {
		if !want[m.ID] {
			t.Fatalf("resumed %v, want %v", ids(resumed), ids(got[4:]))
		}
		delete(want, m.ID)
	}
	c.quiet()
	final, err := cursor.Parse(resumed[4].Cursor)
	if err != nil || len(final.Partitions()) != 3 {
		t.Fatalf("cursor %q does not cover the room's 3 partitions", resumed[4].Cursor)
	}
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.MessagesReceived.WithLabelValues("lobby").Inc()
	m.MessagesDelivered.WithLabelValues("lobby").Inc()
	m.RejectedFrames.WithLabelValues(protocol.CodeBadFrame).Inc()
	m.Undecodable.WithLabelValues("lobby").Inc()
	m.ProduceLatency.Observe(0.002)
	m.DeliveryLatency.Observe(0.003)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	for _, c := range []prometheus.Collector{m.Connections, m.Joins, m.MessagesReceived, m.MessagesDelivered, m.ProduceLatency,
		m.DeliveryLatency, m.Recoveries, m.Disconnects, m.RejectedFrames, m.TailRestarts, m.DedupHits, m.Undecodable, m.Rooms} {
		if _, err := testutil.CollectAndLint(c); err != nil {
			t.Error(err)
		}
	}
	want := `
# HELP palaver_gateway_disconnects_total Closed WebSocket connections, by reason.
# TYPE palaver_gateway_disconnects_total counter
palaver_gateway_disconnects_total{reason="bad_frame"} 0
palaver_gateway_disconnects_total{reason="client"} 0
palaver_gateway_disconnects_total{reason="going_away"} 0
palaver_gateway_disconnects_total{reason="rate_limited"} 0
palaver_gateway_disconnects_total{reason="slow_consumer"} 0
palaver_gateway_disconnects_total{reason="unauthorized"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "palaver_gateway_disconnects_total"); err != nil {
		t.Error(err)
	}
}

// TestHelloRefreshesToken: a later hello with a fresh token for the same
// user extends the session and leaves rooms the new token does not allow.
func TestHelloRefreshesToken(t *testing.T) {
	e := sharedEnv(t)
	a, b := e.newRoom(t, 1), e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	c := connect(t, gw, token(t, "ada", nil, 2*time.Second))
	c.join(a.Name, nil)
	c.join(b.Name, nil)

	c.write(map[string]any{"op": "hello", "ref": "other", "versions": []int{1}, "token": token(t, "bob", nil, time.Hour)})
	c.expectError(protocol.CodeBadRequest, "other")

	c.write(map[string]any{"op": "hello", "ref": "again", "versions": []int{1}, "token": token(t, "ada", []string{a.Name}, time.Hour)})
	if f := c.expectError(protocol.CodeForbidden, ""); f.Room != b.Name {
		t.Fatalf("left %q, want %q", f.Room, b.Name)
	}
	c.expect("welcome", "again")
	c.write(map[string]any{"op": "leave", "ref": "l", "room": b.Name})
	c.expectError(protocol.CodeNotJoined, "l")
	// The first token's expiry no longer ends the session.
	time.Sleep(2500 * time.Millisecond)
	c.write(map[string]any{"op": "ping", "ref": "p"})
	c.expect("pong", "p")
}

// TestRejoinOnAnotherGateway: a client resumes with its cursor on a
// gateway that does not tail the room yet (a restarted or another
// replica): the missed messages come from Kafka.
func TestRejoinOnAnotherGateway(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	first, other := startServer(t, e, nil), startServer(t, e, nil)
	ada := connect(t, first, token(t, "ada", nil, time.Hour))
	ada.join(info.Name, nil)
	bob := connect(t, other, token(t, "bob", nil, time.Hour))
	bob.join(info.Name, nil)
	bob.send(info.Name, "before", "before")
	seen := ada.messages(1)[0]
	first.stop()
	ada.expectClose(protocol.CloseGoingAway)
	bob.send(info.Name, "during-1", "during 1")
	bob.send(info.Name, "during-2", "during 2")

	fresh := startServer(t, e, nil)
	ada = connect(t, fresh, token(t, "ada", nil, time.Hour))
	if j := ada.join(info.Name, map[string]any{"cursor": seen.Cursor}); !j.Recovering {
		t.Fatalf("joined %+v", j)
	}
	if got := ids(ada.messages(2)); !slices.Equal(got, []string{"during-1", "during-2"}) {
		t.Fatalf("recovered %v", got)
	}
	ada.quiet()
	if v := testutil.ToFloat64(fresh.metrics.Recoveries.WithLabelValues("kafka")); v != 1 {
		t.Errorf("kafka recoveries = %v", v)
	}
}

// TestLoadedRoom: 20 members of a three-partition room all talking at
// the default limit (10 sends a second each), through `palaver load`'s
// engine: every send is acknowledged and every member reads every message
// exactly once, with nobody cut.
func TestLoadedRoom(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 3)
	gw := startServer(t, e, nil)
	res, err := loadgen.Run(t.Context(), loadgen.Config{URL: gw.url, Room: info.Name, Members: 20, Rate: 200, Count: 600,
		Warmup: 500 * time.Millisecond, Token: func(_ context.Context, i int) (string, error) {
			return token(t, fmt.Sprintf("load%d", i), nil, time.Hour), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	var summary strings.Builder
	res.Format(&summary)
	t.Log(summary.String())
	if p := res.Problems(); len(p) > 0 || res.Sent != 600 || res.Deliveries != 600*20 {
		t.Fatalf("sent %d, %d deliveries (want 600 and 12000); problems: %v", res.Sent, res.Deliveries, p)
	}
	if got := testutil.ToFloat64(gw.metrics.MessagesReceived.WithLabelValues(info.Name)); got < 600 {
		t.Fatalf("the gateway counted %v messages received in the room, want at least 600", got)
	}
	if got := testutil.ToFloat64(gw.metrics.MessagesDelivered.WithLabelValues(info.Name)); got < 600*20 {
		t.Fatalf("the gateway counted %v messages delivered in the room, want at least 12000", got)
	}
}

// TestRegistryChangesReachMembers: when the operator grows a room's topic
// and republishes its entry, members receive the new partition's messages
// without rejoining; when the room is deleted from the registry, they are
// told (an error not_found naming the room) and are no longer members.
func TestRegistryChangesReachMembers(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	ada := connect(t, gw, token(t, "ada", nil, time.Hour))
	ada.join(info.Name, nil)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := e.prov.GrowPartitions(ctx, info.Topic, 2); err != nil {
		t.Fatal(err)
	}
	grown := info
	grown.Partitions = 2
	if err := room.Publish(ctx, e.writer, grown); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the registry to carry 2 partitions", func() bool {
		i, err := e.rooms.Get(info.Name)
		return err == nil && i.Partitions == 2
	})
	// Straight to partition 1, as a writer whose metadata knows it would.
	value, _ := json.Marshal(map[string]any{"v": 1, "id": "p1-1", "room": info.Name, "sender_id": "grace", "text": "on the new partition"})
	var conn *kafka.Conn
	for conn == nil {
		c, err := kafka.DialLeader(ctx, "tcp", e.bootstrap, info.Topic, 1)
		if err != nil && ctx.Err() != nil {
			t.Fatalf("no leader for the new partition: %v", err)
		}
		conn = c
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	if _, err := conn.WriteMessages(kafka.Message{Value: value}); err != nil {
		t.Fatal(err)
	}
	m := ada.messages(1)[0]
	if m.ID != "p1-1" || m.Partition != 1 {
		t.Fatalf("message %+v, want p1-1 from partition 1", m)
	}
	cur, err := cursor.Parse(m.Cursor)
	if next, ok := cur.Next(1); err != nil || !ok || next != 1 {
		t.Fatalf("cursor %s (%v) does not cover partition 1", m.Cursor, err)
	}

	if err := room.Tombstone(ctx, e.writer, info.Name); err != nil {
		t.Fatal(err)
	}
	f := ada.expectError(protocol.CodeNotFound, "")
	if f.Room != info.Name {
		t.Fatalf("deletion notice %+v does not name the room", f)
	}
	ada.write(map[string]any{"op": "send", "ref": "s-after", "room": info.Name, "id": "late", "text": "anyone?"})
	ada.expectError(protocol.CodeNotJoined, "s-after")
	ada.write(map[string]any{"op": "join", "ref": "j-after", "room": info.Name})
	ada.expectError(protocol.CodeNotFound, "j-after")
	waitFor(t, "the room's tail to stop", func() bool { return gw.hub.Rooms() == 0 })
}
