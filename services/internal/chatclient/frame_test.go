package chatclient

import (
	"testing"
)

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		in   string
		op   string
		fail bool
	}{
		{`{"op":"message","room":"lobby","partition":0,"offset":41,"time":"2026-11-24T12:00:00.123Z","sender":{"id":"u","name":"Ada"}}`, "message", false},
		{`{"op":"error","ref":"s1","code":"rate_limited"}`, "error", false},
		{`{"op":"welcome","future_field":[1,2]}`, "welcome", false},
		{`{}`, "", true},
		{`[]`, "", true},
		{`{"op":"message","offset":"x"}`, "", true},
		{"{\"op\":\"message\",\"text\":\"\xff\"}", "", true},
		{``, "", true},
	}
	for _, tt := range tests {
		f, err := decodeFrame([]byte(tt.in))
		if (err != nil) != tt.fail || f.Op != tt.op {
			t.Errorf("decodeFrame(%q) = %q, %v", tt.in, f.Op, err)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"op":"message","room":"lobby","id":"c","sender":{"id":"u","name":"Ada"},"text":"hi","time":"2026-11-24T12:00:00.123Z","partition":0,"offset":41,"cursor":"AQEAKg"}`,
		`{"op":"ack","ref":"s1","room":"lobby","id":"c-7f3a","partition":0,"offset":41,"time":"2026-11-24T12:00:00.123Z","duplicate":false}`,
		`{"op":"presence","room":"lobby","users":[{"id":"u-42","name":"Ada"}]}`,
		`{"op":"error","code":"unsupported_version","supported":[1]}`,
		`{"op":"joined","cursor":"AQEAKg","recovering":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		if fr.Op == "" {
			t.Fatal("decoded a frame without op")
		}
		_ = messageOf(&fr)
		_ = errorOf(&fr).Error()
	})
}
