package protocol_test

import (
	"encoding/json"
	"fmt"
	"time"

	"palaver.dev/services/internal/protocol"
)

// A client writes commands and reads whatever the server sends into one
// ServerFrame, switching on its op.
func Example() {
	send, _ := json.Marshal(protocol.Command{Op: protocol.OpSend, Ref: "s1", Room: "lobby", ID: "c-7f3a", Text: "hello, world"})
	fmt.Println(string(send))

	// What the gateway answers, encoded as the gateway does.
	at := time.Date(2026, 11, 24, 12, 0, 0, 123456789, time.UTC)
	ack, _ := json.Marshal(protocol.AckFrame{Op: protocol.OpAck, Ref: "s1", Room: "lobby", ID: "c-7f3a", Offset: 41, Time: protocol.Time{Time: at}})
	fmt.Println(string(ack))

	var f protocol.ServerFrame
	_ = json.Unmarshal(ack, &f)
	switch f.Op {
	case protocol.OpAck:
		fmt.Println("stored at offset", f.Offset, "at", f.Time.Format(time.TimeOnly))
	case protocol.OpError:
		fmt.Println("refused:", f.Code, protocol.HTTPStatus(f.Code))
	}
	fmt.Println("close", protocol.CloseSlowConsumer, "is", protocol.CloseName(protocol.CloseSlowConsumer))
	// Output:
	// {"op":"send","ref":"s1","room":"lobby","id":"c-7f3a","text":"hello, world"}
	// {"op":"ack","ref":"s1","room":"lobby","id":"c-7f3a","partition":0,"offset":41,"time":"2026-11-24T12:00:00.123Z","duplicate":false}
	// stored at offset 41 at 12:00:00
	// close 4408 is slow consumer
}
