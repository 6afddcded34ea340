package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"palaver.dev/services/internal/protocol"
)

// documentedFrames returns the server frames of docs/protocol.md, each
// as its example writes it (some span lines).
func documentedFrames(t *testing.T) [][]byte {
	doc, err := os.ReadFile("../../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	var cur []byte
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		if cur == nil && !strings.HasPrefix(line, `{"op":`) {
			continue
		}
		cur = append(cur, line...)
		if json.Valid(cur) {
			var f protocol.ServerFrame
			if json.Unmarshal(cur, &f) == nil && f.Op != protocol.OpHello && f.Op != protocol.OpSend &&
				f.Op != protocol.OpJoin && f.Op != protocol.OpLeave && f.Op != protocol.OpTyping && f.Op != "ping" {
				frames = append(frames, cur)
			}
			cur = nil
		} else if line == "" || strings.HasPrefix(line, "```") {
			cur = nil
		}
	}
	return frames
}

// The member's read path reads a message's id, partition and offset, an
// ack's ref and an error's code from the frame's bytes, and ReadLean those
// and the rooms, ids and positions of messages and acks: they must be what
// the protocol's decoding finds, on the documented frames and on message
// frames as the gateway encodes them with texts that look like fields.
func TestFrameFieldsAgreeWithJSON(t *testing.T) {
	frames := documentedFrames(t)
	ops := map[string]bool{}
	for _, text := range []string{
		"hello", `"offset":7,"partition":9,"id":"x"`, `\"id\":\"y\" }{ "op":"ack"`, "ünïcødé \u2028 \t\n", strings.Repeat(`\\"`, 40),
	} {
		for _, ct := range []time.Time{{}, time.Unix(1_700_000_000, 5).UTC()} {
			p, err := json.Marshal(protocol.MessageFrame{
				Op: protocol.OpMessage, Room: "lobby", ID: "load-1.42", Sender: protocol.User{ID: "u-1", Name: `A "quoted" name`},
				Text: text, Time: protocol.Time{Time: time.Unix(1_700_000_000, 0).UTC()}, Partition: 11, Offset: 1 << 40,
				Cursor: "AhxaDtM_", ClientTime: protocol.Time{Time: ct},
			})
			if err != nil {
				t.Fatal(err)
			}
			frames = append(frames, p)
		}
	}
	for _, p := range frames {
		var f protocol.ServerFrame
		if err := json.Unmarshal(p, &f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		ops[f.Op] = true
		for op, bytes := range map[string][]byte{protocol.OpMessage: opMessage, protocol.OpAck: opAck, protocol.OpError: opError} {
			if got := isOp(p, bytes); got != (f.Op == op) {
				t.Errorf("isOp(%s, %s) = %v, the frame's op is %s", p, op, got, f.Op)
			}
		}
		lean, want := leanFrame(p), Frame{}
		want.Op = f.Op
		switch f.Op {
		case protocol.OpMessage:
			want.Room, want.ID, want.Partition, want.Offset = f.Room, f.ID, f.Partition, f.Offset
		case protocol.OpAck:
			want.Ref, want.Room, want.ID, want.Partition, want.Offset = f.Ref, f.Room, f.ID, f.Partition, f.Offset
		case protocol.OpError:
			want.Ref, want.Code, want.Room = f.Ref, f.Code, f.Room
		}
		if !reflect.DeepEqual(lean, want) {
			t.Errorf("%s: ReadLean read %+v, decoded %+v", p, lean.ServerFrame, want.ServerFrame)
		}
		switch f.Op {
		case protocol.OpMessage:
			part, ok1 := intField(p, `"partition":`)
			off, ok2 := intField(p, `"offset":`)
			if id := string(field(p, `"id":"`)); id != f.ID || !ok1 || !ok2 || int(part) != f.Partition || off != f.Offset {
				t.Errorf("%s: read id %q partition %d (%v) offset %d (%v), decoded %q %d %d", p, id, part, ok1, off, ok2, f.ID, f.Partition, f.Offset)
			}
		case protocol.OpAck:
			if ref := string(field(p, `"ref":"`)); ref != f.Ref {
				t.Errorf("%s: read ref %q, decoded %q", p, ref, f.Ref)
			}
		case protocol.OpError:
			if code := string(field(p, `"code":"`)); code != f.Code {
				t.Errorf("%s: read code %q, decoded %q", p, code, f.Code)
			}
		}
	}
	for _, op := range []string{protocol.OpWelcome, protocol.OpJoined, protocol.OpAck, protocol.OpMessage, protocol.OpError, protocol.OpPresence} {
		if !ops[op] {
			t.Errorf("no %s frame among the documented ones (%d frames)", op, len(frames))
		}
	}
}

// readStream runs a member's read path over stream, message frames of a
// run of count messages, and returns the result.
func readStream(t *testing.T, id string, count int, stream []byte) *Result {
	r := &run{cfg: Config{Count: count}, id: id, sentAt: make([]atomic.Int64, count), clock: time.Now()}
	r.closing.Store(true)
	in := &socketReader{r: bytes.NewReader(stream)}
	m := &member{ws: &wsConn{br: bufio.NewReaderSize(in, 32<<10), in: in}, got: make([]uint64, (count+63)/64), errs: map[string]int{}}
	r.members = []*member{m}
	r.read(m)
	res := &Result{Sent: count}
	r.collect(res, nil)
	return res
}

func messageFrame(t *testing.T, id string, part int, off int64) []byte {
	p, err := json.Marshal(protocol.MessageFrame{Op: protocol.OpMessage, Room: "lobby", ID: id, Text: "x",
		Partition: part, Offset: off, Cursor: strconv.FormatInt(off, 10)})
	if err != nil {
		t.Fatal(err)
	}
	return serverFrame(p)
}

func TestReadFindsMessagesOutOfOrder(t *testing.T) {
	const id = "load-1"
	var s []byte
	for _, f := range []struct {
		id  string
		off int64
	}{{"other", 5}, {id + ".w0", 6}, {id + ".0", 7}, {id + ".2", 9}, {id + ".1", 8}, {"other", 10}, {id + ".3", 11}} {
		s = append(s, messageFrame(t, f.id, 0, f.off)...)
	}
	res := readStream(t, id, 4, s)
	if res.Deliveries != 4 || res.Disorder != 1 || res.Foreign != 2 || !strings.Contains(res.FirstDisorder, "offset 8 read after offset 9") {
		t.Fatalf("result %+v: want 4 deliveries, 2 foreign, 1 out of order (offset 8 after 9)", res)
	}
	if p := strings.Join(res.Problems(), "; "); !strings.Contains(p, "1 messages read out of order") {
		t.Fatalf("problems: %s", p)
	}

	// The same messages in order, a second partition's interleaved, and
	// a duplicate, which is counted as such rather than out of order.
	s = nil
	for _, f := range []struct {
		id   string
		part int
		off  int64
	}{{id + ".0", 0, 7}, {"other", 1, 3}, {id + ".1", 0, 8}, {id + ".1", 0, 8}, {"other", 1, 4}, {id + ".2", 0, 9}} {
		s = append(s, messageFrame(t, f.id, f.part, f.off)...)
	}
	res = readStream(t, id, 3, s)
	if res.Deliveries != 3 || res.Disorder != 0 || res.Duplicates != 1 {
		t.Fatalf("result %+v: want 3 deliveries, 1 duplicate, none out of order", res)
	}
}

// Frames that came in one read from the socket are timed once; a frame
// spread over reads is timed after its last.
func TestReadTimesEachSocketRead(t *testing.T) {
	c := &wsConn{}
	in := &socketReader{r: bytes.NewReader(append(messageFrame(t, "a", 0, 1), messageFrame(t, "b", 0, 2)...))}
	c.in, c.br = in, bufio.NewReaderSize(in, 16)
	for range 2 {
		if _, err := c.next(); err != nil {
			t.Fatal(err)
		}
	}
	if c.reads() < 2 {
		t.Fatalf("%d reads for two frames through a 16-byte buffer", c.reads())
	}
}
