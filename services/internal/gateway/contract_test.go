package gateway

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/kafkabus"
)

// TestClientTimeIsStored: a send's client_time is kept in the envelope and
// shown in its message frames; a malformed one is refused.
func TestClientTimeIsStored(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	c := connect(t, gw, token(t, "ada", nil, time.Hour))
	c.join(info.Name, nil)
	c.write(map[string]any{"op": "send", "ref": "s", "room": info.Name, "id": "t1", "text": "hi", "client_time": "2026-11-24T13:00:00.5+01:00"})
	m := c.messages(1)[0]
	if want := time.Date(2026, 11, 24, 12, 0, 0, 500e6, time.UTC); !m.ClientTime.Equal(want) {
		t.Fatalf("client_time %v, want %v", m.ClientTime, want)
	}
	c.write(map[string]any{"op": "send", "ref": "bad", "room": info.Name, "id": "t2", "text": "hi", "client_time": "yesterday"})
	for {
		f := c.next()
		if f.Op == "error" {
			if f.Code != protocol.CodeBadRequest || f.Ref != "bad" {
				t.Fatalf("malformed client_time: %+v", f)
			}
			break
		}
	}
	tok := token(t, "ada", nil, time.Hour)
	code, body := postJSON(t, gw, info.Name, tok, `{"id":"t3","text":"hi","client_time":"2026-11-24T12:00:00Z"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST with client_time: %d %s", code, body)
	}
	if got := c.messages(1)[0]; !got.ClientTime.Equal(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("POST client_time: %+v", got)
	}
	var raw struct{ Messages []map[string]any }
	_, body = getJSON(t, gw, "/v1/rooms/"+info.Name+"/messages", tok)
	if err := json.Unmarshal(body, &raw); err != nil || len(raw.Messages) != 2 {
		t.Fatalf("history: %s", body)
	}
	three := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	for _, m := range raw.Messages {
		for _, k := range []string{"time", "client_time"} {
			if s, _ := m[k].(string); !three.MatchString(s) {
				t.Errorf("%s %q: want three fraction digits in UTC", k, s)
			}
		}
	}
}

// TestAnotherRoomsEnvelopeIsRefused: a record whose envelope names
// another room is not delivered as this room's; it is counted.
func TestAnotherRoomsEnvelopeIsRefused(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	c := connect(t, gw, token(t, "ada", nil, time.Hour))
	c.join(info.Name, nil)
	v, err := json.Marshal(map[string]any{"v": 1, "id": "stray", "room": "some-other-room", "sender_id": "mallory", "text": "misplaced"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		err := e.writer.WriteMessages(t.Context(), kafka.Message{Topic: info.Topic, Value: v})
		if err == nil {
			break
		}
		if !kafkabus.MetadataLag(err) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // a new topic: the writer's metadata catches up within a second
	}
	c.send(info.Name, "mine", "mine")
	if got := ids(c.messages(1)); got[0] != "mine" {
		t.Fatalf("delivered %v", got)
	}
	if n := testutil.ToFloat64(gw.metrics.Undecodable.WithLabelValues(info.Name)); n != 1 {
		t.Fatalf("undecodable = %v, want 1", n)
	}
	_, body := getJSON(t, gw, "/v1/rooms/"+info.Name+"/messages", token(t, "ada", nil, time.Hour))
	if strings.Contains(string(body), "stray") {
		t.Fatalf("scroll-back shows another room's envelope: %s", body)
	}
}

// TestUnreadableRefAndHelloContract: what the documents promise for
// frames whose ref cannot be read, hello without versions, and a first
// frame that is not hello.
func TestUnreadableRefAndHelloContract(t *testing.T) {
	e := sharedEnv(t)
	gw := startServer(t, e, nil)
	good := token(t, "ada", nil, time.Hour)

	c := connect(t, gw, good)
	for _, frame := range []string{
		`{"op":"ping","ref":7}`,
		`{"op":"ping","ref":"` + strings.Repeat("r", protocol.MaxRefBytes+1) + `"}`,
		"{\"op\":\"ping\",\"ref\":\"\xff\"}",
	} {
		c.write([]byte(frame))
		f := c.next()
		if f.Op != "error" || f.Ref != "" || f.Room != "" || (f.Code != protocol.CodeBadFrame && f.Code != protocol.CodeInvalidUTF8) {
			t.Fatalf("%q answered %+v, want an error with neither ref nor room", frame, f)
		}
	}
	c.write(map[string]any{"op": "ping", "ref": "alive"})
	c.expect("pong", "alive")

	c = dial(t, gw, dialOpts{})
	c.write(map[string]any{"op": "hello", "ref": "h", "token": good})
	c.expectError(protocol.CodeUnsupportedVersion, "h")
	c.expectClose(protocol.CloseBadFrame)

	c = dial(t, gw, dialOpts{})
	c.write(map[string]any{"op": "ping", "ref": "p"})
	c.expectError(protocol.CodeBadRequest, "p")
	c.expectClose(protocol.CloseBadFrame)
}

// TestHTTPRefusesAnExpiredTokenLikeTheWebSocket: a token past its exp but
// within the verifier's clock-skew leeway is refused by the HTTP API, as
// by hello.
func TestHTTPRefusesAnExpiredTokenLikeTheWebSocket(t *testing.T) {
	e := sharedEnv(t)
	gw := startServer(t, e, nil)
	expired := token(t, "ada", nil, -5*time.Second) // the default leeway is 30 s
	if code, body := getJSON(t, gw, "/v1/rooms", expired); code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/rooms with a token expired 5 s ago: %d %s", code, body)
	}
	c := dial(t, gw, dialOpts{})
	c.write(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": expired})
	c.expectError(protocol.CodeUnauthorized, "h")
	c.expectClose(protocol.CloseUnauthorized)
}

// TestRoomSeriesExistBeforeTheirFirstEvent: the per-room counters an alert
// needs exist, at zero, for every room of the registry.
func TestRoomSeriesExistBeforeTheirFirstEvent(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	waitFor(t, "the room's series", func() bool {
		n, err := testutil.GatherAndCount(gw.reg, "palaver_gateway_undecodable_records_total")
		if err != nil {
			t.Fatal(err)
		}
		mfs, err := gw.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "palaver_gateway_undecodable_records_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "room" && l.GetValue() == info.Name {
						return n > 0
					}
				}
			}
		}
		return false
	})
	if n, _ := testutil.GatherAndCount(gw.reg, "palaver_gateway_rejected_frames_total"); n < 13 {
		t.Errorf("rejected_frames_total has %d series, want one per error code", n)
	}
}

// TestLaterCopyIsShownOnce: a second record of a sender's client message
// id (a produce retried after a broker failover) is shown once: live, and
// in scroll-back through a gateway that tails the room and one that does
// not; it is counted.
func TestLaterCopyIsShownOnce(t *testing.T) {
	e := sharedEnv(t)
	info := e.newRoom(t, 1)
	gw := startServer(t, e, nil)
	other := startServer(t, e, nil)
	c := connect(t, gw, token(t, "ada", nil, time.Hour))
	joined := c.join(info.Name, nil)
	store := func(id string) {
		t.Helper()
		v, err := json.Marshal(map[string]any{"v": 1, "id": id, "room": info.Name, "sender_id": "bob", "text": id})
		if err != nil {
			t.Fatal(err)
		}
		for {
			err := e.writer.WriteMessages(t.Context(), kafka.Message{Topic: info.Topic, Key: []byte("bob"), Value: v})
			if err == nil {
				return
			}
			if !kafkabus.MetadataLag(err) {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // a new topic: the writer's metadata catches up within a second
		}
	}
	store("twice")
	store("twice")
	store("after")
	if got := ids(c.messages(2)); got[0] != "twice" || got[1] != "after" {
		t.Fatalf("delivered %v, want [twice after]", got)
	}
	if n := testutil.ToFloat64(gw.metrics.DuplicateRecords.WithLabelValues(info.Name)); n != 1 {
		t.Fatalf("duplicate records = %v, want 1", n)
	}
	for name, g := range map[string]*testServer{"tailing": gw, "not tailing": other} {
		_, body := getJSON(t, g, "/v1/rooms/"+info.Name+"/messages", token(t, "ada", nil, time.Hour))
		var page struct {
			Messages []protocol.MessageFrame `json:"messages"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range page.Messages {
			got = append(got, m.ID)
		}
		if strings.Join(got, " ") != "twice after" {
			t.Errorf("scroll-back through the gateway %s: %v, want [twice after]", name, got)
		}
	}
	// A page at a time, backwards from the end and forwards from the join.
	page := func(q string) (ids []string, before, after string) {
		t.Helper()
		_, body := getJSON(t, gw, "/v1/rooms/"+info.Name+"/messages?"+q, token(t, "ada", nil, time.Hour))
		var p struct {
			Messages      []protocol.MessageFrame `json:"messages"`
			Before, After string
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("%s: %v %s", q, err, body)
		}
		for _, m := range p.Messages {
			ids = append(ids, m.ID)
		}
		return ids, p.Before, p.After
	}
	var back []string
	for q, n := "limit=1", 0; q != ""; n++ {
		ids, before, _ := page(q)
		back = append(ids, back...)
		q = ""
		if before != "" && n < 5 {
			q = "limit=1&before=" + before
		}
	}
	if strings.Join(back, " ") != "twice after" {
		t.Errorf("scroll-back one message a page, backwards: %v, want [twice after]", back)
	}
	var fwd []string
	for q, n := "limit=1&after="+joined.Cursor, 0; n < 2; n++ {
		ids, _, after := page(q)
		fwd = append(fwd, ids...)
		q = "limit=1&after=" + after
	}
	if strings.Join(fwd, " ") != "twice after" {
		t.Errorf("two pages of one message, forwards: %v, want [twice after]", fwd)
	}
}
