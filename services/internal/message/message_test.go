package message

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func valid() Envelope {
	return Envelope{V: Version, ID: "c-1", Room: "lobby", SenderID: "u-42", SenderName: "Ada", Text: "hello"}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Envelope)
		want   error
	}{
		{"valid", func(*Envelope) {}, nil},
		{"no display name is fine", func(e *Envelope) { e.SenderName = "" }, nil},
		{"wrong version", func(e *Envelope) { e.V = 2 }, ErrUnsupportedVersion},
		{"zero version", func(e *Envelope) { e.V = 0 }, ErrUnsupportedVersion},
		{"no id", func(e *Envelope) { e.ID = "" }, ErrMissingField},
		{"no room", func(e *Envelope) { e.Room = "" }, ErrMissingField},
		{"no sender", func(e *Envelope) { e.SenderID = "" }, ErrMissingField},
		{"empty text", func(e *Envelope) { e.Text = "" }, ErrMissingField},
		{"text at limit", func(e *Envelope) { e.Text = strings.Repeat("a", MaxTextBytes) }, nil},
		{"text over limit", func(e *Envelope) { e.Text = strings.Repeat("a", MaxTextBytes+1) }, ErrTooLarge},
		{"long id", func(e *Envelope) { e.ID = strings.Repeat("x", MaxIDBytes+1) }, ErrTooLarge},
		{"invalid utf8 text", func(e *Envelope) { e.Text = "bad \xff" }, ErrInvalidUTF8},
		{"invalid utf8 name", func(e *Envelope) { e.SenderName = "\xc3" }, ErrInvalidUTF8},
		{"upper-case room", func(e *Envelope) { e.Room = "Lobby" }, ErrInvalidRoom},
		{"room with slash", func(e *Envelope) { e.Room = "a/b" }, ErrInvalidRoom},
		{"room ends with dash", func(e *Envelope) { e.Room = "lobby-" }, ErrInvalidRoom},
		{"room too long", func(e *Envelope) { e.Room = strings.Repeat("a", MaxRoomBytes+1) }, ErrInvalidRoom},
		{"room with dot and dash", func(e *Envelope) { e.Room = "team-a.ops" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			tt.mutate(&e)
			err := e.Validate()
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	e := valid()
	e.ClientTime = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	b, err := Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"v":1,"id":"c-1","room":"lobby","sender_id":"u-42","sender_name":"Ada","text":"hello","client_time":"2026-11-24T12:00:00Z"}`
	if string(b) != want {
		t.Fatalf("Encode = %s\nwant     %s", b, want)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != e {
		t.Fatalf("Decode = %+v, want %+v", got, e)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"not json", `hello`, ErrMalformed},
		{"trailing data", `{"v":1,"id":"a","room":"r","sender_id":"s","text":"t"} x`, ErrMalformed},
		{"wrong type", `{"v":"1"}`, ErrMalformed},
		{"future version", `{"v":9,"id":"a","room":"r","sender_id":"s","text":"t"}`, ErrUnsupportedVersion},
		{"missing text", `{"v":1,"id":"a","room":"r","sender_id":"s"}`, ErrMissingField},
		{"invalid utf8", "{\"v\":1,\"id\":\"a\",\"room\":\"r\",\"sender_id\":\"s\",\"text\":\"\xff\"}", ErrInvalidUTF8},
		{"too large", `{"text":"` + strings.Repeat("a", MaxEncodedBytes) + `"}`, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode([]byte(tt.in)); !errors.Is(err, tt.want) {
				t.Fatalf("Decode() error = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"c-1","room":"lobby","sender_id":"u","text":"hi"}`))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must be valid and survive a round trip.
		out, err := Encode(&e)
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v", err)
		}
		again, err := Decode(out)
		sameTime := again.ClientTime.Equal(e.ClientTime)
		again.ClientTime, e.ClientTime = time.Time{}, time.Time{}
		if err != nil || again != e || !sameTime {
			t.Fatalf("round trip changed the envelope: %+v -> %+v (%v)", e, again, err)
		}
	})
}

func TestDecodeRoomRefusesAnotherRoomsEnvelope(t *testing.T) {
	b, err := Encode(&Envelope{V: Version, ID: "m1", Room: "random", SenderID: "u1", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeRoom(b, "lobby"); !errors.Is(err, ErrOtherRoom) {
		t.Fatalf("DecodeRoom of another room's envelope = %v, want ErrOtherRoom", err)
	}
	if e, err := DecodeRoom(b, "random"); err != nil || e.ID != "m1" {
		t.Fatalf("DecodeRoom of its own room's envelope = %+v, %v", e, err)
	}
}
