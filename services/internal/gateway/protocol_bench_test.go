package gateway

import (
	"testing"
	"time"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/message"
)

// The per-frame costs of the protocol on the gateway's hot paths: a
// client's command decoded, a stored message encoded once for a room's
// members, and that encoding framed for the socket. Run with:
//
//	go test -run '^$' -bench 'Frame|Wire' -benchmem ./internal/gateway/

func BenchmarkFrameDecodeSend(b *testing.B) {
	in := []byte(`{"op":"send","ref":"s-1042","room":"lobby","id":"c-7f3a-1042","text":"hello, world: a message of an ordinary length","client_time":"2026-11-24T12:00:00.080Z"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := DecodeFrame(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFrameEncodeMessage(b *testing.B) {
	d := benchDelivery()
	b.ReportAllocs()
	for b.Loop() {
		if len(encodeDelivery(d)) == 0 {
			b.Fatal("empty frame")
		}
	}
}

func BenchmarkWireTextFrame(b *testing.B) {
	payload := encodeDelivery(benchDelivery())
	buf := make([]byte, 0, 16<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		buf = buf[:0]
		for range 32 { // a batch of frames, as the connection's writer builds it
			buf = appendTextFrame(buf, payload)
		}
	}
}

func benchDelivery() *roomhub.Delivery {
	at := time.Date(2026, 11, 24, 12, 0, 0, 123e6, time.UTC)
	var c cursor.Cursor
	c.Advance(0, 41)
	return &roomhub.Delivery{Room: "lobby", Cursor: c, Msg: message.Stored{
		Envelope: message.Envelope{V: message.Version, Room: "lobby", ID: "c-7f3a-1042", SenderID: "u-42", SenderName: "Ada",
			Text: "hello, world: a message of an ordinary length", ClientTime: at.Add(-43 * time.Millisecond)},
		Partition: 0, Offset: 41, Time: at,
	}}
}
